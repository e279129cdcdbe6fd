//! What a run is: the model, the training settings and the data, read from YAML.

use std::path::{Path, PathBuf};

use scalelab_config::{FieldError, ModelConfig};
use scalelab_data::probes::ProbeGrid;
use scalelab_data::DataConfig;
use scalelab_scaling::flops::Convention;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// How long to train: exactly one of steps, tokens or FLOPs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Optimizer steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Training tokens (rounded up to whole steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<f64>,
    /// Training FLOPs under `flop_convention` (rounded up to whole steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
}

/// As written in a run file: `{ steps: 400 }`, `{ steps: 0, tokens: 1e6 }`.
impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            self.steps.map(|s| format!("steps: {s}")),
            self.tokens.map(|t| format!("tokens: {t:e}")),
            self.flops.map(|c| format!("flops: {c:e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        write!(f, "{{ {} }}", parts.join(", "))
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            steps: Some(400),
            tokens: None,
            flops: None,
        }
    }
}

/// Learning-rate schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant at the peak (the paper's scaling-law runs).
    Constant,
    /// Cosine from the peak to `min_lr_ratio * lr` at the last step.
    #[default]
    Cosine,
    /// Warm-up, stable at the peak, then a linear decay over the last `decay_fraction` of steps
    /// (MiniMax's pre-training shape).
    Wsd,
}

/// The float precision of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// Everything in f32.
    #[serde(rename = "f32")]
    F32,
    /// f32 weights, AdamW state, residual stream, norms, softmax statistics, loss and gradient
    /// norm; bf16 inputs to the matrix products and to the attention kernels. Opt-in until it has run on the GPU machine.
    #[serde(rename = "bf16-mixed")]
    Bf16Mixed,
    /// Everything in bf16 (weights and optimizer state too), except norm statistics, softmax
    /// and the loss.
    #[serde(rename = "bf16")]
    Bf16,
}

impl Precision {
    /// The name as written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16Mixed => "bf16-mixed",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16-mixed" => Ok(Self::Bf16Mixed),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision `{other}`: use f32, bf16-mixed or bf16"
            )),
        }
    }
}

/// Training settings; every field has a default suited to the tiny CPU models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Seed of the model init and the data order. The same seed repeats a CPU run bit for bit.
    pub seed: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// How long to train.
    pub budget: Budget,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Shape after the warm-up.
    pub schedule: Schedule,
    /// Final learning rate as a fraction of the peak (cosine, wsd).
    pub min_lr_ratio: f64,
    /// Share of the steps spent decaying (wsd).
    pub decay_fraction: f64,
    /// AdamW beta1, beta2.
    pub betas: [f64; 2],
    /// AdamW epsilon.
    pub eps: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    pub grad_clip: f64,
    /// Log metrics every this many steps.
    pub log_every: u64,
    /// Validation loss every this many steps (and at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: u64,
    /// Checkpoint every this many steps (and at the end, and on Ctrl-C).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Retrieval probes run at the end (`null` skips them).
    pub probes: Option<ProbeGrid>,
    /// Also run the probes every this many steps during training (none: only at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_every: Option<u64>,
    /// Peak FLOP/s of the device for MFU (e.g. 989e12 for an H100 in bf16); none: no MFU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_flops: Option<f64>,
    /// How FLOPs are counted for budgets and MFU.
    pub flop_convention: Convention,
    /// Float precision; left out: the backend's default (`bf16-mixed` on CUDA, `f32` elsewhere),
    /// which `scalelab train` writes into the run's `config.yaml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 16,
            seq_len: 128,
            grad_accum: 1,
            budget: Budget::default(),
            lr: 3e-3,
            warmup_steps: 40,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.1,
            decay_fraction: 0.2,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            log_every: 10,
            eval_every: 100,
            eval_batches: 4,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            probes: Some(crate::probes::default_grid()),
            probe_every: None,
            peak_flops: None,
            flop_convention: Convention::Exact,
            precision: None,
        }
    }
}

/// A whole run: model, training settings, data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model.
    pub model: ModelConfig,
    /// The training settings.
    pub train: TrainSettings,
    /// The data.
    pub data: DataConfig,
}

/// A run file as written: the model may be a path to a model config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    model: ModelRef,
    #[serde(default)]
    train: TrainSettings,
    #[serde(default)]
    data: DataConfig,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ModelRef {
    Path(PathBuf),
    Inline(Box<ModelConfig>),
}

impl RunConfig {
    /// Reads a run file (`model:`, `train:`, `data:`) or a bare model config, which trains with
    /// the default settings on the synthetic language.
    pub fn from_yaml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let is_run_file = text.lines().any(|l| l.starts_with("model:"));
        let run = if is_run_file {
            let file: RunFile = serde_saphyr::from_str(&text).map_err(|e| TrainError::Config {
                path: path.to_path_buf(),
                message: scalelab_config::yaml_message(e),
            })?;
            let model = match file.model {
                ModelRef::Path(p) => {
                    let p = path.parent().unwrap_or(Path::new(".")).join(p);
                    ModelConfig::from_yaml_file(&p)?
                }
                ModelRef::Inline(m) => {
                    m.validate().map_err(|e| e.in_file(path))?;
                    *m
                }
            };
            RunConfig {
                model,
                train: file.train,
                data: file.data,
            }
        } else {
            RunConfig {
                model: ModelConfig::from_yaml_file(path)?,
                train: TrainSettings::default(),
                data: DataConfig::default(),
            }
        };
        run.validate().map_err(|e| match e {
            TrainError::Invalid(e) => {
                TrainError::Invalid(e.within(&format!("{}: ", path.display())))
            }
            other => other,
        })?;
        Ok(run)
    }

    /// Checks the training settings and that the data fits the model.
    pub fn validate(&self) -> Result<(), TrainError> {
        let t = &self.train;
        let invalid = |field: &str, value: String, rule: &str| {
            Err(TrainError::Invalid(FieldError::new(field, value, rule)))
        };
        for (field, v) in [
            ("train.batch_size", t.batch_size),
            ("train.seq_len", t.seq_len),
            ("train.grad_accum", t.grad_accum),
            ("train.keep_checkpoints", t.keep_checkpoints),
        ] {
            if v == 0 {
                return invalid(field, v.to_string(), "must be at least 1");
            }
        }
        if t.probe_every == Some(0) {
            return invalid(
                "train.probe_every",
                "0".into(),
                "must be at least 1, or left out",
            );
        }
        for (field, v) in [
            ("train.log_every", t.log_every),
            ("train.eval_every", t.eval_every),
            ("train.checkpoint_every", t.checkpoint_every),
        ] {
            if v == 0 {
                return invalid(field, v.to_string(), "must be at least 1");
            }
        }
        let b = &t.budget;
        let given = [b.steps.is_some(), b.tokens.is_some(), b.flops.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return invalid(
                "train.budget",
                b.to_string(),
                "give exactly one of steps, tokens or flops",
            );
        }
        if b.steps == Some(0)
            || b.tokens.is_some_and(not_positive)
            || b.flops.is_some_and(not_positive)
        {
            return invalid("train.budget", b.to_string(), "must be positive");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return invalid(
                "train.lr",
                t.lr.to_string(),
                "must be a positive number, e.g. 3e-4",
            );
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return invalid(
                "train.min_lr_ratio",
                t.min_lr_ratio.to_string(),
                "must be between 0 and 1",
            );
        }
        if !(0.0..=1.0).contains(&t.decay_fraction) {
            return invalid(
                "train.decay_fraction",
                t.decay_fraction.to_string(),
                "must be between 0 and 1",
            );
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return invalid(
                "train.betas",
                format!("[{}, {}]", t.betas[0], t.betas[1]),
                "each must be in [0, 1)",
            );
        }
        if t.grad_clip.is_nan() || t.grad_clip < 0.0 {
            return invalid(
                "train.grad_clip",
                t.grad_clip.to_string(),
                "must be >= 0 (0 disables clipping)",
            );
        }
        if let Some(p) = t.peak_flops {
            if not_positive(p) {
                return invalid(
                    "train.peak_flops",
                    p.to_string(),
                    "must be positive, e.g. 989e12",
                );
            }
        }
        Ok(())
    }

    /// Training tokens per optimizer step.
    pub fn tokens_per_step(&self) -> u64 {
        (self.train.batch_size * self.train.seq_len * self.train.grad_accum) as u64
    }

    /// Training FLOPs per token under the configured convention.
    pub fn flops_per_token(&self) -> Result<f64, TrainError> {
        scalelab_scaling::flops::training_flops_per_token(
            &self.model,
            self.train.seq_len,
            self.train.flop_convention,
        )
        .map_err(|e| {
            TrainError::Invalid(FieldError::new(
                "train.flop_convention",
                format!("{:?}", self.train.flop_convention),
                e.to_string(),
            ))
        })
    }

    /// Optimizer steps the budget buys.
    pub fn total_steps(&self) -> Result<u64, TrainError> {
        let b = &self.train.budget;
        let per_step = self.tokens_per_step() as f64;
        Ok(match (b.steps, b.tokens, b.flops) {
            (Some(s), _, _) => s,
            (_, Some(tokens), _) => (tokens / per_step).ceil() as u64,
            (_, _, Some(flops)) => (flops / (self.flops_per_token()? * per_step)).ceil() as u64,
            _ => unreachable!("validated: one budget is given"),
        }
        .max(1))
    }
}

/// True for zero, negatives and NaN.
fn not_positive(x: f64) -> bool {
    x.is_nan() || x <= 0.0
}
