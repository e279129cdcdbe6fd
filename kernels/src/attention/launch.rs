//! The attention kernels' entry points on CubeCL tensors: what `AttentionBackend` runs on the
//! CubeCL backends once [`super::dispatch`] has chosen a kernel. Each allocates the outputs and
//! hands the kernels inputs they can read (contiguous copies where vector loads need them).

use burn::tensor::{DType, Shape};
use burn_cubecl::{ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor, CubeRuntime};

use super::dispatch::{self, AttentionKernel};
use super::{mma, portable};
use crate::lightning::launch::{aligned, device_facts};

/// The kernel [`dispatch::choose`] picks for `q: [b, h, t, d]` and `v: [b, kvh, s, dv]` on
/// their device under the mode in force.
pub fn kernel<R: CubeRuntime>(q: &CubeTensor<R>, v: &CubeTensor<R>) -> AttentionKernel {
    let [_, _, t, d] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let facts = device_facts(&q.client);
    dispatch::choose(dispatch::mode(), &facts, q.dtype, [d, dv, t])
}

/// A fresh contiguous tensor on `like`'s device.
fn empty<R: CubeRuntime, const D: usize>(
    like: &CubeTensor<R>,
    shape: [usize; D],
    dtype: DType,
) -> CubeTensor<R> {
    empty_device_contiguous_dtype::<R>(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        dtype,
    )
}

/// Elements per vector load of the tensor-core kernels (16 bytes).
fn vector(dtype: DType) -> usize {
    16 / dtype.size()
}

/// `(o [b, h, t, dv], lse [b, h, t] in f32)` from `kernel` (not the reference).
pub fn forward<R: CubeRuntime>(
    [q, k, v]: [CubeTensor<R>; 3],
    scale: f64,
    kernel: AttentionKernel,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [b, h, t, _] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let o = empty(&q, [b, h, t, dv], q.dtype);
    let lse = empty(&q, [b, h, t], DType::F32);
    let outs = [o.clone(), lse.clone()];
    // SAFETY: the shapes were checked by `reference::check`, the outputs are fresh, and the
    // tensor-core kernels get inputs aligned for their vectors.
    unsafe {
        match kernel {
            AttentionKernel::TensorCores => {
                let nv = vector(q.dtype);
                let [q, k, v] = [q, k, v].map(|x| aligned(x, nv));
                mma::forward(
                    [q, k, v, outs[0].clone(), outs[1].clone()],
                    scale as f32,
                    nv,
                )
            }
            AttentionKernel::Portable => {
                portable::forward([q, k, v, outs[0].clone(), outs[1].clone()], scale as f32)
            }
            AttentionKernel::Reference => unreachable!("the reference runs as tensor ops"),
        }
    }
    (o, lse)
}

/// `(dq, dk, dv)` from `kernel` (not the reference), for `delta = rowsum(do * o)` in f32.
pub fn backward<R: CubeRuntime>(
    [q, k, v, d_o]: [CubeTensor<R>; 4],
    [lse, delta]: [CubeTensor<R>; 2],
    scale: f64,
    kernel: AttentionKernel,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let dq = empty(&q, q.meta.shape().dims::<4>(), q.dtype);
    let dk = empty(&q, k.meta.shape().dims::<4>(), q.dtype);
    let dv = empty(&q, v.meta.shape().dims::<4>(), q.dtype);
    let grads = [dq.clone(), dk.clone(), dv.clone()];
    // SAFETY: as in `forward`.
    unsafe {
        match kernel {
            AttentionKernel::TensorCores => {
                let nv = vector(q.dtype);
                let [q, k, v, d_o] = [q, k, v, d_o].map(|x| aligned(x, nv));
                mma::backward([q, k, v, d_o, lse, delta], grads, scale as f32, nv)
            }
            AttentionKernel::Portable => {
                portable::backward([q, k, v, d_o, lse, delta], grads, scale as f32)
            }
            AttentionKernel::Reference => unreachable!("the reference runs as tensor ops"),
        }
    }
    (dq, dk, dv)
}
