//! The sweep-level `results.csv`: the columns `scalelab fit` reads, plus the run's settings,
//! axis values and probe scores.

use std::collections::BTreeSet;
use std::path::Path;

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
    let axes: BTreeSet<&String> = runs.iter().flat_map(|r| r.axes.keys()).collect();
    let probe_cols: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            RunOutcome::Done(s) => Some(s.probes.columns()),
            _ => None,
        })
        .flatten()
        .map(|(k, _)| k)
        .collect();
    let mut header: Vec<String> = [
        "name",
        "arch",
        "params",
        "activated_params",
        "tokens",
        "flops",
        "budget",
        "loss",
        "train_loss",
        "val_loss",
        "entropy_rate",
        "status",
        "wall_secs",
        "tokens_per_s",
        "softmax_fraction",
        "experts",
        "top_k",
        "expert_width",
        "residual",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(probe_cols.iter().cloned());
    header.extend(axes.iter().map(|a| format!("axis.{a}")));
    header.push("run_dir".into());

    let tmp = sweep_dir.join(".results.csv.tmp");
    let mut w = csv::Writer::from_path(&tmp).map_err(|e| SweepError::io(&tmp, e.into()))?;
    w.write_record(&header)
        .map_err(|e| SweepError::io(&tmp, e.into()))?;
    for (run, outcome) in runs.iter().zip(outcomes) {
        let m = &run.config.model;
        let p = m.param_count();
        let moe = m.ffn.moe.as_ref();
        let (status, s) = match outcome {
            RunOutcome::Pending => continue,
            RunOutcome::Done(s) => ("ok", Some(s.as_ref())),
            RunOutcome::Failed(_) => ("failed", None),
        };
        let num = |f: &dyn Fn(&Summary) -> f64| s.map_or(String::new(), |s| fmt(f(s)));
        let mut row = vec![
            run.name.clone(),
            run.arch.clone(),
            p.total.to_string(),
            p.activated.to_string(),
            num(&|s| s.tokens as f64),
            num(&|s| s.flops),
            run.budget.map_or(String::new(), fmt),
            num(&|s| s.val_loss),
            num(&|s| s.train_loss),
            num(&|s| s.val_loss),
            s.and_then(|s| s.entropy_rate).map_or(String::new(), fmt),
            status.into(),
            num(&|s| s.wall_secs),
            num(&|s| s.tokens_per_s),
            fmt(p.softmax_layers as f64 / m.layers as f64),
            moe.map_or("0".into(), |m| m.experts.to_string()),
            moe.map_or("0".into(), |m| m.top_k.to_string()),
            moe.map_or(String::new(), |m| m.expert_width.to_string()),
            format!("{:?}", m.residual).to_lowercase(),
        ];
        let probes = s.map(|s| s.probes.columns()).unwrap_or_default();
        for col in &probe_cols {
            row.push(
                probes
                    .iter()
                    .find(|(k, _)| k == col)
                    .map_or(String::new(), |(_, v)| fmt(*v)),
            );
        }
        for a in &axes {
            row.push(run.axes.get(*a).map_or(String::new(), |v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        row.push(format!("runs/{}", run.name));
        w.write_record(&row)
            .map_err(|e| SweepError::io(&tmp, e.into()))?;
    }
    w.flush().map_err(|e| SweepError::io(&tmp, e))?;
    drop(w);
    let path = sweep_dir.join("results.csv");
    std::fs::rename(&tmp, &path).map_err(|e| SweepError::io(&path, e))
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}
