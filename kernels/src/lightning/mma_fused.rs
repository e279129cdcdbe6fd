//! The whole scan in one launch with the state in registers, for CUDA: no `H` buffer.
//!
//! The split pair (`mma`) writes every chunk's state `H` (input dtype) and reads it back:
//! at B=4, H=32, D=128 that is as many bytes as `q`, `k`, `v` and `o` together. Here one cube
//! (8 warps per 128 state columns at D=128; `chunk / orows * dt / 32` warps per `dt` columns in
//! general, each warp's output tile `orows` x 32) per batch x head walks the chunks in order, as
//! Lightning Attention-2's forward does, and keeps the f32 state in its warps' `mma`
//! accumulators; the state each chunk starts from goes through a shared tile (rounded to the
//! input dtype, as the split pair's `H`) to the products that read it. Phase `j`, between two
//! barriers:
//!
//! ```text
//! copies of chunk j+1 issued (bulk tensor copies, or cp.async)
//! O_j-1 += P_j-1 C_j-1, stored                                     (P from phase j-1)
//! O_j  = lambda^(i+1) (A H_j)                                      registers, until phase j+1
//! P_j  = mask(A B^T lambda^(i-j)), each 16 x 16 tile once          into shared memory, from
//!                                                                  A H's A fragments
//! S   <- lambda^len S + B^T (w C),  w = lambda^(len-1-t) per token  the warp's block of S
//! H_j+1 = S rounded                                                into the other H buffer
//! barrier (P_j, H_j+1 published; chunk j+1 landed)
//! ```
//!
//! (That is [`Schedule::row_scores`], the default where the tiling takes it; otherwise the
//! score tiles spread over all warps come first, in a loop of their own, and chunk `j - 1`
//! is finished last.)
//!
//! Where the device has TMA and the inputs allow it ([`Schedule::tma`]), one unit stages a
//! chunk by bulk tensor copies of 16-column boxes, which land as 32-byte-swizzled slabs
//! ([`Lay::Slabs`]) and count their bytes on the phase's barrier: no unit computes a copy's
//! address or bounds.
//!
//! One barrier per chunk; the price is a third `C` buffer (a chunk's `C` serves two phases) and
//! the token weights applied to `C`'s fragments in registers (one packed multiply per pair under
//! bf16, [`Schedule::packed_weights`]). The chunk step is bound by shared
//! memory reads (`ldmatrix`), so the warp tiles are as large as the registers allow: 32 x 32
//! outputs and a 64 x 32 block of the state per warp at D=128 (240 registers per unit), 2816
//! `ldmatrix` wavefronts per chunk where 16 x 32 outputs and 32 x 32 state blocks took 3680. It
//! pays where the batch x heads fill the device (one cube per SM) and the `H` bytes would
//! dominate; `dispatch::fused_geometry` decides. Same contract as the split pair (`out` packs the outputs and
//! the final state). `kernels/README.md` has its measurements, and how the chunk step was
//! counted (`gpu_run.sh`'s `sass` step).

use burn::tensor::Shape;
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::{prelude::barrier::Barrier, prelude::*};

use super::fragments::{
    copy_tile_async, frag_a, frag_a_in, frag_b2, frag_b2_in, initial_pair, mma_half, state_col,
    state_row, Pair,
};
use super::geometry::{FusedGeometry, Schedule, Tiling, MK, MM, MN, OCOLS, PAD, SLAB};
use super::options::ScanOptions;
use super::tiles::{decay_powers, output_chunk, OutputChunk};

/// What one unit keeps fixed over the walk: the scan's sizes, its warp's tiles and where its
/// stores start.
#[derive(CubeType, Clone, Copy)]
struct Walk {
    /// Sequence length, chunks, the cube's first output column.
    n: usize,
    nblocks: usize,
    c0: usize,
    /// This unit in the cube, its lane group (`l / 4`) and pair (`l % 4`).
    tid: usize,
    g: usize,
    tq: usize,
    /// The warp's first output row tile (`16 mt..`; `orows / 16` of them) and columns
    /// (`wcol..`), and its block of the state.
    mt: usize,
    wcol: usize,
    srow: usize,
    scol: usize,
    /// Pair indices of the lane's first element of `H` (buffer 0) and of `o` (token 0), the
    /// output's token stride in pairs, and how many output columns lie from the lane's first one
    /// to the head dim's end (its 8-column tile `t` is stored where `8 t` is fewer).
    h_pair: usize,
    o_pair: usize,
    o_st: usize,
    cols_in: usize,
}

/// The shared tiles (`A`, `B` and `C` as [`Tiling::lay_k`] and [`Tiling::lay_c`] say, the rest
/// in padded rows): `A`, `B`, `H` and `P` double-buffered (by chunk parity), `C` in three
/// buffers (chunk `j`'s in `j % 3`), the decay powers `pw[d] = lambda^d` and the token weights
/// `wt` of the state update (`lambda^(chunk-1-t)`, then the last chunk's; `wtp` the same in
/// the input dtype, for [`Schedule::packed_weights`]).
#[derive(CubeType)]
struct Tiles<F: Float> {
    sa: SharedMemory<F>,
    sb: SharedMemory<F>,
    sc: SharedMemory<F>,
    sh: SharedMemory<F>,
    sp: SharedMemory<F>,
    pw: SharedMemory<f32>,
    wt: SharedMemory<f32>,
    wtp: SharedMemory<F>,
}

/// The bulk-copy descriptors of `A`, `B` and `C` (`[batch, heads, tokens, dim]`, boxes of
/// one chunk's rows by [`SLAB`] columns), where the scan stages by them ([`Schedule::tma`]).
#[derive(CubeType)]
struct Maps<F: Float> {
    a: ComptimeOption<TensorMap<F, Tiled>>,
    b: ComptimeOption<TensorMap<F, Tiled>>,
    c: ComptimeOption<TensorMap<F, Tiled>>,
}

/// The fused scan: one cube of `chunk / orows * dt / 32` warps per (`dt` columns from
/// `CUBE_POS_X * dt`, batch x head `CUBE_POS_Z`), one barrier per chunk.
///
/// Phase `j` ([`phase`]) runs chunk `j`'s products that need only its inputs and `H_j`
/// ([`front`]: the scores into `P`, `A H`, the state update and `H_(j+1)`) beside chunk
/// `j - 1`'s that need the `P` made in the phase before ([`back`]: `O += P C` and the stores),
/// while chunk `j + 1`'s inputs arrive by `cp.async`; so one barrier per chunk both publishes
/// `P` and `H` and waits for the copies. The walk takes phases two at a time so that each
/// knows its double buffers at compile time; the lanes' mask and decay factors for their score
/// tiles (the same tiles in every chunk) are computed once, into registers.
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
pub(crate) fn chunk_fused_mma_kernel<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    out: &mut Tensor<Pair<F>>,
    a_map: &ComptimeOption<TensorMap<F, Tiled>>,
    b_map: &ComptimeOption<TensorMap<F, Tiled>>,
    c_map: &ComptimeOption<TensorMap<F, Tiled>>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] orows: usize,
    #[comptime] sched: Schedule,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[define(F)] _dtype: StorageType,
) {
    let tl = comptime!(Tiling::new(chunk, dkp, dt, orows)
        .with_schedule(sched)
        .in_order(reverse));
    let groups = comptime!(tl.groups);
    let row_warps = comptime!(tl.row_warps);
    let threads = comptime!(tl.threads);
    let stiles = comptime!(tl.stiles);
    let acc_len = comptime!(2 * (OCOLS / MN) * tl.mts);
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let warp = tid / 32;
    let mt = (warp / groups) * comptime!(tl.mts);
    let wcol = (warp % groups) * OCOLS;
    let srow = (warp % row_warps) * comptime!(tl.srows);
    let scol = (warp / row_warps) * comptime!(tl.scols);
    let bh = CUBE_POS_Z as usize;
    let c0 = CUBE_POS_X as usize * dt;
    let heads = a.shape(1);
    let bi = bh / heads;
    let hi = bh % heads;
    let oc = output_chunk::<F, N>(a, b, c, bh, 0, chunk, dt, false);
    let (n, da, dc) = (oc.n, oc.da, oc.dc);
    let nblocks = (n + chunk - 1) / chunk;
    let sv = f32::cast_from(s[hi * s.stride(0)]);

    let cs = comptime!(dt + PAD);
    let kbuf = comptime!(tl.kbuf());
    let cbuf = comptime!(tl.cbuf());
    let hbuf = comptime!(dkp * (dt + PAD));
    let align = comptime!(tl.tile_align());
    let mut sm = Tiles::<F> {
        sa: SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), align),
        sb: SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), align),
        sc: SharedMemory::<F>::new_aligned(comptime!(3 * cbuf), align),
        sh: SharedMemory::<F>::new_aligned(comptime!(2 * hbuf), 32usize),
        sp: SharedMemory::<F>::new_aligned(comptime!(2 * chunk * (chunk + PAD)), 32usize),
        pw: SharedMemory::<f32>::new(chunk + 1),
        wt: SharedMemory::<f32>::new_aligned(comptime!(2 * chunk), 8usize),
        wtp: SharedMemory::<F>::new_aligned(comptime!(2 * chunk), 8usize),
    };
    let barrier = Barrier::shared(threads as u32, tid == 0);
    let maps = Maps::<F> {
        a: *a_map,
        b: *b_map,
        c: *c_map,
    };
    if comptime!(tl.sched.tma) {
        sync_async_proxy_shared();
    }

    if nblocks > 0 {
        stage_chunk::<F, N>(
            a, b, c, &maps, &barrier, &oc, 0, c0, &mut sm, 0, 0, tid, tl, reverse,
        );
    }
    commit_copies(&barrier, tl);
    decay_powers(&mut sm.pw, sv, chunk, threads);
    // The state update's token weights: a whole chunk's, then the last chunk's (0 past it).
    let mut last_len = 0usize;
    if nblocks > 0 {
        last_len = n - (nblocks - 1) * chunk;
    }
    #[unroll]
    for r in 0..comptime!((2 * chunk).div_ceil(threads)) {
        let e = tid + r * threads;
        if e < comptime!(2 * chunk) {
            let t = e % chunk;
            let mut len = last_len;
            if e < chunk {
                len = chunk;
            }
            let mut w = 0.0f32;
            if t < len {
                w = f32::exp(-sv * f32::cast_from(len - 1 - t));
            }
            sm.wt[e] = w;
            sm.wtp[e] = F::cast_from(w);
        }
    }

    // The initial state, straight into the accumulators, and its rounded copy into H buffer 0.
    let sfrags = comptime!(tl.sfrags);
    let mut acc_s = Array::<Pair<f32>>::new(sfrags);
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(sv);
    }
    let s_base = bi * state.stride(0) + hi * state.stride(1);
    #[unroll]
    for i in 0..sfrags {
        let row = srow + state_row(i, g, stiles);
        let col = c0 + scol + state_col(i, tq, stiles);
        let mut v = Pair::<f32>::new(0.0);
        if has_state {
            v = initial_pair::<F>(state, s_base, row, col, da, dc, scale, transpose_state);
        }
        acc_s[i] = v;
    }
    let h_pair = ((srow + g) * cs + scol + 2 * tq) / 2;
    put_state::<F>(&acc_s, &mut sm.sh, h_pair, 0usize, tl);
    barrier.arrive_and_wait();

    // The warp's score tiles ([`score_tile`], the same in every chunk) and each lane's mask and
    // decay lambda^(i-j) on them.
    let slots = comptime!(tl.score_slots());
    let mut tiles = Array::<usize>::new(comptime!(2 * slots));
    let mut sw = Array::<Pair<f32>>::new(comptime!(4 * slots));
    #[unroll]
    for r in 0..slots {
        let (tm, tk) = score_tile(warp, r, tl);
        tiles[2 * r] = tm;
        tiles[2 * r + 1] = tk;
        #[unroll]
        for q in 0..4usize {
            let i = tm * MM + g + (q % 2) * 8;
            let key = tk * MK + (q / 2) * MN + 2 * tq;
            let mut w = Pair::<f32>::new(0.0);
            #[unroll]
            for j in 0..2usize {
                if key + j <= i {
                    w[j] = sm.pw[i - key - j];
                }
            }
            sw[4 * r + q] = w;
        }
    }

    let o_base = bi * out.stride(0) + hi * out.stride(1);
    let first_col = c0 + wcol + 2 * tq;
    let mut cols_in = 0usize;
    if dc > first_col {
        cols_in = dc - first_col;
    }
    let wk = Walk {
        n,
        nblocks,
        c0,
        tid,
        g,
        tq,
        mt,
        wcol,
        srow,
        scol,
        h_pair,
        o_pair: (o_base + first_col) / 2,
        o_st: out.stride(2) / 2,
        cols_in,
    };
    // Each chunk's `A H` (then `+ P C`) for this warp's output tile, by chunk parity: phase `j`
    // makes chunk `j`'s and finishes chunk `j - 1`'s.
    let mut acc0 = Array::<Pair<f32>>::new(acc_len);
    let mut acc1 = Array::<Pair<f32>>::new(acc_len);
    if nblocks > 0 {
        phase::<F, N>(
            a, b, c, &maps, &oc, out, &mut sm, &barrier, &mut acc_s, &mut acc0, &mut acc1, &sw,
            &tiles, &wk, 0, 0usize, false, tl, reverse,
        );
    }
    for pair in 0..nblocks / 2 {
        let j = 2 * pair + 1;
        phase::<F, N>(
            a, b, c, &maps, &oc, out, &mut sm, &barrier, &mut acc_s, &mut acc1, &mut acc0, &sw,
            &tiles, &wk, j, 1usize, true, tl, reverse,
        );
        if j + 1 < nblocks {
            phase::<F, N>(
                a,
                b,
                c,
                &maps,
                &oc,
                out,
                &mut sm,
                &barrier,
                &mut acc_s,
                &mut acc0,
                &mut acc1,
                &sw,
                &tiles,
                &wk,
                j + 1,
                0usize,
                true,
                tl,
                reverse,
            );
        }
    }
    if nblocks > 0 {
        let last = nblocks - 1;
        let cb = (last % 3) * cbuf;
        if last % 2 == 0 {
            back::<F>(out, &sm, &mut acc0, &wk, last, cb, 0usize, tl, reverse);
        } else {
            back::<F>(out, &sm, &mut acc1, &wk, last, cb, 1usize, tl, reverse);
        }
    }

    // The final state, from the accumulators, into rows n.. of `out`.
    let mut fscale = 1.0f32;
    if state_exp0 {
        fscale = f32::exp(-sv);
    }
    let fs = Pair::<f32>::new(fscale);
    #[unroll]
    for i in 0..sfrags {
        let row = srow + state_row(i, g, stiles);
        let col = c0 + scol + state_col(i, tq, stiles);
        if row < da && col < dc {
            out[(o_base + (n + row) * out.stride(2) + col) / 2] =
                Pair::<F>::cast_from(acc_s[i] * fs);
        }
    }
}

/// Score tile `(row tile, key tile)` number `r` of warp `warp`, the same in every chunk; tiles
/// above the diagonal (key tile past the row tile) are made by no warp.
///
/// - [`Schedule::row_scores`] (the default where the tiling takes it): the warp's own output
///   row tile `mt + r` against key tile `warp % groups`;
/// - spread: tiles `warp, warp + warps, ...` of the lower triangle in row order (row tile `m`
///   holds tiles `m (m + 1) / 2 ..`), so that the SM sub-partitions (`warp % 4`) compute
///   within one tile of each other.
#[cube]
fn score_tile(warp: usize, r: usize, #[comptime] tl: Tiling) -> (usize, usize) {
    let mut tm = 0usize;
    let mut tk = 0usize;
    if comptime!(tl.sched.row_scores) {
        tm = (warp / comptime!(tl.groups)) * comptime!(tl.mts) + r;
        tk = warp % comptime!(tl.groups);
    } else {
        let idx = warp + r * comptime!(tl.warps);
        #[unroll]
        for m in 0..comptime!(tl.ptiles) {
            let first = m * (m + 1) / 2;
            if idx >= first {
                tm = m;
                tk = idx - first;
            }
        }
    }
    (tm, tk)
}

/// Phase `j` of the walk (its double buffers `cur = j % 2`): chunk `j + 1`'s copies issued,
/// chunk `j`'s [`front`] into `acc_new`, chunk `j - 1`'s [`back`] from `acc_old` (with
/// `finish`; before `front` under [`Schedule::row_scores`]), then the one barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn phase<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    maps: &Maps<F>,
    oc: &OutputChunk,
    out: &mut Tensor<Pair<F>>,
    sm: &mut Tiles<F>,
    barrier: &Barrier,
    acc_s: &mut Array<Pair<f32>>,
    acc_new: &mut Array<Pair<f32>>,
    acc_old: &mut Array<Pair<f32>>,
    sw: &Array<Pair<f32>>,
    tiles: &Array<usize>,
    wk: &Walk,
    j: usize,
    #[comptime] cur: usize,
    #[comptime] finish: bool,
    #[comptime] tl: Tiling,
    #[comptime] reverse: bool,
) {
    let cbuf = comptime!(tl.cbuf());
    let next = j + 1 < wk.nblocks;
    if next {
        stage_chunk::<F, N>(
            a,
            b,
            c,
            maps,
            barrier,
            oc,
            j + 1,
            wk.c0,
            sm,
            comptime!((1 - cur) * tl.kbuf()),
            ((j + 1) % 3) * cbuf,
            wk.tid,
            tl,
            reverse,
        );
    }
    commit_copies(barrier, tl);
    // Row scores hold more registers in `front`: chunk j - 1 is finished first, so that its
    // accumulators are free by then.
    let back_first = comptime!(tl.sched.row_scores);
    if comptime!(finish && back_first) {
        finish_prev::<F>(out, sm, acc_old, wk, j, cur, tl, reverse);
    }
    front::<F>(
        sm,
        acc_s,
        acc_new,
        sw,
        tiles,
        wk,
        j,
        (j % 3) * cbuf,
        next,
        cur,
        tl,
    );
    if comptime!(finish && !back_first) {
        finish_prev::<F>(out, sm, acc_old, wk, j, cur, tl, reverse);
    }
    barrier.arrive_and_wait();
}

/// Chunk `j - 1`'s [`back`] in phase `j` (buffers `cur = j % 2`): its `P` in buffer
/// `1 - cur`, its `C` in `(j - 1) % 3`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn finish_prev<F: Float>(
    out: &mut Tensor<Pair<F>>,
    sm: &Tiles<F>,
    acc_old: &mut Array<Pair<f32>>,
    wk: &Walk,
    j: usize,
    #[comptime] cur: usize,
    #[comptime] tl: Tiling,
    #[comptime] reverse: bool,
) {
    let cbuf = comptime!(tl.cbuf());
    back::<F>(
        out,
        sm,
        acc_old,
        wk,
        j - 1,
        ((j + 2) % 3) * cbuf,
        comptime!(1 - cur),
        tl,
        reverse,
    );
}

/// Chunk `j`'s products that need only its inputs (`A`, `B` in buffer `cur`, `C` from `cb`) and
/// `H_j` (buffer `cur`):
///
/// - this warp's score tiles, masked, decayed and rounded into `P` buffer `cur` (each score
///   computed once);
/// - `acc = lambda^(i+1) A H` for its output rows `16 mt..` and columns `wcol..`;
/// - the state update of its `srows x scols` block (rows `srow..`),
///   `S <- lambda^len S + B^T (w C)` with each token's row of `C` weighted by
///   `lambda^(len-1-t)` in its fragments, and with `next` its rounded copy into `H` buffer
///   `1 - cur`, the next chunk's `H`.
///
/// In the state accumulators lane `l` holds, for each 16-row tile `m` and 8-column tile `t` of
/// the warp's block, rows `+ l / 4` and `+ l / 4 + 8`, columns `2 (l % 4)` and `+ 1` (the `mma`
/// layout); in `acc`, the same for row tile `mt + m`, column tile `t` at `2 (4 m + t)`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn front<F: Float>(
    sm: &mut Tiles<F>,
    acc_s: &mut Array<Pair<f32>>,
    acc: &mut Array<Pair<f32>>,
    sw: &Array<Pair<f32>>,
    tiles: &Array<usize>,
    wk: &Walk,
    j: usize,
    cb: usize,
    next: bool,
    #[comptime] cur: usize,
    #[comptime] tl: Tiling,
) {
    let chunk = comptime!(tl.chunk);
    let dkp = comptime!(tl.dkp);
    let stiles = comptime!(tl.stiles);
    let rtiles = comptime!(tl.rtiles);
    let sfrags = comptime!(tl.sfrags);
    let mts = comptime!(tl.mts);
    let otiles = comptime!(OCOLS / MN);
    let lk = comptime!(tl.lay_k());
    let cs = comptime!(tl.dt + PAD);
    let ab = comptime!(cur * tl.kbuf());
    let hb = comptime!(cur * tl.dkp * (tl.dt + PAD));
    let mut len = wk.n - j * chunk;
    if len > chunk {
        len = chunk;
    }

    // This warp's score tiles, masked and decayed, into P (row scores: in the `A H` loop).
    if comptime!(!tl.sched.row_scores) {
        #[unroll]
        for r in 0..rtiles {
            let (tm, tk) = (tiles[2 * r], tiles[2 * r + 1]);
            if tk <= tm {
                let mut sx = Array::<Pair<f32>>::new(4usize);
                #[unroll]
                for i in 0..4usize {
                    sx[i] = Pair::<f32>::new(0.0);
                }
                #[unroll]
                for kk in 0..dkp / MK {
                    let fa = frag_a_in::<F>(&sm.sa, ab, tm * MM, kk * MK, lk, false);
                    let fb = frag_b2_in::<F>(&sm.sb, ab, kk * MK, tk * MK, lk, true);
                    mma_half::<F>(&fa, &fb, 0usize, &mut sx, 0usize);
                    mma_half::<F>(&fa, &fb, 1usize, &mut sx, 2usize);
                }
                put_scores::<F>(
                    &mut sm.sp,
                    &sx,
                    0usize,
                    sw,
                    comptime!(4 * r),
                    tm,
                    tk,
                    wk,
                    cur,
                    tl,
                );
            }
        }
    }

    // A H for this warp's rows and 32 columns, each row i decayed by lambda^(i+1).
    #[unroll]
    for i in 0..2 * otiles * mts {
        acc[i] = Pair::<f32>::new(0.0);
    }
    let row_scores = comptime!(tl.sched.row_scores);
    let mut sx = Array::<Pair<f32>>::new(comptime!(4 * mts));
    if row_scores {
        #[unroll]
        for i in 0..4 * mts {
            sx[i] = Pair::<f32>::new(0.0);
        }
    }
    #[unroll]
    for kk in 0..dkp / MK {
        let mut fas = Array::<Pair<F>>::new(comptime!(4 * mts));
        #[unroll]
        for m in 0..mts {
            let fa = frag_a_in::<F>(&sm.sa, ab, (wk.mt + m) * MM, kk * MK, lk, false);
            put_frag::<F>(&fa, &mut fas, comptime!(4 * m));
        }
        if row_scores {
            // Key tile `tiles[1]` against each of the warp's row tiles (slot m: row tile mt + m).
            let fk = frag_b2_in::<F>(&sm.sb, ab, kk * MK, tiles[1] * MK, lk, true);
            #[unroll]
            for m in 0..mts {
                let fa = get_frag::<F>(&fas, comptime!(4 * m));
                mma_half::<F>(&fa, &fk, 0usize, &mut sx, comptime!(4 * m));
                mma_half::<F>(&fa, &fk, 1usize, &mut sx, comptime!(4 * m + 2));
            }
        }
        #[unroll]
        for tp in 0..otiles / 2 {
            let fb = frag_b2::<F>(&sm.sh, hb, kk * MK, wk.wcol + tp * 2 * MN, cs, false);
            #[unroll]
            for m in 0..mts {
                let fa = get_frag::<F>(&fas, comptime!(4 * m));
                let at = comptime!(2 * otiles * m + 4 * tp);
                mma_half::<F>(&fa, &fb, 0usize, acc, at);
                mma_half::<F>(&fa, &fb, 1usize, acc, at + 2);
            }
        }
    }
    if row_scores {
        #[unroll]
        for m in 0..mts {
            let (tm, tk) = (tiles[2 * m], tiles[2 * m + 1]);
            if tk <= tm {
                put_scores::<F>(
                    &mut sm.sp,
                    &sx,
                    comptime!(4 * m),
                    sw,
                    comptime!(4 * m),
                    tm,
                    tk,
                    wk,
                    cur,
                    tl,
                );
            }
        }
    }
    #[unroll]
    for m in 0..mts {
        let row_lo = (wk.mt + m) * MM + wk.g;
        let w_lo = Pair::<f32>::new(sm.pw[row_lo + 1]);
        let w_hi = Pair::<f32>::new(sm.pw[row_lo + 9]);
        #[unroll]
        for t in 0..otiles {
            let at = comptime!(2 * otiles * m + 2 * t);
            acc[at] = acc[at] * w_lo;
            acc[at + 1] = acc[at + 1] * w_hi;
        }
    }

    // S <- lambda^len S + B^T (w C), 16 tokens at a time.
    let whole = Pair::<f32>::new(sm.pw[len]);
    #[unroll]
    for i in 0..sfrags {
        acc_s[i] = acc_s[i] * whole;
    }
    let mut wbase = 2 * wk.tq;
    if j + 1 == wk.nblocks {
        wbase += chunk;
    }
    let rts = comptime!(tl.srows / MM);
    #[unroll]
    for kk in 0..chunk / MK {
        let w0 = wbase + kk * MK;
        let fds = if comptime!(tl.sched.packed_weights) {
            weighed_c::<F, F>(&sm.sc, &sm.wtp, cb, kk, wk.scol, w0, tl)
        } else {
            weighed_c::<F, f32>(&sm.sc, &sm.wt, cb, kk, wk.scol, w0, tl)
        };
        #[unroll]
        for rt in 0..rts {
            let fa = frag_a_in::<F>(&sm.sb, ab, wk.srow + rt * MM, kk * MK, lk, true);
            #[unroll]
            for tp in 0..stiles / 2 {
                let fd = get_frag::<F>(&fds, comptime!(4 * tp));
                let at = comptime!(rt * 2 * stiles + 4 * tp);
                mma_half::<F>(&fa, &fd, 0usize, acc_s, at);
                mma_half::<F>(&fa, &fd, 1usize, acc_s, at + 2);
            }
        }
    }
    if next {
        put_state::<F>(
            acc_s,
            &mut sm.sh,
            wk.h_pair,
            comptime!((1 - cur) * tl.dkp * (tl.dt + PAD) / 2),
            tl,
        );
    }
}

/// Score tile `(tm, tk)` from its accumulators `sx[sx_at..sx_at + 4]`, masked and decayed by
/// `sw[sw_at..]` and rounded, into `P` buffer `cur`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn put_scores<F: Float>(
    sp: &mut SharedMemory<F>,
    sx: &Array<Pair<f32>>,
    #[comptime] sx_at: usize,
    sw: &Array<Pair<f32>>,
    #[comptime] sw_at: usize,
    tm: usize,
    tk: usize,
    wk: &Walk,
    #[comptime] cur: usize,
    #[comptime] tl: Tiling,
) {
    let ps = comptime!(tl.chunk + PAD);
    let pb = comptime!(cur * tl.chunk * (tl.chunk + PAD));
    let mut spp = sp
        .slice_mut(pb, comptime!(pb + tl.chunk * (tl.chunk + PAD)))
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    let at = (tm * MM + wk.g) * (ps / 2) + tk * (MK / 2) + wk.tq;
    #[unroll]
    for q in 0..4usize {
        spp[at + (q % 2) * (4 * ps) + (q / 2) * (MN / 2)] =
            Pair::<F>::cast_from(sx[sx_at + q] * sw[sw_at + q]);
    }
}

/// Chunk `j`'s `O += P C` over the key tiles up to the diagonal (`P` buffer `cur`, `C` from
/// `cb`) on `acc`, its `A H` from the phase before, then the rows inside the sequence stored.
#[cube]
#[allow(clippy::too_many_arguments)]
fn back<F: Float>(
    out: &mut Tensor<Pair<F>>,
    sm: &Tiles<F>,
    acc: &mut Array<Pair<f32>>,
    wk: &Walk,
    j: usize,
    cb: usize,
    #[comptime] cur: usize,
    #[comptime] tl: Tiling,
    #[comptime] reverse: bool,
) {
    let chunk = comptime!(tl.chunk);
    let ptiles = comptime!(tl.ptiles);
    let mts = comptime!(tl.mts);
    let otiles = comptime!(OCOLS / MN);
    let lc = comptime!(tl.lay_c());
    let ps = comptime!(tl.chunk + PAD);
    let pb = comptime!(cur * tl.chunk * (tl.chunk + PAD));
    #[unroll]
    for kv in 0..ptiles {
        if kv <= wk.mt + comptime!(mts - 1) {
            // P's tiles of the warp's rows, those above the diagonal loaded but not used.
            let mut fps = Array::<Pair<F>>::new(comptime!(4 * mts));
            #[unroll]
            for m in 0..mts {
                let fp = frag_a::<F>(&sm.sp, pb, (wk.mt + m) * MM, kv * MK, ps, false);
                put_frag::<F>(&fp, &mut fps, comptime!(4 * m));
            }
            #[unroll]
            for tp in 0..otiles / 2 {
                let fb = frag_b2_in::<F>(&sm.sc, cb, kv * MK, wk.wcol + tp * 2 * MN, lc, false);
                #[unroll]
                for m in 0..mts {
                    if kv <= wk.mt + m {
                        let fp = get_frag::<F>(&fps, comptime!(4 * m));
                        let at = comptime!(2 * otiles * m + 4 * tp);
                        mma_half::<F>(&fp, &fb, 0usize, acc, at);
                        mma_half::<F>(&fp, &fb, 1usize, acc, at + 2);
                    }
                }
            }
        }
    }
    let t0 = j * chunk;
    let mut len = wk.n - t0;
    if len > chunk {
        len = chunk;
    }
    #[unroll]
    for m in 0..mts {
        #[unroll]
        for half in 0..2usize {
            let i = (wk.mt + m) * MM + wk.g + half * 8;
            let tt = t0 + i;
            // Rows past the sequence compute an address they never store to.
            let p = if reverse { wk.n - 1 - tt } else { tt };
            let row_at = wk.o_pair + p * wk.o_st;
            let inside = i < len;
            #[unroll]
            for t in 0..otiles {
                let v = Pair::<F>::cast_from(acc[comptime!(2 * otiles * m + 2 * t) + half]);
                if inside && t * MN < wk.cols_in {
                    out[row_at + t * (MN / 2)] = v;
                }
            }
        }
    }
}

/// The warp's fragments of `C` for tokens `16 kk..` and its state columns `scol..`, each
/// token's row weighed by its state-update weight from `wt[w0..]`, multiplied in the weights'
/// dtype `W` and rounded back to `F` (with `W = F`, [`Schedule::packed_weights`], the casts
/// vanish and each pair is one packed multiply). Lane `tq`'s tokens are `2 tq, 2 tq + 1`
/// (registers 0 and 2 of a fragment) and those `+ 8` (1 and 3).
#[cube]
fn weighed_c<F: Float, W: Float>(
    sc: &SharedMemory<F>,
    wt: &SharedMemory<W>,
    cb: usize,
    kk: usize,
    scol: usize,
    w0: usize,
    #[comptime] tl: Tiling,
) -> Array<Pair<F>> {
    let stiles = comptime!(tl.stiles);
    let lc = comptime!(tl.lay_c());
    let mut fds = Array::<Pair<F>>::new(comptime!(2 * stiles));
    let wv = wt
        .slice(w0, w0 + 10)
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    let (lo, hi) = (wv[0], wv[4]);
    #[unroll]
    for tp in 0..stiles / 2 {
        let fb = frag_b2_in::<F>(sc, cb, kk * MK, scol + tp * 2 * MN, lc, false);
        #[unroll]
        for h in 0..2usize {
            let lo_c = Pair::<W>::cast_from(fb[2 * h]) * lo;
            let hi_c = Pair::<W>::cast_from(fb[2 * h + 1]) * hi;
            fds[4 * tp + 2 * h] = Pair::<F>::cast_from(lo_c);
            fds[4 * tp + 2 * h + 1] = Pair::<F>::cast_from(hi_c);
        }
    }
    fds
}

/// An `mma` operand's four registers into `frags[at..at + 4]`, beside the other fragments a
/// warp keeps for one step of `k` (the copies are register renames once unrolled).
#[cube]
fn put_frag<F: Float>(frag: &Array<Pair<F>>, frags: &mut Array<Pair<F>>, #[comptime] at: usize) {
    #[unroll]
    for q in 0..4usize {
        frags[at + q] = frag[q];
    }
}

/// The operand that [`put_frag`] kept at `frags[at..at + 4]`.
#[cube]
fn get_frag<F: Float>(frags: &Array<Pair<F>>, #[comptime] at: usize) -> Array<Pair<F>> {
    let mut frag = Array::<Pair<F>>::new(4usize);
    #[unroll]
    for q in 0..4usize {
        frag[q] = frags[at + q];
    }
    frag
}

/// Chunk `blk`'s `A`, `B` (`chunk x dkp`, from `kb`) and `C` (`chunk x dt` from column `c0`,
/// from `cb`) into the shared tiles, zero past the sequence and the head dims: by bulk copies
/// (one unit issues them and adds their bytes to `barrier`'s phase) where `maps` hold their
/// descriptors, else by `cp.async` into padded rows, which the caller commits.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    maps: &Maps<F>,
    barrier: &Barrier,
    oc: &OutputChunk,
    blk: usize,
    c0: usize,
    sm: &mut Tiles<F>,
    kb: usize,
    cb: usize,
    tid: usize,
    #[comptime] tl: Tiling,
    #[comptime] reverse: bool,
) {
    let chunk = comptime!(tl.chunk);
    let dkp = comptime!(tl.dkp);
    let dt = comptime!(tl.dt);
    let t0 = blk * chunk;
    if comptime!(tl.sched.tma) {
        if tid == 0 {
            let bytes = comptime!((2 * dkp + dt) * chunk) * F::type_size();
            barrier.expect_tx(bytes as u32);
            let heads = a.shape(1);
            let bh = CUBE_POS_Z as usize;
            let (bi, hi) = (bh / heads, bh % heads);
            // A reverse scan's chunk is the sequence's rows `n - t0 - chunk..n - t0`, before
            // its start (zero-filled) for the last one.
            let mut t = t0 as i32;
            if reverse {
                t = (oc.n as i32) - (t0 as i32) - comptime!(chunk as i32);
            }
            load_boxes::<F>(&maps.a, barrier, &mut sm.sa, kb, bi, hi, t, 0, dkp, tl);
            load_boxes::<F>(&maps.b, barrier, &mut sm.sb, kb, bi, hi, t, 0, dkp, tl);
            load_boxes::<F>(&maps.c, barrier, &mut sm.sc, cb, bi, hi, t, c0, dt, tl);
        }
    } else {
        let threads = comptime!(tl.threads);
        let ks = comptime!(tl.dkp + PAD);
        let cs = comptime!(tl.dt + PAD);
        let mut len = oc.n - t0;
        if len > chunk {
            len = chunk;
        }
        copy_tile_async::<F, N>(
            a, oc.a_base, oc.a_st, oc.a_sd, oc.n, oc.da, t0, len, 0, &mut sm.sa, kb, tid, ks,
            chunk, dkp, reverse, threads,
        );
        copy_tile_async::<F, N>(
            b, oc.b_base, oc.b_st, oc.b_sd, oc.n, oc.da, t0, len, 0, &mut sm.sb, kb, tid, ks,
            chunk, dkp, reverse, threads,
        );
        copy_tile_async::<F, N>(
            c, oc.c_base, oc.c_st, oc.c_sd, oc.n, oc.dc, t0, len, c0, &mut sm.sc, cb, tid, cs,
            chunk, dt, reverse, threads,
        );
    }
}

/// One chunk's rows (from token `t`, which may lie before the sequence, of batch `bi`, head
/// `hi`) of `cols` columns from column `col0` of `map`, as [`Lay::Slabs`] from `dst[base..]`:
/// one box per slab.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_boxes<F: Float>(
    map: &ComptimeOption<TensorMap<F, Tiled>>,
    barrier: &Barrier,
    dst: &mut SharedMemory<F>,
    base: usize,
    bi: usize,
    hi: usize,
    t: i32,
    col0: usize,
    #[comptime] cols: usize,
    #[comptime] tl: Tiling,
) {
    let slab = comptime!(tl.chunk * SLAB);
    #[comptime]
    if let ComptimeOption::Some(m) = map {
        #[unroll]
        for s in 0..cols / SLAB {
            let off = base + s * slab;
            barrier.tma_load_4d(
                m,
                &mut dst.slice_mut(off, off + slab),
                bi as i32,
                hi as i32,
                t,
                (col0 + s * SLAB) as i32,
            );
        }
    }
}

/// Ends this unit's part of a phase's copies: `cp.async`'s arrival on `barrier` (bulk copies
/// count their bytes on it instead).
#[cube]
fn commit_copies(barrier: &Barrier, #[comptime] tl: Tiling) {
    if comptime!(!tl.sched.tma) {
        barrier.commit_copy_async();
    }
}

/// The warp's state accumulators, rounded, into `H` buffer `at0 / (dkp (dt + PAD) / 2)`: `at`
/// is the pair index of the lane's first element in buffer 0 (the warp's block, its row `l / 4`
/// and pair `l % 4`), so each store's own offset is a constant.
#[cube]
fn put_state<F: Float>(
    acc_s: &Array<Pair<f32>>,
    sh: &mut SharedMemory<F>,
    at: usize,
    #[comptime] at0: usize,
    #[comptime] tl: Tiling,
) {
    let stride = comptime!(tl.dt + PAD);
    let stiles = comptime!(tl.stiles);
    let mut shp = sh
        .slice_mut(0, comptime!(2 * tl.dkp * (tl.dt + PAD)))
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    #[unroll]
    for i in 0..tl.sfrags {
        let row = (i / (2 * stiles)) * MM + (i % 2) * 8;
        let col = ((i / 2) % stiles) * MN;
        shp[at + comptime!(at0 + row * (stride / 2) + col / 2)] = Pair::<F>::cast_from(acc_s[i]);
    }
}

/// The L2 promotion of the bulk copies (bytes L2 fetches from DRAM per request: their 32-byte
/// box rows are narrower than a line): 0.96-0.98x the forward's time at 4K-64K tokens against
/// none.
const L2_PROMOTION: TensorMapPrefetch = TensorMapPrefetch::B256;

/// Launches `chunk_fused_mma_kernel` with geometry `geo` over `[a, b, c, s, state, out]` (the
/// kernel's arguments, in order) for `bh` batch x heads, `dc` output columns and a contracted
/// dim padded to `dkp`: the outputs and the final state of the whole scan. With `tma` the chunks
/// arrive by bulk tensor copies (`geo`'s schedule asks for them, the device has them and every
/// input fits them), else by `cp.async`.
///
/// # Safety
/// The scan's shapes, checked by the caller; `geo` from `dispatch::fused_geometry` for these
/// shapes and `nv`, which divides the head dims and every stride and offset of the tensors.
/// The kernel tests rows past `n` and columns past `da`/`dc` before every read and write.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [a, b, c, s, state, out]: [CubeTensor<R>; 6],
    geo: FusedGeometry,
    tma: bool,
    [bh, dc]: [usize; 2],
    nv: usize,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = a.dtype;
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
            .with_prefetch(L2_PROMOTION)
        })
        .into()
    };
    let maps = (map(&a), map(&b), map(&c));
    super::usage::record(if tma {
        "chunk_fused_mma_kernel (tensor cores, one launch, TMA)"
    } else {
        "chunk_fused_mma_kernel (tensor cores, one launch)"
    });
    chunk_fused_mma_kernel::launch_unchecked::<R>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every score tile on and below the diagonal made by exactly one (warp, slot) of
    /// [`score_tile`], and under row scores by a warp whose output rows it is.
    fn assert_covers_lower_triangle(t: Tiling) {
        let mut made = vec![0usize; t.ptiles * t.ptiles];
        for warp in 0..t.warps {
            for r in 0..t.score_slots() {
                let (tm, tk) = score_tile(warp, r, t);
                if tk <= tm && tm < t.ptiles {
                    made[tm * t.ptiles + tk] += 1;
                    if t.sched.row_scores {
                        assert_eq!(tm / t.mts, warp / t.groups, "{t:?}: warp {warp}");
                    }
                }
            }
        }
        for tm in 0..t.ptiles {
            for tk in 0..=tm {
                assert_eq!(made[tm * t.ptiles + tk], 1, "{t:?}: tile ({tm}, {tk})");
            }
        }
    }

    #[test]
    fn every_admitted_tiling_adds_up_to_its_tiles() {
        let (mut admitted, mut row_scored) = (0, 0);
        for chunk in [16, 32, 64, 128] {
            for dkp in [16, 32, 64, 96, 128, 160] {
                for dt in [32, 64, 128] {
                    for orows in [8, 16, 32] {
                        for nv in [1, 2, 4, 8] {
                            let Some(t) = Tiling::checked(chunk, dkp, dt, orows, nv) else {
                                continue;
                            };
                            admitted += 1;
                            let at = format!("{t:?}");
                            // Output tiles: warps x (orows x 32) is the chunk x dt block.
                            assert_eq!(t.warps * t.orows * OCOLS, chunk * dt, "{at}");
                            assert_eq!(t.mts * MM, t.orows, "{at}");
                            // State blocks: warps x (srows x scols) is dkp x dt, in whole
                            // 16-row tiles and pairs of 8-column tiles.
                            assert_eq!(t.warps * t.srows * t.scols, dkp * dt, "{at}");
                            assert_eq!(t.row_warps * t.srows, dkp, "{at}");
                            assert_eq!(t.stiles % 2, 0, "{at}");
                            assert!(t.sfrags <= 32, "{at}");
                            // Score tiles: every one of the lower triangle has a warp.
                            assert!(t.rtiles * t.warps >= t.ntiles, "{at}");
                            assert!((t.rtiles - 1) * t.warps < t.ntiles, "{at}");
                            // Staging: whole vectors per unit for every tile.
                            assert_eq!((chunk * dkp) % (t.threads * nv), 0, "{at}");
                            assert_eq!((chunk * dt) % (t.threads * nv), 0, "{at}");
                            assert!(nv >= 2 && dkp <= 128, "{at}");
                            // Both mappings of warps to score tiles make each tile of the lower
                            // triangle once; row scores only where they can.
                            for row_scores in [false, true] {
                                let t = t.with_schedule(Schedule {
                                    row_scores,
                                    ..t.sched
                                });
                                let taken = t.sched.row_scores;
                                assert_eq!(taken, row_scores && t.groups == t.ptiles, "{at}");
                                row_scored += usize::from(taken);
                                assert_covers_lower_triangle(t);
                            }
                        }
                    }
                }
            }
        }
        assert!(admitted > 20, "{admitted} tilings");
        assert!(row_scored > 10, "{row_scored} tilings with row scores");
        // Not taken: 8-row warp tiles, a contracted dim past 128, single-element staging.
        assert!(Tiling::checked(64, 128, 128, 8, 8).is_none());
        assert!(Tiling::checked(64, 160, 128, 32, 8).is_none());
        assert!(Tiling::checked(64, 128, 128, 32, 1).is_none());
    }
}
