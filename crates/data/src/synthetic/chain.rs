//! The word chain: a reversible Markov chain whose stationary law is exactly a Zipf distribution.
//!
//! `P(w'|w) = (1 - b) pi(w') + b K(w, w') / pi(w)`, where `K` is symmetric with row sums `pi`
//! (so `pi P = pi` exactly). `K` averages `c` random couplings of `pi` with itself, each the
//! monotone ("north-west corner") coupling of two random orderings of the words: a word's mass is
//! laid on `[0, 1)` in each ordering and paired with whatever mass it overlaps in the other, so a
//! rare word has one or two successors and a frequent word spreads over many.

use crate::rng::Rng;

/// A sparse row of `K(w, .) / pi(w)`: successor ids ascending, probabilities, their running sum.
struct SparseRow {
    ids: Vec<u32>,
    probs: Vec<f64>,
    cdf: Vec<f64>,
}

pub(crate) struct Chain {
    pi: Vec<f64>,
    pi_cdf: Vec<f64>,
    pi_entropy: f64,
    strength: f64,
    rows: Vec<SparseRow>,
    row_entropy: Vec<f64>,
    stationary_entropy: f64,
}

impl Chain {
    /// A chain over `words` words with Zipf exponent `s`, structure weight `strength` and
    /// `couplings` random couplings drawn from `rng`.
    pub(crate) fn new(
        words: usize,
        s: f64,
        strength: f64,
        couplings: usize,
        rng: &mut Rng,
    ) -> Self {
        let weights: Vec<f64> = (0..words).map(|r| ((r + 1) as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let pi: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let pi_cdf = running_sum(&pi);
        let sum_pi_ln_pi: f64 = pi.iter().map(|&p| p * p.ln()).sum();

        let mut entries: Vec<(u32, u32, f64)> = Vec::new();
        let share = 1.0 / (2 * couplings) as f64;
        for _ in 0..couplings {
            let a = shuffled(words, rng);
            let b = shuffled(words, rng);
            for (x, y, m) in monotone_coupling(&pi, &a, &b) {
                entries.push((x, y, m * share));
                entries.push((y, x, m * share));
            }
        }
        entries.sort_unstable_by_key(|&(x, y, _)| (x, y));

        let mut rows: Vec<SparseRow> = (0..words)
            .map(|_| SparseRow {
                ids: Vec::new(),
                probs: Vec::new(),
                cdf: Vec::new(),
            })
            .collect();
        for (x, y, m) in entries {
            let row = &mut rows[x as usize];
            if row.ids.last() == Some(&y) {
                *row.probs.last_mut().unwrap() += m;
            } else {
                row.ids.push(y);
                row.probs.push(m);
            }
        }
        for row in &mut rows {
            let sum: f64 = row.probs.iter().sum();
            row.probs.iter_mut().for_each(|p| *p /= sum);
            row.cdf = running_sum(&row.probs);
        }

        let row_entropy: Vec<f64> = rows
            .iter()
            .map(|row| mixture_entropy(&pi, sum_pi_ln_pi, strength, row))
            .collect();
        Self {
            stationary_entropy: pi.iter().zip(&row_entropy).map(|(p, h)| p * h).sum(),
            pi_entropy: -sum_pi_ln_pi,
            pi,
            pi_cdf,
            strength,
            rows,
            row_entropy,
        }
    }

    /// The stationary (Zipf) distribution over words.
    pub(crate) fn pi(&self) -> &[f64] {
        &self.pi
    }

    /// `P(next | prev)`; `prev = None` is the start of a sequence, whose row is `pi`.
    pub(crate) fn prob(&self, prev: Option<u32>, next: u32) -> f64 {
        let base = self.pi[next as usize];
        match prev {
            None => base,
            Some(w) => {
                let row = &self.rows[w as usize];
                let sparse = match row.ids.binary_search(&next) {
                    Ok(i) => row.probs[i],
                    Err(_) => 0.0,
                };
                (1.0 - self.strength) * base + self.strength * sparse
            }
        }
    }

    /// Entropy (nats) of the row of `prev`.
    pub(crate) fn entropy(&self, prev: Option<u32>) -> f64 {
        match prev {
            None => self.pi_entropy,
            Some(w) => self.row_entropy[w as usize],
        }
    }

    /// Draws the successor of `prev`.
    pub(crate) fn sample(&self, prev: Option<u32>, rng: &mut Rng) -> u32 {
        let structured = rng.uniform() < self.strength;
        match prev {
            Some(w) if structured => {
                let row = &self.rows[w as usize];
                row.ids[rng.draw_cdf(&row.cdf)]
            }
            _ => rng.draw_cdf(&self.pi_cdf) as u32,
        }
    }

    /// `sum_w pi(w) H(P(.|w))`: the entropy rate of the bare chain, in nats per word.
    pub(crate) fn stationary_entropy(&self) -> f64 {
        self.stationary_entropy
    }

    /// Entropy of `pi`, in nats.
    pub(crate) fn pi_entropy(&self) -> f64 {
        self.pi_entropy
    }
}

fn running_sum(p: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    p.iter()
        .map(|x| {
            acc += x;
            acc
        })
        .collect()
}

fn shuffled(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// The coupling of `pi` with itself that pairs the mass of the words laid out in order `a` with
/// the mass they overlap when laid out in order `b`: at most `2n - 1` pairs `(x, y, mass)`.
fn monotone_coupling(pi: &[f64], a: &[u32], b: &[u32]) -> Vec<(u32, u32, f64)> {
    let mut out = Vec::with_capacity(2 * pi.len());
    let (mut i, mut j) = (0, 0);
    let mut ra = pi[a[0] as usize];
    let mut rb = pi[b[0] as usize];
    while i < a.len() && j < b.len() {
        if ra <= rb {
            out.push((a[i], b[j], ra));
            rb -= ra;
            i += 1;
            if i < a.len() {
                ra = pi[a[i] as usize];
            }
        } else {
            out.push((a[i], b[j], rb));
            ra -= rb;
            j += 1;
            if j < b.len() {
                rb = pi[b[j] as usize];
            }
        }
    }
    out.retain(|&(_, _, m)| m > 0.0);
    out
}

/// Entropy of `(1 - b) pi + b row`, in `O(|row|)` given `sum pi ln pi`.
fn mixture_entropy(pi: &[f64], sum_pi_ln_pi: f64, b: f64, row: &SparseRow) -> f64 {
    let mut h = 0.0;
    if b < 1.0 {
        let base = 1.0 - b;
        // Every word off the row's support contributes -(1-b) pi ln((1-b) pi).
        let mut off_support = base.ln() + sum_pi_ln_pi;
        for &id in &row.ids {
            let p = pi[id as usize];
            off_support -= p * (base.ln() + p.ln());
        }
        h -= base * off_support;
    }
    for (&id, &s) in row.ids.iter().zip(&row.probs) {
        let p = (1.0 - b) * pi[id as usize] + b * s;
        if p > 0.0 {
            h -= p * p.ln();
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(strength: f64) -> Chain {
        Chain::new(200, 1.0, strength, 2, &mut Rng::new(3, 0, 0))
    }

    #[test]
    fn rows_are_distributions_and_pi_is_stationary() {
        let c = chain(0.9);
        let n = c.pi().len() as u32;
        let mut pi_p = vec![0.0; n as usize];
        for w in 0..n {
            let row: Vec<f64> = (0..n).map(|x| c.prob(Some(w), x)).collect();
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (x, p) in row.iter().enumerate() {
                pi_p[x] += c.pi()[w as usize] * p;
            }
        }
        let l1: f64 = pi_p.iter().zip(c.pi()).map(|(a, b)| (a - b).abs()).sum();
        assert!(l1 < 1e-12, "|pi P - pi|_1 = {l1}");
    }

    #[test]
    fn row_entropies_match_direct_sums() {
        for strength in [0.0, 0.5, 0.9, 1.0] {
            let c = chain(strength);
            let n = c.pi().len() as u32;
            for w in [0, 1, 17, n - 1] {
                let direct: f64 = (0..n)
                    .map(|x| c.prob(Some(w), x))
                    .filter(|&p| p > 0.0)
                    .map(|p| -p * p.ln())
                    .sum();
                assert!(
                    (direct - c.entropy(Some(w))).abs() < 1e-10,
                    "{strength} {w}"
                );
            }
        }
    }

    #[test]
    fn structure_lowers_the_entropy_and_sampling_follows_the_rows() {
        let c = chain(0.9);
        assert!(c.stationary_entropy() < c.pi_entropy() - 0.5);
        assert!((chain(0.0).stationary_entropy() - c.pi_entropy()).abs() < 1e-12);
        let mut rng = Rng::new(9, 0, 0);
        let w = 150;
        let mut counts = vec![0u32; c.pi().len()];
        let draws = 50_000;
        for _ in 0..draws {
            counts[c.sample(Some(w), &mut rng) as usize] += 1;
        }
        for (x, &k) in counts.iter().enumerate() {
            let p = c.prob(Some(w), x as u32);
            let sd = (p * (1.0 - p) / draws as f64).sqrt();
            assert!((k as f64 / draws as f64 - p).abs() < 5.0 * sd + 1e-4, "{x}");
        }
    }
}
