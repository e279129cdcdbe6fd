//! Retrieval probes: multi-query associative recall (MQAR) and needle-in-a-haystack (NIAH).
//!
//! Both state facts `key -> value` and later ask for them; a model passes when its next-token
//! prediction after a queried key is the bound value. These are the tests on which the MiniMax-01
//! paper finds pure lightning attention failing and the hybrid matching softmax.
//!
//! A [`RecallSyntax`] fixes the ids: a statement is `fact_prefix ++ [k] ++ infix ++ [v]`, a query
//! `query_prefix ++ [k] ++ infix ++ [v]`, and the scored position is the one just before the
//! query's `v`. The synthetic language's own syntax (`fact k v`, `query k v`) makes the probes
//! in-distribution for a model trained on it; [`RecallSyntax::bytes`] is an ASCII syntax for
//! byte-level text.

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::rng::{domain, stream_key, Rng};
use crate::Dataset;

type Result<T> = std::result::Result<T, DataError>;

/// One probe sequence and the predictions it scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeExample {
    /// The whole sequence; feed it (all but the last token suffice) to the model.
    pub tokens: Vec<u32>,
    /// `(position whose next-token prediction is scored, expected token)`.
    pub targets: Vec<(usize, u32)>,
}

/// The token ids that state and query a fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallSyntax {
    /// Tokens before the key of a statement (may be empty).
    #[serde(default)]
    pub fact_prefix: Vec<u32>,
    /// Tokens before the key of a query (may be empty).
    #[serde(default)]
    pub query_prefix: Vec<u32>,
    /// Tokens between key and value, in statements and queries (may be empty).
    #[serde(default)]
    pub infix: Vec<u32>,
    /// The key alphabet.
    pub keys: Vec<u32>,
    /// The value alphabet; a guess is right with probability `1 / values.len()`.
    pub values: Vec<u32>,
}

impl RecallSyntax {
    /// ASCII for byte-level text: `"\nThe value of key q is 7"` states (and asks) that key `q`
    /// (`a`..`z`) has value `7` (`0`..`9`); chance is 1/10.
    pub fn bytes() -> Self {
        let prefix: Vec<u32> = b"\nThe value of key ".iter().map(|&b| b as u32).collect();
        Self {
            fact_prefix: prefix.clone(),
            query_prefix: prefix,
            infix: b" is ".iter().map(|&b| b as u32).collect(),
            keys: (b'a'..=b'z').map(u32::from).collect(),
            values: (b'0'..=b'9').map(u32::from).collect(),
        }
    }

    /// Accuracy of a guess that ignores the context (uniform values).
    pub fn chance(&self) -> f64 {
        1.0 / self.values.len() as f64
    }

    /// `fact_prefix ++ [key] ++ infix ++ [value]`.
    pub fn statement(&self, key: u32, value: u32) -> Vec<u32> {
        [&self.fact_prefix[..], &[key], &self.infix, &[value]].concat()
    }

    /// `query_prefix ++ [key] ++ infix ++ [value]`; the value is its last token.
    pub fn query(&self, key: u32, value: u32) -> Vec<u32> {
        [&self.query_prefix[..], &[key], &self.infix, &[value]].concat()
    }

    /// Checks that every id is below `vocab_size`, that keys and values are distinct and
    /// disjoint, and that there are at least one key and two values.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        let bad = |field: &str, rule: &str| {
            Err(DataError::invalid(
                format!("syntax.{field}"),
                format!("{:?}", self.field(field)),
                rule,
            ))
        };
        for field in ["fact_prefix", "query_prefix", "infix", "keys", "values"] {
            if self.field(field).iter().any(|&t| t as usize >= vocab_size) {
                return bad(
                    field,
                    &format!("every id must be below the vocab size {vocab_size}"),
                );
            }
        }
        if self.keys.is_empty() {
            return bad("keys", "must list at least one key");
        }
        if self.values.len() < 2 {
            return bad("values", "must list at least two values");
        }
        let mut all: Vec<u32> = self.keys.iter().chain(&self.values).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return bad(
                "values",
                "keys and values must be distinct ids, with no id in both",
            );
        }
        Ok(())
    }

    fn field(&self, name: &str) -> &[u32] {
        match name {
            "fact_prefix" => &self.fact_prefix,
            "query_prefix" => &self.query_prefix,
            "infix" => &self.infix,
            "keys" => &self.keys,
            _ => &self.values,
        }
    }
}

/// One MQAR setting: `pairs` statements, then `queries` of their keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqarConfig {
    /// Distinct keys stated, each with a uniformly drawn value.
    pub pairs: usize,
    /// Distinct stated keys asked, in random order (at most `pairs`).
    pub queries: usize,
    /// The ids to use.
    pub syntax: RecallSyntax,
}

/// `n` MQAR examples: all statements first, then the queries (teacher-forced: each query shows its
/// value, which the next queries may not reuse since keys are distinct).
pub fn mqar(cfg: &MqarConfig, n: usize, seed: u64) -> Result<Vec<ProbeExample>> {
    let s = &cfg.syntax;
    s.validate(1 << 32)?;
    if cfg.pairs == 0 || cfg.pairs > s.keys.len() {
        return Err(DataError::invalid(
            "mqar.pairs",
            cfg.pairs,
            format!(
                "must be between 1 and the number of keys ({})",
                s.keys.len()
            ),
        ));
    }
    if cfg.queries == 0 || cfg.queries > cfg.pairs {
        return Err(DataError::invalid(
            "mqar.queries",
            cfg.queries,
            format!("must be between 1 and pairs ({})", cfg.pairs),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let mut rng = Rng::new(seed, domain::PROBE, i);
        let keys = choose_distinct(&s.keys, cfg.pairs, &mut rng);
        let values: Vec<u32> = (0..cfg.pairs)
            .map(|_| s.values[rng.below(s.values.len() as u64) as usize])
            .collect();
        let mut tokens = Vec::new();
        for (&k, &v) in keys.iter().zip(&values) {
            tokens.extend(s.statement(k, v));
        }
        let order: Vec<usize> =
            choose_distinct(&(0..cfg.pairs).collect::<Vec<_>>(), cfg.queries, &mut rng);
        let mut targets = Vec::with_capacity(cfg.queries);
        for q in order {
            tokens.extend(s.query(keys[q], values[q]));
            targets.push((tokens.len() - 2, values[q]));
        }
        out.push(ProbeExample { tokens, targets });
    }
    Ok(out)
}

/// `n` NIAH examples of exactly `context_len` tokens: a statement at relative `depth` (0 = start,
/// 1 = just before the query) of filler drawn from `filler`, then the query.
///
/// Example `i` uses the same filler stream and needle at every depth of a given `context_len`, so
/// the depths differ only in where the needle sits. The key is one whose statement pattern occurs
/// nowhere else in the filler.
pub fn niah(
    syntax: &RecallSyntax,
    context_len: usize,
    depth: f64,
    n: usize,
    seed: u64,
    filler: &dyn Dataset,
) -> Result<Vec<ProbeExample>> {
    syntax.validate(filler.vocab_size())?;
    if !(0.0..=1.0).contains(&depth) {
        return Err(DataError::invalid("niah.depth", depth, "must be in [0, 1]"));
    }
    let stmt_len = syntax.fact_prefix.len() + syntax.infix.len() + 2;
    let query_len = syntax.query_prefix.len() + syntax.infix.len() + 2;
    if context_len < stmt_len + query_len + 1 {
        return Err(DataError::invalid(
            "niah.context_len",
            context_len,
            format!(
                "must leave room for the statement ({stmt_len}), the query ({query_len}) and \
                 at least one filler token"
            ),
        ));
    }
    let hay_len = context_len - query_len;
    let position = (depth * (hay_len - stmt_len) as f64).round() as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let stream = stream_key(seed, context_len as u64, i);
        let mut rng = Rng::new(seed, domain::PROBE, stream);
        let mut keys = syntax.keys.clone();
        let mut found = None;
        for attempt in 0..keys.len() {
            let pick = attempt + rng.below((keys.len() - attempt) as u64) as usize;
            keys.swap(attempt, pick);
            let (k, v) = (
                keys[attempt],
                syntax.values[rng.below(syntax.values.len() as u64) as usize],
            );
            let hay = filler.haystack(stream, hay_len, position, &syntax.statement(k, v));
            let pattern = [&syntax.fact_prefix[..], &[k], &syntax.infix].concat();
            let query_pattern = [&syntax.query_prefix[..], &[k], &syntax.infix].concat();
            if hay.tokens.len() == hay_len
                && occurrences(&hay.tokens, &pattern) == 1
                && occurrences(&hay.tokens, &query_pattern) == usize::from(pattern == query_pattern)
            {
                found = Some((hay.tokens, k, v));
                break;
            }
        }
        let (mut tokens, k, v) = found.ok_or_else(|| {
            DataError::Probe(format!(
                "no key of the syntax can be placed unambiguously in filler {} of {}",
                stream,
                filler.describe()
            ))
        })?;
        tokens.extend(syntax.query(k, v));
        out.push(ProbeExample {
            targets: vec![(tokens.len() - 2, v)],
            tokens,
        });
    }
    Ok(out)
}

fn occurrences(haystack: &[u32], pattern: &[u32]) -> usize {
    haystack
        .windows(pattern.len())
        .filter(|w| *w == pattern)
        .count()
}

fn choose_distinct<T: Copy>(items: &[T], k: usize, rng: &mut Rng) -> Vec<T> {
    let mut pool = items.to_vec();
    for i in 0..k {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

/// Correct predictions out of the targets scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeScore {
    /// Predictions equal to the expected token.
    pub correct: usize,
    /// Targets scored.
    pub total: usize,
}

impl ProbeScore {
    /// `correct / total` (0 when nothing was scored).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Scores `predictions[i][j]`, the model's argmax token at `examples[i].targets[j].0`, against the
/// expected tokens.
pub fn score(examples: &[ProbeExample], predictions: &[Vec<u32>]) -> Result<ProbeScore> {
    if examples.len() != predictions.len() {
        return Err(DataError::Probe(format!(
            "{} examples but {} prediction lists",
            examples.len(),
            predictions.len()
        )));
    }
    let mut s = ProbeScore {
        correct: 0,
        total: 0,
    };
    for (i, (ex, pred)) in examples.iter().zip(predictions).enumerate() {
        if ex.targets.len() != pred.len() {
            return Err(DataError::Probe(format!(
                "example {i} has {} targets but {} predictions",
                ex.targets.len(),
                pred.len()
            )));
        }
        s.total += pred.len();
        s.correct += ex
            .targets
            .iter()
            .zip(pred)
            .filter(|((_, t), p)| t == *p)
            .count();
    }
    Ok(s)
}

/// A grid of probes to run on a trained model (serde; the `probes` section of an experiment).
///
/// ```yaml
/// seed: 0
/// mqar: { pairs: [4, 8, 16, 32], examples: 100 }
/// niah: { context_lengths: [256, 1024], depths: [0.0, 0.5, 1.0], examples: 50 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeGrid {
    /// Seeds every example.
    #[serde(default)]
    pub seed: u64,
    /// Explicit ids; by default the dataset's own [`Dataset::recall_syntax`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syntax: Option<RecallSyntax>,
    /// MQAR settings, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqar: Option<MqarGrid>,
    /// NIAH settings, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub niah: Option<NiahGrid>,
}

/// MQAR over a list of pair counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqarGrid {
    /// Pair counts (context sizes) to test.
    pub pairs: Vec<usize>,
    /// Queries per example; all pairs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<usize>,
    /// Examples per pair count.
    pub examples: usize,
}

/// NIAH over context lengths x depths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NiahGrid {
    /// Total tokens per example.
    pub context_lengths: Vec<usize>,
    /// Needle depths in `[0, 1]`.
    pub depths: Vec<f64>,
    /// Examples per (length, depth).
    pub examples: usize,
}

/// Which cell of the grid a set of examples belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeTask {
    /// MQAR with this many pairs and queries.
    Mqar {
        /// Statements per example.
        pairs: usize,
        /// Queries per example.
        queries: usize,
    },
    /// NIAH at this length and depth.
    Niah {
        /// Tokens per example.
        context_len: usize,
        /// Needle depth.
        depth: f64,
    },
}

impl std::fmt::Display for ProbeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeTask::Mqar { pairs, queries } => write!(f, "mqar pairs={pairs} queries={queries}"),
            ProbeTask::Niah { context_len, depth } => {
                write!(f, "niah len={context_len} depth={depth:.2}")
            }
        }
    }
}

/// The examples of one grid cell, with the accuracy of guessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSet {
    /// The cell.
    pub task: ProbeTask,
    /// Its examples.
    pub examples: Vec<ProbeExample>,
    /// Accuracy of a context-blind guess, `1 / |values|`.
    pub chance: f64,
}

impl ProbeGrid {
    /// Parses and validates a YAML document (validation of ids waits for the dataset).
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let grid: Self = scalelab_config::parse_yaml(text, "<string>")?;
        grid.validate()?;
        Ok(grid)
    }

    /// Checks the grid's own values; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = &self.mqar {
            if m.examples == 0 {
                return Err(DataError::invalid("mqar.examples", 0, "must be at least 1"));
            }
            for (i, &p) in m.pairs.iter().enumerate() {
                if p == 0 {
                    return Err(DataError::invalid(
                        format!("mqar.pairs[{i}]"),
                        p,
                        "must be at least 1",
                    ));
                }
                if let Some(q) = m.queries {
                    if q == 0 || q > p {
                        return Err(DataError::invalid(
                            "mqar.queries",
                            q,
                            format!("must be between 1 and every pair count (pairs[{i}] = {p})"),
                        ));
                    }
                }
            }
        }
        if let Some(n) = &self.niah {
            if n.examples == 0 {
                return Err(DataError::invalid("niah.examples", 0, "must be at least 1"));
            }
            for (i, &d) in n.depths.iter().enumerate() {
                if !(0.0..=1.0).contains(&d) {
                    return Err(DataError::invalid(
                        format!("niah.depths[{i}]"),
                        d,
                        "must be in [0, 1]",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every cell's examples, MQAR first, NIAH by length then depth; `filler` supplies the NIAH
    /// filler and, unless `syntax` is set, the ids.
    pub fn generate(&self, filler: &dyn Dataset) -> Result<Vec<ProbeSet>> {
        self.validate()?;
        let syntax = match (self.syntax.clone(), filler.recall_syntax()) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => {
                return Err(DataError::invalid(
                    "syntax",
                    "(absent)",
                    format!(
                        "this dataset has no built-in recall syntax ({}); list the token ids \
                         under syntax: {{fact_prefix, query_prefix, infix, keys, values}}",
                        filler.describe()
                    ),
                ))
            }
        };
        syntax.validate(filler.vocab_size())?;
        let chance = syntax.chance();
        let mut sets = Vec::new();
        if let Some(m) = &self.mqar {
            for &pairs in &m.pairs {
                let queries = m.queries.unwrap_or(pairs);
                let cfg = MqarConfig {
                    pairs,
                    queries,
                    syntax: syntax.clone(),
                };
                sets.push(ProbeSet {
                    task: ProbeTask::Mqar { pairs, queries },
                    examples: mqar(&cfg, m.examples, self.seed ^ pairs as u64)?,
                    chance,
                });
            }
        }
        if let Some(n) = &self.niah {
            for &context_len in &n.context_lengths {
                for &depth in &n.depths {
                    sets.push(ProbeSet {
                        task: ProbeTask::Niah { context_len, depth },
                        examples: niah(&syntax, context_len, depth, n.examples, self.seed, filler)?,
                        chance,
                    });
                }
            }
        }
        Ok(sets)
    }
}
