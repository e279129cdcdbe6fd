//! The training loop: data -> steps -> metrics, evaluation and checkpoints -> summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Element, ElementConversion, FloatDType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use scalelab_blocks::{HybridDecoder, KernelBackend, ModelConfigExt, MoeStats};
use scalelab_config::FieldError;
use scalelab_scaling::record::MetricsRecord;
use scalelab_tensorboard::HParamValue;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoints, LoopState};
use crate::error::TrainError;
use crate::eval::{cross_entropy, validation_loss};
use crate::loader::Prefetch;
use crate::lock::DirLock;
use crate::metrics::MetricsLog;
use crate::probes::{run_probes, ProbeScores};
use crate::schedule::learning_rate;
use crate::settings::{Precision, RunConfig};

/// How to run, beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the run directory's latest checkpoint (start fresh if it has none).
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Set from outside (Ctrl-C) to checkpoint and stop cleanly at the end of the current step.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where tokenized corpora are cached.
    pub cache_dir: PathBuf,
    /// Bytes the run may use, checked against a lower bound of its needs before anything is
    /// allocated (`None`: no check).
    pub max_memory: Option<u64>,
}

/// What a finished (or stopped) run reports; written to `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Model name.
    pub name: String,
    /// The whole run config.
    pub config: RunConfig,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Total parameters.
    pub params: u64,
    /// Activated parameters per token (excluding embedding and head).
    pub activated_params: u64,
    /// Optimizer steps done.
    pub steps: u64,
    /// Whether the budget was spent (false when stopped early).
    pub completed: bool,
    /// Training tokens.
    pub tokens: u64,
    /// Training FLOPs (convention in the config).
    pub flops: f64,
    /// Mean training loss over the last logging window, nats per token.
    pub train_loss: f64,
    /// Final validation loss, nats per token.
    pub val_loss: f64,
    /// The data's entropy rate (irreducible loss) where known, nats per token.
    pub entropy_rate: Option<f64>,
    /// Retrieval-probe accuracies.
    pub probes: ProbeScores,
    /// Training wall time, seconds.
    pub wall_secs: f64,
    /// Seconds from the start of `train` (model init included) to the end of this process's
    /// first step, kernel compilation and autotuning included.
    #[serde(default)]
    pub first_step_secs: Option<f64>,
    /// The lightning-attention kernels this process launched, with their launch counts: which
    /// kernel the steps really ran (the tensor-core ones under bf16 on CUDA).
    #[serde(default)]
    pub lightning_kernels: BTreeMap<String, u64>,
    /// Training tokens per second.
    pub tokens_per_s: f64,
    /// Model FLOPs utilization against `peak_flops`, when given.
    pub mfu: Option<f64>,
}

/// Trains `run` in `dir` on `device`; returns the summary (also written to `dir/summary.json`).
pub fn train<B>(
    run: &RunConfig,
    dir: &Path,
    device: &B::Device,
    opts: &TrainOptions,
) -> Result<Summary, TrainError>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
    let entered = Instant::now();
    run.validate()?;
    if let Some(limit) = opts.max_memory {
        crate::memory::MemoryEstimate::of(run).check(limit, "the memory limit")?;
    }
    let t = &run.train;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let _lock = DirLock::acquire(dir, "run")?;
    let checkpoints = Checkpoints::new(dir);
    checkpoints.clean_stale();
    let from = match check_run_dir(run, dir, &checkpoints, opts.resume)? {
        Start::Finished(summary) => return Ok(*summary),
        Start::Resume { checkpoint, step } => Some((checkpoint, step)),
        Start::Fresh => None,
    };
    let resume_step = from.as_ref().map(|(_, step)| *step);
    let data = scalelab_data::open(&run.data, t.seq_len, &opts.cache_dir)?;
    if data.vocab_size() > run.model.vocab_size {
        return Err(TrainError::Invalid(FieldError::new(
            "model.vocab_size",
            run.model.vocab_size,
            format!(
                "the data ({}) has {} token ids: the model's vocabulary must be at least that large",
                data.describe(),
                data.vocab_size()
            ),
        )));
    }
    let total_steps = run.total_steps()?;
    let flops_per_token = run.flops_per_token()?;
    let tokens_per_step = run.tokens_per_step();
    let params = run.model.param_count();

    let compute = compute_dtype::<B>(t.precision)?;
    B::seed(device, t.seed);
    let mut model: HybridDecoder<B> = run.model.init(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(t.betas[0] as f32)
        .with_beta_2(t.betas[1] as f32)
        .with_epsilon(t.eps as f32)
        .with_weight_decay(t.weight_decay as f32)
        .init::<B, HybridDecoder<B>>();
    let mut state = LoopState {
        step: 0,
        tokens: 0,
        flops: 0.0,
        elapsed_secs: 0.0,
        sequences: 0,
        seed: t.seed,
        window_loss: 0.0,
        window_steps: 0,
    };
    if let Some((checkpoint, _)) = &from {
        let (m, o, s) = checkpoints.load_from(checkpoint, model, optim, device)?;
        (model, optim, state) = (m, o, s);
    }
    model = model.with_compute_dtype(compute);
    let data: Arc<dyn scalelab_data::Dataset> = Arc::from(data);
    let batches = Prefetch::start(data.clone(), state.sequences, t.batch_size, t.seq_len);
    let mut log = MetricsLog::open(dir, resume_step)?;
    if resume_step.is_none() {
        log.config_text(&serde_saphyr::to_string(run).unwrap_or_default())?;
        log.hparams(
            &hparams(run),
            &["val/loss", "train/loss", "probes/mqar", "probes/niah"],
        )?;
    }

    let bar = progress_bar(opts.progress, total_steps, state.step);
    let started = Instant::now() - std::time::Duration::from_secs_f64(state.elapsed_secs);
    let mut window = (Instant::now(), state.tokens);
    let mut last_loss = f64::NAN;
    let mut train_loss = f64::NAN;
    let mut val_loss = f64::NAN;
    let mut last_checkpoint: Option<PathBuf> = checkpoints.latest();
    let stopped = |o: &TrainOptions| o.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));

    // The step's losses and gradient norm stay on the device until a log step or checkpoint
    // reads them, so the host queues step after step without waiting for the GPU.
    let mut pending_loss: Option<Tensor<B::InnerBackend, 1>> = None;
    let mut first_step_secs = None;
    while state.step < total_steps && !stopped(opts) {
        let lr = learning_rate(t, state.step, total_steps);
        let mut accum = GradientsAccumulator::<HybridDecoder<B>>::new();
        let mut moe_stats = Vec::new();
        for _ in 0..t.grad_accum {
            let (x, y) = batches.next().upload::<B>(device);
            state.sequences += t.batch_size as u64;
            let out = model.forward(x);
            let lm = cross_entropy(out.logits, y);
            let loss = (lm.clone() + out.aux_loss) / t.grad_accum as f64;
            let lm = lm.inner() / t.grad_accum as f64;
            pending_loss = Some(match pending_loss.take() {
                Some(p) => p + lm,
                None => lm,
            });
            accum.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            moe_stats = out.moe;
        }
        let mut grads = accum.grads();
        let grad_norm =
            crate::grads::clip_global_norm::<B, _>(&model, &mut grads, t.grad_clip, device);
        model = optim.step(lr, model, grads);
        state.step += 1;
        state.tokens += tokens_per_step;
        state.flops += flops_per_token * tokens_per_step as f64;
        state.window_steps += 1;

        let end = state.step == total_steps;
        if state.step.is_multiple_of(t.eval_every) || end {
            val_loss = validation_loss(
                &model.valid(),
                data.as_ref(),
                t.eval_batches,
                t.batch_size,
                t.seq_len,
                device,
            );
        }
        if first_step_secs.is_none() {
            // One wait for the device, to time the first step with its compilation.
            if let Some(p) = &pending_loss {
                let _: f64 = p.clone().into_scalar().elem();
            }
            first_step_secs = Some(entered.elapsed().as_secs_f64());
            let products = scalelab_kernels::gemm::cublaslt_launches();
            if products > 0 {
                bar.suspend(|| eprintln!("matrix products on cuBLASLt so far: {products}"));
            }
            let kernels = lightning_kernels();
            if !kernels.is_empty() {
                bar.suspend(|| {
                    eprintln!(
                        "first step in {:.1}s; lightning kernels launched: {}",
                        first_step_secs.unwrap_or_default(),
                        kernels
                            .iter()
                            .map(|(k, n)| format!("{k} x{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
        }
        let log_now = state.step.is_multiple_of(t.log_every) || end;
        let checkpoint_now = state.step.is_multiple_of(t.checkpoint_every) || end || stopped(opts);
        if log_now || checkpoint_now {
            if let Some(sum) = pending_loss.take() {
                let sum: f64 = sum.into_scalar().elem();
                if !sum.is_finite() {
                    bar.abandon();
                    log.close(false)?;
                    return Err(TrainError::NonFinite {
                        step: state.step,
                        value: sum,
                        last_checkpoint: last_checkpoint
                            .map_or("none (no checkpoint was written yet)".into(), |p| {
                                p.display().to_string()
                            }),
                    });
                }
                state.window_loss += sum;
            }
            state.elapsed_secs = started.elapsed().as_secs_f64();
        }
        if log_now {
            let secs = window.0.elapsed().as_secs_f64().max(1e-9);
            let tps = (state.tokens - window.1) as f64 / secs;
            let mean_loss = state.window_loss / state.window_steps as f64;
            let grad_norm: f64 = grad_norm.into_scalar().elem();
            last_loss = mean_loss;
            let mut r = MetricsRecord::at(state.step);
            r.scalar("train/loss", mean_loss)
                .scalar("train/lr", lr)
                .scalar("train/grad_norm", grad_norm)
                .scalar("train/tokens", state.tokens as f64)
                .scalar("train/flops", state.flops)
                .scalar("perf/tokens_per_s", tps);
            if let Some(peak) = t.peak_flops {
                r.scalar("perf/mfu", tps * flops_per_token / peak);
            }
            if state.step.is_multiple_of(t.eval_every) || end {
                r.scalar("val/loss", val_loss);
            }
            moe_record(&mut r, &moe_stats);
            if let (Some(grid), Some(every)) = (&t.probes, t.probe_every) {
                if state.step.is_multiple_of(every) && !end {
                    let scores = run_probes(&model.valid(), grid, data.as_ref(), device)?;
                    for (name, v) in scores.scalars() {
                        r.scalar(&format!("probes/{name}"), v);
                    }
                }
            }
            log.log(state.flops / 1e9, &r)?;
            bar.set_message(format!("loss {mean_loss:.4} | {tps:.0} tok/s"));
            window = (Instant::now(), state.tokens);
            (state.window_loss, state.window_steps) = (0.0, 0);
            train_loss = mean_loss;
        }
        bar.set_position(state.step);
        if checkpoint_now {
            log.flush()?;
            last_checkpoint = Some(checkpoints.save(&model, &optim, &state, t.keep_checkpoints)?);
        }
    }
    bar.finish_and_clear();
    let completed = state.step >= total_steps;
    if !completed && checkpoints.latest_step() != Some(state.step) {
        checkpoints.save(&model, &optim, &state, t.keep_checkpoints)?;
    }
    let valid = model.valid();
    if val_loss.is_nan() {
        val_loss = validation_loss(
            &valid,
            data.as_ref(),
            t.eval_batches,
            t.batch_size,
            t.seq_len,
            device,
        );
    }
    let probes = match (&t.probes, completed) {
        (Some(grid), true) => run_probes(&valid, grid, data.as_ref(), device)?,
        _ => ProbeScores::default(),
    };
    let mut end = MetricsRecord::at(state.step);
    for (name, score) in probes.scalars() {
        end.scalar(&format!("probes/{name}"), score);
    }
    if !end.scalars.is_empty() {
        log.log(state.flops / 1e9, &end)?;
    }
    if completed {
        log.close(true)?;
    } else {
        log.flush()?;
    }
    let tokens_per_s = state.tokens as f64 / state.elapsed_secs.max(1e-9);
    let summary = Summary {
        name: run.model.name.clone(),
        config: run.clone(),
        run_dir: dir.to_path_buf(),
        params: params.total,
        activated_params: params.activated,
        steps: state.step,
        completed,
        tokens: state.tokens,
        flops: state.flops,
        train_loss: if train_loss.is_nan() {
            last_loss
        } else {
            train_loss
        },
        val_loss,
        entropy_rate: data.entropy_rate().map(|e| e.nats),
        probes,
        wall_secs: state.elapsed_secs,
        first_step_secs,
        lightning_kernels: lightning_kernels(),
        tokens_per_s,
        mfu: t.peak_flops.map(|p| tokens_per_s * flops_per_token / p),
    };
    let path = dir.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&summary).expect("summary serializes"),
    )
    .map_err(|e| TrainError::io(&path, e))?;
    Ok(summary)
}

fn lightning_kernels() -> BTreeMap<String, u64> {
    scalelab_kernels::lightning::usage::launches()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect()
}

/// The dtype the model computes in under `precision` (`None`: its weights'), after checking
/// that the backend keeps its weights in the dtype the precision calls for.
fn compute_dtype<B: Backend>(
    precision: Option<Precision>,
) -> Result<Option<FloatDType>, TrainError> {
    let precision = precision.unwrap_or(Precision::F32);
    let weights = <B::FloatElem as Element>::dtype();
    let (want, compute) = match precision {
        Precision::F32 => (DType::F32, None),
        Precision::Bf16Mixed => (DType::F32, Some(FloatDType::BF16)),
        Precision::Bf16 => (DType::BF16, None),
    };
    if weights != want {
        return Err(TrainError::Invalid(FieldError::new(
            "train.precision",
            precision.name(),
            format!(
                "needs a backend with {want:?} weights, and this one keeps them in {weights:?} \
                 (scalelab train picks the backend from the precision)"
            ),
        )));
    }
    Ok(compute)
}

/// How a run starts.
enum Start {
    /// From step 0.
    Fresh,
    /// From this checkpoint, at this step.
    Resume { checkpoint: PathBuf, step: u64 },
    /// Nothing to do: the run had finished; its summary as written.
    Finished(Box<Summary>),
}

/// Decides how the run in `dir` starts, changing nothing on disk but `config.yaml` of a fresh
/// run. Without `resume` an existing run is refused. With it: a run whose `summary.json` says
/// finished stays as it is; otherwise the newest intact checkpoint is chosen by scanning
/// (whatever `latest` says), with a line saying which; checkpoints that exist but none intact
/// are refused with what was found; a run with no checkpoint starts again (its earlier
/// `metrics.jsonl` kept aside). A changed config is refused.
fn check_run_dir(
    run: &RunConfig,
    dir: &Path,
    checkpoints: &Checkpoints,
    resume: bool,
) -> Result<Start, TrainError> {
    let saved_path = dir.join("config.yaml");
    let yaml = serde_saphyr::to_string(run).expect("a run config serializes");
    let found = checkpoints.scan();
    let newest = found
        .iter()
        .find_map(|(d, s)| s.as_ref().ok().map(|s| (d, s.step)));
    if !resume {
        if !found.is_empty() || checkpoints.latest().is_some() {
            return Err(TrainError::RunExists {
                dir: dir.to_path_buf(),
                step: newest.map_or(0, |(_, step)| step),
            });
        }
    } else if saved_path.exists() {
        let saved =
            std::fs::read_to_string(&saved_path).map_err(|e| TrainError::io(&saved_path, e))?;
        if saved != yaml {
            let what = saved
                .lines()
                .zip(yaml.lines())
                .find(|(a, b)| a != b)
                .map_or("its length".to_string(), |(a, b)| {
                    format!("saved `{}`, now `{}`", a.trim(), b.trim())
                });
            return Err(TrainError::ConfigChanged {
                dir: dir.to_path_buf(),
                what,
            });
        }
        if let Some(summary) = finished(dir) {
            eprintln!(
                "{} already finished its {} steps; nothing to do (summary: {})",
                dir.display(),
                summary.steps,
                dir.join("summary.json").display()
            );
            return Ok(Start::Finished(Box::new(summary)));
        }
    }
    if resume {
        if let Some((checkpoint, step)) = newest {
            let latest = checkpoints.latest();
            let note = match latest {
                Some(l) if &l == checkpoint => String::new(),
                Some(l) => format!(
                    " (`latest` names {}, which is {})",
                    l.display(),
                    found
                        .iter()
                        .find(|(d, _)| *d == l)
                        .and_then(|(_, s)| s.as_ref().err().cloned())
                        .unwrap_or_else(|| "missing".into())
                ),
                None => " (no `latest` file)".into(),
            };
            eprintln!(
                "resuming from step {step}, checkpoint {}{note}",
                checkpoint.display()
            );
            return Ok(Start::Resume {
                checkpoint: checkpoint.clone(),
                step,
            });
        }
        if !found.is_empty() {
            let what = found
                .iter()
                .map(|(d, s)| {
                    let name = d.file_name().unwrap_or_default().to_string_lossy();
                    match s {
                        Err(why) => format!("{name}: {why}"),
                        Ok(_) => format!("{name}: intact"),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(TrainError::Checkpoint {
                path: dir.join("checkpoints"),
                reason: format!("no intact checkpoint to resume from ({what})"),
                hint: "nothing was changed; move the run directory aside and start it again, \
                       or restore a checkpoint from a backup"
                    .into(),
            });
        }
        let metrics = dir.join("metrics.jsonl");
        if metrics.exists() {
            let aside = dir.join(format!(
                "metrics.jsonl.before-restart-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            std::fs::rename(&metrics, &aside).map_err(|e| TrainError::io(&metrics, e))?;
            eprintln!(
                "no checkpoint in {}: starting again from step 0 (the earlier metrics are kept in {})",
                dir.display(),
                aside.display()
            );
        }
    }
    std::fs::write(&saved_path, &yaml).map_err(|e| TrainError::io(&saved_path, e))?;
    Ok(Start::Fresh)
}

/// The run's summary if it says the run finished.
fn finished(dir: &Path) -> Option<Summary> {
    let bytes = std::fs::read(dir.join("summary.json")).ok()?;
    let summary: Summary = serde_json::from_slice(&bytes).ok()?;
    summary.completed.then_some(summary)
}

fn hparams(run: &RunConfig) -> BTreeMap<String, HParamValue> {
    let m = &run.model;
    let p = m.param_count();
    let t = &run.train;
    let mut numbers = vec![
        ("hidden_size", m.hidden_size as f64),
        ("layers", m.layers as f64),
        ("softmax_layers", p.softmax_layers as f64),
        ("moe_layers", p.moe_layers as f64),
        ("params", p.total as f64),
        ("activated_params", p.activated as f64),
        ("lr", t.lr),
        ("batch_size", t.batch_size as f64),
        ("seq_len", t.seq_len as f64),
        ("seed", t.seed as f64),
    ];
    if let Some(moe) = &m.ffn.moe {
        numbers.extend([("experts", moe.experts as f64), ("top_k", moe.top_k as f64)]);
    }
    let mut h: BTreeMap<String, HParamValue> = numbers
        .into_iter()
        .map(|(k, v)| (k.to_string(), HParamValue::Number(v)))
        .collect();
    h.insert("model".into(), HParamValue::String(m.name.clone()));
    h
}

/// Per-MoE-layer routing metrics: losses, dropped fraction, load balance, and a histogram of
/// expert loads.
fn moe_record<B: burn::tensor::backend::Backend>(
    r: &mut MetricsRecord,
    stats: &[(usize, MoeStats<B>)],
) {
    for (layer, s) in stats {
        let p = format!("moe/layer_{layer:02}");
        let (_, processed, dropped_fraction) = s.read();
        let loads: Vec<f64> = processed.iter().map(|&n| n as f64).collect();
        let total: f64 = loads.iter().sum::<f64>().max(1.0);
        let mean = total / loads.len() as f64;
        let max = loads.iter().cloned().fold(0.0, f64::max);
        let entropy: f64 = loads
            .iter()
            .filter(|&&n| n > 0.0)
            .map(|&n| -(n / total) * (n / total).ln())
            .sum();
        r.scalar(
            &format!("{p}/load_balance_loss"),
            s.load_balance_loss.clone().into_scalar().elem(),
        )
        .scalar(
            &format!("{p}/z_loss"),
            s.z_loss.clone().into_scalar().elem(),
        )
        .scalar(&format!("{p}/dropped_fraction"), dropped_fraction)
        .scalar(&format!("{p}/max_over_mean_load"), max / mean)
        .scalar(
            &format!("{p}/load_entropy"),
            entropy / (loads.len() as f64).ln().max(1e-12),
        );
        r.histograms.insert(format!("{p}/expert_load"), loads);
    }
}

fn progress_bar(enabled: bool, total: u64, at: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(at);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps | {msg} | {elapsed_precise} < {eta_precise}",
        )
        .expect("valid template"),
    );
    bar
}
