//! What can go wrong with a sweep, naming the run, the path and the rule.

use std::path::PathBuf;

/// Why a sweep could not be planned or recorded. (A run that fails while training is recorded in
/// the results with its error; the sweep goes on.)
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The sweep file is not valid YAML of the expected shape.
    #[error("{path}: {message}")]
    Spec {
        /// The sweep file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A sweep-level setting breaks a rule.
    #[error(transparent)]
    Invalid(#[from] scalelab_config::FieldError),
    /// The IsoFLOP plan spec named by `plan:` cannot be resolved.
    #[error(transparent)]
    Plan(#[from] scalelab_scaling::plan::PlanError),
    /// Another process is running this sweep directory.
    #[error(transparent)]
    Locked(scalelab_train::TrainError),
    /// One run of the plan is invalid.
    #[error("run {run}: {path}: {message}")]
    Run {
        /// The run's name.
        run: String,
        /// The config path(s) that made it invalid.
        path: String,
        /// The rule it breaks.
        message: String,
    },
}

impl SweepError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
