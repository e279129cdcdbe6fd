//! The sweep-level `results.csv`: one [`RunRecord`] per finished or failed run (the columns
//! `scalelab fit` reads, plus the run's settings, axis values and probe scores), written through
//! [`scalelab_scaling::record`].

use std::path::Path;

use scalelab_scaling::record::{write_records, RunRecord};
use scalelab_train::Summary;

use crate::error::SweepError;
use crate::spec::PlannedRun;

/// What became of a run.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// Not run yet, or stopped before its budget was spent.
    Pending,
    /// Finished.
    Done(Box<Summary>),
    /// Failed with this error.
    Failed(String),
}

/// Rewrites `results.csv` (atomically) with one row per finished or failed run.
pub fn write_results(
    sweep_dir: &Path,
    runs: &[PlannedRun],
    outcomes: &[RunOutcome],
) -> Result<(), SweepError> {
    let records: Vec<RunRecord> = runs
        .iter()
        .zip(outcomes)
        .filter_map(|(run, outcome)| record(run, outcome))
        .collect();
    write_records(&sweep_dir.join("results.csv"), &records)
        .map_err(|e| SweepError::io(e.path, e.source))
}

/// The row of a run: its settings from the plan, its results from the summary (`None` while
/// pending).
fn record(run: &PlannedRun, outcome: &RunOutcome) -> Option<RunRecord> {
    let (status, s) = match outcome {
        RunOutcome::Pending => return None,
        RunOutcome::Done(s) => ("ok", Some(s.as_ref())),
        RunOutcome::Failed(_) => ("failed", None),
    };
    let m = &run.config.model;
    let p = m.param_count();
    let moe = m.ffn.moe.as_ref();
    let of = |f: fn(&Summary) -> f64| s.map(f);
    Some(RunRecord {
        name: run.name.clone(),
        arch: run.arch.clone(),
        params: Some(p.total as f64),
        activated_params: Some(p.activated as f64),
        tokens: of(|s| s.tokens as f64),
        flops: of(|s| s.flops),
        budget: run.budget,
        loss: of(|s| s.val_loss),
        train_loss: of(|s| s.train_loss),
        val_loss: of(|s| s.val_loss),
        entropy_rate: s.and_then(|s| s.entropy_rate),
        status: Some(status.into()),
        wall_secs: of(|s| s.wall_secs),
        tokens_per_s: of(|s| s.tokens_per_s),
        softmax_fraction: Some(p.softmax_layers as f64 / m.layers as f64),
        experts: Some(moe.map_or(0.0, |m| m.experts as f64)),
        top_k: Some(moe.map_or(0.0, |m| m.top_k as f64)),
        expert_width: moe.map(|m| m.expert_width as f64),
        residual: Some(format!("{:?}", m.residual).to_lowercase()),
        probe_chance: s.and_then(|s| s.probes.chance()),
        probes: s
            .map(|s| s.probes.columns().into_iter().collect())
            .unwrap_or_default(),
        axes: run
            .axes
            .iter()
            .map(|(a, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (a.clone(), text)
            })
            .collect(),
        run_dir: Some(format!("runs/{}", run.name)),
    })
}
