//! Causal softmax attention with grouped KV heads in plain tensor ops: the forward with its
//! log-sum-exp, and the backward that recomputes the probabilities from it (the flash-attention
//! recurrence without the tiling). Scores, softmax and the row statistics run in f32 (f64 for f64
//! inputs); the products take the inputs' dtype.

use burn::tensor::{
    backend::Backend, ops::FloatTensor, Bool, DType, FloatDType, Int, Tensor, TensorPrimitive,
};

use crate::gemm::{matmul, GemmBackend};

/// `q: [b, h, t, d]` as `[b, kv_heads, (h / kv_heads) * t, d]`: each KV head's query group
/// stacked along the rows (heads `g * j .. g * (j + 1)` share KV head `j`).
fn grouped<B: Backend>(q: Tensor<B, 4>, kv_heads: usize) -> Tensor<B, 4> {
    let [b, h, t, d] = q.dims();
    q.reshape([b, kv_heads, (h / kv_heads) * t, d])
}

/// The wider float dtype the statistics run in.
fn wide(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

/// `true` where grouped query row `r` (position `s - t + r % t`) must not see key `j`:
/// `[rows, s]` for `rows = groups * t`.
fn future<B: Backend>(groups: usize, t: usize, s: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let offset = (s - t) as i64;
    let qpos = Tensor::<B, 1, Int>::arange(offset..offset + t as i64, device)
        .reshape([1, t])
        .expand([groups, t])
        .reshape([groups * t, 1])
        .expand([groups * t, s]);
    let kpos = Tensor::<B, 1, Int>::arange(0..s as i64, device)
        .reshape([1, s])
        .expand([groups * t, s]);
    kpos.greater(qpos)
}

/// The masked, scaled scores `[b, kv_heads, rows, s]` in the wide dtype.
fn scores<B: GemmBackend>(qg: Tensor<B, 4>, k: Tensor<B, 4>, t: usize, scale: f64) -> Tensor<B, 4> {
    let [b, kvh, rows, _] = qg.dims();
    let s = k.dims()[2];
    let dtype = wide(qg.dtype());
    let raw = matmul(qg, k.swap_dims(2, 3)).cast(dtype) * scale;
    let mask = future::<B>(rows / t, t, s, &raw.device())
        .reshape([1, 1, rows, s])
        .expand([b, kvh, rows, s]);
    raw.mask_fill(mask, f64::NEG_INFINITY)
}

/// Checks the shapes every entry point takes; panics naming the input otherwise.
pub fn check<B: Backend>(q: &Tensor<B, 4>, k: &Tensor<B, 4>, v: &Tensor<B, 4>) {
    let ([b, h, t, d], [kb, kvh, s, kd], [vb, vh, vs, _]) = (q.dims(), k.dims(), v.dims());
    let layout =
        "q: [batch, heads, t, d]; k: [batch, kv_heads, s, d]; v: [batch, kv_heads, s, dv]; \
                  heads a multiple of kv_heads; t <= s";
    assert!(
        kb == b && vb == b && vh == kvh && vs == s && kd == d,
        "softmax attention: k {:?} or v {:?} do not match q {:?} ({layout})",
        k.dims(),
        v.dims(),
        q.dims()
    );
    assert!(
        kvh > 0 && h % kvh == 0 && t <= s,
        "softmax attention: {h} query heads over {kvh} KV heads, {t} queries over {s} keys \
         ({layout})"
    );
}

/// Causal attention where query `i` sits at position `s - t + i`: `(o [b, h, t, dv],
/// lse [b, h, t])`, `lse` the log-sum-exp of each row's scaled scores, in the wide dtype.
pub fn forward<B: GemmBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, h, t, _] = q.dims();
    let (kvh, dv) = (k.dims()[1], v.dims()[3]);
    let dtype = FloatDType::from(q.dtype());
    let s = scores(grouped(q, kvh), k, t, scale);
    let max = s.clone().max_dim(3).detach();
    let e = (s - max.clone()).exp();
    let sum = e.clone().sum_dim(3);
    let lse = (sum.clone().log() + max).reshape([b, h, t]);
    let p = (e / sum).cast(dtype);
    let o = matmul(p, v).reshape([b, h, t, dv]);
    (o, lse)
}

/// The gradients `(dq, dk, dv)` of [`forward`] for the output's cotangent `d_o`, from the saved
/// inputs, output and log-sum-exp; the `[b, h, t, s]` probabilities exist only inside this call.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: GemmBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    o: Tensor<B, 4>,
    lse: Tensor<B, 3>,
    d_o: Tensor<B, 4>,
    scale: f64,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, t, d] = q.dims();
    let kvh = k.dims()[1];
    let rows = (h / kvh) * t;
    let dtype = FloatDType::from(q.dtype());
    let wide_t = wide(q.dtype());
    let qg = grouped(q, kvh);
    let dog = grouped(d_o.cast(dtype), kvh);
    let p = (scores(qg.clone(), k.clone(), t, scale) - lse.reshape([b, kvh, rows, 1])).exp();
    let dv = matmul(p.clone().cast(dtype).swap_dims(2, 3), dog.clone());
    let dp = matmul(dog.clone(), v.swap_dims(2, 3)).cast(wide_t);
    let delta = (dog.cast(wide_t) * grouped(o, kvh).cast(wide_t)).sum_dim(3);
    let ds = (p * (dp - delta) * scale).cast(dtype);
    let dq = matmul(ds.clone(), k).reshape([b, h, t, d]);
    let dk = matmul(ds.swap_dims(2, 3), qg);
    (dq, dk, dv)
}

/// [`forward`] on primitives: `(o, lse)`, what backends without a kernel (and kernel backends
/// choosing the reference) return from `AttentionBackend::attention_forward`.
pub fn forward_primitives<B: GemmBackend>(
    [q, k, v]: [FloatTensor<B>; 3],
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let t = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let (o, lse) = forward(t(q), t(k), t(v), scale);
    (o.into_primitive().tensor(), lse.into_primitive().tensor())
}

/// [`backward`] on primitives: `[dq, dk, dv]`.
pub fn backward_primitives<B: GemmBackend>(
    [q, k, v, o]: [FloatTensor<B>; 4],
    lse: FloatTensor<B>,
    d_o: FloatTensor<B>,
    scale: f64,
) -> [FloatTensor<B>; 3] {
    let t = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let lse = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(lse));
    let (dq, dk, dv) = backward(t(q), t(k), t(v), t(o), lse, t(d_o), scale);
    [dq, dk, dv].map(|x| x.into_primitive().tensor())
}
