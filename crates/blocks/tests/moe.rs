//! Mixture of experts: routing weights, capacity and dropping, the auxiliary losses, that the
//! batched device dispatch equals the plain host dispatch (outputs, losses, statistics and
//! gradients, dropping included) and a dense reference, with processed rows growing with top-k.

mod common;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::activation::silu;
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
    for e in 0..m.experts() {
        let gate: Vec<f64> = (0..n)
            .map(|i| {
                (0..k)
                    .filter(|&r| idx[i * k + r] == e as i64)
                    .map(|r| w[i][r])
                    .sum()
            })
            .collect();
        let gate = Tensor::<B, 1>::from_data(TensorData::new(gate, [n]), &device()).reshape([n, 1]);
        let w = |p: &Param<Tensor<B, 3>>| p.val().slice(e..e + 1).squeeze_dim::<2>(0);
        let hidden = silu(x.clone().matmul(w(&m.w1))) * x.clone().matmul(w(&m.w3));
        out = out + hidden.matmul(w(&m.w2)) * gate;
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
        let (_, processed, _) = out.stats.read();
        // 64 tokens x top-2 rows in all, whatever the expert count; dense dispatch would run 64 x E.
        assert_eq!(processed.iter().sum::<usize>(), 64 * 2, "E={e}");
        assert_eq!(processed.len(), e);
    }
}

#[test]
fn large_capacity_drops_nothing() {
    let m = moe(4, 2, Some(4.0)); // capacity = all slots
    let x = randn(4, [2, 20, D]);
    let out = m.forward(x.clone());
    let (routed, processed, dropped) = out.stats.read();
    assert_eq!(dropped, 0.0);
    assert_eq!(processed, routed);
    assert!(max_abs_diff(out.output, m.forward_dropless(x).output) < 1e-12);
}

#[test]
fn small_capacity_drops_what_it_implies() {
    let m = moe(4, 2, Some(0.5));
    let x = randn(5, [1, 40, D]);
    let out = m.forward(x.clone());
    let capacity = (0.5_f64 * 40.0 * 2.0 / 4.0).ceil() as usize;
    assert_eq!(out.stats.capacity, Some(capacity));
    let (routed, processed, fraction) = out.stats.read();
    let mut dropped = 0;
    for (routed, kept) in routed.iter().zip(&processed) {
        assert_eq!(*kept, (*routed).min(capacity));
        dropped += routed - kept;
    }
    assert!(dropped > 0, "half capacity must drop something");
    assert!((fraction - dropped as f64 / 80.0).abs() < 1e-12);
    // With capacity 1 per expert, at most 4 slots survive: a token with none gets exactly zero.
    let tight = moe(4, 2, Some(1e-9)).load_record(m.clone().into_record());
    let out = tight.forward(x);
    assert_eq!(out.stats.read().1.iter().sum::<usize>(), 4);
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
    assert_eq!(balanced.read().0, vec![1; e]);
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

type Ad = Autodiff<B>;

/// Gradients of `sum(output * probe) + aux_loss` with respect to the input and every weight.
fn gradients(m: &Moe<Ad>, x: Tensor<B, 3>, reference: bool, cf: Option<f64>) -> Vec<Tensor<B, 3>> {
    let x = Tensor::<Ad, 3>::from_inner(x).require_grad();
    let out = if reference {
        m.forward_reference(x.clone(), cf)
    } else if cf.is_some() {
        m.forward(x.clone())
    } else {
        m.forward_dropless(x.clone())
    };
    let probe = Tensor::<Ad, 3>::from_inner(randn(99, out.output.dims()));
    let loss = (out.output * probe).sum() + out.aux_loss;
    let grads = loss.backward();
    let router = m.router.weight.grad(&grads).unwrap().unsqueeze_dim(0);
    vec![
        x.grad(&grads).unwrap(),
        m.w1.grad(&grads).unwrap(),
        m.w3.grad(&grads).unwrap(),
        m.w2.grad(&grads).unwrap(),
        router,
    ]
}

#[test]
fn batched_dispatch_equals_the_host_reference_with_gradients() {
    let cases = [
        (4, 1, None, RouterOrder::SoftmaxTopkRenorm, 0),
        (8, 2, None, RouterOrder::TopkSoftmax, 1),
        (8, 2, Some(0.5), RouterOrder::SoftmaxTopkRenorm, 0),
        (6, 3, Some(1.0), RouterOrder::SoftmaxTopk, 2),
        (5, 2, Some(1e-9), RouterOrder::SoftmaxTopkRenorm, 0),
    ];
    for (i, (e, k, cf, router, shared)) in cases.into_iter().enumerate() {
        let m = MoeConfig::new(D, e, k, 8)
            .with_capacity_factor(cf)
            .with_router(router)
            .with_shared_experts(shared)
            .with_z_loss_coef(0.001)
            .with_init(scalelab_blocks::WeightInit::Normal { std: 0.5 })
            .init::<Ad>(&device());
        let x = randn(10 + i as u64, [3, 14, D]);
        let inner = m.valid();
        let fast = if cf.is_some() {
            inner.forward(x.clone())
        } else {
            inner.forward_dropless(x.clone())
        };
        let slow = inner.forward_reference(x.clone(), cf);
        let case = format!("E={e} k={k} cf={cf:?}");
        assert!(max_abs_diff(fast.output, slow.output) < 1e-12, "{case}");
        assert!(
            (fast.aux_loss.into_scalar() - slow.aux_loss.into_scalar()).abs() < 1e-12,
            "{case}"
        );
        assert_eq!(fast.stats.read(), slow.stats.read(), "{case}");
        assert_eq!(fast.stats.capacity, slow.stats.capacity, "{case}");
        for (a, b) in gradients(&m, x.clone(), false, cf)
            .into_iter()
            .zip(gradients(&m, x.clone(), true, cf))
        {
            let scale = b.clone().abs().max().into_scalar().max(1e-30);
            assert!(
                max_abs_diff(a, b) / scale < 1e-10,
                "{case}: gradients differ"
            );
        }
    }
}
