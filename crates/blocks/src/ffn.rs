//! The dense feed-forward block: SwiGLU.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Tensor};

use crate::init::WeightInit;
use crate::precision::linear;
use scalelab_kernels::GemmBackend;

/// Configuration of a [`SwiGlu`] block.
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Residual-stream width.
    pub d_model: usize,
    /// Hidden width (MiniMax experts: 9216).
    pub width: usize,
    /// Init of `w1` and `w3`.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub init: WeightInit,
    /// Init of `w2`, the projection back into the residual stream.
    #[config(default = "WeightInit::Normal { std: 0.02 }")]
    pub out_init: WeightInit,
}

impl SwiGluConfig {
    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        SwiGlu {
            w1: self.init.linear(self.d_model, self.width, device),
            w3: self.init.linear(self.d_model, self.width, device),
            w2: self.out_init.linear(self.width, self.d_model, device),
        }
    }
}

/// `w2(silu(w1 x) * w3 x)`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// Gate projection, `d -> width`.
    pub w1: Linear<B>,
    /// Up projection, `d -> width`.
    pub w3: Linear<B>,
    /// Down projection, `width -> d`.
    pub w2: Linear<B>,
}

impl<B: GemmBackend> SwiGlu<B> {
    /// `[..., d] -> [..., d]`, in `x`'s float dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gated = silu(linear(&self.w1, x.clone())) * linear(&self.w3, x);
        linear(&self.w2, gated)
    }
}
