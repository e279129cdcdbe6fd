//! The scalelab training loop.
//!
//! [`train`] takes a [`RunConfig`] (model, training settings, data) and a run directory, and
//! leaves in it: `config.yaml`, `metrics.jsonl`, TensorBoard event files under `tensorboard/`,
//! atomic checkpoints under `checkpoints/`, and `summary.json`. A run stopped by Ctrl-C or a
//! crash continues with `resume` and produces the same losses as one that never stopped.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod grads;
pub mod loader;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod probes;
pub mod schedule;
pub mod settings;
pub mod trainer;

pub use error::TrainError;
pub use settings::{Budget, Precision, RunConfig, Schedule, TrainSettings};
pub use trainer::{train, Summary, TrainOptions};
