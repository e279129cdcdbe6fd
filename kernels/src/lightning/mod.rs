//! Lightning attention: the MiniMax decayed linear-attention core.
//!
//! [`reference`] holds the plain tensor-op forms (naive, chunked, recurrent).
//! [`LightningBackend::lightning_attention`] is what model code calls: backends without a kernel
//! run the chunked reference; the CubeCL backends override it with their kernels.

pub mod reference;

use burn::tensor::{backend::Backend, Tensor};

/// A backend that can run the lightning-attention core.
///
/// Implemented for every backend scalelab supports; the default body is the chunked reference,
/// so a backend without a dedicated kernel is still correct.
pub trait LightningBackend: Backend {
    /// Causal decayed linear attention, `o_t = sum_{j<=t} exp(-s (t-j)) (q_t . k_j) v_j`, continued
    /// from `state` when given.
    ///
    /// - `q, k`: `[batch, heads, seq, dk]`; `v`: `[batch, heads, seq, dv]`
    /// - `s`: `[heads]`, decay rates (`lambda = exp(-s)`)
    /// - `state`: `[batch, heads, dk, dv]`, the `K^T V` state carried in from earlier tokens
    /// - returns `(o [batch, heads, seq, dv], final state [batch, heads, dk, dv])`
    fn lightning_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Option<Tensor<Self, 4>>,
        block: usize,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        reference::chunked(q, k, v, s, state, block)
    }
}

impl<B: LightningBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    LightningBackend for burn::backend::Autodiff<B, C>
{
}

#[cfg(feature = "flex")]
impl LightningBackend for burn::backend::Flex {}

#[cfg(feature = "ndarray")]
impl<E, I, Q> LightningBackend for burn::backend::NdArray<E, I, Q>
where
    E: burn::backend::ndarray::FloatNdArrayElement,
    I: burn::backend::ndarray::IntNdArrayElement,
    Q: burn::backend::ndarray::QuantElement,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<E>>,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<I>>,
{
}

#[cfg(feature = "cubecl")]
impl<R, F, I, BT> LightningBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
}

#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend> LightningBackend for burn_fusion::Fusion<B> {}
