//! Experiment sweeps: a YAML file names a base model, axes over config paths, compute budgets and
//! seeds; [`SweepSpec::plan`] expands and validates every run before anything trains, and
//! [`run_sweep`] trains them (skipping finished ones, resuming interrupted ones, recording
//! failures) while keeping the sweep's `results.csv` current.
#![warn(missing_docs)]

pub mod error;
pub mod results;
pub mod runner;
pub mod spec;

pub use error::SweepError;
pub use results::{write_results, RunOutcome};
pub use runner::{finished, run_dir, run_sweep, SweepOptions};
pub use spec::{Axes, PlannedRun, SweepSpec};
