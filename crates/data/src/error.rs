//! Errors a user can cause with a data config or a corpus, each naming what to fix.

use std::path::PathBuf;

use scalelab_config::{FieldError, ParseError};

/// Why a dataset could not be configured, built or opened.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not YAML of the expected shape (syntax, unknown key, wrong type, missing key).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A config value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// `path` of a text corpus does not exist.
    #[error("path = {path}: no such file or directory")]
    MissingPath {
        /// The configured path.
        path: PathBuf,
    },
    /// The corpus holds no text at all.
    #[error("path = {path}: the corpus is empty ({detail})")]
    EmptyCorpus {
        /// The configured path.
        path: PathBuf,
        /// Which files were found, or that none were.
        detail: String,
    },
    /// A corpus file is not valid UTF-8.
    #[error(
        "{file}: not valid UTF-8 at byte {offset} (line {line}{decompressed}); fix the file, \
         or set `invalid_utf8: replace` to read bad bytes as U+FFFD"
    )]
    NotUtf8 {
        /// The offending file.
        file: PathBuf,
        /// Byte offset of the first invalid byte (in the decompressed text for `.gz`/`.dz`).
        offset: u64,
        /// 1-based line of that byte.
        line: u64,
        /// `", decompressed"` when the file is compressed, else empty.
        decompressed: &'static str,
    },
    /// The corpus tokenizes to too few tokens for one training and one validation window.
    #[error(
        "path = {path}: the corpus has {tokens} tokens, fewer than the {needed} needed for one \
         training and one validation window of seq_len + 1 = {window} tokens; use a larger corpus \
         or a shorter seq_len"
    )]
    CorpusTooSmall {
        /// The configured path.
        path: PathBuf,
        /// Tokens in the whole corpus.
        tokens: u64,
        /// Tokens needed.
        needed: u64,
        /// Tokens per window.
        window: u64,
    },
    /// A cached shard or its manifest fails its integrity checks.
    #[error(
        "{file}: corrupt token cache ({reason}); delete the directory {dir} and run again to \
         re-tokenize the corpus"
    )]
    CorruptCache {
        /// The damaged file.
        file: PathBuf,
        /// Its cache directory, safe to delete.
        dir: PathBuf,
        /// Which check failed.
        reason: String,
    },
    /// The `tokenizers` crate failed to train, save, load or apply a BPE tokenizer.
    #[error("BPE tokenizer ({context}): {message}")]
    Tokenizer {
        /// What was being done, with the file if any.
        context: String,
        /// The library's message.
        message: String,
    },
    /// A probe could not be built or scored as asked.
    #[error("probe: {0}")]
    Probe(String),
}

impl DataError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        rule: impl Into<String>,
    ) -> Self {
        Self::Invalid(FieldError::new(field, value, rule))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Prefixes the field of an `Invalid` error with the config section it sits in (e.g. `data`),
    /// so a message about an embedded data section names the full path.
    pub fn in_section(self, section: &str) -> Self {
        match self {
            Self::Invalid(e) => Self::Invalid(e.within(section)),
            other => other,
        }
    }
}
