//! The decode kernel, `decode_warp_kernel`: one recurrent step `S' = lambda S + k^T v`,
//! `o = q S'` per (batch, head), in f32, with the state in its own float dtype (f32 under a
//! bf16 model). [`super::reference::recurrent`] is its tensor-op twin.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::geometry::DECODE_WARPS;

/// A decode step's per-head values for columns `col..col + N`: the decay `lambda` and `v`'s
/// elements, in f32.
#[cube]
fn decode_head<F: Float, N: Size>(
    v: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    bi: usize,
    hi: usize,
    col: usize,
) -> (Vector<f32, N>, Vector<f32, N>) {
    let lambda = Vector::<f32, N>::new(f32::exp(-f32::cast_from(s[hi * s.stride(0)])));
    let at = (bi * v.stride(0) + hi * v.stride(1) + col * v.stride(3)) / N::value();
    (lambda, Vector::<f32, N>::cast_from(v[at]))
}

/// Writes a decode step's output columns `col..col + N` of (`bi`, `hi`).
#[cube]
fn store_decode_o<F: Float, N: Size>(
    o: &mut Tensor<Vector<F, N>>,
    bi: usize,
    hi: usize,
    col: usize,
    value: Vector<f32, N>,
) {
    let at = (bi * o.stride(0) + hi * o.stride(1) + col * o.stride(3)) / N::value();
    o[at] = Vector::<F, N>::cast_from(value);
}

/// Steps `rows` rows of one state's columns `col..col + N` (rows `first, first + stride, ..`,
/// those below `dk`): loads them all before writing any, writes `lambda S + k^T v` and returns
/// their share of `q S'`. The decode kernel's body.
#[allow(clippy::too_many_arguments)]
#[cube]
fn decode_rows<F: Float, S: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    state: &Tensor<Vector<S, N>>,
    state_out: &mut Tensor<Vector<S, N>>,
    bi: usize,
    hi: usize,
    col: usize,
    lambda: Vector<f32, N>,
    vj: Vector<f32, N>,
    first: usize,
    stride: usize,
    #[comptime] rows: usize,
) -> Vector<f32, N> {
    let nv = N::value();
    let dk = q.shape(3);
    let qb = bi * q.stride(0) + hi * q.stride(1);
    let kb = bi * k.stride(0) + hi * k.stride(1);
    let sb = bi * state.stride(0) + hi * state.stride(1) + col * state.stride(3);
    let ob = bi * state_out.stride(0) + hi * state_out.stride(1) + col * state_out.stride(3);
    let (s_sr, o_sr) = (state.stride(2), state_out.stride(2));
    let (k_sd, q_sd) = (k.stride(3), q.stride(3));
    let mut old = Array::<Vector<S, N>>::new(rows);
    #[unroll]
    for i in 0..rows {
        let r = first + stride * i;
        if r < dk {
            old[i] = state[(sb + r * s_sr) / nv];
        }
    }
    let mut acc = Vector::<f32, N>::new(0.0);
    #[unroll]
    for i in 0..rows {
        let r = first + stride * i;
        if r < dk {
            let kr = Vector::<f32, N>::new(f32::cast_from(k[kb + r * k_sd]));
            let qr = Vector::<f32, N>::new(f32::cast_from(q[qb + r * q_sd]));
            let new = lambda * Vector::<f32, N>::cast_from(old[i]) + kr * vj;
            state_out[(ob + r * o_sr) / nv] = Vector::<S, N>::cast_from(new);
            acc += qr * new;
        }
    }
    acc
}

/// One decode step, one warp per (`32 N` value columns, batch x head) and `CUBE_DIM_Y` warps per
/// cube, each on its own state: the warp walks the state's rows `rows` at a time (all loaded
/// before any is written), so no barrier or shared memory ties warps together and each retires
/// on its own. Each unit moves `N` state columns per access (16 bytes of an f32 state on CUDA):
/// the step is bound by the state's bytes, read once and written once.
///
/// `q, k: [B, H, 1, dk]`, `v: [B, H, 1, dv]`, `state: [B, H, dk, dv]` in its own dtype `S`
/// (f32 under bf16 inputs); writes `o: [B, H, 1, dv]` and `state_out: [B, H, dk, dv]` (dtype `S`).
#[allow(clippy::too_many_arguments)]
#[cube(launch_unchecked)]
fn decode_warp_kernel<F: Float, S: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    state: &Tensor<Vector<S, N>>,
    o: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<Vector<S, N>>,
    #[comptime] rows: usize,
    #[define(F)] _dtype: StorageType,
    #[define(S)] _state_dtype: StorageType,
) {
    let nv = N::value();
    let heads = q.shape(1);
    let dk = q.shape(3);
    let dv = v.shape(3);
    let bh = CUBE_POS_Y as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    let col = (CUBE_POS_X as usize * 32 + UNIT_POS_X as usize) * nv;
    if bh < q.shape(0) * heads && col < dv {
        let bi = bh / heads;
        let hi = bh % heads;
        let (lambda, vj) = decode_head::<F, N>(v, s, bi, hi, col);
        let mut acc = Vector::<f32, N>::new(0.0);
        let mut r0 = 0;
        while r0 < dk {
            acc += decode_rows::<F, S, N>(
                q, k, state, state_out, bi, hi, col, lambda, vj, r0, 1, rows,
            );
            r0 += rows;
        }
        store_decode_o::<F, N>(o, bi, hi, col, acc);
    }
}

/// Launches `decode_warp_kernel` over `[q, k, v, s, state, o, state_out]` (the kernel's
/// arguments, in order) for `B x H` states of `dk x dv`: each unit moves `nv` state columns per
/// access and walks `rows` rows at a time.
///
/// # Safety
/// The step's shapes, as `launch::decode` checks them: `q, k: [B, H, 1, dk]`,
/// `v, o: [B, H, 1, dv]`, `s: [H]`, `state, state_out: [B, H, dk, dv]`; `nv` divides `dv` and
/// every stride and offset of `v`, `state`, `o` and `state_out`. The kernel tests `col < dv`,
/// `r < dk` and `bh < B H`.
pub(crate) unsafe fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [q, k, v, s, state, o, state_out]: [CubeTensor<R>; 7],
    nv: usize,
    rows: usize,
) {
    let [batch, heads, _, _] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let (dtype, state_dtype) = (q.dtype, state.dtype);
    let col_cubes = dv.div_ceil(32 * nv) as u32;
    decode_warp_kernel::launch_unchecked::<R>(
        client,
        CubeCount::Static(col_cubes, (batch * heads).div_ceil(DECODE_WARPS) as u32, 1),
        CubeDim::new_2d(32, DECODE_WARPS as u32),
        nv,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        o.into_tensor_arg(),
        state_out.into_tensor_arg(),
        rows,
        dtype.into(),
        state_dtype.into(),
    );
}
