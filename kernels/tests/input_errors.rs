//! Inputs a caller can get wrong stop with an error that names the input, its shape and the
//! shape expected, before any tensor op runs (on every backend: these run the reference's).

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::Tensor;
use scalelab_kernels::LightningBackend;

type B = NdArray<f32>;

fn t4(shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::ones(shape, &Default::default())
}

fn s(heads: usize) -> Tensor<B, 1> {
    Tensor::ones([heads], &Default::default())
}

fn attention(
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    heads: usize,
    state: Option<[usize; 4]>,
    block: usize,
) {
    let _ = B::lightning_attention(t4(q), t4(k), t4(v), s(heads), state.map(t4), block);
}

#[test]
fn matching_inputs_run() {
    attention(
        [1, 2, 5, 8],
        [1, 2, 5, 8],
        [1, 2, 5, 4],
        2,
        Some([1, 2, 8, 4]),
        3,
    );
}

#[test]
#[should_panic(
    expected = "lightning_attention: k is [1, 2, 5, 6], expected [1, 2, 5, 8], the shape of q"
)]
fn k_of_another_head_dim() {
    attention([1, 2, 5, 8], [1, 2, 5, 6], [1, 2, 5, 8], 2, None, 64);
}

#[test]
#[should_panic(expected = "lightning_attention: v is [1, 2, 4, 8], expected [1, 2, 5, dv]")]
fn v_of_another_length() {
    attention([1, 2, 5, 8], [1, 2, 5, 8], [1, 2, 4, 8], 2, None, 64);
}

#[test]
#[should_panic(expected = "lightning_attention: s is [3], expected [2], one decay rate per head")]
fn one_decay_per_head() {
    attention([1, 2, 5, 8], [1, 2, 5, 8], [1, 2, 5, 8], 3, None, 64);
}

#[test]
#[should_panic(expected = "lightning_attention: state is [1, 2, 4, 8], expected [1, 2, 8, 4]")]
fn state_transposed() {
    attention(
        [1, 2, 5, 8],
        [1, 2, 5, 8],
        [1, 2, 5, 4],
        2,
        Some([1, 2, 4, 8]),
        64,
    );
}

#[test]
#[should_panic(expected = "lightning_attention: q is [1, 2, 0, 8], expected no zero dimension")]
fn empty_sequence() {
    attention([1, 2, 0, 8], [1, 2, 0, 8], [1, 2, 0, 8], 2, None, 64);
}

#[test]
#[should_panic(expected = "lightning_attention: block is 0")]
fn block_zero() {
    attention([1, 2, 5, 8], [1, 2, 5, 8], [1, 2, 5, 8], 2, None, 0);
}

#[test]
#[should_panic(expected = "lightning_attention: v is [1, 2, 5, 8], expected [1, 2, 6, dv]")]
fn checked_under_autodiff_too() {
    type A = Autodiff<B>;
    let t = |shape: [usize; 4]| Tensor::<A, 4>::ones(shape, &Default::default());
    let _ = A::lightning_attention(
        t([1, 2, 6, 8]),
        t([1, 2, 6, 8]),
        t([1, 2, 5, 8]),
        Tensor::ones([2], &Default::default()),
        None,
        64,
    );
}

#[test]
#[should_panic(expected = "lightning_decode: q has 2 tokens, a decode step takes one")]
fn decode_takes_one_token() {
    let _ = B::lightning_decode(
        t4([1, 2, 2, 8]),
        t4([1, 2, 2, 8]),
        t4([1, 2, 2, 8]),
        s(2),
        t4([1, 2, 8, 8]),
    );
}

#[test]
#[should_panic(expected = "lightning_decode: state is [1, 2, 8, 8], expected [1, 2, 8, 4]")]
fn decode_state_shape() {
    let _ = B::lightning_decode(
        t4([1, 2, 1, 8]),
        t4([1, 2, 1, 8]),
        t4([1, 2, 1, 4]),
        s(2),
        t4([1, 2, 8, 8]),
    );
}
