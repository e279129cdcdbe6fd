//! Causal softmax attention with grouped KV heads (GQA) for the softmax layers.
//!
//! [`reference`] holds the plain tensor-op forward and backward. [`AttentionBackend`] is what
//! model code calls: every backend runs the reference forward, and under `Autodiff` a backward
//! node of its own keeps only `q, k, v`, the output and the row log-sum-exp, and recomputes the
//! probabilities in the backward, so training keeps no `[batch, heads, t, s]` tensor between
//! the passes (Burn's own `attention` under autodiff keeps several, in f32).

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
        reference::forward(q, k, v, scale).0
    }
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

impl<B: GemmBackend> Backward<B, 3> for SoftmaxAttentionBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_o = grads.consume::<B>(&ops.node);
        let (q, k, v, o, lse, scale) = ops.state;
        let t4 = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
        let lse = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(lse));
        let (dq, dk, dv) = reference::backward(t4(q), t4(k), t4(v), t4(o), lse, t4(d_o), scale);
        let values = [dq, dk, dv].map(|x| x.into_primitive().tensor());
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
        let inner =
            |x: &FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x.clone()));
        let (o, lse) = reference::forward(
            inner(&q.primitive),
            inner(&k.primitive),
            inner(&v.primitive),
            scale,
        );
        let o = o.into_primitive().tensor();
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
                    lse.into_primitive().tensor(),
                    scale,
                );
                prep.finish(saved, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(o),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

#[cfg(feature = "cubecl")]
mod cubecl_impls {
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::{Fusion, FusionBackend};

    use super::AttentionBackend;

    impl<R, F, I, BT> AttentionBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
    }

    impl<B: FusionBackend + AttentionBackend> AttentionBackend for Fusion<B> {}
}
