//! The synthetic language: the embedded default dataset, generated on the fly from a seed, whose
//! every token has a known conditional probability, so its entropy rate (the irreducible loss of
//! a scaling fit) is known. `crates/data/README.md` describes the process in full.

mod chain;
mod process;

use std::sync::OnceLock;

pub use process::{TokenKind, TokenLayout, TracedSequence};

use crate::config::SyntheticConfig;
use crate::error::DataError;
use crate::probes::RecallSyntax;
use crate::rng::{domain, Rng};
use crate::{splice_haystack, Dataset, EntropyEstimate, Haystack, Split};
use process::{Language, State};

/// A seeded synthetic language: Zipfian words from a Markov chain, nested typed brackets, copies of
/// earlier spans, and facts stated once and queried later.
///
/// Sequence `index` of a split is an independent draw of the process from its start, made from a
/// stream keyed by `(seed, split, index)`; a shorter request is a prefix of a longer one.
pub struct SyntheticLanguage {
    lang: Language,
    seq_len: usize,
    entropy: OnceLock<EntropyEstimate>,
}

fn split_domain(split: Split) -> u64 {
    match split {
        Split::Train => domain::TRAIN,
        Split::Validation => domain::VALIDATION,
    }
}

impl SyntheticLanguage {
    /// Builds the language; `seq_len` fixes the window (`seq_len + 1` tokens) that
    /// [`Dataset::entropy_rate`] refers to.
    pub fn new(cfg: &SyntheticConfig, seq_len: usize) -> Result<Self, DataError> {
        cfg.validate()?;
        if seq_len == 0 {
            return Err(DataError::invalid("seq_len", 0, "must be at least 1"));
        }
        Ok(Self {
            lang: Language::new(cfg.clone()),
            seq_len,
            entropy: OnceLock::new(),
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &SyntheticConfig {
        &self.lang.cfg
    }

    /// Which ids are words, brackets, markers, keys and values.
    pub fn layout(&self) -> &TokenLayout {
        &self.lang.layout
    }

    /// The stationary word distribution `pi` (Zipf), indexed by word id.
    pub fn word_distribution(&self) -> &[f64] {
        self.lang.chain.pi()
    }

    /// Entropy rate of the bare word chain, `sum_w pi(w) H(P(.|w))`, nats per word: the language's
    /// entropy rate exactly when every event probability is 0.
    pub fn markov_entropy(&self) -> f64 {
        self.lang.chain.stationary_entropy()
    }

    /// Entropy of the unigram word distribution `pi`, nats.
    pub fn unigram_entropy(&self) -> f64 {
        self.lang.chain.pi_entropy()
    }

    /// `-ln P(x_t | x_<t)` (nats) of every token of any sequence under the true process;
    /// infinite from the first token the process could not have produced.
    pub fn score(&self, tokens: &[u32]) -> Vec<f64> {
        self.lang.score(tokens)
    }

    /// Sequence `index` of `split` (the tokens of [`Dataset::sequence`]) with its exact per-token
    /// NLL and conditional entropies, computed while generating it.
    pub fn traced(&self, split: Split, index: u64, len: usize) -> TracedSequence {
        let mut rng = Rng::new(self.lang.cfg.seed, split_domain(split), index);
        self.lang.generate_traced(&mut rng, len)
    }

    /// Monte Carlo estimate of the expected NLL per predicted token (positions `1..len`) over
    /// validation sequences `0..sequences`, from their conditional entropies
    /// ([`TracedSequence::entropy`]), computed on all cores.
    ///
    /// # Panics
    /// If `len < 2` or `sequences < 2`.
    pub fn estimate_entropy_rate(&self, len: usize, sequences: usize) -> EntropyEstimate {
        assert!(
            len >= 2 && sequences >= 2,
            "need len >= 2 and sequences >= 2"
        );
        let mean_entropy = |i: u64| {
            let h = self.traced(Split::Validation, i, len).entropy;
            h[1..].iter().sum::<f64>() / (len - 1) as f64
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_seq: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    scope.spawn(move || {
                        (t..sequences as u64)
                            .step_by(threads)
                            .map(|i| (i, mean_entropy(i)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(u64, f64)> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("entropy worker panicked"))
                .collect();
            all.sort_by_key(|&(i, _)| i);
            all.into_iter().map(|(_, h)| h).collect()
        });
        let n = sequences as f64;
        let mean = per_seq.iter().sum::<f64>() / n;
        let var = per_seq.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        EntropyEstimate {
            nats: mean,
            std_error: (var / n).sqrt(),
            sequences,
            len,
        }
    }

    /// The recall syntax of this language: `fact k v` states, `query k v` asks.
    pub fn syntax(&self) -> RecallSyntax {
        let l = &self.lang.layout;
        RecallSyntax {
            fact_prefix: vec![l.fact],
            query_prefix: vec![l.query],
            infix: vec![],
            keys: l.keys.clone().collect(),
            values: l.values.clone().collect(),
        }
    }

    /// A haystack with `statement` (`fact k v`) forced at the first segment boundary at or
    /// after `position`; `k` is kept out of the filler's own facts and queries, and the haystack
    /// ends at a segment boundary, so haystack plus `query k v` is a sentence the process can
    /// produce in which only the final query asks for `k`.
    fn forced(
        &self,
        rng: &mut Rng,
        len: usize,
        position: usize,
        key: u32,
        statement: &[u32; 3],
    ) -> Haystack {
        let mut state = State::new(&self.lang, false);
        state.reserve_key(key);
        let target = position.min(len - 3);
        let mut at = None;
        while state.tokens.len() < len {
            let n = state.tokens.len();
            if at.is_none() && n >= target && state.at_slot() {
                at = Some(n);
                statement.iter().for_each(|&t| state.push(t));
                state.hide_from_queries(key);
                continue;
            }
            let reserve = if at.is_none() { 3 } else { 0 };
            state.set_budget(Some(len - n - reserve));
            let x = state.sample(rng);
            state.push(x);
        }
        Haystack {
            tokens: state.tokens,
            statement_at: at.expect("the statement fits by construction"),
        }
    }
}

impl Dataset for SyntheticLanguage {
    fn vocab_size(&self) -> usize {
        self.lang.cfg.vocab_size
    }

    fn sequence(&self, split: Split, index: u64, len: usize) -> Vec<u32> {
        let mut rng = Rng::new(self.lang.cfg.seed, split_domain(split), index);
        self.lang.generate(&mut rng, len)
    }

    fn describe(&self) -> String {
        let c = &self.lang.cfg;
        let e = self.entropy_rate().expect("synthetic entropy is known");
        format!(
            "synthetic language (seed {}): vocab {} = {} Zipf({}) words + {} bracket types + \
             copies {:?} + {} keys x {} values; entropy rate {:.4} ± {:.4} nats/token \
             ({:.4} bits) at seq_len {}",
            c.seed,
            c.vocab_size,
            self.lang.layout.words.len(),
            c.zipf_exponent,
            c.brackets.types,
            c.copy.lengths,
            c.facts.keys,
            c.facts.values,
            e.nats,
            e.std_error,
            e.bits(),
            self.seq_len
        )
    }

    /// Estimated once, at `seq_len + 1` tokens, over `entropy_sequences` validation sequences.
    fn entropy_rate(&self) -> Option<EntropyEstimate> {
        Some(*self.entropy.get_or_init(|| {
            self.estimate_entropy_rate(self.seq_len + 1, self.lang.cfg.entropy_sequences)
        }))
    }

    fn true_nll(&self, split: Split, index: u64, len: usize) -> Option<Vec<f64>> {
        Some(self.traced(split, index, len).nll)
    }

    fn recall_syntax(&self) -> Option<RecallSyntax> {
        Some(self.syntax())
    }

    fn haystack(&self, index: u64, len: usize, position: usize, statement: &[u32]) -> Haystack {
        let l = &self.lang.layout;
        match *statement {
            [f, k, v]
                if f == l.fact && l.keys.contains(&k) && l.values.contains(&v) && len >= 3 =>
            {
                let mut rng = Rng::new(self.lang.cfg.seed, domain::HAYSTACK, index);
                self.forced(&mut rng, len, position, k - l.keys.start, &[f, k, v])
            }
            _ => splice_haystack(self, index, len, position, statement),
        }
    }
}
