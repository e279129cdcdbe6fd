//! Lightning-attention kernels and matrix products for Burn.
//!
//! Every fast path has a plain tensor-op reference beside it ([`lightning::reference`]), and
//! the tests compare the two on outputs, gradients and final states.
#![warn(missing_docs)]
// `#[cube]` kernels cannot call `is_multiple_of`; host and kernel code both keep `%` for one style.
#![allow(clippy::manual_is_multiple_of)]

pub mod attention;
pub mod gemm;
pub mod lightning;
mod overrides;
pub mod usage;

pub use attention::AttentionBackend;
pub use gemm::GemmBackend;
pub use lightning::LightningBackend;
pub use overrides::UnknownSetting;

/// Everything the model blocks ask of a backend: lightning and softmax attention and the matrix
/// products. Implemented for every backend that has all three.
pub trait KernelBackend: LightningBackend + AttentionBackend + GemmBackend {}

impl<B: LightningBackend + AttentionBackend + GemmBackend> KernelBackend for B {}

/// The CPU backends have no kernels: the extensions run their tensor-op references.
macro_rules! reference_backends {
    ($($ext:path),*) => {$(
        #[cfg(feature = "flex")]
        impl $ext for burn::backend::Flex {}

        #[cfg(feature = "ndarray")]
        impl<E, I, Q> $ext for burn::backend::NdArray<E, I, Q>
        where
            E: burn::backend::ndarray::FloatNdArrayElement,
            I: burn::backend::ndarray::IntNdArrayElement,
            Q: burn::backend::ndarray::QuantElement,
            burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<E>>,
            burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<I>>,
        {
        }
    )*};
}

reference_backends!(LightningBackend, AttentionBackend, GemmBackend);
