//! Mixed precision without autocast (Burn 0.21 has none): the blocks compute in their input's
//! float dtype and cast their weights to it, so an f32 model (master weights and optimizer state
//! in f32) fed bf16 activations runs its matrix products and the lightning kernels in bf16, with
//! gradients flowing back to the f32 weights through the casts. Norm statistics and softmax run
//! in f32 (f64 for f64 inputs) whatever the input.

use burn::nn::{Linear, RmsNorm};
use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};
use scalelab_kernels::gemm::{matmul, GemmBackend};

/// `x`'s float dtype, as a cast target.
pub fn float_dtype<B: Backend, const D: usize>(x: &Tensor<B, D>) -> FloatDType {
    FloatDType::from(x.dtype())
}

/// `x` in `dtype` (no op when it already is).
pub fn cast_to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == DType::from(dtype) {
        x
    } else {
        x.cast(dtype)
    }
}

/// The dtype statistics run in for inputs of `dtype`: f64 stays f64, anything else is f32.
pub fn stats_dtype(dtype: FloatDType) -> FloatDType {
    match dtype {
        FloatDType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

/// `x W (+ b)` in `x`'s dtype: `[..., d_in] -> [..., d_out]`, as one `[rows, d_in] x [d_in,
/// d_out]` product through [`GemmBackend`] (cuBLASLt on CUDA), so the weight's gradient is one
/// product over all rows too.
pub fn linear<B: GemmBackend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = float_dtype(&x);
    let [d_in, d_out] = layer.weight.dims();
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = matmul(x.reshape([rows, d_in]), cast_to(layer.weight.val(), dtype));
    let y = match &layer.bias {
        Some(b) => y + cast_to(b.val(), dtype).unsqueeze::<2>(),
        None => y,
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// RMSNorm with its statistics in f32 (f64 for f64 inputs) and its output in `x`'s dtype:
/// `[..., d] -> [..., d]`.
pub fn rms_norm<B: Backend, const D: usize>(norm: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = float_dtype(&x);
    let wide = stats_dtype(dtype);
    let x = cast_to(x, wide);
    let rms = (x.clone().square().mean_dim(D - 1) + norm.epsilon).sqrt();
    let gamma = cast_to(norm.gamma.val(), wide).unsqueeze();
    cast_to(x / rms * gamma, dtype)
}
