//! Causal softmax attention with grouped KV heads (GQA) for the softmax layers.
//!
//! [`reference`] holds the plain tensor-op forward and backward. [`AttentionBackend`] is what
//! model code calls: backends without kernels run the reference; the CubeCL backends run the
//! flash kernels that [`dispatch`] chooses (`mma`: tensor cores on CUDA; `portable`: any
//! device and dtype), directly on `CubeBackend` and as fusion custom operations under `Fusion`.
//! Under `Autodiff` a backward node keeps only `q, k, v`, the output and the row log-sum-exp and
//! runs the backend's backward, so no `[batch, heads, t, s]` tensor lives between the passes
//! (Burn's own `attention` under autodiff keeps several, in f32), and with the kernels none
//! exists at all: memory is linear in `t`.

#[cfg(feature = "cubecl")]
mod cubecl_impls;
pub mod dispatch;
#[cfg(feature = "cubecl")]
pub mod launch;
#[cfg(feature = "cubecl")]
mod mma;
#[cfg(feature = "cubecl")]
mod portable;
pub mod reference;

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{ops::FloatTensor, Tensor, TensorPrimitive};

use crate::gemm::GemmBackend;

/// A backend that can run causal softmax attention.
///
/// Implemented for every backend scalelab supports; the default body is the plain reference.
pub trait AttentionBackend: GemmBackend {
    /// Causal attention `softmax(scale q k^T + mask) v` where query `i` sits at position
    /// `s - t + i` and sees keys `0 ..= s - t + i` (training: `t = s`; decoding after a cache:
    /// `t` new queries over `s` keys).
    ///
    /// - `q`: `[batch, heads, t, d]`; `k`: `[batch, kv_heads, s, d]`; `v`: `[batch, kv_heads, s,
    ///   dv]`; query heads `g * j .. g * (j + 1)` share KV head `j`, `g = heads / kv_heads`,
    ///   with no copy of `k` and `v`
    /// - returns `[batch, heads, t, dv]` in `q`'s dtype; scores and softmax run in f32
    fn softmax_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
    ) -> Tensor<Self, 4> {
        reference::check(&q, &k, &v);
        let (o, _) = Self::attention_forward(prim(q), prim(k), prim(v), scale);
        tensor(o)
    }

    /// The forward on checked primitives: `(o [batch, heads, t, dv], lse [batch, heads, t])`,
    /// `lse` each row's log-sum-exp of its scaled scores in f32 (f64 for f64 inputs). Default:
    /// [`reference::forward`].
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference::forward_primitives::<Self>([q, k, v], scale)
    }

    /// The gradients `(dq, dk, dv)` for the output's cotangent `d_o`, from the inputs, the
    /// output and the log-sum-exp of [`Self::attention_forward`]. Default:
    /// [`reference::backward`].
    fn attention_backward(
        [q, k, v, o]: [FloatTensor<Self>; 4],
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f64,
    ) -> [FloatTensor<Self>; 3] {
        reference::backward_primitives::<Self>([q, k, v, o], lse, d_o, scale)
    }
}

/// A rank-4 tensor's primitive.
fn prim<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

/// A primitive as a rank-4 tensor.
fn tensor<B: burn::tensor::backend::Backend>(x: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// The backward node of softmax attention under `Autodiff`: recomputes the probabilities.
#[derive(Debug)]
struct SoftmaxAttentionBackward;

/// What the node keeps: `q, k, v`, the output, the log-sum-exp and the scale.
type Saved<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
);

impl<B: AttentionBackend> Backward<B, 3> for SoftmaxAttentionBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_o = grads.consume::<B>(&ops.node);
        let (q, k, v, o, lse, scale) = ops.state;
        let values = B::attention_backward([q, k, v, o], lse, d_o, scale);
        for (node, value) in ops.parents.into_iter().zip(values) {
            if let Some(node) = node {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

impl<B: AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
    fn softmax_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
    ) -> Tensor<Self, 4> {
        reference::check(&q, &k, &v);
        let p = |x: Tensor<Self, 4>| x.into_primitive().tensor();
        let (q, k, v) = (p(q), p(k), p(v));
        let (o, lse) = B::attention_forward(
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
            scale,
        );
        let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
        let out = match SoftmaxAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = (
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                    o.clone(),
                    lse,
                    scale,
                );
                prep.finish(saved, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(o),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}
