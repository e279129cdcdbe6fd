//! Retrieval probes on a trained model: MQAR and needle-in-a-haystack accuracies per grid cell.

use std::fmt;

use burn::tensor::{Int, Tensor, TensorData};
use scalelab_blocks::{HybridDecoder, KernelBackend};
use scalelab_data::probes::{score, MqarGrid, NiahGrid, ProbeGrid, ProbeSet, ProbeTask};
use scalelab_data::Dataset;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The default grid: small enough for a CPU run to finish its probes in seconds.
pub fn default_grid() -> ProbeGrid {
    ProbeGrid {
        seed: 0,
        syntax: None,
        mqar: Some(MqarGrid {
            pairs: vec![4, 8],
            queries: None,
            examples: 32,
        }),
        niah: Some(NiahGrid {
            context_lengths: vec![128, 256],
            depths: vec![0.0, 0.5, 1.0],
            examples: 16,
        }),
    }
}

/// Accuracy of one grid cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeCell {
    /// `mqar` or `niah`.
    pub probe: String,
    /// MQAR: statements per example.
    pub pairs: Option<usize>,
    /// NIAH: tokens per example.
    pub context_len: Option<usize>,
    /// NIAH: needle depth in `[0, 1]`.
    pub depth: Option<f64>,
    /// Fraction of targets predicted exactly.
    pub accuracy: f64,
    /// Accuracy of a context-blind guess.
    pub chance: f64,
}

/// All probe results of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeScores {
    /// One entry per grid cell.
    pub cells: Vec<ProbeCell>,
}

impl ProbeScores {
    fn mean(&self, probe: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.probe == probe)
            .map(|c| c.accuracy)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Mean MQAR accuracy over the grid.
    pub fn mqar(&self) -> Option<f64> {
        self.mean("mqar")
    }

    /// Mean NIAH accuracy over the grid.
    pub fn niah(&self) -> Option<f64> {
        self.mean("niah")
    }

    /// Accuracy of a context-blind guess (the largest over the cells; one syntax gives one).
    pub fn chance(&self) -> Option<f64> {
        self.cells.iter().map(|c| c.chance).reduce(f64::max)
    }

    /// Result-table columns: `mqar`, `niah`, `mqar_pairs<P>`, `niah_ctx<L>_depth<D>`.
    pub fn columns(&self) -> Vec<(String, f64)> {
        let mut cols: Vec<(String, f64)> = [("mqar", self.mqar()), ("niah", self.niah())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        for c in &self.cells {
            let key = match (c.pairs, c.context_len, c.depth) {
                (Some(p), _, _) => format!("mqar_pairs{p}"),
                (_, Some(l), Some(d)) => format!("niah_ctx{l}_depth{d}"),
                _ => continue,
            };
            cols.push((key, c.accuracy));
        }
        cols
    }

    /// TensorBoard scalars: the same as [`ProbeScores::columns`].
    pub fn scalars(&self) -> Vec<(String, f64)> {
        self.columns()
    }
}

impl fmt::Display for ProbeScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [("MQAR", self.mqar()), ("NIAH", self.niah())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {:.0}%", v * 100.0)))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// Runs every cell of `grid` on `model` (argmax next-token predictions at the target positions).
pub fn run_probes<B: KernelBackend>(
    model: &HybridDecoder<B>,
    grid: &ProbeGrid,
    data: &dyn Dataset,
    device: &B::Device,
) -> Result<ProbeScores, TrainError> {
    let sets = grid.generate(data)?;
    let mut cells = Vec::with_capacity(sets.len());
    for set in &sets {
        let predictions = predict(model, set, device);
        let s = score(&set.examples, &predictions)?;
        let (probe, pairs, context_len, depth) = match set.task {
            ProbeTask::Mqar { pairs, .. } => ("mqar", Some(pairs), None, None),
            ProbeTask::Niah { context_len, depth } => {
                ("niah", None, Some(context_len), Some(depth))
            }
        };
        cells.push(ProbeCell {
            probe: probe.into(),
            pairs,
            context_len,
            depth,
            accuracy: s.accuracy(),
            chance: set.chance,
        });
    }
    Ok(ProbeScores { cells })
}

/// Argmax predictions at each example's target positions, examples of equal length batched.
fn predict<B: KernelBackend>(
    model: &HybridDecoder<B>,
    set: &ProbeSet,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(set.examples.len());
    for chunk in set.examples.chunks(16) {
        let len = chunk[0].tokens.len();
        if chunk.iter().any(|e| e.tokens.len() != len) {
            for e in chunk {
                out.extend(predict_batch(model, std::slice::from_ref(e), device));
            }
        } else {
            out.extend(predict_batch(model, chunk, device));
        }
    }
    out
}

fn predict_batch<B: KernelBackend>(
    model: &HybridDecoder<B>,
    examples: &[scalelab_data::probes::ProbeExample],
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let (n, len) = (examples.len(), examples[0].tokens.len());
    let ids: Vec<i64> = examples
        .iter()
        .flat_map(|e| e.tokens.iter().map(|&t| t as i64))
        .collect();
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, len]), device);
    let argmax: Vec<i64> = model
        .forward(tokens)
        .logits
        .argmax(2)
        .into_data()
        .iter::<i64>()
        .collect();
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.targets
                .iter()
                .map(|&(pos, _)| argmax[i * len + pos] as u32)
                .collect()
        })
        .collect()
}
