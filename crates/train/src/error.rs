//! Everything that can stop a run, each saying what to do about it.

use std::path::PathBuf;

/// Why a run could not start, continue or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The run file is not valid YAML of the expected shape.
    #[error("{path}: {message}")]
    Config {
        /// The run file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The model config is invalid.
    #[error(transparent)]
    Model(#[from] scalelab_config::ConfigError),
    /// The data could not be opened.
    #[error(transparent)]
    Data(#[from] scalelab_data::DataError),
    /// A training setting breaks a rule.
    #[error(transparent)]
    Invalid(#[from] scalelab_config::FieldError),
    /// The run directory already holds a run and `--resume` was not given.
    #[error(
        "{dir} already holds a run (checkpoint at step {step}); pass --resume to continue it, \
         or choose another output directory"
    )]
    RunExists {
        /// The run directory.
        dir: PathBuf,
        /// Its latest checkpoint's step.
        step: u64,
    },
    /// `--resume` with a config that differs from the one the run started with.
    #[error(
        "{dir} was started with a different config ({what}); resume with the saved config \
         {dir}/config.yaml, or start a new run in another directory"
    )]
    ConfigChanged {
        /// The run directory.
        dir: PathBuf,
        /// What differs.
        what: String,
    },
    /// A checkpoint is unreadable.
    #[error("checkpoint {path} is unusable: {reason}. {hint}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// The run cannot fit in the memory available.
    #[error(
        "this run needs {needed}, more than the {limit} available: lower model.hidden_size, \
         model.layers, model.vocab_size or train.batch_size, or raise --max-memory if the limit \
         is wrong"
    )]
    TooLarge {
        /// What it needs, by part.
        needed: String,
        /// The limit and where it comes from.
        limit: String,
    },
    /// Another process is writing the directory.
    #[error(
        "{what} directory {dir} is in use by {holder} (a second `scalelab train` or `scalelab \
         sweep` on it): wait for that process to finish, or stop it; nothing was changed"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// `run` or `sweep`.
        what: String,
        /// Who holds the lock.
        holder: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {value} at step {step}; the last good checkpoint is {last_checkpoint}. \
         Lower train.lr or raise the warm-up, then resume from it or restart"
    )]
    NonFinite {
        /// The step whose loss was not finite.
        step: u64,
        /// The loss value.
        value: f64,
        /// Where the last good checkpoint is (or "none").
        last_checkpoint: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
