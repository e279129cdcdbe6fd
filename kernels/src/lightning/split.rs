//! The split scan: the tiled scan of [`super::tiled`] as two launches, so that only the state
//! recurrence runs in sequence and the chunks' outputs run in parallel (fla's `chunk_fwd_h` /
//! `chunk_fwd_o` split).
//!
//! 1. `chunk_states_kernel`, one cube per (64 state rows, `dt` state columns, batch x head),
//!    walks the chunks in order doing only the state update
//!    `S <- lambda^len S + (lambda^(len-1-i) B)^T C`, and writes the state each chunk starts
//!    from (`H[chunk]`, rounded to the input dtype, as the fused kernel rounds its copy) and the
//!    final state.
//! 2. `chunk_output_kernel`, one cube per (`dt` output columns, chunk, batch x head), computes
//!    `O = (lambda^(i+1) A) H[chunk] + mask(A B^T) lambda^(i-j) C` for its chunk alone.
//!
//! The price is `H`: `ceil(n / chunk) * dk * dc` input-dtype values per batch x head written once
//! and read once (linear in `n`); the gain is that the sequential chain per chunk shrinks from
//! four products and four barriers to one product and two barriers, and the output products fill
//! the GPU whatever the batch.
//!
//! Where the batch x heads fill the device, `launch` runs the one-launch kernel of
//! `super::mma_fused` instead (the state in registers, no `H`): see `fused_geometry`.

use burn::tensor::Shape;
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::prelude::*;

use super::cube::{load_state, store_state};
use super::mma::SLAB;
use super::mma_fused::{Schedule, Tiling};
use super::tiled::{
    check_launch, decay_powers, mask_scores, output_tiles, padded, score_tiles, state_tiles,
    ScanArgs, TiledConfig, PAD, PADF, T16, THREADS, WARPS,
};
use super::ScanOptions;

/// Threads per cube of `chunk_states_kernel`: 4 warps, so that 4 cubes fit an SM and every
/// (row tile, column tile, batch x head) chain of a B=4, H=32, D=128 scan runs in one wave.
const ST_THREADS: usize = 128;
const ST_WARPS: usize = 4;

/// State rows per cube of `chunk_states_kernel` for a contracted dim padded to `dkp`: the
/// widest of 64, 32, 16 that divides it.
fn state_rows(dkp: usize) -> usize {
    [64, 32].into_iter().find(|r| dkp % r == 0).unwrap_or(T16)
}

/// Shared memory in bytes of the larger of the two kernels, for a contracted dim padded to
/// `dkp` and inputs of `elem` bytes.
pub fn split_smem(cfg: TiledConfig, dkp: usize, elem: usize) -> usize {
    let (c, dt, rt) = (cfg.chunk, cfg.dt, state_rows(dkp));
    let states = elem * (c * (rt + PAD) + c * (dt + PAD)) + 4 * (rt * (dt + PADF) + c + 1);
    let h_tile = (dkp * (dt + PAD)).max(dt * (dkp + PAD));
    let output = elem * (2 * c * (dkp + PAD) + c * (dt + PAD) + h_tile + c * (c + PAD))
        + 4 * (c * (c.max(dt) + PADF) + c + 1);
    states.max(output)
}

/// Reads `rows x width` elements (rows `t0..` in scan order, columns from `col0`) of `x` as
/// vectors of `N` into `regs`, zero past the sequence (`len` rows left) and past `ncols` when
/// `checked`. With `N > 1` the launcher has checked unit stride along the columns and `N`-aligned
/// offsets, so each vector is one aligned load.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch_v<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    base: usize,
    stride_t: usize,
    stride_d: usize,
    n: usize,
    ncols: usize,
    t0: usize,
    len: usize,
    col0: usize,
    regs: &mut Array<Vector<F, N>>,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] reverse: bool,
    #[comptime] checked: bool,
    #[comptime] threads: usize,
) {
    let tid = UNIT_POS_X as usize;
    let nv = N::value();
    let wv = comptime!(width / nv);
    #[unroll]
    for r in 0..rows * wv / threads {
        let e = tid + r * threads;
        let i = e / wv;
        let d = (e % wv) * nv;
        let t = t0 + i;
        let p = if reverse { n - 1 - t } else { t };
        if checked {
            let mut v = Vector::<F, N>::new(F::from_int(0));
            if i < len && col0 + d < ncols {
                v = x[(base + p * stride_t + (col0 + d) * stride_d) / nv];
            }
            regs[r] = v;
        } else {
            regs[r] = x[(base + p * stride_t + (col0 + d) * stride_d) / nv];
        }
    }
}

/// Writes the vectors of [`fetch_v`] (same layout) into the shared tile at `dst[base..]` (row
/// stride `stride`, a multiple of `N`).
#[cube]
pub(crate) fn put_v<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    dst: &mut SharedMemory<F>,
    base: usize,
    #[comptime] stride: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] threads: usize,
) {
    let tid = UNIT_POS_X as usize;
    let nv = N::value();
    let wv = comptime!(width / nv);
    #[unroll]
    for r in 0..rows * wv / threads {
        let e = tid + r * threads;
        let off = base + (e / wv) * stride + (e % wv) * nv;
        let mut dv = dst
            .slice_mut(off, off + nv)
            .into_vectorized()
            .with_vector_size::<N>();
        dv[0] = regs[r];
    }
}

/// [`put_v`] with each row scaled in f32 and rounded back to the input dtype: row `i` by
/// `w[w0 + i]`, or with `w_rev` by `w[w0 - 1 - i]` for the `len` rows inside the chunk (0 past
/// them).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_scaled_v<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    dst: &mut SharedMemory<F>,
    base: usize,
    w: &SharedMemory<f32>,
    w0: usize,
    len: usize,
    #[comptime] w_rev: bool,
    #[comptime] stride: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] threads: usize,
) {
    let tid = UNIT_POS_X as usize;
    let nv = N::value();
    let wv = comptime!(width / nv);
    #[unroll]
    for r in 0..rows * wv / threads {
        let e = tid + r * threads;
        let i = e / wv;
        let off = base + i * stride + (e % wv) * nv;
        let mut wi = 0.0f32;
        if w_rev {
            if i < len {
                wi = w[w0 - 1 - i];
            }
        } else {
            wi = w[w0 + i];
        }
        let scaled = Vector::<f32, N>::cast_from(regs[r]) * Vector::new(wi);
        let mut dv = dst
            .slice_mut(off, off + nv)
            .into_vectorized()
            .with_vector_size::<N>();
        dv[0] = Vector::cast_from(scaled);
    }
}

/// Where a states pass reads its operands `b` (rows of the state) and `c` (its columns): the
/// sequence length and widths, the batch x head's bases and the strides, read once per kernel.
#[derive(CubeType, Clone, Copy)]
pub(crate) struct StatesOperands {
    pub n: usize,
    pub da: usize,
    pub dc: usize,
    pub b_base: usize,
    pub c_base: usize,
    pub b_st: usize,
    pub b_sd: usize,
    pub c_st: usize,
    pub c_sd: usize,
}

/// [`StatesOperands`] of batch x head `bh`.
#[cube]
pub(crate) fn states_operands<F: Float, N: Size>(
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    bh: usize,
) -> StatesOperands {
    let heads = b.shape(1);
    let bi = bh / heads;
    let hi = bh % heads;
    StatesOperands {
        n: b.shape(2),
        da: b.shape(3),
        dc: c.shape(3),
        b_base: bi * b.stride(0) + hi * b.stride(1),
        c_base: bi * c.stride(0) + hi * c.stride(1),
        b_st: b.stride(2),
        b_sd: b.stride(3),
        c_st: c.stride(2),
        c_sd: c.stride(3),
    }
}

/// Reads the states pass's operands for the chunk from row `t0` (at most `chunk` rows, zero past
/// the sequence) into registers: `rt` columns of `b` from `r0`, `dt` columns of `c` from `c0`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch_states_chunk<F: Float, N: Size>(
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    ops: &StatesOperands,
    t0: usize,
    r0: usize,
    c0: usize,
    rb: &mut Array<Vector<F, N>>,
    rc: &mut Array<Vector<F, N>>,
    #[comptime] chunk: usize,
    #[comptime] rt: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
    #[comptime] threads: usize,
) {
    let mut len = ops.n - t0;
    if len > chunk {
        len = chunk;
    }
    fetch_v::<F, N>(
        b, ops.b_base, ops.b_st, ops.b_sd, ops.n, ops.da, t0, len, r0, rb, chunk, rt, reverse,
        true, threads,
    );
    fetch_v::<F, N>(
        c, ops.c_base, ops.c_st, ops.c_sd, ops.n, ops.dc, t0, len, c0, rc, chunk, dt, reverse,
        true, threads,
    );
}

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

/// Where the output pass reads chunk `blk` of one batch x head: the sequence length and widths,
/// the chunk's first row and length (at most `chunk`), the operands' bases and strides, and the
/// chunk state `H[blk]` (`h_rows x h_cols` from `h_block`) as the states pass wrote it.
#[derive(CubeType, Clone, Copy)]
pub(crate) struct OutputChunk {
    pub n: usize,
    pub da: usize,
    pub dc: usize,
    pub t0: usize,
    pub len: usize,
    pub a_base: usize,
    pub b_base: usize,
    pub c_base: usize,
    pub a_st: usize,
    pub a_sd: usize,
    pub b_st: usize,
    pub b_sd: usize,
    pub c_st: usize,
    pub c_sd: usize,
    pub h_block: usize,
    pub h_rows: usize,
    pub h_cols: usize,
}

/// [`OutputChunk`] of chunk `blk` (which must exist) of batch x head `bh`: `H` written with
/// `hdt`-column tiles by this scan's states pass or, with `h_t`, the transposed scan's (its rows
/// this scan's `dc` padded to 16, its columns this `da` to `hdt`).
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
pub(crate) fn output_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    bh: usize,
    blk: usize,
    #[comptime] chunk: usize,
    #[comptime] hdt: usize,
    #[comptime] h_t: bool,
) -> OutputChunk {
    let n = a.shape(2);
    let da = a.shape(3);
    let dc = c.shape(3);
    let heads = a.shape(1);
    let bi = bh / heads;
    let hi = bh % heads;
    let nblocks = (n + chunk - 1) / chunk;
    let t0 = blk * chunk;
    let mut len = n - t0;
    if len > chunk {
        len = chunk;
    }
    let mut h_rows = (da + T16 - 1) / T16 * T16;
    let mut h_cols = (dc + hdt - 1) / hdt * hdt;
    if h_t {
        h_rows = (dc + T16 - 1) / T16 * T16;
        h_cols = (da + hdt - 1) / hdt * hdt;
    }
    OutputChunk {
        n,
        da,
        dc,
        t0,
        len,
        a_base: bi * a.stride(0) + hi * a.stride(1),
        b_base: bi * b.stride(0) + hi * b.stride(1),
        c_base: bi * c.stride(0) + hi * c.stride(1),
        a_st: a.stride(2),
        a_sd: a.stride(3),
        b_st: b.stride(2),
        b_sd: b.stride(3),
        c_st: c.stride(2),
        c_sd: c.stride(3),
        h_block: (bh * nblocks + blk) * h_rows * h_cols,
        h_rows,
        h_cols,
    }
}

/// Stages chunk `blk` of batch x head `bh` for the output pass in shared memory: `A` and `B`
/// (`chunk x dkp`, row stride `dkp + PAD`), `C` (`chunk x dt` from column `c0`, stride `dt + PAD`)
/// in scan order, zero past the sequence, and the chunk state `H` (`dkp x dt`, stride `dt + PAD`;
/// with `h_t` the transposed scan's, `dt x dkp`, stride `dkp + PAD`) as the states pass wrote it
/// with `hdt`-column tiles. `A` stays in `ra` for a caller that stages it again. Whole chunks of
/// unpadded inputs skip the bounds tests; the caller syncs before reading.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_output_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    h: &Tensor<Vector<F, N>>,
    sa: &mut SharedMemory<F>,
    sb: &mut SharedMemory<F>,
    sc: &mut SharedMemory<F>,
    sh: &mut SharedMemory<F>,
    ra: &mut Array<Vector<F, N>>,
    bh: usize,
    blk: usize,
    c0: usize,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] hdt: usize,
    #[comptime] reverse: bool,
    #[comptime] h_t: bool,
    #[comptime] threads: usize,
) {
    let nv = N::value();
    let oc = output_chunk::<F, N>(a, b, c, bh, blk, chunk, hdt, h_t);
    let (n, da, dc, t0, len) = (oc.n, oc.da, oc.dc, oc.t0, oc.len);
    let (h_block, h_rows, h_cols) = (oc.h_block, oc.h_rows, oc.h_cols);
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let (a_base, b_base, c_base) = (oc.a_base, oc.b_base, oc.c_base);
    let (a_st, a_sd) = (oc.a_st, oc.a_sd);
    let (b_st, b_sd) = (oc.b_st, oc.b_sd);
    let (c_st, c_sd) = (oc.c_st, oc.c_sd);
    let mut rb = Array::<Vector<F, N>>::new(comptime!(chunk * dkp / (threads * nv)));
    let mut rc = Array::<Vector<F, N>>::new(comptime!(chunk * dt / (threads * nv)));
    let mut rh = Array::<Vector<F, N>>::new(comptime!(dkp * dt / (threads * nv)));
    if len == chunk && da == dkp && c0 + dt <= dc {
        fetch_v::<F, N>(
            a, a_base, a_st, a_sd, n, da, t0, len, 0, ra, chunk, dkp, reverse, false, threads,
        );
        fetch_v::<F, N>(
            b, b_base, b_st, b_sd, n, da, t0, len, 0, &mut rb, chunk, dkp, reverse, false, threads,
        );
        fetch_v::<F, N>(
            c, c_base, c_st, c_sd, n, dc, t0, len, c0, &mut rc, chunk, dt, reverse, false, threads,
        );
    } else {
        fetch_v::<F, N>(
            a, a_base, a_st, a_sd, n, da, t0, len, 0, ra, chunk, dkp, reverse, true, threads,
        );
        fetch_v::<F, N>(
            b, b_base, b_st, b_sd, n, da, t0, len, 0, &mut rb, chunk, dkp, reverse, true, threads,
        );
        fetch_v::<F, N>(
            c, c_base, c_st, c_sd, n, dc, t0, len, c0, &mut rc, chunk, dt, reverse, true, threads,
        );
    }
    if h_t {
        // Rows c0.. of the other scan's H are this scan's columns; zero past its rows.
        fetch_v::<F, N>(
            h,
            h_block,
            h_cols,
            1,
            h_rows,
            dkp,
            c0,
            h_rows - c0,
            0,
            &mut rh,
            dt,
            dkp,
            false,
            true,
            threads,
        );
    } else if c0 + dt <= h_cols {
        fetch_v::<F, N>(
            h, h_block, h_cols, 1, h_rows, h_cols, 0, h_rows, c0, &mut rh, dkp, dt, false, false,
            threads,
        );
    } else {
        fetch_v::<F, N>(
            h, h_block, h_cols, 1, h_rows, h_cols, 0, h_rows, c0, &mut rh, dkp, dt, false, true,
            threads,
        );
    }
    put_v::<F, N>(ra, sa, 0, ks, chunk, dkp, threads);
    put_v::<F, N>(&rb, sb, 0, ks, chunk, dkp, threads);
    put_v::<F, N>(&rc, sc, 0, cs, chunk, dt, threads);
    if h_t {
        put_v::<F, N>(&rh, sh, 0, ks, dt, dkp, threads);
    } else {
        put_v::<F, N>(&rh, sh, 0, cs, dkp, dt, threads);
    }
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

/// The widest vector (in elements, at most 16 bytes) the tile loops of the two kernels can move
/// whole, for these widths: every loop gives each thread whole vectors, and the head dims are
/// multiples of it. Vectors reinterpret shared memory, which only the CUDA backend supports: 1
/// elsewhere.
fn tile_vector<R: CubeRuntime>(
    client: &ComputeClient<R>,
    cfg: TiledConfig,
    dims: [usize; 3],
    elem: usize,
) -> usize {
    let [dkp, da, dc] = dims;
    if R::name(client) != "cuda" {
        return 1;
    }
    let rt = state_rows(dkp);
    let (c, dt) = (cfg.chunk, cfg.dt);
    [8, 4, 2]
        .into_iter()
        .find(|&nv| {
            nv * elem <= 16
                && da % nv == 0
                && dc % nv == 0
                && [c * dkp, c * dt, dkp * dt]
                    .iter()
                    .all(|x| x % (THREADS * nv) == 0)
                && [c * rt, c * dt, rt * dt]
                    .iter()
                    .all(|x| x % (ST_THREADS * nv) == 0)
        })
        .unwrap_or(1)
}

/// Whether every access to `t` can move `nv` elements at once: unit stride along the last dim,
/// every other stride and the buffer offset multiples of `nv` elements.
pub(crate) fn vector_aligned<R: CubeRuntime>(t: &CubeTensor<R>, nv: usize) -> bool {
    let strides = t.meta.strides();
    let offset = t.handle.offset_start.unwrap_or(0) as usize;
    strides[3] == 1
        && strides[..3].iter().all(|st| st % nv == 0)
        && offset % (nv * t.dtype.size()) == 0
}

/// Whether bulk tensor copies can read `t` (`[batch, heads, tokens, dim]`): [`vector_aligned`]
/// for 16-byte vectors, as TMA requires of its strides and start, with no stride 0 (a broadcast
/// stays on `cp.async`) and none past TMA's 2^40 bytes.
fn tma_fits<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    let elem = t.dtype.size();
    vector_aligned(t, 16 / elem)
        && t.meta.strides()[..3]
            .iter()
            .all(|&st| st > 0 && st * elem < 1 << 40)
}

/// `t` itself where it is [`vector_aligned`], else a contiguous copy (a broadcast gradient, a
/// strided view): one pass over it buys vector loads in both kernels.
fn aligned<R: CubeRuntime>(t: CubeTensor<R>, nv: usize) -> CubeTensor<R> {
    if nv == 1 || vector_aligned(&t, nv) {
        t
    } else {
        into_contiguous(t)
    }
}

/// Whether the chunk states of this scan (`H`, `ceil(n / chunk) x dk x dc` values per batch x
/// head) stay within the kernels' 32-bit indexing; the caller runs the fused kernel otherwise.
pub(crate) fn states_fit(shape: [usize; 4], dc: usize, cfg: TiledConfig) -> bool {
    let [batch, heads, n, da] = shape;
    let h_len = batch * heads * n.div_ceil(cfg.chunk) * padded(da) * dc.div_ceil(cfg.dt) * cfg.dt;
    h_len <= u32::MAX as usize
}

/// The value of the environment knob `name`: the value of its spelling among `choices`, the
/// first one's when unset; any other spelling stops with the choices named. The kernels' knobs
/// exist to compare variants in one build; each caller keeps its answer in a `OnceLock`.
pub(super) fn knob<T: Copy>(name: &str, choices: &[(&str, T)]) -> T {
    let Ok(v) = std::env::var(name) else {
        return choices[0].1;
    };
    choices
        .iter()
        .find(|(spelling, _)| *spelling == v)
        .map(|(_, value)| *value)
        .unwrap_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(spelling, _)| *spelling).collect();
            panic!("{name}={v}: one of {}", names.join(", "))
        })
}

/// Which passes use the register kernels of [`super::mma`] where they apply:
/// `SCALELAB_LIGHTNING_MMA` = `all` (unset), `states`, `output` or `none`, to compare them with
/// the shared-memory `cmma` kernels in one build.
fn mma_passes() -> (bool, bool) {
    static PASSES: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    *PASSES.get_or_init(|| {
        knob(
            "SCALELAB_LIGHTNING_MMA",
            &[
                ("all", (true, true)),
                ("states", (true, false)),
                ("output", (false, true)),
                ("none", (false, false)),
            ],
        )
    })
}

/// Whether this device runs `mma.m16n8k16` and `ldmatrix` for `dtype` (f32 accumulators),
/// under the tensor-core geometry.
fn has_mma<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: burn::tensor::DType,
    cfg: TiledConfig,
) -> bool {
    use super::mma::{MK, MM, MN};
    let elem: cubecl::ir::StorageType = dtype.into();
    let want = cubecl::features::MmaConfig {
        a_type: elem,
        b_type: elem,
        cd_type: cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32).into(),
        m: MM as u32,
        n: MN as u32,
        k: MK as u32,
    };
    let matmul = &client.properties().features.matmul;
    cfg.cmma
        && R::name(client) == "cuda"
        && matmul.mma.contains(&want)
        && matmul.ldmatrix.contains(&elem)
}

/// The register kernels' geometry, for benchmarking it: `SCALELAB_LIGHTNING_MMA_WARPS` (2 or
/// 4; default 4) warps per states cube, `SCALELAB_LIGHTNING_MMA_COLS` (64 or 128; default 128)
/// output columns per output cube.
fn mma_geometry() -> (usize, usize) {
    static GEOMETRY: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *GEOMETRY.get_or_init(|| {
        (
            knob("SCALELAB_LIGHTNING_MMA_WARPS", &[("4", 4), ("2", 2)]),
            knob("SCALELAB_LIGHTNING_MMA_COLS", &[("128", 128), ("64", 64)]),
        )
    })
}

/// One states cube of [`super::mma`]'s register kernel: `rt` state rows and `dt` state columns,
/// `warps` warps splitting the columns into `col_groups` groups.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StatesGeometry {
    rt: usize,
    dt: usize,
    warps: usize,
    col_groups: usize,
    stage_h: bool,
}

/// The states cubes' shape, for comparing them: `SCALELAB_LIGHTNING_STATES` = `tiles` (64 x 64
/// state tiles, 4 cubes per 128-wide head), `whole` (one 16-warp cube per head holding the whole
/// 128 x 128 state) or `auto` (unset: whole where the tiles would not all fit the device at once).
fn states_shape() -> Option<bool> {
    static SHAPE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| {
        knob(
            "SCALELAB_LIGHTNING_STATES",
            &[
                ("auto", None),
                ("whole", Some(true)),
                ("tiles", Some(false)),
            ],
        )
    })
}

/// Whether the register states kernel writes `H` through shared memory, each warp storing whole
/// 128-byte rows (`SCALELAB_LIGHTNING_STATES_H=staged`, the default) or straight from its
/// accumulators, 16 bytes on each of 8 rows per store (`direct`).
fn stage_h() -> bool {
    static STAGED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STAGED.get_or_init(|| {
        knob(
            "SCALELAB_LIGHTNING_STATES_H",
            &[("staged", true), ("direct", false)],
        )
    })
}

/// The register states kernel's geometry for this scan, if it applies (`mma` on this device,
/// whole 16-row and 8-column tiles per warp). A 128 x 128 state takes one 16-warp cube per batch x
/// head where the 64 x 64 tiles (3 four-warp cubes per SM: 168 registers a thread) would need a
/// second wave: the chain then runs once, and `__launch_bounds__(512)` caps the registers at 128.
fn mma_states<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: burn::tensor::DType,
    cfg: TiledConfig,
    [bh, dkp, dc]: [usize; 3],
) -> Option<StatesGeometry> {
    use super::mma::{MK, MM, MN};
    let rt = state_rows(dkp);
    let warps = mma_geometry().0;
    let usable = mma_passes().0
        && rt == 64
        && rt % (warps * MM) == 0
        && cfg.dt % MN == 0
        && cfg.chunk % MK == 0
        && has_mma(client, dtype, cfg);
    if !usable {
        return None;
    }
    let sms = client
        .properties()
        .hardware
        .num_streaming_multiprocessors
        .unwrap_or(1) as usize;
    let whole_fits = dkp == 128 && dc.div_ceil(cfg.dt) * cfg.dt == 128;
    let whole = whole_fits && states_shape().unwrap_or(4 * bh > 3 * sms);
    Some(if whole {
        StatesGeometry {
            rt: 128,
            dt: 128,
            warps: 16,
            col_groups: 2,
            stage_h: stage_h(),
        }
    } else {
        StatesGeometry {
            rt,
            dt: cfg.dt,
            warps,
            col_groups: 1,
            stage_h: stage_h(),
        }
    })
}

/// The output columns per cube of [`super::mma`]'s output kernel for this scan, if it
/// applies: `mma` on this device, 64-token chunks, pairs of elements aligned (`nv >= 2`), and
/// every thread a whole number of vectors; 128 columns (the scores computed once for a 128-wide
/// head) unless `dc` fits 64.
fn mma_output_cols<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: burn::tensor::DType,
    cfg: TiledConfig,
    [dkp, dc]: [usize; 2],
    nv: usize,
) -> Option<usize> {
    let dt = if dc > 64 { mma_geometry().1 } else { 64 };
    let threads = cfg.chunk / 16 * (dt / 64) * 32;
    let whole = [cfg.chunk * dkp, cfg.chunk * dt, dkp * dt]
        .iter()
        .all(|x| x % (threads * nv) == 0);
    (mma_passes().1
        && cfg.chunk == 64
        && nv >= 2
        && dkp <= 128
        && whole
        && has_mma(client, dtype, cfg))
    .then_some(dt)
}

/// How the register output kernel stages its chunks: `(chunks per cube, by cp.async)`, as
/// `SCALELAB_LIGHTNING_OUTPUT` asks where the device allows it (`cp.async` on the device, the
/// tiles within its shared memory): `regs` (unset: one chunk through registers), `async1` (one
/// chunk by `cp.async`) or `async2` (two chunks per 512-unit cube by `cp.async`). On the H200
/// `async1` ran as fast as `regs` and `async2` 8% slower (its 128-register cap); `regs` needs no
/// `cp.async`.
fn output_staging<R: CubeRuntime>(
    client: &ComputeClient<R>,
    cfg: TiledConfig,
    [dkp, dt]: [usize; 2],
    elem: usize,
) -> (usize, bool) {
    static KNOB: std::sync::OnceLock<(usize, bool)> = std::sync::OnceLock::new();
    let (cpc_wanted, async_wanted) = *KNOB.get_or_init(|| {
        knob(
            "SCALELAB_LIGHTNING_OUTPUT",
            &[
                ("regs", (1, false)),
                ("async1", (1, true)),
                ("async2", (2, true)),
            ],
        )
    });
    let props = client.properties();
    let c = cfg.chunk;
    let tiles = 2 * c * (dkp + PAD) + c * (dt + PAD) + (dkp * (dt + PAD)).max(dt * (dkp + PAD));
    let two_fit = 2 * elem * tiles + 4 * (c + 1) + 64 <= props.hardware.max_shared_memory_size;
    let async_copy = async_wanted && props.features.copy_async;
    let cpc = if async_copy && cpc_wanted == 2 && two_fit {
        2
    } else {
        1
    };
    (cpc, async_copy)
}

/// The one-launch register kernel's geometry (`super::mma_fused`): tokens per chunk, state
/// and output columns per cube, output rows per warp, and units per cube.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FusedGeometry {
    chunk: usize,
    dt: usize,
    orows: usize,
    threads: usize,
    sched: Schedule,
}

/// A one-launch tile: tokens per chunk, columns per cube.
type FusedTile = (usize, usize);

/// The one-launch kernel's knobs (read once per process).
#[derive(Clone, Copy)]
struct FusedKnobs {
    /// Whether it runs (`None`: where its cubes fill the device).
    mode: Option<bool>,
    tile: Option<FusedTile>,
    /// Its warps' output rows.
    rows: Option<usize>,
    /// How its state update weighs tokens (packed weights asked for; bf16 only).
    sched: Schedule,
    /// Whether reverse scans (the backward's `dk` and `dv`) stage by bulk copies too.
    tma_reverse: bool,
    /// The bulk copies' L2 promotion.
    l2: TensorMapPrefetch,
}

/// Whether scans run as one launch with the state in registers (`super::mma_fused`) instead
/// of the split pair: `SCALELAB_LIGHTNING_FUSED` = `auto` (unset: where its cubes keep at least
/// 70% of the device's cube slots busy over their waves), `on` or `off`; and its tile,
/// `SCALELAB_LIGHTNING_FUSED_TILE` = `64x128` (unset: 64-token chunks, 128 columns per cube, or
/// 64 for a head dim of 64 or less; one cube per SM) or `32x64` (32-token chunks, 64 columns:
/// 90 KB of shared memory at a head dim of 128, two cubes per SM whose barriers can overlap, at
/// the price of the scores computed and `q`, `k` read once per 64 columns; on the H200 as fast
/// as the default in session 9; checked on session 10's build in session 11, not run since the
/// one-barrier kernel, where it takes 16-row warp tiles). `SCALELAB_LIGHTNING_FUSED_ROWS` = `32`
/// (unset: each warp's output tile 32 rows, so half the warps, each fragment serving twice the
/// products) or `16` (16 warps per 128 columns, as in session 10, with 64 x 16 state blocks).
/// The state update's token weights ([`Schedule`]): `SCALELAB_LIGHTNING_FUSED_WEIGHTS` =
/// `packed` (unset: bf16 pairs, one packed multiply per pair of `C`; bf16 inputs only, f16
/// keeps f32, as its narrow exponent would flush the weights of steep decays) or `f32`. The
/// score tiles ([`Schedule::row_scores`]): `SCALELAB_LIGHTNING_FUSED_SCORES` = `rows` (unset:
/// each warp its own rows' tiles, sharing its `A H` loop's fragments, where the tiling allows)
/// or `spread` (the lower triangle spread over all warps; session 13's kernel). How chunks are
/// staged ([`Schedule::tma`]): `SCALELAB_LIGHTNING_FUSED_COPIES` = `tma` (unset: bulk
/// tensor copies of 16-column boxes, 32-byte swizzled, issued by one unit, on devices with TMA
/// and inputs that [`tma_fits`]; else `cp-async`), `tma-forward` (the same for forward-order
/// scans only: the backward's `dk` and `dv` scans by `cp-async`) or `cp-async` (every unit
/// copies 16-byte vectors into padded rows); and `SCALELAB_LIGHTNING_FUSED_L2` = `256` (unset),
/// `none` or `128`: the bulk copies' L2 promotion, the bytes L2 fetches from DRAM per request
/// (their 32-byte box rows are narrower than a line; 0.96-0.98x the forward's time at 4K-64K
/// against `none`, session 15).
fn fused_knobs() -> FusedKnobs {
    static KNOBS: std::sync::OnceLock<FusedKnobs> = std::sync::OnceLock::new();
    *KNOBS.get_or_init(|| {
        let (tma, tma_reverse) = knob(
            "SCALELAB_LIGHTNING_FUSED_COPIES",
            &[
                ("tma", (true, true)),
                ("tma-forward", (true, false)),
                ("cp-async", (false, false)),
            ],
        );
        FusedKnobs {
            mode: knob(
                "SCALELAB_LIGHTNING_FUSED",
                &[("auto", None), ("on", Some(true)), ("off", Some(false))],
            ),
            tile: knob(
                "SCALELAB_LIGHTNING_FUSED_TILE",
                &[("64x128", None), ("32x64", Some((32, 64)))],
            ),
            rows: knob(
                "SCALELAB_LIGHTNING_FUSED_ROWS",
                &[("32", None), ("16", Some(16))],
            ),
            sched: Schedule {
                packed_weights: knob(
                    "SCALELAB_LIGHTNING_FUSED_WEIGHTS",
                    &[("packed", true), ("f32", false)],
                ),
                row_scores: knob(
                    "SCALELAB_LIGHTNING_FUSED_SCORES",
                    &[("rows", true), ("spread", false)],
                ),
                tma,
            },
            tma_reverse,
            l2: knob(
                "SCALELAB_LIGHTNING_FUSED_L2",
                &[
                    ("256", TensorMapPrefetch::B256),
                    ("none", TensorMapPrefetch::None),
                    ("128", TensorMapPrefetch::B128),
                ],
            ),
        }
    })
}

/// The geometry of `super::mma_fused`'s kernel for this scan, if it applies: a tiling it
/// takes ([`Tiling::checked`]) within the device's shared memory, `mma` and `cp.async` on this
/// device, and [`fused_knobs`] asking for it.
pub(crate) fn fused_geometry<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: burn::tensor::DType,
    cfg: TiledConfig,
    [bh, dkp, dc]: [usize; 3],
    nv: usize,
) -> Option<FusedGeometry> {
    let FusedKnobs {
        mode,
        tile,
        rows,
        sched,
        ..
    } = fused_knobs();
    let sched = schedule_for(sched, dtype);
    let (c, dt) = tile.unwrap_or((64, if dc > 64 { 128 } else { 64 }));
    // 32-row warp tiles unless asked otherwise or their state blocks would not fit the
    // registers (the 32 x 64 tile's two warps), then 16.
    let tiling_with = |r| Tiling::checked(c, dkp, dt, r, nv).map(|t| (r, t));
    let (orows, tiling) = match rows {
        Some(r) => tiling_with(r),
        None => tiling_with(32).or_else(|| tiling_with(16)),
    }?;
    let props = client.properties();
    let smem = tiling.shared_bytes(dtype.size());
    let fits = smem <= props.hardware.max_shared_memory_size
        && props.features.copy_async
        && has_mma(client, dtype, cfg);
    let sms = props.hardware.num_streaming_multiprocessors.unwrap_or(1) as usize;
    // An SM's shared memory is the most one cube may take plus the 1 KB the driver keeps per
    // cube (Hopper: 227 + 1 KB; Ampere: 163 + 1 KB).
    let per_sm = ((props.hardware.max_shared_memory_size + 1024) / (smem + 1024))
        .min(2048 / tiling.threads)
        .max(1);
    let wanted = mode.unwrap_or(fills_device(bh * dc.div_ceil(dt), sms * per_sm));
    (fits && wanted).then_some(FusedGeometry {
        chunk: c,
        dt,
        orows,
        threads: tiling.threads,
        sched: tiling.with_schedule(sched).sched,
    })
}

/// The schedule the knobs ask for, as `dtype` allows it: packed token weights for bf16 only,
/// as f16's narrow exponent would flush the weights of steep decays to zero.
fn schedule_for(asked: Schedule, dtype: burn::tensor::DType) -> Schedule {
    Schedule {
        packed_weights: asked.packed_weights && dtype == burn::tensor::DType::BF16,
        ..asked
    }
}

/// Whether `cubes` keep at least 70% of a device's `slots` (cubes resident at once) busy over
/// their waves: a wave takes as long whether full or not, and the split pair, which has no such
/// steps, runs at about 1.4x the one-launch kernel's time on a full device (H200, session 7), in
/// proportion to the batch x heads.
fn fills_device(cubes: usize, slots: usize) -> bool {
    let slots = slots.max(1);
    cubes > 0 && 10 * cubes >= 7 * cubes.div_ceil(slots) * slots
}

/// Launches `super::mma_fused`'s kernel over `[a, b, c, s, state, out]` (the kernels'
/// arguments, in order): the outputs and the final state of the whole scan.
///
/// # Safety
/// As for the split kernels: shapes checked by the caller, `geo` from `fused_geometry` for
/// these tensors and `nv`.
#[allow(clippy::too_many_arguments)]
unsafe fn fused_scan<R: CubeRuntime>(
    client: &ComputeClient<R>,
    geo: FusedGeometry,
    [bh, dc]: [usize; 2],
    nv: usize,
    [a, b, c, s, state, out]: [CubeTensor<R>; 6],
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = a.dtype;
    let tma = geo.sched.tma
        && (!opts.reverse || fused_knobs().tma_reverse)
        && client
            .properties()
            .features
            .tma
            .contains(cubecl::ir::features::Tma::Base)
        && [&a, &b, &c].iter().all(|t| tma_fits(t));
    let sched = Schedule { tma, ..geo.sched };
    let map = |t: &CubeTensor<R>| {
        tma.then(|| {
            TensorMapArg::new(
                TiledArgs {
                    tile_size: Shape::new([1, 1, geo.chunk, SLAB]),
                },
                t.clone().into_tensor_arg(),
                StorageType::from(dtype),
            )
            .with_swizzle(TensorMapSwizzle::B32)
            .with_prefetch(fused_knobs().l2)
        })
        .into()
    };
    let maps = (map(&a), map(&b), map(&c));
    super::usage::record(if tma {
        "chunk_fused_mma_kernel (tensor cores, one launch, TMA)"
    } else {
        "chunk_fused_mma_kernel (tensor cores, one launch)"
    });
    super::mma_fused::chunk_fused_mma_kernel::launch_unchecked::<R>(
        client,
        CubeCount::Static(dc.div_ceil(geo.dt) as u32, 1, bh as u32),
        CubeDim::new_1d(geo.threads as u32),
        nv,
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        state.into_tensor_arg(),
        out.into_tensor_arg(),
        maps.0,
        maps.1,
        maps.2,
        geo.chunk,
        dkp,
        geo.dt,
        geo.orows,
        sched,
        has_state,
        opts.reverse,
        opts.transpose_state,
        opts.state_exp0,
        dtype.into(),
    );
}

/// Launches the output pass over `[a, b, c, s, h, out]` (the kernels' arguments, in order), `H`
/// transposed with `h_t`: [`super::mma`]'s register kernel where [`mma_output_cols`]
/// allows, else `chunk_output_kernel`. `dc` is the output width, `dkp` the contracted one.
///
/// # Safety
/// As for the kernels: shapes checked by the caller, `h` written by this scan's states pass (or,
/// with `h_t`, the transposed scan's) with `cfg.dt`-column tiles.
#[allow(clippy::too_many_arguments)]
unsafe fn output_pass<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [nblocks, bh, dc]: [usize; 3],
    nv: usize,
    [a, b, c, s, h, out]: [CubeTensor<R>; 6],
    cfg: TiledConfig,
    dkp: usize,
    reverse: bool,
    h_t: bool,
) {
    let dtype = a.dtype;
    if let Some(dt) = mma_output_cols(client, dtype, cfg, [dkp, dc], nv) {
        let (cpc, async_copy) = output_staging(client, cfg, [dkp, dt], dtype.size());
        super::usage::record("chunk_output_mma_kernel (tensor cores)");
        super::mma::chunk_output_mma_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(
                dc.div_ceil(dt) as u32,
                nblocks.div_ceil(cpc) as u32,
                bh as u32,
            ),
            CubeDim::new_1d((cpc * cfg.chunk / 16 * (dt / 64) * 32) as u32),
            nv,
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            s.into_tensor_arg(),
            h.into_tensor_arg(),
            out.into_tensor_arg(),
            cfg.chunk,
            dkp,
            dt,
            cfg.dt,
            cpc,
            async_copy,
            reverse,
            h_t,
            dtype.into(),
        );
    } else {
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
}

/// Launches the states pass over `[b, c, s, state, h, out]` (the kernels' arguments, in order)
/// for `bh` batch x heads and `dc` state columns: [`super::mma`]'s register kernel where
/// [`mma_states`] allows, else `chunk_states_kernel`. Either writes `h` as `dkp` rows by
/// `dc` padded to `cfg.dt` columns per chunk.
///
/// # Safety
/// As for the kernels: shapes checked by the caller, `h` holding every chunk state the grid writes.
#[allow(clippy::too_many_arguments)]
unsafe fn states_pass<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [bh, dc]: [usize; 2],
    nv: usize,
    [b, c, s, state, h, out]: [CubeTensor<R>; 6],
    cfg: TiledConfig,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = b.dtype;
    if let Some(geo) = mma_states(client, dtype, cfg, [bh, dkp, dc]) {
        super::usage::record("chunk_states_mma_kernel (tensor cores)");
        super::mma::chunk_states_mma_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(dc.div_ceil(geo.dt) as u32, (dkp / geo.rt) as u32, bh as u32),
            CubeDim::new_1d((geo.warps * 32) as u32),
            nv,
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            s.into_tensor_arg(),
            state.into_tensor_arg(),
            h.into_tensor_arg(),
            out.into_tensor_arg(),
            cfg.chunk,
            dkp,
            geo.rt,
            geo.dt,
            geo.warps,
            geo.col_groups,
            geo.stage_h,
            has_state,
            opts.reverse,
            opts.transpose_state,
            opts.state_exp0,
            dtype.into(),
        );
    } else {
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
}

/// Launches the two kernels on inputs [`super::cube::scan_with`] has checked; writes `args.out`
/// (rows `0..n` from `chunk_output_kernel`, the final state from `chunk_states_kernel`).
pub(crate) fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    args: ScanArgs<R>,
    opts: ScanOptions,
    cfg: TiledConfig,
) {
    let dtype = args.a.dtype;
    let [batch, heads, n, da] = args.a.meta.shape().dims::<4>();
    let dc = args.c.meta.shape()[3];
    let dkp = padded(da);
    check_launch(client, cfg, split_smem(cfg, dkp, dtype.size()));
    let nblocks = n.div_ceil(cfg.chunk);
    let col_tiles = dc.div_ceil(cfg.dt);
    let bh = batch * heads;
    let nv = tile_vector(client, cfg, [dkp, da, dc], dtype.size());
    let (a, b, c) = (
        aligned(args.a, nv),
        aligned(args.b, nv),
        aligned(args.c, nv),
    );
    let nv = if [&a, &b, &c, &args.out]
        .iter()
        .all(|t| vector_aligned(t, nv))
    {
        nv
    } else {
        1
    };
    if let Some(geo) = fused_geometry(client, dtype, cfg, [bh, dkp, dc], nv) {
        // SAFETY: shapes checked by `scan_with`; the kernel tests rows past `n` and columns
        // past `da`/`dc` before every read and write.
        unsafe {
            fused_scan(
                client,
                geo,
                [bh, dc],
                nv,
                [a, b, c, args.s, args.state, args.out],
                dkp,
                args.has_state,
                opts,
            );
        }
        return;
    }
    let h = empty_device_contiguous_dtype::<R>(
        client.clone(),
        a.device.clone(),
        Shape::new([(bh * nblocks * dkp).max(1), col_tiles * cfg.dt]),
        dtype,
    );
    // SAFETY: every tensor index is guarded by the shape checks of `scan_with` and the kernels'
    // own bounds tests (rows past `n`, columns past `da`/`dc` are never read or written); `h`
    // has exactly the `bh x chunks x dkp x dcp` elements the states kernel writes.
    unsafe {
        states_pass(
            client,
            [bh, dc],
            nv,
            [
                b.clone(),
                c.clone(),
                args.s.clone(),
                args.state,
                h.clone(),
                args.out.clone(),
            ],
            cfg,
            dkp,
            args.has_state,
            opts,
        );
        if nblocks == 0 {
            return;
        }
        output_pass(
            client,
            [nblocks, bh, dc],
            nv,
            [a, b, c, args.s, h, args.out],
            cfg,
            dkp,
            opts.reverse,
            false,
        );
    }
}

/// The inputs of the backward's two reverse scans: `q, k: [B, H, n, dk]`, `v, d_o: [B, H, n, dv]`,
/// `s: [H]` contiguous, `d_state: [B, H, dk, dv]`, checked by [`super::cube::dk_dv_with`].
pub(crate) struct PairArgs<R: CubeRuntime> {
    pub q: CubeTensor<R>,
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    pub d_o: CubeTensor<R>,
    pub s: CubeTensor<R>,
    pub d_state: CubeTensor<R>,
}

/// The backward's `dv = reverse scan(k, q, do)` from `dS` and `dk = reverse scan(v, do, q)` from
/// `dS^T` on one states pass: the `dk` scan's chunk states are the `dv` scan's transposed, so
/// `chunk_states_kernel` runs once and `chunk_output_kernel` twice, the second reading `H`
/// transposed. Returns `(dk, dv)`: `dk` in rows `0..n` of `[B, H, n + dv, dk]` (the rows past
/// `n` are not written), `dv` packed as [`super::cube::scan`] packs it (rows `n..`: `dS0`).
pub(crate) fn launch_dk_dv<R: CubeRuntime>(
    client: &ComputeClient<R>,
    args: PairArgs<R>,
    cfg: TiledConfig,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let dtype = args.q.dtype;
    let [batch, heads, n, dk] = args.q.meta.shape().dims::<4>();
    let dv = args.v.meta.shape()[3];
    let (dkp, dvp) = (padded(dk), padded(dv));
    let smem = split_smem(cfg, dkp, dtype.size()).max(split_smem(cfg, dvp, dtype.size()));
    check_launch(client, cfg, smem);
    let nv = tile_vector(client, cfg, [dkp, dk, dv], dtype.size()).min(tile_vector(
        client,
        cfg,
        [dvp, dv, dk],
        dtype.size(),
    ));
    let [q, k, v, d_o] = [args.q, args.k, args.v, args.d_o].map(|t| aligned(t, nv));
    let bh = batch * heads;
    let nblocks = n.div_ceil(cfg.chunk);
    let empty = |shape: [usize; 4]| {
        empty_device_contiguous_dtype::<R>(
            client.clone(),
            q.device.clone(),
            Shape::new(shape),
            dtype,
        )
    };
    let dv_out = empty([batch, heads, n + dk, dv]);
    let dk_out = empty([batch, heads, n + dv, dk]);
    let nv = if [&q, &k, &v, &d_o, &dv_out, &dk_out]
        .iter()
        .all(|t| vector_aligned(t, nv))
    {
        nv
    } else {
        1
    };
    let fused = (
        fused_geometry(client, dtype, cfg, [bh, dkp, dv], nv),
        fused_geometry(client, dtype, cfg, [bh, dvp, dk], nv),
    );
    if let (Some(dv_geo), Some(dk_geo)) = fused {
        // Two one-launch scans: each keeps its own state in registers, no `H` to share.
        // SAFETY: as below; each scan's shapes are the dv and dk scans' of `dk_dv_with`.
        unsafe {
            fused_scan(
                client,
                dv_geo,
                [bh, dv],
                nv,
                [
                    k,
                    q.clone(),
                    d_o.clone(),
                    args.s.clone(),
                    args.d_state.clone(),
                    dv_out.clone(),
                ],
                dkp,
                true,
                ScanOptions::DV,
            );
            fused_scan(
                client,
                dk_geo,
                [bh, dk],
                nv,
                [v, d_o, q, args.s, args.d_state, dk_out.clone()],
                dvp,
                true,
                ScanOptions::DK,
            );
        }
        return (dk_out, dv_out);
    }
    let h = empty([
        1,
        1,
        (bh * nblocks * dkp).max(1),
        dv.div_ceil(cfg.dt) * cfg.dt,
    ]);
    // SAFETY: as in `launch`: shapes checked by `dk_dv_with`, every row past `n` and column past
    // the head dims guarded in the kernels; the transposed read of `h` stays inside its rows.
    unsafe {
        states_pass(
            client,
            [bh, dv],
            nv,
            [
                q.clone(),
                d_o.clone(),
                args.s.clone(),
                args.d_state,
                h.clone(),
                dv_out.clone(),
            ],
            cfg,
            dkp,
            true,
            ScanOptions::DV,
        );
        if nblocks == 0 {
            return (dk_out, dv_out);
        }
        output_pass(
            client,
            [nblocks, bh, dv],
            nv,
            [
                k,
                q.clone(),
                d_o.clone(),
                args.s.clone(),
                h.clone(),
                dv_out.clone(),
            ],
            cfg,
            dkp,
            true,
            false,
        );
        output_pass(
            client,
            [nblocks, bh, dk],
            nv,
            [v, d_o, q, args.s, h, dk_out.clone()],
            cfg,
            dvp,
            true,
            true,
        );
    }
    (dk_out, dv_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_launch_scans_where_their_waves_fill_the_device() {
        // B=4 at H=32 and H=64 (D=128) on the H200's 132 SMs, one cube each: one wave, two.
        assert!(fills_device(128, 132));
        assert!(fills_device(256, 132));
        // A second wave a fifth full, a quarter of the device, nothing.
        assert!(!fills_device(160, 132));
        assert!(!fills_device(32, 132));
        assert!(!fills_device(0, 132));
        assert!(fills_device(93, 132) && !fills_device(92, 132));
        // Two cubes per SM: B=4, H=32 in 64-column cubes fills one wave of 264 slots.
        assert!(fills_device(256, 264) && !fills_device(128, 264));
    }

    #[test]
    fn packed_weights_only_for_bf16() {
        use burn::tensor::DType;
        let packed = Schedule {
            packed_weights: true,
            ..Schedule::default()
        };
        assert!(schedule_for(packed, DType::BF16).packed_weights);
        assert!(!schedule_for(packed, DType::F16).packed_weights);
        assert!(!schedule_for(packed, DType::F32).packed_weights);
        assert!(!schedule_for(Schedule::default(), DType::BF16).packed_weights);
    }

    #[test]
    fn knobs_take_their_spellings_and_default_to_the_first() {
        let choices = [("auto", 0), ("whole", 1), ("tiles", 2)];
        // Names of this test's own, so no other test reads them.
        assert_eq!(knob("SCALELAB_TEST_KNOB_UNSET", &choices), 0);
        std::env::set_var("SCALELAB_TEST_KNOB_SET", "tiles");
        assert_eq!(knob("SCALELAB_TEST_KNOB_SET", &choices), 2);
        std::env::set_var("SCALELAB_TEST_KNOB_BAD", "hole");
        let err = std::panic::catch_unwind(|| knob("SCALELAB_TEST_KNOB_BAD", &choices))
            .expect_err("an unknown spelling stops");
        let msg = err.downcast_ref::<String>().expect("a formatted message");
        assert_eq!(
            msg,
            "SCALELAB_TEST_KNOB_BAD=hole: one of auto, whole, tiles"
        );
    }

    #[test]
    fn chunk_states_beyond_32_bit_indexing_fall_back() {
        let cfg = TiledConfig {
            chunk: 64,
            dt: 64,
            cmma: true,
            split: true,
        };
        // The benchmark shape at 64K tokens: 2^31 state values.
        assert!(states_fit([4, 32, 65536, 128], 128, cfg));
        // MiniMax's 64 heads at the same length: 2^32 values, one past u32.
        assert!(!states_fit([4, 64, 65536, 128], 128, cfg));
        // A ragged tail still counts a whole chunk, a 100-wide head a whole column tile.
        assert!(states_fit([1, 1, 65, 100], 100, cfg));
    }

    #[test]
    fn state_rows_divide_the_padded_head_dim() {
        for da in [1, 9, 16, 40, 64, 80, 96, 128] {
            let dkp = padded(da);
            let rt = state_rows(dkp);
            assert_eq!(dkp % rt, 0, "da={da}");
            assert!(dkp - da < T16, "da={da}");
            assert!(rt == 64 || dkp < 64 || dkp % 64 != 0, "da={da}: rt={rt}");
        }
    }
}
