//! Running a planned sweep: one directory per run, finished runs skipped, interrupted ones
//! resumed, failures recorded, `results.csv` rewritten as runs finish.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::backend::AutodiffBackend;
use scalelab_blocks::KernelBackend;
use scalelab_train::{train, Summary, TrainOptions};

use crate::error::SweepError;
use crate::results::{write_results, RunOutcome};
use crate::spec::{PlannedRun, SweepSpec};

/// How to run a sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Runs trained at once (CPU cores; keep 1 on a GPU).
    pub jobs: usize,
    /// Progress bars for each run (only with one job).
    pub progress: bool,
    /// Set from outside (Ctrl-C) to stop after checkpointing the runs in flight.
    pub stop: Option<Arc<AtomicBool>>,
    /// Tokenized-corpus cache.
    pub cache_dir: PathBuf,
    /// Bytes each run may use (see `TrainOptions::max_memory`).
    pub max_memory: Option<u64>,
}

/// Where a run lives inside the sweep directory.
pub fn run_dir(sweep_dir: &Path, run: &PlannedRun) -> PathBuf {
    sweep_dir.join("runs").join(&run.name)
}

/// A finished run's summary, if it finished (completed its budget).
pub fn finished(sweep_dir: &Path, run: &PlannedRun) -> Option<Summary> {
    let text = std::fs::read_to_string(run_dir(sweep_dir, run).join("summary.json")).ok()?;
    serde_json::from_str::<Summary>(&text)
        .ok()
        .filter(|s| s.completed)
}

/// Runs every planned run that has not finished; returns the outcomes in plan order.
pub fn run_sweep<B>(
    spec: &SweepSpec,
    runs: &[PlannedRun],
    sweep_dir: &Path,
    device: &B::Device,
    opts: &SweepOptions,
    on_done: impl FnMut(&PlannedRun, &RunOutcome) + Send,
) -> Result<Vec<RunOutcome>, SweepError>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
    // One process per sweep directory: a second one stops here without touching anything.
    let _lock =
        scalelab_train::lock::DirLock::acquire(sweep_dir, "sweep").map_err(|e| match e {
            locked @ scalelab_train::TrainError::Locked { .. } => SweepError::Locked(locked),
            other => SweepError::Io {
                path: sweep_dir.to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
    std::fs::create_dir_all(sweep_dir.join("runs")).map_err(|e| SweepError::io(sweep_dir, e))?;
    write_meta(spec, runs, sweep_dir)?;
    let outcomes: Vec<Mutex<RunOutcome>> = runs
        .iter()
        .map(|r| {
            Mutex::new(match finished(sweep_dir, r) {
                Some(s) => RunOutcome::Done(Box::new(s)),
                None => RunOutcome::Pending,
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let on_done = Mutex::new(on_done);
    let stopped = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= runs.len() || stopped() {
            return;
        }
        if !matches!(*outcomes[i].lock().unwrap(), RunOutcome::Pending) {
            continue;
        }
        let run = &runs[i];
        let dir = run_dir(sweep_dir, run);
        let train_opts = TrainOptions {
            resume: true,
            progress: opts.progress && opts.jobs <= 1,
            stop: opts.stop.clone(),
            cache_dir: opts.cache_dir.clone(),
            max_memory: opts.max_memory,
        };
        let outcome = match train::<B>(&run.config, &dir, device, &train_opts) {
            Ok(s) if s.completed => RunOutcome::Done(Box::new(s)),
            Ok(_) => RunOutcome::Pending,
            Err(e) => {
                let _ = std::fs::write(dir.join("error.txt"), e.to_string());
                RunOutcome::Failed(e.to_string())
            }
        };
        *outcomes[i].lock().unwrap() = outcome.clone();
        let mut on_done = on_done.lock().unwrap();
        let current: Vec<RunOutcome> = outcomes.iter().map(|o| o.lock().unwrap().clone()).collect();
        if let Err(e) = write_results(sweep_dir, runs, &current) {
            eprintln!("warning: could not update results.csv: {e}");
        }
        (*on_done)(run, &outcome);
    };
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(worker);
        }
    });
    let outcomes: Vec<RunOutcome> = outcomes
        .into_iter()
        .map(|o| o.into_inner().unwrap())
        .collect();
    write_results(sweep_dir, runs, &outcomes)?;
    Ok(outcomes)
}

fn write_meta(spec: &SweepSpec, runs: &[PlannedRun], sweep_dir: &Path) -> Result<(), SweepError> {
    let axes: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.axes.keys()).collect();
    let mut budgets: Vec<f64> = runs.iter().filter_map(|r| r.budget).collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let meta = serde_json::json!({
        "name": spec.name,
        "kind": spec.kind,
        "axes": axes,
        "budgets": budgets,
        "seeds": spec.seeds,
    });
    let path = sweep_dir.join("sweep.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&meta).expect("json"))
        .map_err(|e| SweepError::io(&path, e))?;
    let yaml = sweep_dir.join("sweep.yaml");
    std::fs::write(&yaml, serde_saphyr::to_string(spec).unwrap_or_default())
        .map_err(|e| SweepError::io(&yaml, e))
}
