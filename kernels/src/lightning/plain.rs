//! The plain scan kernel, `scan_kernel`: shared memory and f32 FMAs, no tensor cores, any float
//! dtype and any CubeCL device. What f32 scans run, and f16/bf16 scans where the device has no
//! tensor-core tiles for them (see [`super::dispatch`]); [`super::reference::scan`] is its
//! tensor-op twin.
//!
//! One kernel serves the forward pass and all three gradient scans: the forward
//! `o_t = sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t S0` and the gradients
//! `dq = scan(do, v, k)`, `dk = reverse scan(v, do, q)`, `dv = reverse scan(k, q, do)` are the same
//! chunked recurrence with other operands (Lightning Attention-2's two loops, one direction each).

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::geometry::plain::{CHUNK, KC, THREADS};
use super::options::ScanOptions;
use super::tiles::{load_state, store_state};

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

/// Launches `scan_kernel` over `[a, b, c, s, state, out]` (the kernel's arguments, in order):
/// the contracted dim padded to `dkp` (a multiple of 32, at most 256), `dt` output columns per
/// cube (the kernel's shared memory within the device's).
///
/// # Safety
/// The scan's shapes, as `launch::scan_with` checks them: `a, b: [B, H, n, da]`,
/// `c: [B, H, n, dc]`, `s: [H]` contiguous, `state` as `opts` reads it (any tensor without
/// `has_state`), `out: [B, H, n + da, dc]`. Every index the kernel forms is then bounded (rows
/// past `n`, columns past `da`/`dc` are tested before any read or write).
pub(crate) unsafe fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [a, b, c, s, state, out]: [CubeTensor<R>; 6],
    [dkp, dt]: [usize; 2],
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = a.dtype;
    let [batch, heads, _, _] = a.meta.shape().dims::<4>();
    let dc = c.meta.shape()[3];
    let cube_count = CubeCount::Static(dc.div_ceil(dt) as u32, (batch * heads) as u32, 1);
    super::usage::record("scan_kernel (scalar)");
    scan_kernel::launch_unchecked::<R>(
        client,
        cube_count,
        CubeDim::new_1d(THREADS as u32),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        out.into_tensor_arg(),
        dkp,
        dt,
        has_state,
        opts.reverse,
        opts.transpose_state,
        opts.state_exp0,
        dtype.into(),
    );
}
