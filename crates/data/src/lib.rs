//! Training data for scalelab, as token ids (`u32`): no Burn dependency.
//!
//! - [`SyntheticLanguage`], the embedded default: a seeded language with Zipfian words, local
//!   Markov structure, nested brackets, copies and facts, whose true conditional distribution is
//!   known at every token, so its entropy rate (the irreducible loss) is known.
//! - [`TextDataset`]: a UTF-8 corpus (optionally gzip/dictzip), byte-level or BPE-tokenized once
//!   into memory-mapped shards in a cache directory.
//! - [`probes`]: multi-query associative recall and needle-in-a-haystack examples, and their
//!   scoring: the retrieval tests that separate lightning, hybrid and softmax attention.
//!
//! Every dataset is a deterministic, random-access [`Dataset`]: sequence `index` of a split is
//! always the same tokens, so a resumed run sees the same batches.
//!
//! ```
//! use scalelab_data::{open, DataConfig, Dataset, Split};
//!
//! let cfg = DataConfig::from_yaml_str("kind: synthetic\nvocab_size: 256").unwrap();
//! let data = open(&cfg, 64, std::path::Path::new("unused-by-synthetic")).unwrap();
//! let batch: Vec<Vec<u32>> = (0..4).map(|i| data.sequence(Split::Train, i, 65)).collect();
//! assert!(batch.iter().flatten().all(|&t| (t as usize) < data.vocab_size()));
//! assert_eq!(batch[2], data.sequence(Split::Train, 2, 65));
//! ```
#![warn(missing_docs)]

mod config;
mod error;
pub mod probes;
mod rng;
mod synthetic;
mod text;

use std::path::Path;

pub use config::{
    BracketConfig, CopyConfig, DataConfig, FactConfig, InvalidUtf8, MarkovConfig, SyntheticConfig,
    TextConfig, TokenizerConfig,
};
pub use error::DataError;
pub use probes::RecallSyntax;
pub use synthetic::{SyntheticLanguage, TokenKind, TokenLayout, TracedSequence};
pub use text::{CacheStatus, TextDataset};

/// The two disjoint halves of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// What the model trains on.
    Train,
    /// Held out for evaluation.
    Validation,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
        })
    }
}

/// An estimate of the expected NLL per predicted token under the true process: the loss no model
/// can beat, i.e. the irreducible term of a scaling fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyEstimate {
    /// Expected NLL per token over positions `1..len` of a `len`-token sequence, in nats.
    pub nats: f64,
    /// Standard error of `nats` (Monte Carlo over sequences).
    pub std_error: f64,
    /// Sequences averaged.
    pub sequences: usize,
    /// Tokens per sequence (the trainer's `seq_len + 1`); position 0 is context only.
    pub len: usize,
}

impl EntropyEstimate {
    /// `nats` in bits.
    pub fn bits(&self) -> f64 {
        self.nats / std::f64::consts::LN_2
    }

    /// `std_error` in bits.
    pub fn bits_std_error(&self) -> f64 {
        self.std_error / std::f64::consts::LN_2
    }
}

/// A filler sequence that contains a given statement (for needle-in-a-haystack probes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Haystack {
    /// The tokens, statement included.
    pub tokens: Vec<u32>,
    /// Where the statement starts.
    pub statement_at: usize,
}

/// A deterministic, random-access token stream: sequence `index` of a split is always the same
/// tokens.
pub trait Dataset: Send + Sync {
    /// Token ids are `0..vocab_size()`.
    fn vocab_size(&self) -> usize;

    /// `len` tokens of sequence `index` of `split` (the trainer asks for `seq_len + 1` and shifts).
    ///
    /// # Panics
    /// If `len` exceeds [`Dataset::max_len`].
    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<u32>;

    /// A one-line description for logs (name, vocab, size / entropy).
    fn describe(&self) -> String;

    /// Distinct sequences in `split` before indices wrap around; `None` for an unbounded stream.
    fn num_sequences(&self, _split: Split) -> Option<u64> {
        None
    }

    /// The longest `len` [`Dataset::sequence`] serves; `None` for any length.
    fn max_len(&self) -> Option<usize> {
        None
    }

    /// The irreducible loss per predicted token at the `seq_len` the dataset was opened with, when
    /// the true process is known (the synthetic language); `None` for real text.
    fn entropy_rate(&self) -> Option<EntropyEstimate> {
        None
    }

    /// `-ln P(x_t | x_<t)` of each token of a sequence under the true process, when known.
    fn true_nll(&self, _split: Split, _index: u64, _len: usize) -> Option<Vec<f64>> {
        None
    }

    /// The token ids a recall probe should use to state and query facts in this dataset's own
    /// idiom, when it has one.
    fn recall_syntax(&self) -> Option<RecallSyntax> {
        None
    }

    /// `len` tokens of filler (stream `index`) with `statement` placed at `position` (or the first
    /// place at or after it where the dataset's grammar allows one).
    fn haystack(&self, index: u64, len: usize, position: usize, statement: &[u32]) -> Haystack {
        splice_haystack(self, index, len, position, statement)
    }
}

/// The plain haystack: validation sequence `index` with `statement` spliced in at `position`.
pub fn splice_haystack<D: Dataset + ?Sized>(
    data: &D,
    index: u64,
    len: usize,
    position: usize,
    statement: &[u32],
) -> Haystack {
    let filler_len = len.saturating_sub(statement.len());
    let mut tokens = data.sequence(Split::Validation, index, filler_len);
    let at = position.min(filler_len);
    tokens.splice(at..at, statement.iter().copied());
    Haystack {
        tokens,
        statement_at: at,
    }
}

/// Opens the dataset a config describes, for training windows of `seq_len + 1` tokens; text
/// corpora are tokenized into (or reopened from) `cache_dir`.
pub fn open(
    cfg: &DataConfig,
    seq_len: usize,
    cache_dir: &Path,
) -> Result<Box<dyn Dataset>, DataError> {
    cfg.validate()?;
    Ok(match cfg {
        DataConfig::Synthetic(c) => Box::new(SyntheticLanguage::new(c, seq_len)?),
        DataConfig::Text(c) => Box::new(TextDataset::open(c, seq_len, cache_dir)?),
    })
}
