//! Seeded randomness that never changes across platforms or dependency updates: ChaCha8 streams
//! keyed by a SplitMix64 hash of (seed, purpose, index), with our own float and range mappings.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64's finalizer: a bijective 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key for the stream `(seed, domain, index)`; `domain` separates purposes (train,
/// validation, language structure, probes) so their streams never coincide by construction.
pub(crate) fn stream_key(seed: u64, domain: u64, index: u64) -> u64 {
    let a = mix64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let b = mix64(a ^ domain.wrapping_mul(0xd1b5_4a32_d192_ed03));
    mix64(b ^ index.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7))
}

/// A deterministic random stream.
pub(crate) struct Rng(ChaCha8Rng);

impl Rng {
    /// The stream for `(seed, domain, index)`.
    pub(crate) fn new(seed: u64, domain: u64, index: u64) -> Self {
        let key = stream_key(seed, domain, index);
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix64(key.wrapping_add(i as u64 + 1)).to_le_bytes());
        }
        Self(ChaCha8Rng::from_seed(bytes))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (exact, by rejection); `n` must be positive.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - (u64::MAX - n + 1) % n;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % n;
            }
        }
    }

    /// Index of a draw from a cumulative distribution (last entry 1, or the total mass).
    pub(crate) fn draw_cdf(&mut self, cdf: &[f64]) -> usize {
        let u = self.uniform() * cdf[cdf.len() - 1];
        cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
    }
}

/// Stream domains.
pub(crate) mod domain {
    pub(crate) const TRAIN: u64 = 1;
    pub(crate) const VALIDATION: u64 = 2;
    pub(crate) const LANGUAGE: u64 = 3;
    pub(crate) const PROBE: u64 = 4;
    pub(crate) const HAYSTACK: u64 = 5;
    pub(crate) const WINDOW_ORDER: u64 = 6;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut rng = Rng::new(7, 0, 0);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[rng.below(3) as usize] += 1;
        }
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 400, "{counts:?}");
        }
    }

    #[test]
    fn streams_differ_by_domain_and_index() {
        let mut keys = std::collections::HashSet::new();
        for d in 1..=3 {
            for i in 0..10_000 {
                assert!(keys.insert(stream_key(0, d, i)));
            }
        }
    }

    #[test]
    fn draw_cdf_respects_masses() {
        let mut rng = Rng::new(1, 0, 0);
        let cdf = [0.1, 0.1, 0.6, 1.0];
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[rng.draw_cdf(&cdf)] += 1;
        }
        assert_eq!(counts[1], 0);
        for (c, p) in counts.iter().zip([0.1, 0.0, 0.5, 0.4]) {
            assert!((*c as f64 / 40_000.0 - p).abs() < 0.01, "{counts:?}");
        }
    }
}
