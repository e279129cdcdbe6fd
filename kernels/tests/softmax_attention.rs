//! Softmax attention: the recomputing backward node against autodiff through the textbook form
//! (KV heads repeated, full scores, softmax), on outputs and `dq, dk, dv`, for GQA ratios 1, 4
//! and 8, lengths that are not powers of two, and queries after a cache (`t < s`).

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{activation::softmax, backend::Backend, Bool, Distribution, Tensor};
use scalelab_kernels::AttentionBackend;

type B = Autodiff<NdArray<f64>>;

/// `softmax(scale q k^T + causal mask) v` with each KV head repeated for its query group.
fn textbook(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f64) -> Tensor<B, 4> {
    let [b, h, t, _] = q.dims();
    let [_, kvh, s, _] = k.dims();
    let repeat = |x: Tensor<B, 4>| {
        let dx = x.dims()[3];
        x.unsqueeze_dim::<5>(2)
            .expand([b, kvh, h / kvh, s, dx])
            .reshape([b, h, s, dx])
    };
    let mut mask = vec![false; t * s];
    for i in 0..t {
        for j in (s - t + i + 1)..s {
            mask[i * s + j] = true;
        }
    }
    let mask =
        Tensor::<B, 2, Bool>::from_bool(burn::tensor::TensorData::new(mask, [t, s]), &q.device())
            .reshape([1, 1, t, s])
            .expand([b, h, t, s]);
    let scores = q.matmul(repeat(k).swap_dims(2, 3)) * scale;
    softmax(scores.mask_fill(mask, f64::NEG_INFINITY), 3).matmul(repeat(v))
}

fn max_abs(a: Tensor<NdArray<f64>, 4>, b: Tensor<NdArray<f64>, 4>) -> f64 {
    (a - b).abs().max().into_scalar()
}

fn check(seed: u64, [b, h, kvh, t, s, d, dv]: [usize; 7]) {
    let device = Default::default();
    B::seed(&device, seed);
    let rnd =
        |shape: [usize; 4]| Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (q0, k0, v0) = (rnd([b, h, t, d]), rnd([b, kvh, s, d]), rnd([b, kvh, s, dv]));
    let r = rnd([b, h, t, dv]);
    let scale = 1.0 / (d as f64).sqrt();
    let run = |fast: bool| {
        let (q, k, v) = (
            q0.clone().require_grad(),
            k0.clone().require_grad(),
            v0.clone().require_grad(),
        );
        let o = if fast {
            B::softmax_attention(q.clone(), k.clone(), v.clone(), scale)
        } else {
            textbook(q.clone(), k.clone(), v.clone(), scale)
        };
        let grads = (o.clone() * r.clone()).sum().backward();
        let g = |x: &Tensor<B, 4>| x.grad(&grads).expect("tracked input gets a gradient");
        (o.inner(), g(&q), g(&k), g(&v))
    };
    let (o, dq, dk, dv_) = run(true);
    let (o_ref, dq_ref, dk_ref, dv_ref) = run(false);
    let what = format!("b={b} h={h} kv={kvh} t={t} s={s} d={d} dv={dv}");
    for (name, x, y) in [
        ("o", o, o_ref),
        ("dq", dq, dq_ref),
        ("dk", dk, dk_ref),
        ("dv", dv_, dv_ref),
    ] {
        let err = max_abs(x, y);
        assert!(err < 1e-10, "{name} differs by {err} ({what})");
    }
}

#[test]
fn recomputing_backward_matches_autodiff_through_the_textbook_form() {
    check(1, [2, 4, 4, 13, 13, 8, 8]); // MHA, odd length
    check(2, [1, 8, 2, 17, 17, 16, 8]); // GQA 4, dv != d
    check(3, [2, 8, 1, 9, 9, 8, 8]); // GQA 8 (one KV head)
    check(4, [1, 4, 2, 5, 12, 8, 8]); // 5 queries after 7 cached keys
    check(5, [1, 4, 1, 1, 6, 8, 8]); // one decode query
}

#[test]
#[should_panic(expected = "query heads over")]
fn heads_not_a_multiple_of_kv_heads_is_refused() {
    let device = Default::default();
    let x = |h: usize| Tensor::<B, 4>::zeros([1, h, 3, 8], &device);
    let _ = B::softmax_attention(x(6), x(4), x(4), 1.0);
}
