//! `scalelab train CONFIG [--out DIR] [--resume] [overrides]`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Result;
use scalelab_train::{train, Precision, RunConfig, TrainOptions};

use crate::backend;

/// Arguments of `scalelab train`.
#[derive(clap::Args)]
pub struct Args {
    /// A model config (trains with default settings on the synthetic language) or a run file
    /// with `model:`, `train:` and `data:` sections.
    pub config: PathBuf,
    /// Run directory; defaults to runs/NAME, NAME the model's name.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in the output directory from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override train.budget with this many steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Override train.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override train.seq_len.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Override train.lr.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override train.peak_flops (device peak FLOP/s for MFU, e.g. 989e12).
    #[arg(long)]
    pub peak_flops: Option<f64>,
    /// Where tokenized text corpora are cached.
    #[arg(long, default_value = ".scalelab-cache")]
    pub cache_dir: PathBuf,
    /// Skip the retrieval probes at the end.
    #[arg(long)]
    pub no_probes: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// GiB the run may use: a run whose weights, gradients, AdamW state and activations cannot
    /// fit is refused before anything is allocated (default: the RAM available, on CPU builds).
    #[arg(long)]
    pub max_memory: Option<f64>,
    /// Override train.precision: f32, bf16-mixed (f32 weights, bf16 matrix products and
    /// attention; cuda builds only, not yet checked on a GPU) or bf16 (bf16 weights too; cuda builds only).
    #[arg(long)]
    pub precision: Option<Precision>,
    /// GPU builds: time every kernel launch and append one `| duration | kernel` line per
    /// launch to FILE (launches are serialised, so the run is slower; for finding where a
    /// step's time goes, not for throughput). Summarise with crates/train/bench/kernel_profile.py.
    #[arg(long, value_name = "FILE")]
    pub profile_kernels: Option<PathBuf>,
}

/// Trains one model and prints where its logs are.
pub fn run(args: &Args) -> Result<()> {
    let mut cfg = RunConfig::from_yaml_file(&args.config)?;
    let t = &mut cfg.train;
    if let Some(steps) = args.steps {
        t.budget = scalelab_train::Budget {
            steps: Some(steps),
            tokens: None,
            flops: None,
        };
    }
    t.batch_size = args.batch_size.unwrap_or(t.batch_size);
    t.seq_len = args.seq_len.unwrap_or(t.seq_len);
    t.lr = args.lr.unwrap_or(t.lr);
    t.seed = args.seed.unwrap_or(t.seed);
    t.peak_flops = args.peak_flops.or(t.peak_flops);
    t.precision = args
        .precision
        .or(t.precision)
        .or(backend::DEFAULT_PRECISION);
    let precision = t.precision.unwrap_or(Precision::F32);
    anyhow::ensure!(
        backend::PRECISIONS.contains(&precision),
        "train.precision `{precision}` needs a build with --features cuda; this one trains on {} \
         in f32 (set train.precision: f32, or pass --precision f32)",
        backend::NAME
    );
    if args.no_probes {
        t.probes = None;
    }
    cfg.validate()?;
    let name = if cfg.model.name.is_empty() {
        "run".to_string()
    } else {
        cfg.model.name.clone()
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));

    let stop = super::stop_on_ctrl_c(
        "stopping: finishing this step and writing a checkpoint (Ctrl-C again to abort)",
    )?;

    let p = cfg.model.param_count();
    eprintln!(
        "training {name} ({:.2}M parameters, {:.2}M activated) on {} in {precision} for {} steps of {} tokens -> {}",
        p.total as f64 / 1e6,
        p.activated as f64 / 1e6,
        backend::NAME,
        cfg.total_steps()?,
        cfg.tokens_per_step(),
        dir.display()
    );
    let opts = TrainOptions {
        resume: args.resume,
        progress: !args.quiet,
        stop: Some(stop.clone()),
        cache_dir: args.cache_dir.clone(),
        max_memory: super::max_memory(args.max_memory),
    };
    backend::kernel_cache(
        &args.cache_dir.join("cubecl"),
        args.profile_kernels.as_deref(),
    );
    let s = match precision {
        #[cfg(feature = "cuda")]
        Precision::Bf16 => train::<backend::TrainBf16>(&cfg, &dir, &backend::device(), &opts)?,
        _ => train::<backend::Train>(&cfg, &dir, &backend::device(), &opts)?,
    };
    let probes = s.probes.to_string();
    println!(
        "{} {} steps: train loss {:.4}, val loss {:.4}{}{} | {:.0} tokens/s{} | {:.1}s",
        if s.completed { "done:" } else { "stopped:" },
        s.steps,
        s.train_loss,
        s.val_loss,
        s.entropy_rate
            .map_or(String::new(), |h| format!(" (entropy rate {h:.4})")),
        if probes.is_empty() {
            String::new()
        } else {
            format!(" | {probes}")
        },
        s.tokens_per_s,
        s.mfu
            .map_or(String::new(), |m| format!(", MFU {:.1}%", m * 100.0)),
        s.wall_secs
    );
    println!("run directory: {}", dir.display());
    println!(
        "metrics: {}   summary: {}",
        dir.join("metrics.jsonl").display(),
        dir.join("summary.json").display()
    );
    println!("TensorBoard: tensorboard --logdir {}", dir.display());
    if !s.completed {
        println!(
            "continue with: scalelab train {} --out {} --resume",
            args.config.display(),
            dir.display()
        );
    }
    if stop.load(Ordering::SeqCst) {
        // Interrupted by Ctrl-C, after checkpointing: the shell's convention for SIGINT.
        std::process::exit(130);
    }
    Ok(())
}
