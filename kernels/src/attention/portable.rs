//! The portable flash-attention kernels: f32 FMAs through shared memory, no tensor cores, any
//! float dtype and any CubeCL device (what wgpu runs, and CUDA for f32 or head dims the
//! tensor-core kernels do not take). One unit owns one row (a query row in the forward and in
//! `dq`, a key row in `dk`/`dv`) and keeps it in registers; the other side streams through
//! shared memory in blocks of 16 or 32 rows. Nothing of size `t x s` is ever stored.
//!
//! Query row `i` sits at position `s - t + i` and sees keys `0 ..= s - t + i`; query head `h`
//! reads KV head `h / (heads / kv_heads)`, with no copy of `k` and `v`.

// The kernels spell updates out (`x = x + y`), the form that ran on the devices.
#![allow(clippy::assign_op_pattern)]

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

/// Units (rows owned) per cube.
pub(crate) const BLOCK: usize = 32;

/// `(o, lse)` of causal softmax attention: one cube per ([`BLOCK`] query rows, batch x head).
///
/// `q: [b, h, t, d]`, `k: [b, kvh, s, d]`, `v: [b, kvh, s, dv]`; `out: [b, h, t, dv]` in the
/// inputs' dtype, `lse: [b, h, t]` in f32 (natural log of each row's sum of `exp(scale q.k)`).
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] rows: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let t = q.shape(2);
    let s = k.shape(2);
    let group = heads / k.shape(1);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let hk = hi / group;
    let row = CUBE_POS_X as usize * BLOCK + tid;
    let offset = s - t;
    let pos = offset + row;

    let q_base = bi * q.stride(0) + hi * q.stride(1) + row * q.stride(2);
    let mut qr = Array::<f32>::new(d);
    for c in 0..d {
        let mut x = 0.0f32;
        if row < t {
            x = f32::cast_from(q[q_base + c * q.stride(3)]) * scale;
        }
        qr[c] = x;
    }
    let mut acc = Array::<f32>::new(dv);
    for c in 0..dv {
        acc[c] = 0.0;
    }
    let mut m = f32::cast_from(-1.0e30f32);
    let mut l = 0.0f32;

    let mut ks = SharedMemory::<f32>::new(rows * d);
    let mut vs = SharedMemory::<f32>::new(rows * dv);
    let k_base = bi * k.stride(0) + hk * k.stride(1);
    let v_base = bi * v.stride(0) + hk * v.stride(1);
    // Keys up to the cube's last row's position.
    let mut last = CUBE_POS_X as usize * BLOCK + BLOCK;
    if last > t {
        last = t;
    }
    let nblocks = (offset + last + rows - 1) / rows;
    for blk in 0..nblocks {
        let j0 = blk * rows;
        stage_rows::<F>(k, &mut ks, k_base, j0, s, tid, rows, d);
        stage_rows::<F>(v, &mut vs, v_base, j0, s, tid, rows, dv);
        sync_cube();

        let mut sc = Array::<f32>::new(rows);
        let mut mb = f32::cast_from(-1.0e30f32);
        for j in 0..rows {
            let mut dot = 0.0f32;
            for c in 0..d {
                dot += qr[c] * ks[j * d + c];
            }
            let x = select(j0 + j <= pos && j0 + j < s, dot, -1.0e30f32);
            sc[j] = x;
            mb = fmax(mb, x);
        }
        let m_new = fmax(m, mb);
        let corr = f32::exp(m - m_new);
        l = l * corr;
        for c in 0..dv {
            acc[c] = acc[c] * corr;
        }
        for j in 0..rows {
            let p = f32::exp(sc[j] - m_new);
            l = l + p;
            for c in 0..dv {
                acc[c] = acc[c] + p * vs[j * dv + c];
            }
        }
        m = m_new;
        sync_cube();
    }

    if row < t {
        let o_base = bi * out.stride(0) + hi * out.stride(1) + row * out.stride(2);
        let inv = 1.0f32 / l;
        for c in 0..dv {
            out[o_base + c * out.stride(3)] = F::cast_from(acc[c] * inv);
        }
        lse[bi * lse.stride(0) + hi * lse.stride(1) + row * lse.stride(2)] = m + l.ln();
    }
}

/// `dq` of causal softmax attention: one cube per ([`BLOCK`] query rows, batch x head), keys
/// streamed. `delta: [b, h, t]` is `rowsum(do * o)` in f32; `dq: [b, h, t, d]`.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_o: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<F>,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] rows: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let t = q.shape(2);
    let s = k.shape(2);
    let group = heads / k.shape(1);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let hk = hi / group;
    let row = CUBE_POS_X as usize * BLOCK + tid;
    let offset = s - t;
    let pos = offset + row;

    let q_base = bi * q.stride(0) + hi * q.stride(1) + row * q.stride(2);
    let o_base = bi * d_o.stride(0) + hi * d_o.stride(1) + row * d_o.stride(2);
    let mut qr = Array::<f32>::new(d);
    let mut dqr = Array::<f32>::new(d);
    for c in 0..d {
        let mut x = 0.0f32;
        if row < t {
            x = f32::cast_from(q[q_base + c * q.stride(3)]) * scale;
        }
        qr[c] = x;
        dqr[c] = 0.0;
    }
    let mut dor = Array::<f32>::new(dv);
    for c in 0..dv {
        let mut x = 0.0f32;
        if row < t {
            x = f32::cast_from(d_o[o_base + c * d_o.stride(3)]);
        }
        dor[c] = x;
    }
    let mut row_lse = 0.0f32;
    let mut row_delta = 0.0f32;
    if row < t {
        row_lse = lse[bi * lse.stride(0) + hi * lse.stride(1) + row * lse.stride(2)];
        row_delta = delta[bi * delta.stride(0) + hi * delta.stride(1) + row * delta.stride(2)];
    }

    let mut ks = SharedMemory::<f32>::new(rows * d);
    let mut vs = SharedMemory::<f32>::new(rows * dv);
    let k_base = bi * k.stride(0) + hk * k.stride(1);
    let v_base = bi * v.stride(0) + hk * v.stride(1);
    let mut last = CUBE_POS_X as usize * BLOCK + BLOCK;
    if last > t {
        last = t;
    }
    let nblocks = (offset + last + rows - 1) / rows;
    for blk in 0..nblocks {
        let j0 = blk * rows;
        stage_rows::<F>(k, &mut ks, k_base, j0, s, tid, rows, d);
        stage_rows::<F>(v, &mut vs, v_base, j0, s, tid, rows, dv);
        sync_cube();
        for j in 0..rows {
            if j0 + j <= pos && j0 + j < s && row < t {
                let mut x = 0.0f32;
                for c in 0..d {
                    x = x + qr[c] * ks[j * d + c];
                }
                let mut dp = 0.0f32;
                for c in 0..dv {
                    dp = dp + dor[c] * vs[j * dv + c];
                }
                let ds = f32::exp(x - row_lse) * (dp - row_delta);
                for c in 0..d {
                    dqr[c] = dqr[c] + ds * ks[j * d + c];
                }
            }
        }
        sync_cube();
    }
    if row < t {
        let base = bi * dq.stride(0) + hi * dq.stride(1) + row * dq.stride(2);
        for c in 0..d {
            dq[base + c * dq.stride(3)] = F::cast_from(dqr[c] * scale);
        }
    }
}

/// `dk` and `dv` of causal softmax attention: one cube per ([`BLOCK`] key rows, batch x KV head),
/// the queries of every head of the KV head's group streamed, so the group's sum needs no atomics.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn dk_dv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_o: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dvt: &mut Tensor<F>,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] rows: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let t = q.shape(2);
    let kv_heads = k.shape(1);
    let s = k.shape(2);
    let group = heads / kv_heads;
    let bh = CUBE_POS_Y as usize;
    let bi = bh / kv_heads;
    let hk = bh % kv_heads;
    let key = CUBE_POS_X as usize * BLOCK + tid;
    let offset = s - t;

    let k_base = bi * k.stride(0) + hk * k.stride(1) + key * k.stride(2);
    let v_base = bi * v.stride(0) + hk * v.stride(1) + key * v.stride(2);
    let mut kr = Array::<f32>::new(d);
    let mut dkr = Array::<f32>::new(d);
    for c in 0..d {
        let mut x = 0.0f32;
        if key < s {
            x = f32::cast_from(k[k_base + c * k.stride(3)]);
        }
        kr[c] = x;
        dkr[c] = 0.0;
    }
    let mut vr = Array::<f32>::new(dv);
    let mut dvr = Array::<f32>::new(dv);
    for c in 0..dv {
        let mut x = 0.0f32;
        if key < s {
            x = f32::cast_from(v[v_base + c * v.stride(3)]);
        }
        vr[c] = x;
        dvr[c] = 0.0;
    }

    let mut qs = SharedMemory::<f32>::new(rows * d);
    let mut os = SharedMemory::<f32>::new(rows * dv);
    let mut ls = SharedMemory::<f32>::new(rows);
    let mut ds_ = SharedMemory::<f32>::new(rows);
    // The first query that sees the cube's first key: position `offset + i >= key`.
    let j0 = CUBE_POS_X as usize * BLOCK;
    let mut first = 0usize;
    if j0 > offset {
        first = (j0 - offset) / rows;
    }
    let nblocks = (t + rows - 1) / rows;
    // One flat loop over (query head of the group, query block).
    let per_head = nblocks - first;
    for it in 0..group * per_head {
        let hi = hk * group + it / per_head;
        let qb = first + it % per_head;
        let q_base = bi * q.stride(0) + hi * q.stride(1);
        let o_base = bi * d_o.stride(0) + hi * d_o.stride(1);
        {
            let i0 = qb * rows;
            stage_rows::<F>(q, &mut qs, q_base, i0, t, tid, rows, d);
            stage_rows::<F>(d_o, &mut os, o_base, i0, t, tid, rows, dv);
            let i = i0 + tid;
            if tid < rows {
                let mut lv = 0.0f32;
                let mut dl = 0.0f32;
                if i < t {
                    lv = lse[bi * lse.stride(0) + hi * lse.stride(1) + i * lse.stride(2)];
                    dl = delta[bi * delta.stride(0) + hi * delta.stride(1) + i * delta.stride(2)];
                }
                ls[tid] = lv;
                ds_[tid] = dl;
            }
            sync_cube();
            for r in 0..rows {
                if i0 + r < t && offset + i0 + r >= key && key < s {
                    let mut x = 0.0f32;
                    for c in 0..d {
                        x = x + qs[r * d + c] * kr[c];
                    }
                    let p = f32::exp(x * scale - ls[r]);
                    let mut dp = 0.0f32;
                    for c in 0..dv {
                        dvr[c] = dvr[c] + p * os[r * dv + c];
                        dp = dp + os[r * dv + c] * vr[c];
                    }
                    let dsv = p * (dp - ds_[r]);
                    for c in 0..d {
                        dkr[c] = dkr[c] + dsv * qs[r * d + c];
                    }
                }
            }
            sync_cube();
        }
    }
    if key < s {
        let base = bi * dk.stride(0) + hk * dk.stride(1) + key * dk.stride(2);
        for c in 0..d {
            dk[base + c * dk.stride(3)] = F::cast_from(dkr[c] * scale);
        }
        let base = bi * dvt.stride(0) + hk * dvt.stride(1) + key * dvt.stride(2);
        for c in 0..dv {
            dvt[base + c * dvt.stride(3)] = F::cast_from(dvr[c]);
        }
    }
}

/// Rows `r0 .. r0 + rows` of `x` (from `base`, rows along dim 2, `width` columns) into `sm` as
/// f32, zero past `len` rows; every unit of the cube takes part.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
fn stage_rows<F: Float>(
    x: &Tensor<F>,
    sm: &mut SharedMemory<f32>,
    base: usize,
    r0: usize,
    len: usize,
    tid: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
) {
    let st = x.stride(2);
    let sd = x.stride(3);
    for e in 0..(rows * width + BLOCK - 1) / BLOCK {
        let idx = e * BLOCK + tid;
        let r = idx / width;
        let c = idx % width;
        if idx < rows * width {
            let mut val = 0.0f32;
            if r0 + r < len {
                val = f32::cast_from(x[base + (r0 + r) * st + c * sd]);
            }
            sm[idx] = val;
        }
    }
}

/// Rows per streamed block: 32, or 16 for heads wider than 64 columns in all (two blocks of f32
/// rows stay within 32 KB of shared memory, lavapipe's limit).
fn streamed_rows(d: usize, dv: usize) -> usize {
    if d + dv > 128 {
        16
    } else {
        32
    }
}

/// The cubes of a kernel over `rows` rows of `bh` (batch x heads) slices.
fn cubes(rows: usize, bh: usize) -> CubeCount {
    CubeCount::Static(rows.div_ceil(BLOCK) as u32, bh as u32, 1)
}

/// Launches [`forward_kernel`] into `out` and `lse`.
///
/// # Safety
/// Shapes as [`forward_kernel`] says, checked by the caller; `out` and `lse` fresh.
pub(crate) unsafe fn forward<R: CubeRuntime>([q, k, v, out, lse]: [CubeTensor<R>; 5], scale: f32) {
    let [b, h, t, d] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let (client, dtype) = (q.client.clone(), q.dtype);
    crate::usage::record("attention forward_kernel (portable)");
    forward_kernel::launch_unchecked::<R>(
        &client,
        cubes(t, b * h),
        CubeDim::new_1d(BLOCK as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.into_tensor_arg(),
        lse.into_tensor_arg(),
        scale,
        d,
        dv,
        streamed_rows(d, dv),
        dtype.into(),
    );
}

/// Launches [`dq_kernel`] and [`dk_dv_kernel`] into `dq`, `dk` and `dv`.
///
/// # Safety
/// Shapes as the kernels say, checked by the caller; the gradients fresh.
pub(crate) unsafe fn backward<R: CubeRuntime>(
    [q, k, v, d_o, lse, delta]: [CubeTensor<R>; 6],
    [dq, dk, dv]: [CubeTensor<R>; 3],
    scale: f32,
) {
    let [b, h, t, d] = q.meta.shape().dims::<4>();
    let [_, kvh, s, _] = k.meta.shape().dims::<4>();
    let width = v.meta.shape()[3];
    let (client, dtype) = (q.client.clone(), q.dtype);
    crate::usage::record("attention dq_kernel, dk_dv_kernel (portable)");
    dq_kernel::launch_unchecked::<R>(
        &client,
        cubes(t, b * h),
        CubeDim::new_1d(BLOCK as u32),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        d_o.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.into_tensor_arg(),
        scale,
        d,
        width,
        streamed_rows(d, width),
        dtype.into(),
    );
    dk_dv_kernel::launch_unchecked::<R>(
        &client,
        cubes(s, b * kvh),
        CubeDim::new_1d(BLOCK as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        d_o.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        dk.into_tensor_arg(),
        dv.into_tensor_arg(),
        scale,
        d,
        width,
        streamed_rows(d, width),
        dtype.into(),
    );
}

/// The larger of `a` and `b`.
#[cube]
pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    select(a > b, a, b)
}
