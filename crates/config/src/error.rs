//! Errors a user can cause with a config file, each naming the field and the fix.

use std::path::PathBuf;

/// Why a model config could not be read or is not a valid model.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not YAML of the expected shape (syntax, unknown key, wrong type, missing key).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or `<string>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{field} = {value}: {rule}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `attention.softmax.kv_heads`.
        field: String,
        /// The value as written.
        value: String,
        /// The rule it breaks, and what would satisfy it.
        rule: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// Prefixes an `Invalid` or `Parse` error with where the config came from.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Self::Invalid { field, value, rule } => Self::Invalid {
                field: format!("{}: {field}", path.display()),
                value,
                rule,
            },
            Self::Parse { message, .. } => Self::Parse {
                origin: path.display().to_string(),
                message,
            },
            other => other,
        }
    }
}
