//! The generative process, written as a parser: [`State`] holds everything the past tokens
//! determine, and gives the exact distribution of the next token. Sampling, scoring and entropy
//! all read that one distribution, so the true NLL is exact by construction.

use std::ops::Range;

use super::chain::Chain;
use crate::config::SyntheticConfig;
use crate::rng::{domain, Rng};

/// Where each kind of token sits in a synthetic language's vocabulary (ids ascending in this
/// order: words, opens, closes, copy markers, `fact`, `query`, keys, values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLayout {
    /// Words, by Zipf rank: id 0 is the most frequent.
    pub words: Range<u32>,
    /// `open_b` for bracket type `b` is `open.start + b`.
    pub open: Range<u32>,
    /// `close_b` is `close.start + b`.
    pub close: Range<u32>,
    /// The marker of a copy of length `copy.lengths[i]` is `copy.start + i`.
    pub copy: Range<u32>,
    /// Starts a statement `fact key value`.
    pub fact: u32,
    /// Starts a query `query key value`.
    pub query: u32,
    /// Fact keys.
    pub keys: Range<u32>,
    /// Fact values (the top of the vocabulary).
    pub values: Range<u32>,
}

/// What a token id is in a synthetic language (indices are relative to their range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A word of rank `r`.
    Word(u32),
    /// Opens a bracket of this type.
    Open(u32),
    /// Closes a bracket of this type.
    Close(u32),
    /// Starts a copy of length `copy.lengths[i]`.
    Copy(usize),
    /// Starts a statement.
    Fact,
    /// Starts a query.
    Query,
    /// A key.
    Key(u32),
    /// A value.
    Value(u32),
    /// Not in the vocabulary.
    Invalid,
}

impl TokenLayout {
    pub(crate) fn new(cfg: &SyntheticConfig) -> Self {
        let v = cfg.vocab_size as u32;
        let words = (v as usize - cfg.reserved_ids()) as u32;
        let types = cfg.brackets.types as u32;
        let open = words..words + types;
        let close = open.end..open.end + types;
        let copy = close.end..close.end + cfg.copy.lengths.len() as u32;
        let fact = copy.end;
        let query = fact + 1;
        let keys = query + 1..query + 1 + cfg.facts.keys as u32;
        let values = keys.end..keys.end + cfg.facts.values as u32;
        debug_assert_eq!(values.end, v);
        Self {
            words: 0..words,
            open,
            close,
            copy,
            fact,
            query,
            keys,
            values,
        }
    }

    /// Classifies a token id.
    pub fn kind(&self, token: u32) -> TokenKind {
        let rel = |r: &Range<u32>| token - r.start;
        if self.words.contains(&token) {
            TokenKind::Word(token)
        } else if self.open.contains(&token) {
            TokenKind::Open(rel(&self.open))
        } else if self.close.contains(&token) {
            TokenKind::Close(rel(&self.close))
        } else if self.copy.contains(&token) {
            TokenKind::Copy(rel(&self.copy) as usize)
        } else if token == self.fact {
            TokenKind::Fact
        } else if token == self.query {
            TokenKind::Query
        } else if self.keys.contains(&token) {
            TokenKind::Key(rel(&self.keys))
        } else if self.values.contains(&token) {
            TokenKind::Value(rel(&self.values))
        } else {
            TokenKind::Invalid
        }
    }
}

/// The fixed parts of a language: its config, its token layout and its word chain.
pub(crate) struct Language {
    pub(crate) cfg: SyntheticConfig,
    pub(crate) layout: TokenLayout,
    pub(crate) chain: Chain,
}

impl Language {
    /// The language of a validated `cfg`: its layout, and its word chain drawn from `cfg.seed`.
    pub(crate) fn new(cfg: SyntheticConfig) -> Self {
        let layout = TokenLayout::new(&cfg);
        let mut rng = Rng::new(cfg.seed, domain::LANGUAGE, 0);
        let chain = Chain::new(
            layout.words.len(),
            cfg.zipf_exponent,
            cfg.markov.strength,
            cfg.markov.couplings,
            &mut rng,
        );
        Self { cfg, layout, chain }
    }
}

/// Where the parser is inside a multi-token segment.
#[derive(Debug, Clone)]
enum Mode {
    /// Between segments: the next token starts a word, bracket, copy, statement or query.
    Slot,
    FactKey,
    FactValue {
        key: u32,
    },
    QueryKey,
    QueryValue {
        value: u32,
    },
    /// Inside a copy of length `len` (`copy.lengths[which]`), `done` tokens emitted. `source` is
    /// the start the sampler drew; `sources`, kept only when tracking probabilities, are the
    /// starts still consistent with the tokens so far.
    Copy {
        which: usize,
        len: usize,
        done: usize,
        source: Option<u32>,
        sources: Vec<u32>,
    },
}

/// Probabilities of the segment kinds at a slot (each open type and each allowed copy length
/// gets the `_each` mass).
struct SlotProbs {
    open_each: f64,
    close: f64,
    copy_each: f64,
    copy_allowed: Vec<bool>,
    fact: f64,
    query: f64,
    word: f64,
}

/// Everything the tokens so far determine about the next one.
pub(crate) struct State<'a> {
    lang: &'a Language,
    pub(crate) tokens: Vec<u32>,
    /// Length of the run of words ending at the last token.
    run: usize,
    /// For each copy length `L`: end positions of the all-word windows of length `L`.
    ends: Vec<Vec<u32>>,
    mode: Mode,
    chain: Option<u32>,
    /// Open brackets: type and the chain state to restore at its close.
    stack: Vec<(u32, Option<u32>)>,
    value_of: Vec<Option<u32>>,
    unstated: Vec<u32>,
    stated: Vec<u32>,
    /// Tokens left when every segment must fit in a fixed length (haystacks).
    budget: Option<usize>,
    /// Whether [`State::prob`] and [`State::entropy`] will be asked (they need every consistent
    /// copy source, which costs time linear in the history at each copy).
    track: bool,
    scratch: Vec<u32>,
}

impl<'a> State<'a> {
    pub(crate) fn new(lang: &'a Language, track: bool) -> Self {
        let keys = lang.cfg.facts.keys as u32;
        Self {
            lang,
            tokens: Vec::new(),
            run: 0,
            ends: vec![Vec::new(); lang.cfg.copy.lengths.len()],
            mode: Mode::Slot,
            chain: None,
            stack: Vec::new(),
            value_of: vec![None; keys as usize],
            unstated: (0..keys).collect(),
            stated: Vec::new(),
            budget: None,
            track,
            scratch: vec![0; lang.cfg.vocab_size],
        }
    }

    /// Keeps `key` out of the filler's own statements, so it can be stated once by force later.
    pub(crate) fn reserve_key(&mut self, key: u32) {
        self.unstated.retain(|&k| k != key);
    }

    /// Keeps a stated `key` out of the filler's own queries, so only the probe asks for it.
    pub(crate) fn hide_from_queries(&mut self, key: u32) {
        self.stated.retain(|&k| k != key);
    }

    pub(crate) fn set_budget(&mut self, budget: Option<usize>) {
        self.budget = budget;
    }

    pub(crate) fn at_slot(&self) -> bool {
        matches!(self.mode, Mode::Slot)
    }

    fn slot(&self) -> SlotProbs {
        let cfg = &self.lang.cfg;
        let budget = self.budget.unwrap_or(usize::MAX);
        let types = cfg.brackets.types;
        let open_each = if types > 0 && self.stack.len() < cfg.brackets.max_depth {
            cfg.brackets.open_prob / types as f64
        } else {
            0.0
        };
        let close = if self.stack.is_empty() {
            0.0
        } else {
            cfg.brackets.close_prob
        };
        let copy_allowed: Vec<bool> = cfg
            .copy
            .lengths
            .iter()
            .zip(&self.ends)
            .map(|(&len, ends)| !ends.is_empty() && len < budget)
            .collect();
        let copy_each = if cfg.copy.lengths.is_empty() {
            0.0
        } else {
            cfg.copy.prob / cfg.copy.lengths.len() as f64
        };
        let fact = if !self.unstated.is_empty() && budget >= 3 {
            cfg.facts.state_prob
        } else {
            0.0
        };
        let query = if !self.stated.is_empty() && budget >= 3 {
            cfg.facts.query_prob
        } else {
            0.0
        };
        let copies = copy_allowed.iter().filter(|&&a| a).count() as f64;
        let word = 1.0 - open_each * types as f64 - close - copy_each * copies - fact - query;
        SlotProbs {
            open_each,
            close,
            copy_each,
            copy_allowed,
            fact,
            query,
            word,
        }
    }

    /// `P(next token = token | tokens so far)`.
    pub(crate) fn prob(&self, token: u32) -> f64 {
        let layout = &self.lang.layout;
        let kind = layout.kind(token);
        match &self.mode {
            Mode::Slot => {
                let s = self.slot();
                match kind {
                    TokenKind::Word(w) => s.word * self.lang.chain.prob(self.chain, w),
                    TokenKind::Open(_) => s.open_each,
                    TokenKind::Close(b) if self.stack.last().map(|t| t.0) == Some(b) => s.close,
                    TokenKind::Copy(i) if s.copy_allowed[i] => s.copy_each,
                    TokenKind::Fact => s.fact,
                    TokenKind::Query => s.query,
                    _ => 0.0,
                }
            }
            Mode::FactKey => match kind {
                TokenKind::Key(k) if self.unstated.contains(&k) => 1.0 / self.unstated.len() as f64,
                _ => 0.0,
            },
            Mode::FactValue { .. } => match kind {
                TokenKind::Value(_) => 1.0 / self.lang.cfg.facts.values as f64,
                _ => 0.0,
            },
            Mode::QueryKey => match kind {
                TokenKind::Key(k) if self.value_of[k as usize].is_some() => {
                    1.0 / self.stated.len() as f64
                }
                _ => 0.0,
            },
            Mode::QueryValue { value } => f64::from(u8::from(token == *value)),
            Mode::Copy { done, sources, .. } => {
                debug_assert!(self.track, "copy probabilities need a tracking state");
                let hits = sources
                    .iter()
                    .filter(|&&s| self.tokens[s as usize + done] == token)
                    .count();
                hits as f64 / sources.len() as f64
            }
        }
    }

    /// Entropy (nats) of the next token's distribution.
    pub(crate) fn entropy(&mut self) -> f64 {
        let plogp = |p: f64| if p > 0.0 { -p * p.ln() } else { 0.0 };
        match &self.mode {
            Mode::Slot => {
                let s = self.slot();
                let copies = s.copy_allowed.iter().filter(|&&a| a).count() as f64;
                self.lang.cfg.brackets.types as f64 * plogp(s.open_each)
                    + plogp(s.close)
                    + copies * plogp(s.copy_each)
                    + plogp(s.fact)
                    + plogp(s.query)
                    + plogp(s.word)
                    + s.word * self.lang.chain.entropy(self.chain)
            }
            Mode::FactKey => (self.unstated.len() as f64).ln(),
            Mode::FactValue { .. } => (self.lang.cfg.facts.values as f64).ln(),
            Mode::QueryKey => (self.stated.len() as f64).ln(),
            Mode::QueryValue { .. } => 0.0,
            Mode::Copy { done, sources, .. } => {
                debug_assert!(self.track, "copy entropies need a tracking state");
                let n = sources.len() as f64;
                let mut touched = Vec::new();
                for &s in sources {
                    let t = self.tokens[s as usize + done];
                    if self.scratch[t as usize] == 0 {
                        touched.push(t);
                    }
                    self.scratch[t as usize] += 1;
                }
                let mut h = 0.0;
                for t in touched {
                    h += plogp(self.scratch[t as usize] as f64 / n);
                    self.scratch[t as usize] = 0;
                }
                h
            }
        }
    }

    /// Draws the next token (without consuming it: call [`State::push`]). A copy's source is
    /// drawn once, at its first token, uniformly among all candidates: the same law as drawing
    /// each token from the candidates still consistent, which is what [`State::prob`] reports.
    pub(crate) fn sample(&mut self, rng: &mut Rng) -> u32 {
        if let Mode::Copy {
            which,
            len,
            done,
            source,
            ..
        } = &mut self.mode
        {
            if *done == 0 || source.is_none() {
                let ends = &self.ends[*which];
                *source = Some(ends[rng.below(ends.len() as u64) as usize] + 1 - *len as u32);
            }
            return self.tokens[source.unwrap() as usize + *done];
        }
        let layout = &self.lang.layout;
        match &self.mode {
            Mode::Slot => {
                let s = self.slot();
                let mut u = rng.uniform();
                let opens = s.open_each * self.lang.cfg.brackets.types as f64;
                if u < opens {
                    let b = ((u / s.open_each) as u32).min(layout.open.len() as u32 - 1);
                    return layout.open.start + b;
                }
                u -= opens;
                if u < s.close {
                    return layout.close.start + self.stack.last().unwrap().0;
                }
                u -= s.close;
                for (i, &allowed) in s.copy_allowed.iter().enumerate() {
                    if allowed {
                        if u < s.copy_each {
                            return layout.copy.start + i as u32;
                        }
                        u -= s.copy_each;
                    }
                }
                if u < s.fact {
                    return layout.fact;
                }
                u -= s.fact;
                if u < s.query {
                    return layout.query;
                }
                self.lang.chain.sample(self.chain, rng)
            }
            Mode::FactKey => {
                layout.keys.start + self.unstated[rng.below(self.unstated.len() as u64) as usize]
            }
            Mode::FactValue { .. } => {
                layout.values.start + rng.below(self.lang.cfg.facts.values as u64) as u32
            }
            Mode::QueryKey => {
                layout.keys.start + self.stated[rng.below(self.stated.len() as u64) as usize]
            }
            Mode::QueryValue { value } => *value,
            Mode::Copy { .. } => unreachable!("handled above"),
        }
    }

    /// Consumes `token`, which must have positive probability (or be a forced statement).
    pub(crate) fn push(&mut self, token: u32) {
        let layout = &self.lang.layout;
        let kind = layout.kind(token);
        let pos = self.tokens.len() as u32;
        self.tokens.push(token);
        if let Some(b) = self.budget.as_mut() {
            *b = b.saturating_sub(1);
        }
        if let TokenKind::Word(_) = kind {
            self.run += 1;
            for (ends, &len) in self.ends.iter_mut().zip(&self.lang.cfg.copy.lengths) {
                if self.run >= len {
                    ends.push(pos);
                }
            }
        } else {
            self.run = 0;
        }
        let mode = std::mem::replace(&mut self.mode, Mode::Slot);
        self.mode = match (mode, kind) {
            (Mode::Slot, TokenKind::Word(w)) => {
                self.chain = Some(w);
                Mode::Slot
            }
            (Mode::Slot, TokenKind::Open(b)) => {
                self.stack.push((b, self.chain));
                Mode::Slot
            }
            (Mode::Slot, TokenKind::Close(_)) => {
                self.chain = self.stack.pop().expect("close inside a bracket").1;
                Mode::Slot
            }
            (Mode::Slot, TokenKind::Copy(i)) => {
                let len = self.lang.cfg.copy.lengths[i];
                let sources = if self.track {
                    self.ends[i].iter().map(|&e| e + 1 - len as u32).collect()
                } else {
                    Vec::new()
                };
                Mode::Copy {
                    which: i,
                    len,
                    done: 0,
                    source: None,
                    sources,
                }
            }
            (Mode::Slot, TokenKind::Fact) => Mode::FactKey,
            (Mode::Slot, TokenKind::Query) => Mode::QueryKey,
            (Mode::FactKey, TokenKind::Key(k)) => {
                if let Some(i) = self.unstated.iter().position(|&x| x == k) {
                    self.unstated.swap_remove(i);
                }
                Mode::FactValue { key: k }
            }
            (Mode::FactValue { key }, TokenKind::Value(_)) => {
                self.value_of[key as usize] = Some(token);
                self.stated.push(key);
                Mode::Slot
            }
            (Mode::QueryKey, TokenKind::Key(k)) => Mode::QueryValue {
                value: self.value_of[k as usize].expect("query of a stated key"),
            },
            (Mode::QueryValue { .. }, _) => Mode::Slot,
            (
                Mode::Copy {
                    which,
                    len,
                    done,
                    source,
                    mut sources,
                },
                _,
            ) => {
                let tokens = &self.tokens;
                sources.retain(|&s| tokens[s as usize + done] == token);
                if done + 1 == len {
                    if let TokenKind::Word(w) = kind {
                        self.chain = Some(w);
                    }
                    Mode::Slot
                } else {
                    Mode::Copy {
                        which,
                        len,
                        done: done + 1,
                        source,
                        sources,
                    }
                }
            }
            (mode, kind) => unreachable!("token {token} ({kind:?}) pushed in mode {mode:?}"),
        };
    }
}

/// A generated sequence with the exact per-token quantities of the true process.
#[derive(Debug, Clone, PartialEq)]
pub struct TracedSequence {
    /// The tokens.
    pub tokens: Vec<u32>,
    /// `-ln P(x_t | x_<t)`, nats.
    pub nll: Vec<f64>,
    /// Entropy (nats) of the distribution `x_t` was drawn from: its sum has the NLL's expectation.
    pub entropy: Vec<f64>,
}

impl Language {
    /// `len` tokens drawn from `rng`.
    pub(crate) fn generate(&self, rng: &mut Rng, len: usize) -> Vec<u32> {
        let mut state = State::new(self, false);
        for _ in 0..len {
            let x = state.sample(rng);
            state.push(x);
        }
        state.tokens
    }

    /// [`Language::generate`] (the same tokens from the same `rng`), with each token's exact NLL
    /// and the entropy of the distribution it came from.
    pub(crate) fn generate_traced(&self, rng: &mut Rng, len: usize) -> TracedSequence {
        let mut state = State::new(self, true);
        let mut nll = Vec::with_capacity(len);
        let mut entropy = Vec::with_capacity(len);
        for _ in 0..len {
            entropy.push(state.entropy());
            let x = state.sample(rng);
            nll.push(-state.prob(x).ln());
            state.push(x);
        }
        TracedSequence {
            tokens: state.tokens,
            nll,
            entropy,
        }
    }

    /// `-ln P(x_t | x_<t)` of any token sequence; infinite from the first impossible token on.
    pub(crate) fn score(&self, tokens: &[u32]) -> Vec<f64> {
        let mut state = State::new(self, true);
        let mut out = Vec::with_capacity(tokens.len());
        for &x in tokens {
            let p = state.prob(x);
            if p <= 0.0 {
                break;
            }
            out.push(-p.ln());
            state.push(x);
        }
        out.resize(tokens.len(), f64::INFINITY);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At every step of many sequences the distribution sums to one over the vocabulary, its
    /// entropy matches `-sum p ln p`, and the sampled token has positive probability.
    #[test]
    fn every_step_is_a_distribution() {
        let mut cfg = SyntheticConfig::default();
        // Dense events so every mode is visited often.
        cfg.brackets.open_prob = 0.1;
        cfg.brackets.close_prob = 0.15;
        cfg.copy.prob = 0.1;
        cfg.facts.state_prob = 0.08;
        cfg.facts.query_prob = 0.1;
        let lang = Language::new(cfg);
        let v = lang.cfg.vocab_size as u32;
        let mut rng = Rng::new(5, 0, 0);
        let mut modes = std::collections::HashSet::new();
        for _ in 0..6 {
            let mut state = State::new(&lang, true);
            for _ in 0..300 {
                modes.insert(std::mem::discriminant(&state.mode));
                let probs: Vec<f64> = (0..v).map(|t| state.prob(t)).collect();
                let total: f64 = probs.iter().sum();
                assert!(
                    (total - 1.0).abs() < 1e-9,
                    "sum {total} in {:?}",
                    state.mode
                );
                let h: f64 = probs
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|p| -p * p.ln())
                    .sum();
                assert!((h - state.entropy()).abs() < 1e-9, "{:?}", state.mode);
                let x = state.sample(&mut rng);
                assert!(probs[x as usize] > 0.0);
                state.push(x);
            }
        }
        assert_eq!(modes.len(), 6, "every mode visited");
    }

    /// Draws from a fixed state follow `prob`, token by token (a 5-sigma bound per token). Inside a
    /// copy only the first token is checked: later ones follow the source the sampler drew, whose
    /// law given the tokens is what `prob` states (checked by the entropy-rate tests).
    #[test]
    fn sampling_matches_the_stated_probabilities() {
        let mut cfg = SyntheticConfig::default();
        cfg.copy.prob = 0.1;
        let lang = Language::new(cfg);
        let mut rng = Rng::new(6, 0, 0);
        let mut state = State::new(&lang, true);
        let mut checked = 0;
        for step in 0..400 {
            let mid_copy = matches!(state.mode, Mode::Copy { done: 1.., .. });
            if !mid_copy && (step % 37 == 0 || matches!(state.mode, Mode::Copy { .. })) {
                let draws = 20_000;
                let mut counts = vec![0u32; lang.cfg.vocab_size];
                let mut probe = Rng::new(7, step, 0);
                for _ in 0..draws {
                    counts[state.sample(&mut probe) as usize] += 1;
                }
                for (t, &c) in counts.iter().enumerate() {
                    let p = state.prob(t as u32);
                    let sd = (p * (1.0 - p) / draws as f64).sqrt();
                    assert!(
                        (c as f64 / draws as f64 - p).abs() <= 5.0 * sd + 2e-4,
                        "token {t}: {c} of {draws}, p = {p}"
                    );
                }
                checked += 1;
            }
            let x = state.sample(&mut rng);
            state.push(x);
        }
        assert!(checked > 12);
    }

    #[test]
    fn traced_generation_is_plain_generation_and_scores_itself() {
        let lang = Language::new(SyntheticConfig::default());
        let plain = lang.generate(&mut Rng::new(1, 2, 3), 700);
        let traced = lang.generate_traced(&mut Rng::new(1, 2, 3), 700);
        assert_eq!(plain, traced.tokens);
        assert_eq!(lang.score(&plain), traced.nll);
        assert!(traced.nll.iter().all(|x| x.is_finite()));
    }
}
