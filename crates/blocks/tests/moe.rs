//! Mixture of experts: routing weights, capacity and dropping, the auxiliary losses, and that
//! dispatch equals a dense reference while its compute grows with top-k, not with experts.

mod common;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use common::*;
use scalelab_blocks::{Moe, MoeConfig};
use scalelab_config::RouterOrder;

const D: usize = 16;

fn moe(experts: usize, top_k: usize, capacity: Option<f64>) -> Moe<B> {
    MoeConfig::new(D, experts, top_k, 8)
        .with_capacity_factor(capacity)
        .with_init(scalelab_blocks::WeightInit::Normal { std: 0.5 })
        .init(&device())
}

fn rows(t: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [n, m] = t.dims();
    let v: Vec<f64> = t.into_data().iter::<f64>().collect();
    (0..n).map(|i| v[i * m..(i + 1) * m].to_vec()).collect()
}

#[test]
fn renormalized_weights_sum_to_one_and_both_orders_agree() {
    let a = moe(8, 3, None);
    let x = randn(1, [40, D]);
    let renorm = a.router_weights(x.clone());
    for row in rows(renorm.weights.clone()) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(
            row.windows(2).all(|w| w[0] >= w[1]),
            "best expert first: {row:?}"
        );
    }
    // Mixtral's order (top-k logits, then softmax) gives the same weights.
    let b = MoeConfig::new(D, 8, 3, 8)
        .with_router(RouterOrder::TopkSoftmax)
        .init::<B>(&device())
        .load_record(a.clone().into_record());
    let other = b.router_weights(x.clone());
    assert!(max_abs_diff(renorm.weights.clone(), other.weights) < 1e-12);
    // Switch's order keeps the raw probabilities, which sum to less than 1.
    let c = MoeConfig::new(D, 8, 3, 8)
        .with_router(RouterOrder::SoftmaxTopk)
        .init::<B>(&device())
        .load_record(a.into_record());
    let raw = c.router_weights(x);
    let want = raw.probs.clone().gather(1, raw.indices.clone());
    assert!(max_abs_diff(raw.weights.clone(), want) == 0.0);
    assert!(rows(raw.weights)
        .iter()
        .all(|r| r.iter().sum::<f64>() < 1.0));
}

/// The dense reference: every expert on every token, masked by the routing weights.
fn dense_reference(m: &Moe<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let decision = m.router_weights(x.clone());
    let [n, _] = x.dims();
    let idx: Vec<i64> = decision.indices.into_data().iter::<i64>().collect();
    let w = rows(decision.weights);
    let k = w[0].len();
    let mut out = Tensor::<B, 2>::zeros([n, D], &device());
    for (e, expert) in m.experts.iter().enumerate() {
        let gate: Vec<f64> = (0..n)
            .map(|i| {
                (0..k)
                    .filter(|&r| idx[i * k + r] == e as i64)
                    .map(|r| w[i][r])
                    .sum()
            })
            .collect();
        let gate = Tensor::<B, 1>::from_data(TensorData::new(gate, [n]), &device()).reshape([n, 1]);
        out = out + expert.forward(x.clone()) * gate;
    }
    out
}

#[test]
fn dispatch_equals_the_dense_reference() {
    for (e, k) in [(4, 1), (8, 2), (6, 6)] {
        let m = moe(e, k, None);
        let x = randn(2, [3, 10, D]);
        let got = m.forward(x.clone()).output.reshape([30, D]);
        let err = max_abs_diff(got, dense_reference(&m, x.reshape([30, D])));
        assert!(err < 1e-12, "E={e} k={k}: {err}");
    }
}

#[test]
fn compute_grows_with_top_k_not_with_experts() {
    let x = randn(3, [4, 16, D]);
    for e in [4, 16, 64] {
        let out = moe(e, 2, None).forward(x.clone());
        let rows_run: usize = out.stats.tokens_per_expert.iter().sum();
        // 64 tokens x top-2 rows in all, whatever the expert count; dense dispatch would run 64 x E.
        assert_eq!(rows_run, 64 * 2, "E={e}");
        assert_eq!(out.stats.tokens_per_expert.len(), e);
    }
}

#[test]
fn large_capacity_drops_nothing() {
    let m = moe(4, 2, Some(4.0)); // capacity = all slots
    let x = randn(4, [2, 20, D]);
    let out = m.forward(x.clone());
    assert_eq!(out.stats.dropped_fraction, 0.0);
    assert_eq!(out.stats.tokens_per_expert, out.stats.routed_per_expert);
    assert!(max_abs_diff(out.output, m.forward_dropless(x).output) == 0.0);
}

#[test]
fn small_capacity_drops_what_it_implies() {
    let m = moe(4, 2, Some(0.5));
    let x = randn(5, [1, 40, D]);
    let out = m.forward(x.clone());
    let capacity = (0.5_f64 * 40.0 * 2.0 / 4.0).ceil() as usize;
    assert_eq!(out.stats.capacity, Some(capacity));
    let mut dropped = 0;
    for (routed, kept) in out
        .stats
        .routed_per_expert
        .iter()
        .zip(&out.stats.tokens_per_expert)
    {
        assert_eq!(*kept, (*routed).min(capacity));
        dropped += routed - kept;
    }
    assert!(dropped > 0, "half capacity must drop something");
    assert!((out.stats.dropped_fraction - dropped as f64 / 80.0).abs() < 1e-12);
    // With capacity 1 per expert, at most 4 slots survive: a token with none gets exactly zero.
    let tight = moe(4, 2, Some(1e-9)).load_record(m.clone().into_record());
    let out = tight.forward(x);
    assert_eq!(out.stats.tokens_per_expert.iter().sum::<usize>(), 4);
    let zero_rows = rows(out.output.reshape([40, D]))
        .iter()
        .filter(|r| r.iter().all(|v| *v == 0.0))
        .count();
    assert!(zero_rows >= 36, "{zero_rows} tokens have no expert output");
}

/// A router that sends one-hot token `i` to expert `i` with probability `p`.
fn one_hot_router(e: usize, scale: f64) -> Moe<B> {
    let mut m = MoeConfig::new(e, e, 1, 4).init::<B>(&device());
    let eye = Tensor::<B, 2>::from_data(
        TensorData::new(
            (0..e * e)
                .map(|i| if i % (e + 1) == 0 { scale } else { 0.0 })
                .collect(),
            [e, e],
        ),
        &device(),
    );
    m.router.weight = Param::from_tensor(eye);
    m
}

fn one_hot_tokens(e: usize, which: impl Fn(usize) -> usize) -> Tensor<B, 3> {
    let data = (0..e * e)
        .map(|i| if i % e == which(i / e) { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(data, [1, e, e]), &device())
}

#[test]
fn load_balancing_loss_is_one_when_balanced_and_grows_with_imbalance() {
    let e = 8;
    let m = one_hot_router(e, 5.0);
    let balanced = m.forward(one_hot_tokens(e, |i| i)).stats;
    assert_eq!(balanced.routed_per_expert, vec![1; e]);
    let lb = |s: &scalelab_blocks::MoeStats<B>| s.load_balance_loss.clone().into_scalar();
    assert!((lb(&balanced) - 1.0).abs() < 1e-12, "{}", lb(&balanced));
    let mut last = lb(&balanced);
    for crowd in [2, 4, 8] {
        // The first `crowd` tokens all go to expert 0.
        let s = m
            .forward(one_hot_tokens(e, |i| if i < crowd { 0 } else { i }))
            .stats;
        assert!(lb(&s) > last + 1e-3, "crowd {crowd}: {} <= {last}", lb(&s));
        last = lb(&s);
    }
    assert!(
        last > 0.9 * e as f64,
        "collapsed routing approaches E: {last}"
    );
}

#[test]
fn z_loss_and_aux_loss_follow_their_formulas() {
    let m = MoeConfig::new(D, 4, 2, 8)
        .with_aux_loss_coef(0.01)
        .with_z_loss_coef(0.001)
        .init::<B>(&device());
    let x = randn(6, [1, 12, D]);
    let out = m.forward(x.clone());
    let logits = rows(m.router.forward(x.reshape([12, D])));
    let z: f64 = logits
        .iter()
        .map(|r| r.iter().map(|v| v.exp()).sum::<f64>().ln().powi(2))
        .sum::<f64>()
        / 12.0;
    assert!((out.stats.z_loss.clone().into_scalar() - z).abs() < 1e-12);
    let want = 0.01 * out.stats.load_balance_loss.into_scalar() + 0.001 * z;
    assert!((out.aux_loss.into_scalar() - want).abs() < 1e-12);
}

#[test]
fn shared_experts_add_to_every_token() {
    let m = MoeConfig::new(D, 4, 2, 8)
        .with_shared_experts(2)
        .init::<B>(&device());
    let x = randn(7, [2, 5, D]);
    let with = m.forward(x.clone()).output;
    let shared = m.shared.as_ref().unwrap().forward(x.clone());
    let mut routed_only = m.clone();
    routed_only.shared = None;
    assert!(max_abs_diff(with, routed_only.forward(x).output + shared) < 1e-12);
}
