//! CubeCL kernels for lightning attention (plain path: shared memory and f32 FMAs, no tensor
//! cores). Each kernel has a plain tensor-op twin in [`super::reference`] ([`super::reference::scan`]
//! for [`scan`], [`super::reference::recurrent`] for [`decode`]) and the `wgpu` tests compare them.
//!
//! One kernel, `scan_kernel`, serves the forward pass and all three gradient scans: the forward
//! `o_t = sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t S0` and the gradients
//! `dq = scan(do, v, k)`, `dk = reverse scan(v, do, q)`, `dv = reverse scan(k, q, do)` are the same
//! chunked recurrence with other operands (Lightning Attention-2's two loops, one direction each).
//! [`scan`] hands f16/bf16 scans to the tensor-core kernels of [`super::split`] (or, with
//! `SCALELAB_LIGHTNING_SCAN=fused`, [`super::tiled`]) where the device supports them;
//! `scan_kernel` is the path for f32 and for devices without `cmma`.

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::prelude::*;

use super::tiled::TiledConfig;
use super::ScanOptions;

/// Threads per cube in every kernel here.
const THREADS: usize = 256;
/// Tokens per block (the intra-block square is `CHUNK x CHUNK`).
const CHUNK: usize = 32;
/// Width of the slices of the contracted dimension loaded at once.
const KC: usize = 32;
/// Output columns per cube: 32 where the state tile fits in shared memory, else 16.
const DT_WIDE: usize = 32;

/// Shared memory of `scan_kernel` in bytes, for a padded contracted dim `dkp` and `dt` columns.
fn scan_smem(dkp: usize, dt: usize) -> usize {
    4 * (dkp * dt + 2 * CHUNK * (KC + 1) + CHUNK * dt + CHUNK * (CHUNK + 1) + 2 * CHUNK)
}

/// The chunked decayed causal scan, one cube per (32 output columns, batch x head).
///
/// `a, b: [B, H, n, da]`, `c: [B, H, n, dc]`, `s: [H]`, `state: [B, H, da, dc]` (or transposed),
/// `out: [B, H, n + da, dc]`: rows `0..n` the scan output, rows `n..` the final state.
// `has_state` is comptime: the nested `if` is resolved at kernel expansion; cube code has no
// `div_ceil`.
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
fn scan_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let n = a.shape(2);
    let da = a.shape(3);
    let dc = c.shape(3);
    let heads = a.shape(1);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let c0 = CUBE_POS_X as usize * dt;

    let sv = f32::cast_from(s[hi * s.stride(0)]);
    let a_base = bi * a.stride(0) + hi * a.stride(1);
    let b_base = bi * b.stride(0) + hi * b.stride(1);
    let c_base = bi * c.stride(0) + hi * c.stride(1);
    let o_base = bi * out.stride(0) + hi * out.stride(1);
    // Strides read once: metadata reads inside the loops are dependent global loads.
    let a_st = a.stride(2);
    let a_sd = a.stride(3);
    let b_st = b.stride(2);
    let b_sd = b.stride(3);
    let c_st = c.stride(2);
    let c_sd = c.stride(3);
    let o_st = out.stride(2);
    let o_sd = out.stride(3);

    // kv[r][j]: the running state, rows of the contracted dim, this cube's 32 columns.
    let mut kv = SharedMemory::<f32>::new(dkp * dt);
    let mut qs = SharedMemory::<f32>::new(CHUNK * (KC + 1));
    let mut ks = SharedMemory::<f32>::new(CHUNK * (KC + 1));
    let mut vs = SharedMemory::<f32>::new(CHUNK * dt);
    let mut ss = SharedMemory::<f32>::new(CHUNK * (CHUNK + 1));
    let mut wq = SharedMemory::<f32>::new(CHUNK);
    let mut wk = SharedMemory::<f32>::new(CHUNK);

    load_state::<F>(
        state,
        &mut kv,
        bi,
        hi,
        0,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        dt,
        THREADS,
        has_state,
        transpose_state,
        state_exp0,
    );

    let nblocks = (n + CHUNK - 1) / CHUNK;
    for blk in 0..nblocks {
        let t0 = blk * CHUNK;
        let mut len = n - t0;
        if len > CHUNK {
            len = CHUNK;
        }
        if tid < CHUNK {
            // lambda^(i+1) on the queries against the carried state, lambda^(len-1-i) on the
            // keys going into it.
            wq[tid] = f32::exp(-sv * f32::cast_from(tid + 1));
            let mut w = 0.0f32;
            if tid < len {
                w = f32::exp(-sv * f32::cast_from(len - 1 - tid));
            }
            wk[tid] = w;
        }
        #[unroll]
        for r in 0..CHUNK * dt / THREADS {
            let e = tid + r * THREADS;
            let i = e / dt;
            let col = c0 + e % dt;
            let mut val = 0.0f32;
            if i < len && col < dc {
                let t = t0 + i;
                let p = if reverse { n - 1 - t } else { t };
                val = f32::cast_from(c[c_base + p * c_st + col * c_sd]);
            }
            vs[e] = val;
        }

        let mut sacc = Array::<f32>::new(CHUNK * CHUNK / THREADS);
        let mut oacc = Array::<f32>::new(CHUNK * dt / THREADS);
        #[unroll]
        for r in 0..CHUNK * CHUNK / THREADS {
            sacc[r] = 0.0;
        }
        #[unroll]
        for r in 0..CHUNK * dt / THREADS {
            oacc[r] = 0.0;
        }

        for kb in 0..dkp / KC {
            let k0 = kb * KC;
            #[unroll]
            for r in 0..CHUNK * KC / THREADS {
                let e = tid + r * THREADS;
                let i = e / KC;
                let d = e % KC;
                let mut qv = 0.0f32;
                let mut kvv = 0.0f32;
                if i < len && k0 + d < da {
                    let t = t0 + i;
                    let p = if reverse { n - 1 - t } else { t };
                    qv = f32::cast_from(a[a_base + p * a_st + (k0 + d) * a_sd]);
                    kvv = f32::cast_from(b[b_base + p * b_st + (k0 + d) * b_sd]);
                }
                qs[i * (KC + 1) + d] = qv;
                ks[i * (KC + 1) + d] = kvv;
            }
            sync_cube();

            // Scores a_i . b_j over this slice, and the inter-block term a_i . kv[:, col].
            #[unroll]
            for r in 0..CHUNK * CHUNK / THREADS {
                let e = tid + r * THREADS;
                let i = e / CHUNK;
                let j = e % CHUNK;
                let mut acc = sacc[r];
                for d in 0..KC {
                    acc += qs[i * (KC + 1) + d] * ks[j * (KC + 1) + d];
                }
                sacc[r] = acc;
            }
            #[unroll]
            for r in 0..CHUNK * dt / THREADS {
                let e = tid + r * THREADS;
                let i = e / dt;
                let j = e % dt;
                let mut acc = oacc[r];
                for d in 0..KC {
                    acc += qs[i * (KC + 1) + d] * kv[(k0 + d) * dt + j];
                }
                oacc[r] = acc;
            }
            sync_cube();

            // kv[k0..k0+KC] <- lambda^len kv + (decayed b)^T c, rows this slice only.
            let whole = f32::exp(-sv * f32::cast_from(len));
            #[unroll]
            for r in 0..KC * dt / THREADS {
                let e = tid + r * THREADS;
                let d = e / dt;
                let j = e % dt;
                let mut acc = 0.0f32;
                for i in 0..CHUNK {
                    acc += wk[i] * ks[i * (KC + 1) + d] * vs[i * dt + j];
                }
                let idx = (k0 + d) * dt + j;
                kv[idx] = kv[idx] * whole + acc;
            }
            sync_cube();
        }

        // Masked, decayed scores into shared memory.
        #[unroll]
        for r in 0..CHUNK * CHUNK / THREADS {
            let e = tid + r * THREADS;
            let i = e / CHUNK;
            let j = e % CHUNK;
            let mut val = 0.0f32;
            if j <= i {
                val = sacc[r] * f32::exp(-sv * f32::cast_from(i - j));
            }
            ss[i * (CHUNK + 1) + j] = val;
        }
        sync_cube();

        #[unroll]
        for r in 0..CHUNK * dt / THREADS {
            let e = tid + r * THREADS;
            let i = e / dt;
            let j = e % dt;
            let mut acc = oacc[r] * wq[i];
            for jj in 0..CHUNK {
                acc += ss[i * (CHUNK + 1) + jj] * vs[jj * dt + j];
            }
            let col = c0 + j;
            if i < len && col < dc {
                let t = t0 + i;
                let p = if reverse { n - 1 - t } else { t };
                out[o_base + p * o_st + col * o_sd] = F::cast_from(acc);
            }
        }
        sync_cube();
    }

    store_state::<F>(
        out,
        &kv,
        o_base + n * o_st,
        o_st,
        o_sd,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        dt,
        THREADS,
        state_exp0,
    );
}

/// Loads rows `r0..r0 + rows`, columns `c0..c0 + dt` of the initial state (`[B, H, da, dc]`, or
/// `[B, H, dc, da]` transposed) into `dst` (f32, row stride `stride`), zero without a state or
/// past its edges. With `state_exp0` it is scaled by `exp(s)` so that the carried-state term
/// reads `lambda^t`.
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn load_state<F: Float>(
    state: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    bi: usize,
    hi: usize,
    r0: usize,
    c0: usize,
    da: usize,
    dc: usize,
    sv: f32,
    #[comptime] rows: usize,
    #[comptime] dt: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
    #[comptime] has_state: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
) {
    let tid = UNIT_POS_X as usize;
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(sv);
    }
    #[unroll]
    for r in 0..rows * dt / threads {
        let e = tid + r * threads;
        let row = e / dt;
        let col = e % dt;
        let mut val = 0.0f32;
        if has_state {
            if r0 + row < da && c0 + col < dc {
                let sb = bi * state.stride(0) + hi * state.stride(1);
                let idx = if transpose_state {
                    sb + (c0 + col) * state.stride(2) + (r0 + row) * state.stride(3)
                } else {
                    sb + (r0 + row) * state.stride(2) + (c0 + col) * state.stride(3)
                };
                val = f32::cast_from(state[idx]) * scale;
            }
        }
        dst[row * stride + col] = val;
    }
}

/// Writes columns `c0..c0 + dt` of the final state from `src` (f32, row stride `stride`) to the
/// packed output rows starting at `base`, undoing [`load_state`]'s `exp(s)` under `state_exp0`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_state<F: Float>(
    out: &mut Tensor<F>,
    src: &SharedMemory<f32>,
    base: usize,
    o_st: usize,
    o_sd: usize,
    c0: usize,
    da: usize,
    dc: usize,
    sv: f32,
    #[comptime] rows: usize,
    #[comptime] dt: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
    #[comptime] state_exp0: bool,
) {
    let tid = UNIT_POS_X as usize;
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(-sv);
    }
    #[unroll]
    for r in 0..rows * dt / threads {
        let e = tid + r * threads;
        let row = e / dt;
        let col = e % dt;
        if row < da && c0 + col < dc {
            out[base + row * o_st + (c0 + col) * o_sd] =
                F::cast_from(src[row * stride + col] * scale);
        }
    }
}

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
/// their share of `q S'`. Both decode kernels' body.
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

/// One decode step, one cube per (`32 N` value columns, batch x head): `groups` groups of 32
/// threads split the state's rows (group `g`: rows `g, g + groups, ..`, `rows` of them);
/// `S' = lambda S + k^T v`, `o = q S'`, in f32. Each unit moves `N` state columns per access (16
/// bytes of an f32 state on CUDA) and loads all its rows before writing any, so a step keeps
/// `rows` loads in flight per unit: the step is bound by the state's bytes, read once and
/// written once. The default before `decode_warp_kernel`, kept to compare.
///
/// `q, k: [B, H, 1, dk]`, `v: [B, H, 1, dv]`, `state: [B, H, dk, dv]` in its own dtype `S`
/// (f32 under bf16 inputs); writes `o: [B, H, 1, dv]` and `state_out: [B, H, dk, dv]` (dtype `S`).
#[allow(clippy::too_many_arguments)]
#[cube(launch_unchecked)]
fn decode_kernel<F: Float, S: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    state: &Tensor<Vector<S, N>>,
    o: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<Vector<S, N>>,
    #[comptime] rows: usize,
    #[comptime] groups: usize,
    #[define(F)] _dtype: StorageType,
    #[define(S)] _state_dtype: StorageType,
) {
    let nv = N::value();
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let group = tid / 32;
    let heads = q.shape(1);
    let dv = v.shape(3);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let col = (CUBE_POS_X as usize * 32 + lane) * nv;

    let mut partial = SharedMemory::<Vector<f32, N>>::new(32 * groups);
    let mut acc = Vector::<f32, N>::new(0.0);
    if col < dv {
        let (lambda, vj) = decode_head::<F, N>(v, s, bi, hi, col);
        acc = decode_rows::<F, S, N>(
            q, k, state, state_out, bi, hi, col, lambda, vj, group, groups, rows,
        );
    }
    partial[tid] = acc;
    sync_cube();
    if group == 0 && col < dv {
        let mut sum = Vector::<f32, N>::new(0.0);
        #[unroll]
        for g in 0..groups {
            sum += partial[g * 32usize + lane];
        }
        store_decode_o::<F, N>(o, bi, hi, col, sum);
    }
}

/// One decode step (the default kernel), one warp per (`32 N` value columns, batch x head) and
/// `CUBE_DIM_Y` warps per cube, each on its own state: the warp walks the state's rows `rows` at
/// a time (all loaded before any is written), so no barrier or shared memory ties warps together
/// and each retires on its own. Same contract as `decode_kernel`.
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

/// `SCALELAB_LIGHTNING_SCAN=plain` keeps every scan on the plain kernel (to compare the two).
fn force_plain() -> bool {
    static PLAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLAIN.get_or_init(|| std::env::var("SCALELAB_LIGHTNING_SCAN").is_ok_and(|v| v == "plain"))
}

/// The float dtype `tensors` share (`q, k, v` and the like), or a panic naming the rule.
fn check_same_float(tensors: &[&CubeTensor<impl CubeRuntime>]) -> DType {
    let dtype = tensors[0].dtype;
    for t in tensors {
        assert_eq!(
            t.dtype, dtype,
            "lightning kernels: q, k, v (and the state and cotangents of a scan) must share one \
             float dtype"
        );
    }
    dtype
}

/// The decay rates `s` in the kernels' dtype `dtype`. `s` may have its own float dtype: f32
/// decays under f16 inputs keep a trained `ds` (which reaches 1e5 at 1K tokens under slow
/// decays) inside its dtype's range; the kernels read the rates rounded to `dtype`.
fn rates_in<R: CubeRuntime>(s: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    assert!(
        s.dtype.is_float(),
        "lightning kernels: s (the decay rates) must be a float tensor"
    );
    if s.dtype == dtype {
        s
    } else {
        burn_cubecl::kernel::cast(s, dtype)
    }
}

/// Stops with an error naming the fix when an input buffer or an output of `out_len` elements
/// would pass the kernels' 32-bit indexing.
fn check_indexing<R: CubeRuntime>(inputs: &[&CubeTensor<R>], out_len: usize) {
    let largest = inputs
        .iter()
        .map(|t| t.handle.size_in_used() as usize / t.dtype.size())
        .chain([out_len])
        .max()
        .unwrap_or(0);
    assert!(
        largest <= u32::MAX as usize,
        "lightning scan: a tensor of {largest} elements exceeds the kernels' 32-bit indexing; \
         run fewer sequences or heads per call"
    );
}

/// One decayed causal scan of `(a, b, c)` from `state` (see [`super::reference::scan`]): the
/// packed `[B, H, n + da, dc]` result, from the tensor-core kernels where
/// [`super::tiled::cmma_config`] finds a configuration for this device and dtype (the split pair
/// by default), else from `scan_kernel`.
pub fn scan<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    s: CubeTensor<R>,
    state: Option<CubeTensor<R>>,
    opts: ScanOptions,
) -> CubeTensor<R> {
    let tiled = auto_config(&a);
    scan_with(a, b, c, s, state, opts, tiled)
}

/// The tensor-core geometry [`scan`] uses for a scan contracting `a`'s last dim on this device,
/// if any (and unless `SCALELAB_LIGHTNING_SCAN=plain`).
fn auto_config<R: CubeRuntime>(a: &CubeTensor<R>) -> Option<TiledConfig> {
    super::tiled::cmma_config(&a.client, a.dtype, a.meta.shape()[3]).filter(|_| !force_plain())
}

/// [`scan`] with the kernel chosen by the caller: `Some(geometry)` runs the tiled kernels (split
/// or fused as `geometry.split` says; their `cmma: false` form on any device), `None` the plain
/// `scan_kernel`.
pub fn scan_with<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    s: CubeTensor<R>,
    state: Option<CubeTensor<R>>,
    opts: ScanOptions,
    tiled: Option<TiledConfig>,
) -> CubeTensor<R> {
    let dtype = check_same_float(&[&a, &b, &c]);
    let s = rates_in(s, dtype);
    let [batch, heads, n, da] = a.meta.shape().dims::<4>();
    let dc = c.meta.shape()[3];
    assert_eq!(b.meta.shape().dims::<4>(), [batch, heads, n, da], "scan: b");
    assert_eq!(c.meta.shape().dims::<4>(), [batch, heads, n, dc], "scan: c");
    assert_eq!(
        s.meta.shape().num_elements(),
        heads,
        "scan: s must be [heads]"
    );
    check_indexing(&[&a, &b, &c], batch * heads * (n + da) * dc);
    let client = a.client.clone();
    let out = empty_device_contiguous_dtype::<R>(
        client.clone(),
        a.device.clone(),
        Shape::new([batch, heads, n + da, dc]),
        dtype,
    );
    let has_state = state.is_some();
    let state = match state {
        Some(st) => {
            assert_eq!(st.dtype, dtype, "scan: state dtype");
            let want = if opts.transpose_state {
                [batch, heads, dc, da]
            } else {
                [batch, heads, da, dc]
            };
            assert_eq!(st.meta.shape().dims::<4>(), want, "scan: state shape");
            st
        }
        None => a.clone(),
    };
    if let Some(cfg) = tiled {
        let args = super::tiled::ScanArgs {
            a,
            b,
            c,
            s: into_contiguous(s),
            state,
            has_state,
            out: out.clone(),
        };
        super::tiled::launch(&client, args, opts, cfg);
        return out;
    }
    let dkp = da.div_ceil(KC).max(1) * KC;
    assert!(dkp <= 256, "lightning kernels: head dims up to 256");
    let smem_max = client.properties().hardware.max_shared_memory_size;
    let dt = if scan_smem(dkp, DT_WIDE) <= smem_max {
        DT_WIDE
    } else {
        DT_WIDE / 2
    };
    assert!(
        scan_smem(dkp, dt) <= smem_max,
        "lightning scan: {} bytes of shared memory needed, the device has {smem_max}",
        scan_smem(dkp, dt)
    );
    let s = into_contiguous(s);
    let cube_count = CubeCount::Static(dc.div_ceil(dt) as u32, (batch * heads) as u32, 1);
    // SAFETY: every index the kernel forms is bounded by the shapes checked above (rows past `n`,
    // columns past `da`/`dc` are tested before any read or write).
    super::usage::record("scan_kernel (scalar)");
    unsafe {
        scan_kernel::launch_unchecked::<R>(
            &client,
            cube_count,
            CubeDim::new_1d(THREADS as u32),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            s.into_tensor_arg(),
            state.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dkp,
            dt,
            has_state,
            opts.reverse,
            opts.transpose_state,
            opts.state_exp0,
            dtype.into(),
        );
    }
    out
}

/// The backward's two reverse scans, `dk = reverse scan(v, do, q)` from `dS_n^T` and
/// `dv = reverse scan(k, q, do)` from `dS_n` (both `state_exp0`): one states pass for both where the
/// split kernels apply (unless `SCALELAB_LIGHTNING_SHARED_DKDV=0`), else two [`scan`]s.
/// Returns `(dk, dv)` with `dk` in rows `0..n` of a `[B, H, n + dv, dk]` tensor and `dv` packed
/// with `dS0` in its rows `n..`.
pub fn dk_dv<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    if !shared_dk_dv() {
        return two_scans(q, k, v, d_o, s, d_state, auto_config);
    }
    let widest = q.meta.shape()[3].max(v.meta.shape()[3]);
    let tiled = super::tiled::cmma_config(&q.client, q.dtype, widest).filter(|_| !force_plain());
    dk_dv_with(q, k, v, d_o, s, d_state, tiled)
}

/// `dk` and `dv` as two independent scans (see [`dk_dv`]).
fn two_scans<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
    pick: impl Fn(&CubeTensor<R>) -> Option<TiledConfig>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (dk_cfg, dv_cfg) = (pick(&v), pick(&k));
    let d_k = scan_with(
        v,
        d_o.clone(),
        q.clone(),
        s.clone(),
        Some(d_state.clone()),
        ScanOptions::DK,
        dk_cfg,
    );
    let d_v = scan_with(k, q, d_o, s, Some(d_state), ScanOptions::DV, dv_cfg);
    (d_k, d_v)
}

/// Whether [`dk_dv`] shares the chunk states of the two scans (one states pass instead of two):
/// on unless `SCALELAB_LIGHTNING_SHARED_DKDV=0`, which runs the two scans apart, to compare.
/// Checked on the GPU against the f32 kernel (`lightning --check-kernels`) and over lavapipe
/// against the references.
fn shared_dk_dv() -> bool {
    static SHARED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHARED
        .get_or_init(|| std::env::var("SCALELAB_LIGHTNING_SHARED_DKDV").map_or(true, |v| v != "0"))
}

/// [`dk_dv`] with the kernels chosen by the caller, as in [`scan_with`]; the chunk states are
/// shared whenever `tiled` is a split geometry that fits.
pub fn dk_dv_with<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
    tiled: Option<TiledConfig>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let s = rates_in(s, check_same_float(&[&q, &k, &v, &d_o, &d_state]));
    let shape = q.meta.shape().dims::<4>();
    let [batch, heads, n, dk] = shape;
    let dv = v.meta.shape()[3];
    let shared = tiled.filter(|cfg| {
        cfg.split && super::split::states_fit(shape, dv, *cfg) && {
            let elem = q.dtype.size();
            let smem_max = q.client.properties().hardware.max_shared_memory_size;
            cfg.smem(dk, elem).max(cfg.smem(dv, elem)) <= smem_max
        }
    });
    let Some(cfg) = shared else {
        return two_scans(q, k, v, d_o, s, d_state, |_| tiled);
    };
    assert_eq!(k.meta.shape().dims::<4>(), shape, "dk_dv: k");
    assert_eq!(
        d_o.meta.shape().dims::<4>(),
        [batch, heads, n, dv],
        "dk_dv: do"
    );
    assert_eq!(
        v.meta.shape().dims::<4>(),
        [batch, heads, n, dv],
        "dk_dv: v"
    );
    assert_eq!(
        d_state.meta.shape().dims::<4>(),
        [batch, heads, dk, dv],
        "dk_dv: state"
    );
    assert_eq!(
        s.meta.shape().num_elements(),
        heads,
        "dk_dv: s must be [heads]"
    );
    let client = q.client.clone();
    let args = super::split::PairArgs {
        q,
        k,
        v,
        d_o,
        s: into_contiguous(s),
        d_state,
    };
    super::split::launch_dk_dv(&client, args, cfg)
}

/// Warps per `decode_warp_kernel` cube (each on its own state).
const DECODE_WARPS: usize = 4;

/// Which decode kernel runs, and its geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeKernel {
    /// `decode_kernel`: `groups` warps per cube share one state's rows, then add their `o`.
    Cube {
        /// Warps per cube (each unit holds `dk / groups` state rows, rounded up).
        groups: usize,
    },
    /// `decode_warp_kernel`: one warp per state, walking its rows `rows` at a time.
    Warp {
        /// State rows each unit loads before writing any.
        rows: usize,
    },
}

/// The decode kernel [`decode`] runs: `SCALELAB_LIGHTNING_DECODE` = `warp16` (unset), `warp8`,
/// `warp32`, `cube8`, `cube4`, `cube16` or `cube32`, to compare them in one build. On the H200
/// at H=64, D=128 (f32 state) the warp kernel was as fast or faster at every batch: 0.080 /
/// 0.147 / 0.552 ms at batch 32 / 64 / 256 against the 8-warp cube kernel's 0.087 / 0.165 /
/// 0.630, and even at batch 1 (18 against 19 us on `CubeBackend`).
fn decode_choice() -> DecodeKernel {
    static CHOICE: std::sync::OnceLock<DecodeKernel> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        use DecodeKernel::{Cube, Warp};
        super::split::knob(
            "SCALELAB_LIGHTNING_DECODE",
            &[
                ("warp16", Warp { rows: 16 }),
                ("warp8", Warp { rows: 8 }),
                ("warp32", Warp { rows: 32 }),
                ("cube8", Cube { groups: 8 }),
                ("cube4", Cube { groups: 4 }),
                ("cube16", Cube { groups: 16 }),
                ("cube32", Cube { groups: 32 }),
            ],
        )
    })
}

/// One recurrent step, `(o [B, H, 1, dv], new state [B, H, dk, dv])`; the state may have its own
/// float dtype (the new state keeps it). Runs `decode_choice`'s kernel.
pub fn decode<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    s: CubeTensor<R>,
    state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    decode_with(q, k, v, s, state, decode_choice())
}

/// [`decode`] with the kernel chosen by the caller.
pub fn decode_with<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    s: CubeTensor<R>,
    state: CubeTensor<R>,
    kernel: DecodeKernel,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let dtype = check_same_float(&[&q, &k, &v]);
    let s = rates_in(s, dtype);
    let state_dtype = state.dtype;
    assert!(
        state_dtype.is_float(),
        "lightning decode: the state must be a float tensor"
    );
    let [batch, heads, one, dk] = q.meta.shape().dims::<4>();
    assert_eq!(one, 1, "decode: one token per call");
    let dv = v.meta.shape()[3];
    assert_eq!(
        state.meta.shape().dims::<4>(),
        [batch, heads, dk, dv],
        "decode: state shape"
    );
    let client = q.client.clone();
    let o = empty_device_contiguous_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, heads, 1, dv]),
        dtype,
    );
    let state_out = empty_device_contiguous_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, heads, dk, dv]),
        state_dtype,
    );
    // The widest state access of at most 16 bytes that every row, `v` and `o` allow.
    let nv = [4, 2]
        .into_iter()
        .find(|&nv| {
            nv * state_dtype.size() <= 16
                && dv % nv == 0
                && [&v, &state, &o, &state_out]
                    .iter()
                    .all(|t| super::split::vector_aligned(t, nv))
        })
        .unwrap_or(1);
    let col_cubes = dv.div_ceil(32 * nv) as u32;
    let args = (
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        o.clone().into_tensor_arg(),
        state_out.clone().into_tensor_arg(),
    );
    // SAFETY: the kernels test `col < dv`, `r < dk` (and the warp kernel `bh < B H`), the shapes
    // checked above; `nv` divides `dv` and every stride and offset of the vector tensors.
    match kernel {
        DecodeKernel::Cube { groups } => unsafe {
            decode_kernel::launch_unchecked::<R>(
                &client,
                CubeCount::Static(col_cubes, (batch * heads) as u32, 1),
                CubeDim::new_1d(32 * groups as u32),
                nv,
                args.0,
                args.1,
                args.2,
                args.3,
                args.4,
                args.5,
                args.6,
                dk.div_ceil(groups),
                groups,
                dtype.into(),
                state_dtype.into(),
            );
        },
        DecodeKernel::Warp { rows } => unsafe {
            decode_warp_kernel::launch_unchecked::<R>(
                &client,
                CubeCount::Static(col_cubes, (batch * heads).div_ceil(DECODE_WARPS) as u32, 1),
                CubeDim::new_2d(32, DECODE_WARPS as u32),
                nv,
                args.0,
                args.1,
                args.2,
                args.3,
                args.4,
                args.5,
                args.6,
                rows,
                dtype.into(),
                state_dtype.into(),
            );
        },
    }
    (o, state_out)
}
