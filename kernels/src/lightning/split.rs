//! The split pair's `cmma` kernels: a scan as two launches, so that only the state recurrence
//! runs in sequence and the chunks' outputs run in parallel (fla's `chunk_fwd_h` /
//! `chunk_fwd_o` split), with 16x16x16 tile products in shared memory (CubeCL `cmma` on tensor
//! cores, or the same bodies as plain loops, which is how the wgpu tests run them).
//!
//! 1. `chunk_states_kernel`, one cube per (64 state rows, `dt` state columns, batch x head),
//!    walks the chunks in order doing only the state update
//!    `S <- lambda^len S + (lambda^(len-1-i) B)^T C`, and writes the state each chunk starts
//!    from (`H[chunk]`, rounded to the input dtype) and the final state.
//! 2. `chunk_output_kernel`, one cube per (`dt` output columns, chunk, batch x head), computes
//!    `O = (lambda^(i+1) A) H[chunk] + mask(A B^T) lambda^(i-j) C` for its chunk alone.
//!
//! The price is `H`: `ceil(n / chunk) * dk * dc` input-dtype values per batch x head written once
//! and read once (linear in `n`); the gain is that the sequential chain per chunk shrinks to one
//! product and two barriers, and the output products fill the GPU whatever the batch. `mma`
//! holds the same two passes with their products in registers; the dispatch picks each pass's
//! kernel.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::geometry::{state_rows, TiledConfig, PAD, PADF, ST_THREADS, ST_WARPS, THREADS, WARPS};
use super::options::ScanOptions;
use super::tiles::{
    decay_powers, fetch_states_chunk, load_state, mask_scores, output_tiles, put_scaled_v, put_v,
    score_tiles, stage_output_chunk, state_tiles, states_operands, store_state,
};

/// The state recurrence alone: one cube per (`rt` state rows from `CUBE_POS_Y * rt`, `dt` state
/// columns, batch x head). Writes `h[bh][chunk]` (`dkp x dcp`, row-major, every element: zero
/// past `da`/`dc`) before each chunk's update, and the final state to `out`'s rows `n..`.
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
fn chunk_states_kernel<F: Float, N: Size>(
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    h: &mut Tensor<Vector<F, N>>,
    out: &mut Tensor<F>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] rt: usize,
    #[comptime] dt: usize,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[comptime] use_cmma: bool,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let nv = N::value();
    let bh = CUBE_POS_Z as usize;
    let ops = states_operands::<F, N>(b, c, bh);
    let (n, da, dc) = (ops.n, ops.da, ops.dc);
    let heads = b.shape(1);
    let bi = bh / heads;
    let hi = bh % heads;
    let r0 = CUBE_POS_Y as usize * rt;
    let c0 = CUBE_POS_X as usize * dt;
    let dcp = (dc + dt - 1) / dt * dt;
    let nblocks = (n + chunk - 1) / chunk;

    let sv = f32::cast_from(s[hi * s.stride(0)]);
    let o_base = bi * out.stride(0) + hi * out.stride(1);
    let h_base = bh * nblocks * dkp * dcp + r0 * dcp + c0;

    let ks = comptime!(rt + PAD);
    let cs = comptime!(dt + PAD);
    let fs = comptime!(dt + PADF);
    let dtv = comptime!(dt / nv);

    let mut sbk = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(chunk * cs, 32usize);
    let mut sf = SharedMemory::<f32>::new_aligned(rt * fs, 32usize);
    let mut pw = SharedMemory::<f32>::new(chunk + 1);

    decay_powers(&mut pw, sv, chunk, ST_THREADS);
    load_state::<F>(
        state,
        &mut sf,
        bi,
        hi,
        r0,
        c0,
        da,
        dc,
        sv,
        rt,
        dt,
        fs,
        ST_THREADS,
        has_state,
        transpose_state,
        state_exp0,
    );

    let mut rb = Array::<Vector<F, N>>::new(comptime!(chunk * rt / (ST_THREADS * nv)));
    let mut rc = Array::<Vector<F, N>>::new(comptime!(chunk * dt / (ST_THREADS * nv)));
    fetch_states_chunk::<F, N>(
        b, c, &ops, 0, r0, c0, &mut rb, &mut rc, chunk, rt, dt, reverse, ST_THREADS,
    );
    sync_cube();

    for blk in 0..nblocks {
        let t0 = blk * chunk;
        let mut len = n - t0;
        if len > chunk {
            len = chunk;
        }

        // Stage the key-decayed B (row i by lambda^(len-1-i)) and C; hand out the state this
        // chunk starts from and decay it by lambda^len.
        put_scaled_v::<F, N>(
            &rb, &mut sbk, 0, &pw, len, len, true, ks, chunk, rt, ST_THREADS,
        );
        put_v::<F, N>(&rc, &mut sc, 0, cs, chunk, dt, ST_THREADS);
        let whole = pw[len];
        let hb = h_base + blk * dkp * dcp;
        #[unroll]
        for r in 0..rt * dtv / ST_THREADS {
            let e = tid + r * ST_THREADS;
            let row = e / dtv;
            let col = (e % dtv) * nv;
            let mut hv = Vector::<F, N>::empty();
            #[unroll]
            for j in 0..nv {
                let v = sf[row * fs + col + j];
                hv[j] = F::cast_from(v);
                sf[row * fs + col + j] = v * whole;
            }
            h[(hb + row * dcp + col) / nv] = hv;
        }
        sync_cube();

        if blk + 1 < nblocks {
            fetch_states_chunk::<F, N>(
                b,
                c,
                &ops,
                t0 + chunk,
                r0,
                c0,
                &mut rb,
                &mut rc,
                chunk,
                rt,
                dt,
                reverse,
                ST_THREADS,
            );
        }

        state_tiles::<F>(
            &sbk, &sc, &mut sf, chunk, rt, dt, ks, cs, fs, ST_WARPS, use_cmma,
        );
        sync_cube();
    }

    store_state::<F>(
        out,
        &sf,
        o_base + (n + r0) * out.stride(2),
        out.stride(2),
        out.stride(3),
        c0,
        da - r0,
        dc,
        sv,
        rt,
        dt,
        fs,
        ST_THREADS,
        state_exp0,
    );
}

/// One chunk's outputs from the state it starts from: one cube per (`dt` output columns, chunk,
/// batch x head), `O = (lambda^(i+1) A) H + mask(A B^T) lambda^(i-j) C`. With `h_t` the states
/// are another scan's, transposed: `H[n]^T` of the scan whose contracted dim is this one's `dc`
/// and whose output dim is this one's `da` (the backward's `dk` scan reading the `dv` scan's).
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
fn chunk_output_kernel<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    h: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
    #[comptime] h_t: bool,
    #[comptime] use_cmma: bool,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let nv = N::value();
    let n = a.shape(2);
    let dc = c.shape(3);
    let heads = a.shape(1);
    let bh = CUBE_POS_Z as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let blk = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * dt;
    let t0 = blk * chunk;
    let mut len = n - t0;
    if len > chunk {
        len = chunk;
    }

    let sv = f32::cast_from(s[hi * s.stride(0)]);
    let o_base = bi * out.stride(0) + hi * out.stride(1);

    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let xs = comptime!((if chunk > dt { chunk } else { dt }) + PADF);
    let dtv = comptime!(dt / nv);

    let mut sa = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(chunk * cs, 32usize);
    // H as `dkp x dt` (row stride `cs`), or with `h_t` as its transpose `dt x dkp` (stride `ks`).
    let sh_len = comptime!(if h_t { dt * ks } else { dkp * cs });
    let mut sh = SharedMemory::<F>::new_aligned(sh_len, 32usize);
    let mut sp = SharedMemory::<F>::new_aligned(chunk * ps, 32usize);
    let mut sx = SharedMemory::<f32>::new_aligned(chunk * xs, 32usize);
    let mut pw = SharedMemory::<f32>::new(chunk + 1);

    decay_powers(&mut pw, sv, chunk, THREADS);
    let mut ra = Array::<Vector<F, N>>::new(comptime!(chunk * dkp / (THREADS * nv)));
    stage_output_chunk::<F, N>(
        a, b, c, h, &mut sa, &mut sb, &mut sc, &mut sh, &mut ra, bh, blk, c0, chunk, dkp, dt, dt,
        reverse, h_t, THREADS,
    );
    sync_cube();

    // Scores A B^T, the tiles on and below the diagonal.
    score_tiles::<F>(&sa, &sb, &mut sx, chunk, dkp, ks, xs, WARPS, use_cmma);
    sync_cube();

    // Mask and decay the scores; stage the queries again, decayed by lambda^(i+1) (the scores
    // no longer read them).
    mask_scores::<F>(&sx, &mut sp, &pw, chunk, xs, ps);
    put_scaled_v::<F, N>(&ra, &mut sa, 0, &pw, 1, len, false, ks, chunk, dkp, THREADS);
    sync_cube();

    // O = (decayed A) H + P C, the score tiles on and below the diagonal only.
    if h_t {
        output_tiles::<F>(
            &sa, &sh, &sp, &sc, &mut sx, chunk, dkp, dt, ks, ks, true, cs, ps, xs, use_cmma,
        );
    } else {
        output_tiles::<F>(
            &sa, &sh, &sp, &sc, &mut sx, chunk, dkp, dt, ks, cs, false, cs, ps, xs, use_cmma,
        );
    }
    sync_cube();

    let o_st = out.stride(2);
    let o_sd = out.stride(3);
    #[unroll]
    for r in 0..chunk * dtv / THREADS {
        let e = tid + r * THREADS;
        let i = e / dtv;
        let j = (e % dtv) * nv;
        if i < len && c0 + j < dc {
            let tt = t0 + i;
            let p = if reverse { n - 1 - tt } else { tt };
            let mut ov = Vector::<F, N>::empty();
            #[unroll]
            for k in 0..nv {
                ov[k] = F::cast_from(sx[i * xs + j + k]);
            }
            out[(o_base + p * o_st + (c0 + j) * o_sd) / nv] = ov;
        }
    }
}

/// Launches `chunk_states_kernel` over `[b, c, s, state, h, out]` (the kernel's arguments, in
/// order) for `bh` batch x heads and `dc` state columns, inputs moved in vectors of `nv`: writes
/// `h` as `dkp` rows by `dc` padded to `cfg.dt` columns per chunk, and the final state into
/// `out`'s rows `n..`.
///
/// # Safety
/// The scan's shapes, checked by the caller; `h` holds every chunk state the grid writes
/// (`bh x chunks x dkp x dcp`); `nv` divides the head dims and every stride and offset of `b`,
/// `c` and `h`. The kernel tests rows past `n` and columns past `da`/`dc` before every read and
/// write.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_states<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [b, c, s, state, h, out]: [CubeTensor<R>; 6],
    [bh, dc]: [usize; 2],
    nv: usize,
    cfg: TiledConfig,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = b.dtype;
    let rt = state_rows(dkp);
    super::usage::record("chunk_states_kernel");
    chunk_states_kernel::launch_unchecked::<R>(
        client,
        CubeCount::Static(dc.div_ceil(cfg.dt) as u32, (dkp / rt) as u32, bh as u32),
        CubeDim::new_1d(ST_THREADS as u32),
        nv,
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        h.into_tensor_arg(),
        out.into_tensor_arg(),
        cfg.chunk,
        dkp,
        rt,
        cfg.dt,
        has_state,
        opts.reverse,
        opts.transpose_state,
        opts.state_exp0,
        cfg.cmma,
        dtype.into(),
    );
}

/// Launches `chunk_output_kernel` over `[a, b, c, s, h, out]` (the kernel's arguments, in
/// order) for `nblocks` chunks, `bh` batch x heads and `dc` output columns, the contracted dim
/// padded to `dkp`, `H` transposed with `h_t`.
///
/// # Safety
/// The scan's shapes, checked by the caller; `h` written by this scan's states pass (or, with
/// `h_t`, the transposed scan's) with `cfg.dt`-column tiles; `nv` as for [`launch_states`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_output<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [a, b, c, s, h, out]: [CubeTensor<R>; 6],
    [nblocks, bh, dc]: [usize; 3],
    nv: usize,
    cfg: TiledConfig,
    dkp: usize,
    reverse: bool,
    h_t: bool,
) {
    let dtype = a.dtype;
    super::usage::record("chunk_output_kernel");
    chunk_output_kernel::launch_unchecked::<R>(
        client,
        CubeCount::Static(dc.div_ceil(cfg.dt) as u32, nblocks as u32, bh as u32),
        CubeDim::new_1d(THREADS as u32),
        nv,
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        h.into_tensor_arg(),
        out.into_tensor_arg(),
        cfg.chunk,
        dkp,
        cfg.dt,
        reverse,
        h_t,
        cfg.cmma,
        dtype.into(),
    );
}
