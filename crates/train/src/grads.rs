//! Global gradient-norm clipping on the device. Burn's built-in clipping works per tensor; the
//! usual recipe (and the paper's) clips the norm of all gradients together. Nothing here reads
//! a value back to the host, so a step never waits on the GPU for its clipping.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, FloatDType, Tensor};
use scalelab_blocks::precision::{cast_to, float_dtype, stats_dtype};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let wide = stats_dtype(float_dtype(&g));
            let s = cast_to(g, wide).powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = cast_to(self.factor.clone(), float_dtype(&g)).reshape([1; D]);
            self.grads.register(param.id, g * factor);
        }
    }
}

/// The L2 norm of all gradients together, `[1]` in f32 on the device (zero without gradients).
pub fn global_norm_tensor<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    let mut v = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut v);
    v.total
        .unwrap_or_else(|| Tensor::<B::InnerBackend, 1>::zeros([1], device).cast(FloatDType::F32))
        .sqrt()
}

/// The L2 norm of all gradients together, read back to the host.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
    device: &B::Device,
) -> f64 {
    global_norm_tensor::<B, M>(model, grads, device)
        .into_scalar()
        .elem::<f64>()
}

/// Scales all gradients so their global norm is at most `max_norm` (0: no clipping), by
/// `max_norm / (norm + 1e-6)` where the norm exceeds it; returns the norm before, on the device.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    let norm = global_norm_tensor::<B, M>(model, grads, device);
    if max_norm > 0.0 {
        let factor = (norm.clone() + 1e-6)
            .recip()
            .mul_scalar(max_norm)
            .mask_fill(norm.clone().lower_equal_elem(max_norm), 1.0);
        let mut s = Scale::<B> { grads, factor };
        model.visit(&mut s);
    }
    norm
}
