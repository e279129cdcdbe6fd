//! The tensor-core flash-attention kernels, for CUDA: warp-level `mma.sync` (`m16n8k16`, f16/bf16
//! in, f32 accumulate) on the register fragments of `lightning::fragments`, tiles staged by
//! `cp.async`. The scores never leave the registers: a warp's accumulators of `S = Q K^T` are
//! masked, exponentiated against the running row maximum (a max over the four lanes that share
//! a row) and handed to the next product as its `A` fragments, as FlashAttention-2 does.
//!
//! - `forward_mma_kernel`: one cube of four warps per 64 query rows, key blocks of 64 streamed,
//!   the online softmax in registers; writes `o` and the row log-sum-exp.
//! - `dq_mma_kernel`: the same grid; recomputes `P` from the log-sum-exp, `dS = P (dP - delta)`
//!   with `dP = dO V^T`, and `dQ = dQ + dS K`.
//! - `dk_dv_mma_kernel`: one cube per 64 keys of a KV head, the queries of every head of its
//!   group streamed: `P^T`, `dV += P^T dO`, `dK += dS^T Q`, with no atomics.
//!
//! Head dims multiples of 16 up to 128, `dv = d`. The portable kernels serve everything else.

// The kernels spell updates out (`x = x + y`), the form that ran on the devices.
#![allow(clippy::assign_op_pattern)]

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::{prelude::barrier::Barrier, prelude::*};

use super::portable::fmax;
use crate::lightning::fragments::{copy_tile_async, frag_a, frag_b2, mma_half, Pair};
use crate::lightning::geometry::{MK, MM, MN, PAD};

/// Rows (query or key) per cube: four warps of 16.
pub(crate) const ROWS: usize = 64;
/// Keys per streamed block in the forward and `dq` kernels.
const KEYS: usize = 64;
/// Units per cube.
const THREADS: usize = ROWS / MM * 32;

/// Queries per streamed block of the `dk`/`dv` kernel: fewer for wide heads, whose two
/// accumulators already hold `2 d / 4` registers per lane.
pub(crate) fn dkdv_queries(d: usize) -> usize {
    if d > 64 {
        32
    } else {
        64
    }
}

/// The rows `r0 .. r0 + rows` of `x`'s `(bi, head)` slice into `sm` (row stride `d + PAD`) by
/// `cp.async`, zero past `len` rows; the caller commits and waits.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    sm: &mut SharedMemory<F>,
    bi: usize,
    head: usize,
    r0: usize,
    len: usize,
    tid: usize,
    #[comptime] rows: usize,
    #[comptime] d: usize,
) {
    let base = bi * x.stride(0) + head * x.stride(1);
    let mut valid = 0usize;
    if r0 < len {
        valid = len - r0;
    }
    copy_tile_async::<F, N>(
        x,
        base,
        x.stride(2),
        x.stride(3),
        len,
        d,
        r0,
        valid,
        0,
        sm,
        0,
        tid,
        comptime!(d + PAD),
        rows,
        d,
        false,
        THREADS,
    );
}

/// The `A` fragments of this warp's 16 rows of a staged `[rows][d]` tile, all `d / 16` of them,
/// kept in registers for the whole kernel.
#[cube]
fn row_fragments<F: Float>(
    sm: &SharedMemory<F>,
    warp: usize,
    #[comptime] d: usize,
) -> Array<Pair<F>> {
    let mut f = Array::<Pair<F>>::new(comptime!(4 * d / MK));
    #[unroll]
    for kk in 0..d / MK {
        let fa = frag_a::<F>(sm, 0, warp * MM, kk * MK, comptime!(d + PAD), false);
        #[unroll]
        for i in 0..4usize {
            f[4 * kk + i] = fa[i];
        }
    }
    f
}

/// `acc = A B` for this warp's 16 rows: `A` the register fragments `fa` (`4 * depth / 16` of
/// them), `B` from the staged tile `sm` (`[k][n]` row-major, or `[n][k]` with `stored_t`), `n`
/// columns.
#[cube]
fn product<F: Float>(
    fa: &Array<Pair<F>>,
    sm: &SharedMemory<F>,
    acc: &mut Array<Pair<f32>>,
    #[comptime] depth: usize,
    #[comptime] n: usize,
    #[comptime] stride: usize,
    #[comptime] stored_t: bool,
) {
    #[unroll]
    for kk in 0..depth / MK {
        let mut a = Array::<Pair<F>>::new(4usize);
        #[unroll]
        for i in 0..4usize {
            a[i] = fa[4 * kk + i];
        }
        #[unroll]
        for tp in 0..n / 16 {
            let fb = frag_b2::<F>(sm, 0, kk * MK, tp * 16, stride, stored_t);
            mma_half::<F>(&a, &fb, 0usize, acc, 4 * tp);
            mma_half::<F>(&a, &fb, 1usize, acc, 4 * tp + 2);
        }
    }
}

/// `n / 8` zeroed accumulator pairs per row half: a warp's `16 x n` f32 tile.
#[cube]
fn zeros(#[comptime] n: usize) -> Array<Pair<f32>> {
    let mut acc = Array::<Pair<f32>>::new(comptime!(2 * n / MN));
    #[unroll]
    for i in 0..2 * n / MN {
        acc[i] = Pair::<f32>::new(0.0);
    }
    acc
}

/// The sum of `x` over the four lanes that share an accumulator row.
#[cube]
fn quad_sum(x: f32) -> f32 {
    let y = x + plane_shuffle_xor(x, 1u32);
    y + plane_shuffle_xor(y, 2u32)
}

/// The maximum of `x` over the four lanes that share an accumulator row.
#[cube]
fn quad_max(x: f32) -> f32 {
    let y = fmax(x, plane_shuffle_xor(x, 1u32));
    fmax(y, plane_shuffle_xor(y, 2u32))
}

/// Stores a warp's `16 x d` accumulators times `scale` into rows `r0 + g (+ 8)` of `out`'s
/// `(bi, head)` slice, rows below `len` only.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_rows<F: Float>(
    acc: &Array<Pair<f32>>,
    out: &mut Tensor<Pair<F>>,
    bi: usize,
    head: usize,
    r0: usize,
    len: usize,
    scale: &Array<f32>,
    #[comptime] d: usize,
) {
    let lane = UNIT_POS_X as usize % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let base = bi * out.stride(0) + head * out.stride(1);
    let st = out.stride(2);
    #[unroll]
    for nt in 0..d / MN {
        #[unroll]
        for half in 0..2usize {
            let row = r0 + g + 8 * half;
            if row < len {
                let col = nt * MN + 2 * tq;
                let w = Pair::<f32>::new(scale[half]);
                out[(base + row * st + col) / 2] = Pair::<F>::cast_from(acc[2 * nt + half] * w);
            }
        }
    }
}

/// Forward: `o` and `lse` for 64 query rows of one (batch, head); see the module docs.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn forward_mma_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Pair<F>>,
    lse: &mut Tensor<f32>,
    scale: f32,
    #[comptime] d: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let warp = tid / 32;
    let g = (tid % 32) / 4;
    let tq = tid % 4;
    let heads = q.shape(1);
    let t = q.shape(2);
    let s = k.shape(2);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let hk = hi / (heads / k.shape(1));
    let q0 = CUBE_POS_X as usize * ROWS;
    let offset = s - t;
    let st = comptime!(d + PAD);

    let mut sq = SharedMemory::<F>::new_aligned(comptime!(ROWS * (d + PAD)), 32usize);
    let mut sk = SharedMemory::<F>::new_aligned(comptime!(KEYS * (d + PAD)), 32usize);
    let mut sv = SharedMemory::<F>::new_aligned(comptime!(KEYS * (d + PAD)), 32usize);
    let barrier = Barrier::shared(THREADS as u32, tid == 0);
    stage::<F, N>(q, &mut sq, bi, hi, q0, t, tid, ROWS, d);
    barrier.commit_copy_async();
    barrier.arrive_and_wait();
    let qf = row_fragments::<F>(&sq, warp, d);

    // Each lane's two rows (g and g + 8 of the warp's 16): position, running max and sum.
    let pos = offset + q0 + warp * MM + g;
    let mut m = Array::<f32>::new(2usize);
    let mut l = Array::<f32>::new(2usize);
    #[unroll]
    for half in 0..2usize {
        m[half] = -1.0e30f32;
        l[half] = 0.0;
    }
    let mut acc = zeros(d);
    let mut last = q0 + ROWS;
    if last > t {
        last = t;
    }
    let nblocks = (offset + last + KEYS - 1) / KEYS;
    for kb in 0..nblocks {
        let j0 = kb * KEYS;
        sync_cube();
        stage::<F, N>(k, &mut sk, bi, hk, j0, s, tid, KEYS, d);
        stage::<F, N>(v, &mut sv, bi, hk, j0, s, tid, KEYS, d);
        barrier.commit_copy_async();
        barrier.arrive_and_wait();

        let mut sx = zeros(KEYS);
        product::<F>(&qf, &sk, &mut sx, d, KEYS, st, true);
        // Blocks wholly below the cube's first row and inside the keys need no mask.
        let masked = j0 + KEYS > offset + q0 + 1 || j0 + KEYS > s;
        let mut mx = Array::<f32>::new(2usize);
        #[unroll]
        for half in 0..2usize {
            mx[half] = -1.0e30f32;
        }
        #[unroll]
        for kt in 0..KEYS / MN {
            #[unroll]
            for half in 0..2usize {
                let mut p = sx[2 * kt + half] * Pair::<f32>::new(scale);
                if masked {
                    #[unroll]
                    for j in 0..2usize {
                        let key = j0 + kt * MN + 2 * tq + j;
                        if key > pos + 8 * half || key >= s {
                            p[j] = -1.0e30f32;
                        }
                    }
                }
                sx[2 * kt + half] = p;
                mx[half] = fmax(mx[half], fmax(p[0], p[1]));
            }
        }
        let mut corr = Array::<f32>::new(2usize);
        #[unroll]
        for half in 0..2usize {
            let m_new = fmax(m[half], quad_max(mx[half]));
            corr[half] = f32::exp(m[half] - m_new);
            m[half] = m_new;
            l[half] = l[half] * corr[half];
        }
        // P = exp(S - m), rounded into the A fragments of the second product.
        let mut fp = Array::<Pair<F>>::new(comptime!(2 * KEYS / MN));
        #[unroll]
        for kt in 0..KEYS / MN {
            #[unroll]
            for half in 0..2usize {
                let mut p = sx[2 * kt + half];
                #[unroll]
                for j in 0..2usize {
                    p[j] = f32::exp(p[j] - m[half]);
                }
                l[half] = l[half] + p[0] + p[1];
                fp[2 * kt + half] = Pair::<F>::cast_from(p);
            }
        }
        #[unroll]
        for nt in 0..d / MN {
            #[unroll]
            for half in 0..2usize {
                acc[2 * nt + half] = acc[2 * nt + half] * Pair::<f32>::new(corr[half]);
            }
        }
        product::<F>(&fp, &sv, &mut acc, KEYS, d, st, false);
    }

    let mut inv = Array::<f32>::new(2usize);
    let lse_base = bi * lse.stride(0) + hi * lse.stride(1);
    #[unroll]
    for half in 0..2usize {
        let sum = quad_sum(l[half]);
        inv[half] = 1.0f32 / sum;
        let row = q0 + warp * MM + g + 8 * half;
        if tq == 0 && row < t {
            lse[lse_base + row * lse.stride(2)] = m[half] + sum.ln();
        }
    }
    store_rows::<F>(&acc, out, bi, hi, q0 + warp * MM, t, &inv, d);
}

/// Reads `x[bi, head, row]` of a `[b, h, t]` f32 tensor for each of the lane's two rows
/// (`r0 + g`, `+ 8`), 0 past `len`.
#[cube]
fn row_values(x: &Tensor<f32>, bi: usize, head: usize, r0: usize, len: usize) -> Array<f32> {
    let g = (UNIT_POS_X as usize % 32) / 4;
    let mut out = Array::<f32>::new(2usize);
    #[unroll]
    for half in 0..2usize {
        let row = r0 + g + 8 * half;
        let mut val = 0.0f32;
        if row < len {
            val = x[bi * x.stride(0) + head * x.stride(1) + row * x.stride(2)];
        }
        out[half] = val;
    }
    out
}

/// `dq` for 64 query rows of one (batch, head): `dQ = scale sum_j dS_ij k_j`.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn dq_mma_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    d_o: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<Pair<F>>,
    scale: f32,
    #[comptime] d: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let warp = tid / 32;
    let g = (tid % 32) / 4;
    let tq = tid % 4;
    let heads = q.shape(1);
    let t = q.shape(2);
    let s = k.shape(2);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let hk = hi / (heads / k.shape(1));
    let q0 = CUBE_POS_X as usize * ROWS;
    let offset = s - t;
    let st = comptime!(d + PAD);

    let mut sq = SharedMemory::<F>::new_aligned(comptime!(ROWS * (d + PAD)), 32usize);
    let mut so = SharedMemory::<F>::new_aligned(comptime!(ROWS * (d + PAD)), 32usize);
    let mut sk = SharedMemory::<F>::new_aligned(comptime!(KEYS * (d + PAD)), 32usize);
    let mut sv = SharedMemory::<F>::new_aligned(comptime!(KEYS * (d + PAD)), 32usize);
    let barrier = Barrier::shared(THREADS as u32, tid == 0);
    stage::<F, N>(q, &mut sq, bi, hi, q0, t, tid, ROWS, d);
    stage::<F, N>(d_o, &mut so, bi, hi, q0, t, tid, ROWS, d);
    barrier.commit_copy_async();
    barrier.arrive_and_wait();
    let qf = row_fragments::<F>(&sq, warp, d);
    let of = row_fragments::<F>(&so, warp, d);
    let r0 = q0 + warp * MM;
    let row_lse = row_values(lse, bi, hi, r0, t);
    let row_delta = row_values(delta, bi, hi, r0, t);
    let pos = offset + r0 + g;

    let mut acc = zeros(d);
    let mut last = q0 + ROWS;
    if last > t {
        last = t;
    }
    let nblocks = (offset + last + KEYS - 1) / KEYS;
    for kb in 0..nblocks {
        let j0 = kb * KEYS;
        sync_cube();
        stage::<F, N>(k, &mut sk, bi, hk, j0, s, tid, KEYS, d);
        stage::<F, N>(v, &mut sv, bi, hk, j0, s, tid, KEYS, d);
        barrier.commit_copy_async();
        barrier.arrive_and_wait();

        let mut sx = zeros(KEYS);
        product::<F>(&qf, &sk, &mut sx, d, KEYS, st, true);
        let mut dp = zeros(KEYS);
        product::<F>(&of, &sv, &mut dp, d, KEYS, st, true);
        let mut fs = Array::<Pair<F>>::new(comptime!(2 * KEYS / MN));
        #[unroll]
        for kt in 0..KEYS / MN {
            #[unroll]
            for half in 0..2usize {
                let x = sx[2 * kt + half];
                let y = dp[2 * kt + half];
                let mut ds = Pair::<f32>::new(0.0);
                #[unroll]
                for j in 0..2usize {
                    let key = j0 + kt * MN + 2 * tq + j;
                    if key <= pos + 8 * half && key < s {
                        let p = f32::exp(x[j] * scale - row_lse[half]);
                        ds[j] = p * (y[j] - row_delta[half]);
                    }
                }
                fs[2 * kt + half] = Pair::<F>::cast_from(ds);
            }
        }
        product::<F>(&fs, &sk, &mut acc, KEYS, d, st, false);
    }
    let mut w = Array::<f32>::new(2usize);
    w[0] = scale;
    w[1] = scale;
    store_rows::<F>(&acc, dq, bi, hi, r0, t, &w, d);
}

/// `dk` and `dv` for 64 keys of one (batch, KV head), streaming `nq` queries at a time of every
/// query head of the group.
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn dk_dv_mma_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    d_o: &Tensor<Vector<F, N>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<Pair<F>>,
    dvt: &mut Tensor<Pair<F>>,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] nq: usize,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let warp = tid / 32;
    let g = (tid % 32) / 4;
    let tq = tid % 4;
    let heads = q.shape(1);
    let t = q.shape(2);
    let kv_heads = k.shape(1);
    let s = k.shape(2);
    let group = heads / kv_heads;
    let bh = CUBE_POS_Y as usize;
    let bi = bh / kv_heads;
    let hk = bh % kv_heads;
    let j0 = CUBE_POS_X as usize * ROWS;
    let offset = s - t;
    let st = comptime!(d + PAD);

    let mut sk = SharedMemory::<F>::new_aligned(comptime!(ROWS * (d + PAD)), 32usize);
    let mut sv = SharedMemory::<F>::new_aligned(comptime!(ROWS * (d + PAD)), 32usize);
    let mut sq = SharedMemory::<F>::new_aligned(comptime!(nq * (d + PAD)), 32usize);
    let mut so = SharedMemory::<F>::new_aligned(comptime!(nq * (d + PAD)), 32usize);
    let mut sl = SharedMemory::<f32>::new(nq);
    let mut sd = SharedMemory::<f32>::new(nq);
    let barrier = Barrier::shared(THREADS as u32, tid == 0);
    stage::<F, N>(k, &mut sk, bi, hk, j0, s, tid, ROWS, d);
    stage::<F, N>(v, &mut sv, bi, hk, j0, s, tid, ROWS, d);
    barrier.commit_copy_async();
    barrier.arrive_and_wait();
    let kf = row_fragments::<F>(&sk, warp, d);
    let vf = row_fragments::<F>(&sv, warp, d);
    // The lane's two keys.
    let key = j0 + warp * MM + g;

    let mut acc_k = zeros(d);
    let mut acc_v = zeros(d);
    // The first query block holding a query that sees key j0: position offset + i >= j0.
    let mut first = 0usize;
    if j0 > offset {
        first = (j0 - offset) / nq;
    }
    let nblocks = (t + nq - 1) / nq;
    for gi in 0..group {
        let hi = hk * group + gi;
        for qb in first..nblocks {
            let i0 = qb * nq;
            sync_cube();
            stage::<F, N>(q, &mut sq, bi, hi, i0, t, tid, nq, d);
            stage::<F, N>(d_o, &mut so, bi, hi, i0, t, tid, nq, d);
            if tid < nq {
                let i = i0 + tid;
                let mut lv = 0.0f32;
                let mut dl = 0.0f32;
                if i < t {
                    lv = lse[bi * lse.stride(0) + hi * lse.stride(1) + i * lse.stride(2)];
                    dl = delta[bi * delta.stride(0) + hi * delta.stride(1) + i * delta.stride(2)];
                }
                sl[tid] = lv;
                sd[tid] = dl;
            }
            barrier.commit_copy_async();
            barrier.arrive_and_wait();

            // S^T (keys x queries) and dP^T = V dO^T.
            let mut sx = zeros(nq);
            product::<F>(&kf, &sq, &mut sx, d, nq, st, true);
            let mut dp = zeros(nq);
            product::<F>(&vf, &so, &mut dp, d, nq, st, true);
            let mut fp = Array::<Pair<F>>::new(comptime!(2 * nq / MN));
            let mut fs = Array::<Pair<F>>::new(comptime!(2 * nq / MN));
            #[unroll]
            for qt in 0..nq / MN {
                #[unroll]
                for half in 0..2usize {
                    let x = sx[2 * qt + half];
                    let y = dp[2 * qt + half];
                    let mut p = Pair::<f32>::new(0.0);
                    let mut ds = Pair::<f32>::new(0.0);
                    #[unroll]
                    for j in 0..2usize {
                        let c = qt * MN + 2 * tq + j;
                        let i = i0 + c;
                        if i < t && offset + i >= key + 8 * half {
                            let pv = f32::exp(x[j] * scale - sl[c]);
                            p[j] = pv;
                            ds[j] = pv * (y[j] - sd[c]);
                        }
                    }
                    fp[2 * qt + half] = Pair::<F>::cast_from(p);
                    fs[2 * qt + half] = Pair::<F>::cast_from(ds);
                }
            }
            product::<F>(&fp, &so, &mut acc_v, nq, d, st, false);
            product::<F>(&fs, &sq, &mut acc_k, nq, d, st, false);
        }
    }
    let r0 = j0 + warp * MM;
    let mut w = Array::<f32>::new(2usize);
    w[0] = scale;
    w[1] = scale;
    store_rows::<F>(&acc_k, dk, bi, hk, r0, s, &w, d);
    w[0] = 1.0;
    w[1] = 1.0;
    store_rows::<F>(&acc_v, dvt, bi, hk, r0, s, &w, d);
}

/// Launches [`forward_mma_kernel`].
///
/// # Safety
/// Shapes checked by the caller, head dims as `dispatch::tensor_cores_take` allows, the inputs
/// [`super::launch`]'s aligned tensors for vectors of `nv`, `out` and `lse` fresh.
pub(crate) unsafe fn forward<R: CubeRuntime>(
    [q, k, v, out, lse]: [CubeTensor<R>; 5],
    scale: f32,
    nv: usize,
) {
    let [b, h, t, d] = q.meta.shape().dims::<4>();
    let (client, dtype) = (q.client.clone(), q.dtype);
    crate::usage::record("attention forward_mma_kernel (tensor cores)");
    forward_mma_kernel::launch_unchecked::<R>(
        &client,
        CubeCount::Static(t.div_ceil(ROWS) as u32, (b * h) as u32, 1),
        CubeDim::new_1d(THREADS as u32),
        nv,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.into_tensor_arg(),
        lse.into_tensor_arg(),
        scale,
        d,
        dtype.into(),
    );
}

/// Launches [`dq_mma_kernel`] and [`dk_dv_mma_kernel`].
///
/// # Safety
/// As [`forward`], for `q, k, v, do` and fresh gradients.
pub(crate) unsafe fn backward<R: CubeRuntime>(
    [q, k, v, d_o, lse, delta]: [CubeTensor<R>; 6],
    [dq, dk, dv]: [CubeTensor<R>; 3],
    scale: f32,
    nv: usize,
) {
    let [b, h, t, d] = q.meta.shape().dims::<4>();
    let [_, kvh, s, _] = k.meta.shape().dims::<4>();
    let (client, dtype) = (q.client.clone(), q.dtype);
    crate::usage::record("attention dq_mma_kernel, dk_dv_mma_kernel (tensor cores)");
    dq_mma_kernel::launch_unchecked::<R>(
        &client,
        CubeCount::Static(t.div_ceil(ROWS) as u32, (b * h) as u32, 1),
        CubeDim::new_1d(THREADS as u32),
        nv,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        d_o.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.into_tensor_arg(),
        scale,
        d,
        dtype.into(),
    );
    dk_dv_mma_kernel::launch_unchecked::<R>(
        &client,
        CubeCount::Static(s.div_ceil(ROWS) as u32, (b * kvh) as u32, 1),
        CubeDim::new_1d(THREADS as u32),
        nv,
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
        dkdv_queries(d),
        dtype.into(),
    );
}
