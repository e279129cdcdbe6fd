//! A size check before anything is allocated: a lower bound of what a run needs (weights,
//! gradients, AdamW state, the activations a step keeps) against the memory available, so a
//! config that cannot fit fails with the sizes instead of an allocator abort.

use crate::error::TrainError;
use crate::settings::{Precision, RunConfig};

/// Bytes a run needs at least, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// The weights.
    pub weights: u64,
    /// Their gradients.
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// A lower bound of what one micro-batch keeps for its backward: a few residual-width
    /// tensors per layer and the logits.
    pub activations: u64,
}

impl MemoryEstimate {
    /// The lower bound for `run`.
    pub fn of(run: &RunConfig) -> Self {
        let m = &run.model;
        let t = &run.train;
        let params = m.param_count().total;
        let weight_bytes = match t.precision {
            Some(Precision::Bf16) => 2,
            _ => 4,
        };
        let tokens = (t.batch_size * t.seq_len) as u64;
        // Per layer at least the residual stream, the normed input and the attention and FFN
        // outputs, in 2-byte elements; and the logits with their gradient.
        let per_layer = 4 * m.hidden_size as u64 * 2;
        let activations = tokens * (m.layers as u64 * per_layer + 2 * 2 * m.vocab_size as u64);
        Self {
            weights: params * weight_bytes,
            gradients: params * weight_bytes,
            optimizer: 2 * params * weight_bytes,
            activations,
        }
    }

    /// The total.
    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.activations
    }

    /// Fails naming the sizes when the total exceeds `limit` bytes (`what` says where the limit
    /// comes from).
    pub fn check(&self, limit: u64, what: &str) -> Result<(), TrainError> {
        if self.total() <= limit {
            return Ok(());
        }
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        Err(TrainError::TooLarge {
            needed: format!(
                "at least {} (weights {}, gradients {}, AdamW state {}, activations {})",
                gib(self.total()),
                gib(self.weights),
                gib(self.gradients),
                gib(self.optimizer),
                gib(self.activations)
            ),
            limit: format!("{} ({what})", gib(limit)),
        })
    }
}

/// The memory this machine has available now (`MemAvailable` of `/proc/meminfo`), if known.
pub fn available_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
