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
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

/// A YAML parser's message without its leading `error: ` (the caller says where it comes from).
pub fn yaml_message(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    text.strip_prefix("error: ")
        .map_or(text.clone(), str::to_string)
}

/// YAML text that is not of the expected shape (syntax, unknown key, wrong type, missing key),
/// as every crate that reads a YAML file reports it: `origin: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ParseError {
    /// The file, or `<string>`.
    pub origin: String,
    /// The parser's message, with line and column.
    pub message: String,
}

impl ParseError {
    /// The same error said to come from the file `path`.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        Self {
            origin: path.display().to_string(),
            ..self
        }
    }
}

/// Parses YAML `text` into a `T`; a parse error names `origin` (a file, or `<string>`).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ParseError> {
    serde_saphyr::from_str(text).map_err(|e| ParseError {
        origin: origin.to_string(),
        message: yaml_message(e),
    })
}

/// A value that breaks a rule, as every crate that validates user input reports it:
/// `field = value: rule`, the rule saying what would satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {rule}")]
pub struct FieldError {
    /// Dotted path of the offending field, e.g. `attention.softmax.kv_heads`.
    pub field: String,
    /// The value as written.
    pub value: String,
    /// The rule it breaks, and what would satisfy it.
    pub rule: String,
}

impl FieldError {
    /// The error for `field = value` breaking `rule`.
    pub fn new(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// The same error with `prefix` before the field: a section (`data` gives `data.copy.prob`)
    /// or a file (`run.yaml: ` gives `run.yaml: train.lr`).
    pub fn within(self, prefix: &str) -> Self {
        let sep = if prefix.ends_with(": ") || prefix.ends_with('.') {
            ""
        } else {
            "."
        };
        Self {
            field: format!("{prefix}{sep}{}", self.field),
            ..self
        }
    }
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        Self::Invalid(FieldError::new(field, value, rule))
    }

    /// Prefixes an `Invalid` or `Parse` error with where the config came from.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Self::Invalid(e) => Self::Invalid(e.within(&format!("{}: ", path.display()))),
            Self::Parse(e) => Self::Parse(e.in_file(path)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FieldError;

    #[test]
    fn within_prefixes_a_section_or_a_file() {
        let e = FieldError::new("copy.prob", 1.5, "a probability lies in [0, 1]");
        assert_eq!(
            e.clone().within("data").to_string(),
            "data.copy.prob = 1.5: a probability lies in [0, 1]"
        );
        assert_eq!(e.within("run.yaml: ").field, "run.yaml: copy.prob");
    }
}
