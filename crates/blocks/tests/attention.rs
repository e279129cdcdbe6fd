//! Lightning and softmax attention layers: decay schedule, causality, state carry, decoding, GQA.

mod common;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use common::*;
use scalelab_blocks::{
    alibi_slopes, minimax_decay_rates, LightningAttentionConfig, SoftmaxAttentionConfig,
};

#[test]
fn alibi_slopes_match_alibi_for_powers_of_two_and_others() {
    let s8 = alibi_slopes(8);
    for (h, s) in s8.iter().enumerate() {
        assert!((s - 0.5f64.powi(h as i32 + 1)).abs() < 1e-15);
    }
    // ALiBi's non-power-of-two rule: the 8 slopes of H=8, then every other slope of H=16.
    let s12 = alibi_slopes(12);
    assert_eq!(&s12[..8], &s8[..]);
    let odd: Vec<f64> = [1, 3, 5, 7]
        .iter()
        .map(|&i| 2f64.powf(-0.5 * i as f64))
        .collect();
    for (a, b) in s12[8..].iter().zip(&odd) {
        assert!((a - b).abs() < 1e-15, "{s12:?}");
    }
}

#[test]
fn minimax_decay_at_64_heads_matches_the_paper() {
    // reference/minimax01.md: for H = 64, layer 0, lambda from 0.3997 (fastest) to 0.9961.
    let lambdas: Vec<f64> = minimax_decay_rates(64, 0, 80)
        .iter()
        .map(|s| (-s).exp())
        .collect();
    assert!((lambdas[0] - 0.3997).abs() < 1e-4, "{}", lambdas[0]);
    assert!((lambdas[63] - 0.9961).abs() < 1e-4, "{}", lambdas[63]);
    // The last layer barely decays: s = slope * 1e-5.
    let last = minimax_decay_rates(64, 79, 80);
    assert!(last.iter().all(|s| *s < 1e-5));
}

fn lightning_config(block: usize) -> LightningAttentionConfig {
    LightningAttentionConfig::new(32, 4, 8)
        .with_layer_index(1)
        .with_num_layers(4)
        .with_block_size(block)
}

fn lightning(block: usize) -> scalelab_blocks::LightningAttention<B> {
    lightning_config(block).init(&device())
}

fn softmax_layer(
    heads: usize,
    kv_heads: usize,
    rope_dims: usize,
) -> scalelab_blocks::SoftmaxAttention<B> {
    SoftmaxAttentionConfig::new(32, heads, 8, kv_heads, rope_dims).init(&device())
}

/// Changing token `t` must leave every output before `t` unchanged, and change output `t`.
fn assert_causal(f: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>, len: usize, t: usize) {
    let x = randn(10, [2, len, 32]);
    let bumped = x
        .clone()
        .slice_assign([0..2, t..t + 1, 0..32], randn(11, [2, 1, 32]));
    let (y1, y2) = (f(x), f(bumped));
    let before = max_abs_diff(y1.clone().narrow(1, 0, t), y2.clone().narrow(1, 0, t));
    let at = max_abs_diff(y1.narrow(1, t, 1), y2.narrow(1, t, 1));
    assert!(before < 1e-12, "outputs before {t} changed by {before}");
    assert!(at > 1e-6, "output {t} did not change");
}

#[test]
fn every_attention_is_causal() {
    let l = lightning(4);
    assert_causal(|x| l.forward(x), 13, 6);
    for (h, kv, rope) in [(4, 4, 8), (4, 2, 4), (4, 1, 0)] {
        let s = softmax_layer(h, kv, rope);
        assert_causal(|x| s.forward(x), 13, 6);
    }
}

#[test]
fn lightning_block_size_does_not_change_the_result() {
    let x = randn(3, [2, 19, 32]);
    let reference = lightning(64);
    let want = reference.forward(x.clone());
    for block in [1, 4, 7, 16] {
        // Same weights, another block size.
        let layer = lightning(block).load_record(reference.clone().into_record());
        let got = layer.forward(x.clone());
        let err = max_abs_diff(want.clone(), got);
        assert!(err < 1e-12, "block {block}: {err}");
    }
}

#[test]
fn lightning_pieces_and_decode_equal_the_full_forward() {
    let layer = lightning(4);
    let x = randn(4, [2, 11, 32]);
    let full = layer.forward(x.clone());
    // Pieces of uneven length, state carried.
    let mut state = None;
    let mut outs = Vec::new();
    for (start, len) in [(0, 5), (5, 1), (6, 5)] {
        let (y, s) = layer.forward_with_state(x.clone().narrow(1, start, len), state);
        outs.push(y);
        state = Some(s);
    }
    assert!(max_abs_diff(full.clone(), Tensor::cat(outs, 1)) < 1e-12);
    // One token at a time.
    let mut state = None;
    let mut outs = Vec::new();
    for t in 0..11 {
        let (y, s) = layer.forward_with_state(x.clone().narrow(1, t, 1), state);
        outs.push(y);
        state = Some(s);
    }
    assert!(max_abs_diff(full, Tensor::cat(outs, 1)) < 1e-12);
}

#[test]
fn softmax_decode_and_chunked_prefill_equal_the_full_forward() {
    for (h, kv, rope) in [(4, 4, 8), (4, 2, 4)] {
        let layer = softmax_layer(h, kv, rope);
        let x = randn(5, [2, 9, 32]);
        let full = layer.forward(x.clone());
        let mut cache = None;
        let mut outs = Vec::new();
        // A prefill of 4, one decode step, a chunk of 3, then single tokens.
        for (start, len) in [(0, 4), (4, 1), (5, 3), (8, 1)] {
            let (y, c) = layer.forward_cached(x.clone().narrow(1, start, len), cache);
            outs.push(y);
            cache = Some(c);
        }
        assert_eq!(cache.unwrap().len(), 9);
        let err = max_abs_diff(full, Tensor::cat(outs, 1));
        assert!(err < 1e-12, "heads {h} kv {kv}: {err}");
    }
}

#[test]
fn gqa_equals_mha_with_each_kv_head_repeated() {
    let gqa = softmax_layer(4, 2, 4);
    let mut mha = softmax_layer(4, 4, 4);
    // MHA head i uses GQA's KV head i / 2: copy those columns.
    let repeat = |w: Tensor<B, 2>| {
        let cols: Vec<Tensor<B, 2>> = (0..4)
            .map(|i| w.clone().narrow(1, (i / 2) * 8, 8))
            .collect();
        Tensor::cat(cols, 1)
    };
    mha.q.weight = Param::from_tensor(gqa.q.weight.val());
    mha.k.weight = Param::from_tensor(repeat(gqa.k.weight.val()));
    mha.v.weight = Param::from_tensor(repeat(gqa.v.weight.val()));
    mha.out.weight = Param::from_tensor(gqa.out.weight.val());
    let x = randn(6, [2, 7, 32]);
    assert!(max_abs_diff(gqa.forward(x.clone()), mha.forward(x)) < 1e-12);
}

#[test]
fn softmax_layer_matches_a_hand_written_attention() {
    // No RoPE, MHA: out(softmax(q k^T / sqrt(hd) + causal mask) v), written out directly.
    let layer = softmax_layer(4, 4, 0);
    let x = randn(7, [1, 5, 32]);
    let split = |y: Tensor<B, 3>| y.reshape([1, 5, 4, 8]).swap_dims(1, 2);
    let q = split(layer.q.forward(x.clone()));
    let k = split(layer.k.forward(x.clone()));
    let v = split(layer.v.forward(x.clone()));
    let mut mask = vec![0.0; 25];
    for i in 0..5 {
        for j in i + 1..5 {
            mask[i * 5 + j] = f64::NEG_INFINITY;
        }
    }
    let mask =
        Tensor::<B, 2>::from_data(TensorData::new(mask, [5, 5]), &device()).reshape([1, 1, 5, 5]);
    let scores = q.matmul(k.swap_dims(2, 3)) / 8f64.sqrt() + mask;
    let o = burn::tensor::activation::softmax(scores, 3).matmul(v);
    let want = layer.out.forward(o.swap_dims(1, 2).reshape([1, 5, 32]));
    assert!(max_abs_diff(layer.forward(x), want) < 1e-12);
}

#[test]
fn rope_scores_depend_on_relative_position_and_spare_the_tail() {
    let layer = softmax_layer(4, 4, 4); // RoPE on 4 of 8 dims
    let q = randn(8, [1, 4, 1, 8]);
    let k = randn(9, [1, 4, 1, 8]);
    let score = |m: usize, n: usize| {
        (layer.apply_rope(q.clone(), m) * layer.apply_rope(k.clone(), n)).sum_dim(3)
    };
    let base = score(5, 2);
    for shift in [1, 7, 1000] {
        assert!(max_abs_diff(base.clone(), score(5 + shift, 2 + shift)) < 1e-9);
    }
    assert!(
        max_abs_diff(base, score(6, 2)) > 1e-6,
        "a different gap must change the score"
    );
    let rotated = layer.apply_rope(q.clone(), 3);
    assert!(max_abs_diff(rotated.clone().narrow(3, 4, 4), q.clone().narrow(3, 4, 4)) == 0.0);
    let norm = |t: Tensor<B, 4>| t.narrow(3, 0, 4).powi_scalar(2).sum().into_scalar();
    assert!(
        (norm(rotated) - norm(q.clone())).abs() < 1e-12,
        "rotation preserves the norm"
    );
    let none = softmax_layer(4, 4, 0);
    assert!(max_abs_diff(none.apply_rope(q.clone(), 9), q) == 0.0);
}
