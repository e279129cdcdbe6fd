//! `scalelab bench train [CONFIGS...]`: training throughput of model configs, each trained for a
//! fixed number of steps in a child `scalelab train` (so each starts cold and its memory is its
//! own): tokens/s after the warm-up steps, MFU, peak device memory and first-step time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use scalelab_scaling::record::MetricsRecord;
use scalelab_train::{Precision, Summary};
use serde::Serialize;

use crate::backend;

/// Arguments of `scalelab bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

/// What to measure.
#[derive(clap::Subcommand)]
pub enum What {
    /// Training throughput of model configs (default: the four anchor models).
    Train(TrainArgs),
    /// Matrix-product TFLOP/s: the blocks' path (cuBLASLt on CUDA) against Burn's matmul.
    Gemm(super::bench_gemm::GemmArgs),
    /// Causal softmax attention, forward and forward+backward: ms, TFLOP/s and pool memory.
    Attention(super::bench_attention::AttentionArgs),
}

/// Arguments of `scalelab bench train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Model configs (YAML); default: configs/anchor/{hybrid,lightning,softmax}-125m.yaml and
    /// hybrid-125m-moe8.yaml, the models of crates/train/bench/torch_train_anchor.py.
    pub configs: Vec<PathBuf>,
    /// Optimizer steps per model.
    #[arg(long, default_value_t = 30)]
    pub steps: u64,
    /// Steps left out of the throughput (compilation, autotuning, allocator warm-up).
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Steps per timed window (each window ends with one read of the loss, as in training).
    #[arg(long, default_value_t = 5)]
    pub log_every: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 2048)]
    pub seq_len: usize,
    /// f32, bf16-mixed or bf16 (default: the build's, bf16-mixed on CUDA).
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Device peak FLOP/s for MFU (H100 SXM dense bf16: 989e12).
    #[arg(long, default_value_t = 989e12)]
    pub peak_flops: f64,
    /// Where the runs go (replaced if present).
    #[arg(long, default_value = "runs/bench-train")]
    pub out: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where compiled kernels and autotune results are kept (shared by the runs).
    #[arg(long, default_value = ".scalelab-cache")]
    pub cache_dir: PathBuf,
    /// Seconds a model may take before it is stopped and reported as timed out.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// One model's figures.
#[derive(Debug, Serialize)]
pub struct BenchRow {
    /// The model's name.
    pub model: String,
    /// The config file.
    pub config: String,
    /// Precision it trained in.
    pub precision: String,
    /// Sequences x tokens per step.
    pub batch: String,
    /// Steps completed.
    pub steps: u64,
    /// Training tokens per second after the warm-up (none if the run failed first).
    pub tokens_per_s: Option<f64>,
    /// Model FLOPs utilization at that rate.
    pub mfu: Option<f64>,
    /// Peak device memory the run's process used, GiB (from nvidia-smi, when present).
    pub peak_memory_gib: Option<f64>,
    /// Seconds to the end of the first step, compilation included.
    pub first_step_s: Option<f64>,
    /// Loss of the last logged window.
    pub loss: Option<f64>,
    /// The lightning kernel launched most often (what the steps ran).
    pub lightning_kernel: Option<String>,
    /// Why the run did not finish, if it did not.
    pub error: Option<String>,
}

const ANCHORS: [&str; 4] = [
    "configs/anchor/hybrid-125m.yaml",
    "configs/anchor/lightning-125m.yaml",
    "configs/anchor/softmax-125m.yaml",
    "configs/anchor/hybrid-125m-moe8.yaml",
];

/// Runs the benchmark.
pub fn run(args: &Args) -> Result<()> {
    match &args.what {
        What::Train(a) => train(a),
        What::Gemm(a) => super::bench_gemm::run(a),
        What::Attention(a) => super::bench_attention::run(a),
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    if args.log_every == 0 || !args.warmup.is_multiple_of(args.log_every) {
        bail!(
            "--warmup ({}) must be a multiple of --log-every ({}), which must be at least 1",
            args.warmup,
            args.log_every
        );
    }
    if args.warmup + 2 * args.log_every > args.steps {
        bail!(
            "--steps ({}) must be at least --warmup ({}) plus two windows of --log-every ({}): \
             the last window holds the validation pass and is not timed",
            args.steps,
            args.warmup,
            args.log_every
        );
    }
    let configs: Vec<PathBuf> = if args.configs.is_empty() {
        ANCHORS.iter().map(PathBuf::from).collect()
    } else {
        args.configs.clone()
    };
    for c in &configs {
        if !c.is_file() {
            bail!(
                "config {} not found (run from the repository root, or name configs)",
                c.display()
            );
        }
    }
    let precision = args
        .precision
        .or(backend::DEFAULT_PRECISION)
        .unwrap_or(Precision::F32);
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("cannot clear {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut rows = Vec::new();
    for config in &configs {
        let row = bench_one(args, config, precision)?;
        eprintln!("{}", line(&row));
        rows.push(row);
    }
    println!("{}", table(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn bench_one(args: &TrainArgs, config: &Path, precision: Precision) -> Result<BenchRow> {
    let name = config
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let dir = args.out.join(&name);
    let run_file = args.out.join(format!("{name}.run.yaml"));
    let model = std::path::absolute(config)?;
    // One validation batch, only at the end; no checkpoint but the last.
    let yaml = format!(
        "model: {model}\ntrain:\n  batch_size: {b}\n  seq_len: {t}\n  budget: {{ steps: {n} }}\n  \
         log_every: {l}\n  eval_every: {n}\n  eval_batches: 1\n  checkpoint_every: {n}\n  \
         keep_checkpoints: 1\n  probes: null\n  peak_flops: {peak:e}\n  \
         precision: {precision}\n",
        model = model.display(),
        b = args.batch_size,
        t = args.seq_len,
        n = args.steps,
        l = args.log_every,
        peak = args.peak_flops,
    );
    std::fs::write(&run_file, yaml)?;
    let exe = std::env::current_exe().context("cannot find the scalelab binary")?;
    let mut child = Command::new(exe)
        .arg("train")
        .arg(&run_file)
        .arg("--out")
        .arg(&dir)
        .arg("--quiet")
        .arg("--cache-dir")
        .arg(&args.cache_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(args.out.join(format!("{name}.log")))?)
        .spawn()
        .context("cannot start scalelab train")?;
    let peak = MemoryPoll::start(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let peak_memory_gib = peak.stop();
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let (records, _) = MetricsRecord::read_jsonl(&metrics);
    let summary: Option<Summary> = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // Windows after the warm-up, without the last (it holds the validation pass): total
    // tokens over total time, the harmonic mean of the equal windows' rates.
    let timed: Vec<f64> = records
        .iter()
        .filter(|r| r.step > args.warmup && r.step < args.steps)
        .filter_map(|r| r.get("perf/tokens_per_s"))
        .collect();
    let tokens_per_s = (!timed.is_empty())
        .then(|| timed.len() as f64 / timed.iter().map(|r| 1.0 / r).sum::<f64>());
    let flops_per_token = summary
        .as_ref()
        .filter(|s| s.tokens > 0)
        .map(|s| s.flops / s.tokens as f64);
    let error = match status {
        None => Some(format!("timed out after {} s", args.timeout)),
        Some(s) if !s.success() => Some(format!(
            "exit {}: see {}",
            s.code().map_or("by signal".into(), |c| c.to_string()),
            args.out.join(format!("{name}.log")).display()
        )),
        Some(_) => None,
    };
    Ok(BenchRow {
        model: summary.as_ref().map_or(name.clone(), |s| s.name.clone()),
        config: config.display().to_string(),
        precision: precision.to_string(),
        batch: format!("{} x {}", args.batch_size, args.seq_len),
        steps: records.last().map_or(0, |r| r.step),
        mfu: tokens_per_s
            .zip(flops_per_token)
            .map(|(tps, f)| tps * f / args.peak_flops),
        tokens_per_s,
        peak_memory_gib,
        first_step_s: summary.as_ref().and_then(|s| s.first_step_secs),
        loss: records.iter().rev().find_map(|r| r.get("train/loss")),
        lightning_kernel: summary.as_ref().and_then(|s| {
            s.lightning_kernels
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, _)| k.clone())
        }),
        error,
    })
}

/// Samples the device memory a process uses through nvidia-smi, four times a second.
struct MemoryPoll {
    stop: Arc<AtomicBool>,
    peak_mib: Arc<AtomicU64>,
    worker: Option<std::thread::JoinHandle<bool>>,
}

impl MemoryPoll {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_mib = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_mib.clone());
        let worker = std::thread::spawn(move || {
            let mut seen = false;
            while !s.load(Ordering::SeqCst) {
                let out = Command::new("nvidia-smi")
                    .args([
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .output();
                let Ok(out) = out else { return false };
                seen = true;
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut parts = line.split(',').map(str::trim);
                    if parts.next().and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
                        if let Some(mib) = parts.next().and_then(|x| x.parse::<u64>().ok()) {
                            p.fetch_max(mib, Ordering::SeqCst);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            seen
        });
        Self {
            stop,
            peak_mib,
            worker: Some(worker),
        }
    }

    /// The peak in GiB, if nvidia-smi answered and saw the process.
    fn stop(mut self) -> Option<f64> {
        self.stop.store(true, Ordering::SeqCst);
        let seen = self
            .worker
            .take()
            .is_some_and(|w| w.join().unwrap_or(false));
        let mib = self.peak_mib.load(Ordering::SeqCst);
        (seen && mib > 0).then(|| mib as f64 / 1024.0)
    }
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn line(r: &BenchRow) -> String {
    format!(
        "{}: {} tok/s, MFU {}, peak {} GiB, first step {} s{}",
        r.model,
        fmt(r.tokens_per_s, 0),
        fmt(r.mfu.map(|m| m * 100.0), 1),
        fmt(r.peak_memory_gib, 1),
        fmt(r.first_step_s, 1),
        r.error
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"))
    )
}

fn table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "| model | precision | batch | tokens/s | MFU % | peak memory (GiB) | first step (s) | loss | lightning kernel |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.precision,
            r.batch,
            r.error.as_ref().map_or(fmt(r.tokens_per_s, 0), |e| format!(
                "{} ({e})",
                fmt(r.tokens_per_s, 0)
            )),
            fmt(r.mfu.map(|m| m * 100.0), 1),
            fmt(r.peak_memory_gib, 1),
            fmt(r.first_step_s, 1),
            fmt(r.loss, 3),
            r.lightning_kernel.as_deref().unwrap_or("-"),
        );
    }
    s
}
