//! `tiled_scan_kernel`: the whole scan in one launch of 16x16x16 tile products (CubeCL `cmma`
//! on tensor cores, or the same body with the products written out as plain loops, which is how
//! the wgpu tests run it), walking the chunks in order with the state in shared memory: no `H`
//! buffer. The dispatch runs it where the split pair's chunk states would pass the kernels'
//! 32-bit indexing.
//!
//! Per chunk of `C` tokens, one cube (8 warps) and `dt` output columns, everything in shared
//! memory except the next chunk's inputs, which are prefetched into registers while the current
//! one is computed:
//!
//! ```text
//! P   = mask(A B^T) * lambda^(i-j)             C x C      scores, rounded to the input dtype
//! O   = (lambda^(i+1) A) S + P V               C x dt     S: the carried state (input dtype copy)
//! S  <- lambda^len S + (lambda^(len-1-i) B)^T V    dk x dt    f32, in shared memory
//! ```

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::geometry::{check_tiled, padded, tiled_smem, TiledConfig, PAD, PADF, THREADS, WARPS};
use super::options::ScanOptions;
use super::tiles::{
    decay_powers, fetch, load_state, mask_scores, output_tiles, score_tiles, state_tiles,
    store_state,
};

/// The tiled decayed causal scan: one cube per (`dt` output columns, batch x head), walking the
/// chunks in order. Arguments and output as in `scan_kernel`.
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
fn tiled_scan_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[comptime] use_cmma: bool,
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
    let a_st = a.stride(2);
    let a_sd = a.stride(3);
    let b_st = b.stride(2);
    let b_sd = b.stride(3);
    let c_st = c.stride(2);
    let c_sd = c.stride(3);
    let o_st = out.stride(2);
    let o_sd = out.stride(3);

    // Row strides (elements) of the shared tiles.
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let fs = comptime!(dt + PADF);
    let xs = comptime!((if chunk > dt { chunk } else { dt }) + PADF);

    let mut sa = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut saq = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sbk = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(chunk * cs, 32usize);
    let mut sst = SharedMemory::<F>::new_aligned(dkp * cs, 32usize);
    let mut sp = SharedMemory::<F>::new_aligned(chunk * ps, 32usize);
    // The f32 state (dkp x dt) and the f32 scores, then outputs, of the chunk (chunk x dt).
    let mut sf = SharedMemory::<f32>::new_aligned(dkp * fs, 32usize);
    let mut sx = SharedMemory::<f32>::new_aligned(chunk * xs, 32usize);
    // pw[d] = lambda^d, d = 0..=chunk.
    let mut pw = SharedMemory::<f32>::new(chunk + 1);

    decay_powers(&mut pw, sv, chunk, THREADS);
    load_state::<F>(
        state,
        &mut sf,
        bi,
        hi,
        0,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        fs,
        THREADS,
        has_state,
        transpose_state,
        state_exp0,
    );

    let mut ra = Array::<F>::new(chunk * dkp / THREADS);
    let mut rb = Array::<F>::new(chunk * dkp / THREADS);
    let mut rc = Array::<F>::new(chunk * dt / THREADS);
    let nblocks = (n + chunk - 1) / chunk;
    let mut len0 = n;
    if len0 > chunk {
        len0 = chunk;
    }
    fetch::<F>(
        a, a_base, a_st, a_sd, n, da, 0, len0, 0, &mut ra, chunk, dkp, reverse, THREADS,
    );
    fetch::<F>(
        b, b_base, b_st, b_sd, n, da, 0, len0, 0, &mut rb, chunk, dkp, reverse, THREADS,
    );
    fetch::<F>(
        c, c_base, c_st, c_sd, n, dc, 0, len0, c0, &mut rc, chunk, dt, reverse, THREADS,
    );
    sync_cube();

    for blk in 0..nblocks {
        let t0 = blk * chunk;
        let mut len = n - t0;
        if len > chunk {
            len = chunk;
        }

        // 1. Stage this chunk (plain, query-decayed and key-decayed copies), copy the state to
        //    the input dtype for the products and decay the f32 state by lambda^len.
        #[unroll]
        for r in 0..chunk * dkp / THREADS {
            let e = tid + r * THREADS;
            let i = e / dkp;
            let d = e % dkp;
            let av = ra[r];
            let bv = rb[r];
            let mut wk = 0.0f32;
            if i < len {
                wk = pw[len - 1 - i];
            }
            sa[i * ks + d] = av;
            saq[i * ks + d] = F::cast_from(f32::cast_from(av) * pw[i + 1]);
            sb[i * ks + d] = bv;
            sbk[i * ks + d] = F::cast_from(f32::cast_from(bv) * wk);
        }
        #[unroll]
        for r in 0..chunk * dt / THREADS {
            let e = tid + r * THREADS;
            sc[(e / dt) * cs + e % dt] = rc[r];
        }
        let whole = pw[len];
        #[unroll]
        for r in 0..dkp * dt / THREADS {
            let e = tid + r * THREADS;
            let row = e / dt;
            let col = e % dt;
            let v = sf[row * fs + col];
            sst[row * cs + col] = F::cast_from(v);
            sf[row * fs + col] = v * whole;
        }
        sync_cube();

        // Prefetch the next chunk; its loads are in flight during the products below.
        if blk + 1 < nblocks {
            let t1 = t0 + chunk;
            let mut len1 = n - t1;
            if len1 > chunk {
                len1 = chunk;
            }
            fetch::<F>(
                a, a_base, a_st, a_sd, n, da, t1, len1, 0, &mut ra, chunk, dkp, reverse, THREADS,
            );
            fetch::<F>(
                b, b_base, b_st, b_sd, n, da, t1, len1, 0, &mut rb, chunk, dkp, reverse, THREADS,
            );
            fetch::<F>(
                c, c_base, c_st, c_sd, n, dc, t1, len1, c0, &mut rc, chunk, dt, reverse, THREADS,
            );
        }

        // 2. Scores A B^T (tiles on and below the diagonal) and the state update.
        score_tiles::<F>(&sa, &sb, &mut sx, chunk, dkp, ks, xs, WARPS, use_cmma);
        state_tiles::<F>(
            &sbk, &sc, &mut sf, chunk, dkp, dt, ks, cs, fs, WARPS, use_cmma,
        );
        sync_cube();

        // 3. Causal mask and decay lambda^(i-j) on the scores.
        mask_scores::<F>(&sx, &mut sp, &pw, chunk, xs, ps);
        sync_cube();

        // 4. Outputs: the decayed queries against the carried state, plus the masked scores
        //    against this chunk's values (only the score tiles on and below the diagonal).
        output_tiles::<F>(
            &saq, &sst, &sp, &sc, &mut sx, chunk, dkp, dt, ks, cs, false, cs, ps, xs, use_cmma,
        );
        sync_cube();

        // 5. Write the chunk's outputs.
        #[unroll]
        for r in 0..chunk * dt / THREADS {
            let e = tid + r * THREADS;
            let i = e / dt;
            let j = e % dt;
            if i < len && c0 + j < dc {
                let tt = t0 + i;
                let p = if reverse { n - 1 - tt } else { tt };
                out[o_base + p * o_st + (c0 + j) * o_sd] = F::cast_from(sx[i * xs + j]);
            }
        }
    }
    sync_cube();

    store_state::<F>(
        out,
        &sf,
        o_base + n * o_st,
        o_st,
        o_sd,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        fs,
        THREADS,
        state_exp0,
    );
}

/// Launches `tiled_scan_kernel` with tile `cfg` over `[a, b, c, s, state, out]` (the kernel's
/// arguments, in order).
///
/// # Safety
/// The scan's shapes, as `launch::scan_with` checks them (see `plain::launch`). Every tensor
/// index the kernel forms is then guarded by its own bounds tests (rows past `n`, columns past
/// `da`/`dc` are never read or written).
pub(crate) unsafe fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [a, b, c, s, state, out]: [CubeTensor<R>; 6],
    cfg: TiledConfig,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = a.dtype;
    let [batch, heads, _, da] = a.meta.shape().dims::<4>();
    let dc = c.meta.shape()[3];
    let dkp = padded(da);
    let smem_max = client.properties().hardware.max_shared_memory_size;
    check_tiled(cfg, tiled_smem(cfg, dkp, dtype.size()), smem_max);
    let cube_count = CubeCount::Static(dc.div_ceil(cfg.dt) as u32, (batch * heads) as u32, 1);
    super::usage::record("tiled_scan_kernel");
    tiled_scan_kernel::launch_unchecked::<R>(
        client,
        cube_count,
        CubeDim::new_1d(THREADS as u32),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        out.into_tensor_arg(),
        cfg.chunk,
        dkp,
        cfg.dt,
        has_state,
        opts.reverse,
        opts.transpose_state,
        opts.state_exp0,
        cfg.cmma,
        dtype.into(),
    );
}
