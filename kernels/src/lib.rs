//! Lightning-attention kernels for Burn.
//!
//! Every fast path has a plain tensor-op reference beside it ([`lightning::reference`]), and
//! the tests compare the two on outputs, gradients and final states.
#![warn(missing_docs)]

pub mod lightning;

pub use lightning::LightningBackend;
