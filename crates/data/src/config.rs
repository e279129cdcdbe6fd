//! The data section of a training config: which dataset to open and its settings, with every value
//! validated before anything is generated or tokenized.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

type Result<T> = std::result::Result<T, DataError>;

/// Which dataset a run trains on, tagged by `kind: synthetic | text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// The built-in synthetic language (no files, no download).
    Synthetic(SyntheticConfig),
    /// A UTF-8 text corpus, tokenized once into a cache.
    Text(TextConfig),
}

impl Default for DataConfig {
    fn default() -> Self {
        Self::Synthetic(SyntheticConfig::default())
    }
}

/// The synthetic language: a Zipfian Markov chain interleaved with brackets, copies and facts.
///
/// Every field has a default (see `crates/data/README.md` for what each one shapes), so
/// `kind: synthetic` alone is a complete config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Token ids `0..vocab_size`; 256 matches the tiny models in `configs/tiny/`.
    pub vocab_size: usize,
    /// Seeds the language (its transition matrix) and every sequence stream.
    pub seed: u64,
    /// Exponent `s` of the word distribution `p(rank r) ∝ (r + 1)^-s`.
    pub zipf_exponent: f64,
    /// Local structure: the word-to-word Markov chain.
    pub markov: MarkovConfig,
    /// Nested structure: typed brackets that open and close like a grammar's phrases.
    pub brackets: BracketConfig,
    /// Long-range structure: exact copies of earlier spans.
    pub copy: CopyConfig,
    /// Long-range structure: key -> value facts stated once and queried later.
    pub facts: FactConfig,
    /// Sequences sampled to estimate the entropy rate (its standard error shrinks as 1/sqrt).
    pub entropy_sequences: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            vocab_size: 256,
            seed: 0,
            zipf_exponent: 1.0,
            markov: MarkovConfig::default(),
            brackets: BracketConfig::default(),
            copy: CopyConfig::default(),
            facts: FactConfig::default(),
            entropy_sequences: 1024,
        }
    }
}

/// The word chain `P = (1 - strength) 1 pi^T + strength S`, with `S` sparse and `pi` Zipf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarkovConfig {
    /// Weight in `[0, 1]` of the sparse successor structure; 0 makes words independent draws.
    pub strength: f64,
    /// Random couplings averaged into `S`; more couplings give each word more likely successors.
    pub couplings: usize,
}

impl Default for MarkovConfig {
    fn default() -> Self {
        Self {
            strength: 0.9,
            couplings: 2,
        }
    }
}

/// Typed brackets: `open_b ... close_b`, nested up to `max_depth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BracketConfig {
    /// Bracket types (each has an open and a close token); 0 disables brackets.
    pub types: usize,
    /// Probability, at each slot below `max_depth`, of opening a bracket.
    pub open_prob: f64,
    /// Probability, at each slot inside a bracket, of closing the innermost one.
    pub close_prob: f64,
    /// Deepest nesting allowed.
    pub max_depth: usize,
}

impl Default for BracketConfig {
    fn default() -> Self {
        Self {
            types: 4,
            open_prob: 0.03,
            close_prob: 0.06,
            max_depth: 4,
        }
    }
}

/// Copies: a marker `copy_L`, then `L` tokens repeating an earlier all-word span of length `L`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CopyConfig {
    /// Probability, at each slot, of starting a copy (split evenly over `lengths`).
    pub prob: f64,
    /// Copy lengths; each has its own marker token.
    pub lengths: Vec<usize>,
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            prob: 0.02,
            lengths: vec![4, 8, 16],
        }
    }
}

/// Facts: `fact k v` binds key `k` to a random value once per sequence; `query k v` repeats it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FactConfig {
    /// Key tokens (at most this many facts per sequence).
    pub keys: usize,
    /// Value tokens.
    pub values: usize,
    /// Probability, at each slot while some key is unstated, of stating a new fact.
    pub state_prob: f64,
    /// Probability, at each slot once some fact is stated, of querying one.
    pub query_prob: f64,
}

impl Default for FactConfig {
    fn default() -> Self {
        Self {
            keys: 32,
            values: 32,
            state_prob: 0.01,
            query_prob: 0.02,
        }
    }
}

/// A text corpus: one UTF-8 file (optionally `.gz`/`.dz`) or a directory of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// A file, or a directory read recursively (hidden entries skipped, files in path order).
    pub path: PathBuf,
    /// How text becomes token ids.
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// Fraction of the windows held out for validation, in `(0, 0.5]`.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// What to do with bytes that are not UTF-8.
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
    /// Visit windows in a seeded pseudo-random order (a fresh order each epoch) instead of in
    /// corpus order, so that consecutive indices are not neighbouring text.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Seeds the window order.
    #[serde(default)]
    pub seed: u64,
}

fn default_validation_fraction() -> f64 {
    0.01
}

fn default_true() -> bool {
    true
}

/// Byte-level (vocab 256, nothing to train) or a byte-level BPE trained on the corpus.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerConfig {
    /// One token per UTF-8 byte.
    #[default]
    Byte,
    /// HuggingFace byte-level BPE, trained on the corpus and cached as `tokenizer.json`.
    Bpe {
        /// Vocabulary size, including the 256 byte tokens.
        vocab_size: usize,
        /// Merges seen fewer times than this are not learned.
        #[serde(default = "default_min_frequency")]
        min_frequency: u64,
    },
}

fn default_min_frequency() -> u64 {
    2
}

/// Policy for bytes that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    /// Fail, naming the file and the byte offset.
    #[default]
    Error,
    /// Read each invalid sequence as U+FFFD (needed for e.g. Debian's GCIDE dictionary).
    Replace,
}

impl DataConfig {
    /// Parses and validates a YAML document.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let cfg: Self = scalelab_config::parse_yaml(text, "<string>")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a YAML file; parse errors name the file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::from_yaml_str(&text).map_err(|e| match e {
            DataError::Parse(e) => DataError::Parse(e.in_file(path)),
            other => other,
        })
    }

    /// The config as YAML (round-trips through [`DataConfig::from_yaml_str`]).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a DataConfig always serializes")
    }

    /// Checks every value; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Synthetic(c) => c.validate(),
            Self::Text(c) => c.validate(),
        }
    }
}

fn probability(field: &str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(DataError::invalid(
            field,
            p,
            "must be a probability in [0, 1)",
        ))
    }
}

impl SyntheticConfig {
    /// Token ids that are not words: brackets, copy markers, `fact`, `query`, keys and values.
    pub fn reserved_ids(&self) -> usize {
        2 * self.brackets.types + self.copy.lengths.len() + 2 + self.facts.keys + self.facts.values
    }

    /// Checks every value; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<()> {
        const MIN_WORDS: usize = 16;
        if !(self.zipf_exponent.is_finite() && (0.0..=8.0).contains(&self.zipf_exponent)) {
            return Err(DataError::invalid(
                "zipf_exponent",
                self.zipf_exponent,
                "must be a finite number in [0, 8] (1.0 is Zipf's law)",
            ));
        }
        let m = &self.markov;
        if !(0.0..=1.0).contains(&m.strength) {
            return Err(DataError::invalid(
                "markov.strength",
                m.strength,
                "must be in [0, 1]",
            ));
        }
        if !(1..=64).contains(&m.couplings) {
            return Err(DataError::invalid(
                "markov.couplings",
                m.couplings,
                "must be between 1 and 64",
            ));
        }
        let b = &self.brackets;
        if b.types > 64 {
            return Err(DataError::invalid(
                "brackets.types",
                b.types,
                "must be at most 64 (0 disables brackets)",
            ));
        }
        probability("brackets.open_prob", b.open_prob)?;
        probability("brackets.close_prob", b.close_prob)?;
        if b.types > 0 && b.open_prob > 0.0 {
            if b.max_depth == 0 {
                return Err(DataError::invalid(
                    "brackets.max_depth",
                    b.max_depth,
                    "must be at least 1 when brackets can open",
                ));
            }
            if b.close_prob == 0.0 {
                return Err(DataError::invalid(
                    "brackets.close_prob",
                    b.close_prob,
                    "must be positive when brackets can open, or no bracket would ever close",
                ));
            }
        }
        let c = &self.copy;
        probability("copy.prob", c.prob)?;
        if c.prob > 0.0 && c.lengths.is_empty() {
            return Err(DataError::invalid(
                "copy.lengths",
                "[]",
                "must list at least one length when copy.prob > 0",
            ));
        }
        if c.lengths.len() > 16 {
            return Err(DataError::invalid(
                "copy.lengths",
                format!("{:?}", c.lengths),
                "must list at most 16 lengths",
            ));
        }
        for (i, &len) in c.lengths.iter().enumerate() {
            if !(1..=4096).contains(&len) {
                return Err(DataError::invalid(
                    format!("copy.lengths[{i}]"),
                    len,
                    "must be between 1 and 4096",
                ));
            }
            if c.lengths[..i].contains(&len) {
                return Err(DataError::invalid(
                    format!("copy.lengths[{i}]"),
                    len,
                    "is listed twice; each length has one marker token",
                ));
            }
        }
        let f = &self.facts;
        probability("facts.state_prob", f.state_prob)?;
        probability("facts.query_prob", f.query_prob)?;
        if f.state_prob > 0.0 && f.keys == 0 {
            return Err(DataError::invalid(
                "facts.keys",
                f.keys,
                "must be at least 1 when facts.state_prob > 0",
            ));
        }
        if f.state_prob > 0.0 && f.values < 2 {
            return Err(DataError::invalid(
                "facts.values",
                f.values,
                "must be at least 2 when facts.state_prob > 0",
            ));
        }
        if f.query_prob > 0.0 && f.state_prob == 0.0 {
            return Err(DataError::invalid(
                "facts.query_prob",
                f.query_prob,
                "must be 0 when facts.state_prob is 0: a query asks a stated fact",
            ));
        }
        let events = b.open_prob + b.close_prob + c.prob + f.state_prob + f.query_prob;
        if events >= 1.0 {
            return Err(DataError::invalid(
                "brackets.open_prob + brackets.close_prob + copy.prob + facts.state_prob + \
                 facts.query_prob",
                events,
                "must be below 1, so that a word can always come next",
            ));
        }
        let reserved = self.reserved_ids();
        if self.vocab_size < reserved + MIN_WORDS || self.vocab_size > (1 << 24) {
            return Err(DataError::invalid(
                "vocab_size",
                self.vocab_size,
                format!(
                    "must be between {} ({reserved} reserved ids for brackets, copy markers, \
                     fact, query, keys and values, plus {MIN_WORDS} words) and 2^24",
                    reserved + MIN_WORDS
                ),
            ));
        }
        if self.entropy_sequences < 2 {
            return Err(DataError::invalid(
                "entropy_sequences",
                self.entropy_sequences,
                "must be at least 2 (the standard error needs two samples)",
            ));
        }
        Ok(())
    }
}

impl TextConfig {
    /// A byte-level corpus at `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            tokenizer: TokenizerConfig::Byte,
            validation_fraction: default_validation_fraction(),
            invalid_utf8: InvalidUtf8::Error,
            shuffle: true,
            seed: 0,
        }
    }

    /// Checks every value; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(DataError::invalid(
                "path",
                "\"\"",
                "must name a UTF-8 file or a directory of them",
            ));
        }
        let f = self.validation_fraction;
        if !(f > 0.0 && f <= 0.5) {
            return Err(DataError::invalid(
                "validation_fraction",
                f,
                "must be in (0, 0.5]",
            ));
        }
        if let TokenizerConfig::Bpe {
            vocab_size,
            min_frequency,
        } = self.tokenizer
        {
            if !(257..=1 << 20).contains(&vocab_size) {
                return Err(DataError::invalid(
                    "tokenizer.bpe.vocab_size",
                    vocab_size,
                    "must be between 257 (the 256 byte tokens plus one merge) and 2^20",
                ));
            }
            if min_frequency == 0 {
                return Err(DataError::invalid(
                    "tokenizer.bpe.min_frequency",
                    min_frequency,
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}
