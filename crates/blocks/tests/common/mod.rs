//! Shared helpers of the block tests.
#![allow(dead_code)]

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use scalelab_config::ModelConfig;

/// f64 on the CPU, so forms that must agree can be compared tightly.
pub type B = NdArray<f64>;

pub fn device() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

/// Standard-normal data from a per-call generator: Burn's global seed is shared by tests that run
/// in parallel, so test inputs do not use it.
pub fn randn<const D: usize>(seed: u64, shape: [usize; D]) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let data: Vec<f64> = (0..n)
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect();
    Tensor::from_data(TensorData::new(data, shape), &device())
}

pub fn tokens(seed: u64, batch: usize, len: usize, vocab: usize) -> Tensor<B, 2, Int> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let ids: Vec<i64> = (0..batch * len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(ids, [batch, len]), &device())
}

pub fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    (a - b).abs().max().into_scalar()
}

pub fn cfg(yaml: &str) -> ModelConfig {
    ModelConfig::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}
