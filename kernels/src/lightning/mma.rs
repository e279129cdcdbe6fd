//! The split pair's two passes with their products in registers, for CUDA: warp-level `mma.sync`
//! (`m16n8k16`, f16/bf16 in, f32 accumulate) through CubeCL's manual `MmaDefinition`.
//!
//! `split`'s kernels go through `cmma` fragments, which live behind an opaque type: every
//! product loads both operands and the accumulator from shared memory and stores it back, and an
//! accumulator cannot be scaled or masked in place. Here the fragments are plain registers
//! (`fragments`), so
//!
//! - `chunk_states_mma_kernel` keeps each warp's 16-row slice of the f32 state in registers
//!   for the whole scan (a whole 128 x 128 state per 16-warp cube where the 64 x 64 tiles would
//!   take two waves): the decay is a multiply, `H` goes out through a shared tile in whole
//!   128-byte rows, and the double-buffered staging leaves one barrier per chunk;
//! - `chunk_output_mma_kernel` masks and decays the scores in their accumulators and feeds them
//!   to the second product as its `A` fragments (the accumulator pairs of two 8-key tiles are the
//!   `A` fragment of those 16 keys), with 128 output columns per cube for a 128-wide head so the
//!   scores are computed once.
//!
//! Same contracts as `chunk_states_kernel` and `chunk_output_kernel`, which stay the path on
//! other devices and shapes (the dispatch picks each pass's kernel). Manual MMA does not exist
//! on wgpu: the CUDA tests (`tests/cuda_kernels.rs`) check these kernels.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::{prelude::barrier::Barrier, prelude::*};

use super::fragments::{
    copy_tile_async, frag_a, frag_b2, initial_pair, mma_half, state_col, state_row, Pair,
};
use super::geometry::{StatesGeometry, MK, MM, MN, PAD};
use super::options::ScanOptions;
use super::tiles::{
    decay_powers, fetch_states_chunk, output_chunk, put_scaled_v, put_v, stage_output_chunk,
    states_operands, OutputChunk, StatesOperands,
};

/// Where one states cube's warp keeps its slice of the state and writes `H`: `h_base` (this
/// cube's tile of chunk 0), the padded state width `dcp`, the cube's first row and column, the
/// warp's first row and column within the cube, and the lane's accumulator row and pair.
#[derive(CubeType, Clone, Copy)]
struct StatesStep {
    h_base: usize,
    dcp: usize,
    r0: usize,
    c0: usize,
    wrow: usize,
    wcol: usize,
    g: usize,
    tq: usize,
}

/// One chunk `blk` of the states chain: stage its operands from `rb`/`rc` (B decayed per row),
/// hand out `H[blk]` and decay the state, then refill `rb`/`rc` with chunk `next` (if any)
/// while `S += (decayed B)^T C` runs.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
fn states_step<F: Float, N: Size>(
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    ops: &StatesOperands,
    h: &mut Tensor<Pair<F>>,
    acc: &mut Array<Pair<f32>>,
    rb: &mut Array<Vector<F, N>>,
    rc: &mut Array<Vector<F, N>>,
    sbk: &mut SharedMemory<F>,
    sc: &mut SharedMemory<F>,
    sh: &mut SharedMemory<Pair<F>>,
    pw: &SharedMemory<f32>,
    blk: usize,
    next: usize,
    at: &StatesStep,
    #[comptime] stage_h: bool,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] rt: usize,
    #[comptime] dt: usize,
    #[comptime] tiles: usize,
    #[comptime] mtw: usize,
    #[comptime] frags: usize,
    #[comptime] reverse: bool,
    #[comptime] threads: usize,
) {
    let ks = comptime!(rt + PAD);
    let cs = comptime!(dt + PAD);
    let n = ops.n;
    let nblocks = (n + chunk - 1) / chunk;
    let t0 = blk * chunk;
    let mut len = n - t0;
    if len > chunk {
        len = chunk;
    }
    let ab = (blk % 2) * comptime!(chunk * (rt + PAD));
    let cb = (blk % 2) * comptime!(chunk * (dt + PAD));

    // Stage the key-decayed B (row i by lambda^(len-1-i)) and C in this chunk's buffers;
    // hand out the state this chunk starts from and decay it by lambda^len.
    put_scaled_v::<F, N>(rb, sbk, ab, pw, len, len, true, ks, chunk, rt, threads);
    put_v::<F, N>(rc, sc, cb, cs, chunk, dt, threads);
    let whole = Pair::<f32>::new(pw[len]);
    let hb = at.h_base + blk * dkp * at.dcp;
    // With `stage_h`, H goes out through a shared tile (double-buffered, pair row stride
    // `(dt + PAD) / 2`), each warp then storing whole 128-byte rows; else straight from the
    // accumulators (8 rows of 16 bytes per warp store).
    let sp = comptime!((dt + PAD) / 2);
    let hoff = (blk % 2) * comptime!(rt * (dt + PAD) / 2);
    #[unroll]
    for i in 0..frags {
        let row = at.wrow + state_row(i, at.g, tiles);
        let col = at.wcol + state_col(i, at.tq, tiles);
        if stage_h {
            sh[hoff + row * sp + col / 2] = Pair::<F>::cast_from(acc[i]);
        } else {
            h[(hb + row * at.dcp + col) / 2] = Pair::<F>::cast_from(acc[i]);
        }
        acc[i] = acc[i] * whole;
    }
    sync_cube();
    if stage_h {
        let wp = comptime!(dt / 2);
        let tid = UNIT_POS_X as usize;
        #[unroll]
        for r in 0..rt * dt / 2 / threads {
            let e = tid + r * threads;
            let row = e / wp;
            let cp = e % wp;
            h[(hb + row * at.dcp) / 2 + cp] = sh[hoff + row * sp + cp];
        }
    }

    if next < nblocks {
        fetch_states_chunk::<F, N>(
            b,
            c,
            ops,
            next * chunk,
            at.r0,
            at.c0,
            rb,
            rc,
            chunk,
            rt,
            dt,
            reverse,
            threads,
        );
    }

    // S += (decayed B)^T C, 16 tokens at a time: A = B^T (16 state rows x 16 tokens, for
    // each of this warp's row tiles), B = C (16 tokens x 8 columns), by `ldmatrix`.
    #[unroll]
    for kk in 0..chunk / MK {
        #[unroll]
        for tp in 0..tiles / 2 {
            let fb = frag_b2::<F>(sc, cb, kk * MK, at.wcol + tp * 2 * MN, cs, false);
            #[unroll]
            for mi in 0..mtw {
                let fa = frag_a::<F>(sbk, ab, at.wrow + mi * MM, kk * MK, ks, true);
                let ai = 2 * (mi * tiles + 2 * tp);
                mma_half::<F>(&fa, &fb, 0usize, acc, ai);
                mma_half::<F>(&fa, &fb, 1usize, acc, ai + 2);
            }
        }
    }
}

/// The state recurrence with the state in registers: one cube of `warps` warps per (`rt`
/// state rows from `CUBE_POS_Y * rt`, `dt` state columns, batch x head). The warps split the
/// columns into `col_groups` groups of `wdt = dt / col_groups` and the rows into
/// `warps / col_groups` groups (whole 16-row `mma` tiles each). Writes `h[bh][chunk]`
/// (`dkp x dcp`, row-major) before each chunk's update and the final state to `out`'s rows
/// `n..`, exactly as `chunk_states_kernel` does.
///
/// Lane `l` of warp `w` (row group `w % row warps`, column group `w / row warps`) holds, for each
/// of its 16-row tiles `m` and 8-column tiles `t`, rows `wrow + 16 m + l / 4` and `+ 8`, columns
/// `wcol + 8 t + 2 (l % 4)` and `+ 1` (the `mma` accumulator layout), as `acc[2 (m tiles + t)]`
/// and `acc[2 (m tiles + t) + 1]`.
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
pub(crate) fn chunk_states_mma_kernel<F: Float, N: Size>(
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    h: &mut Tensor<Pair<F>>,
    out: &mut Tensor<F>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] rt: usize,
    #[comptime] dt: usize,
    #[comptime] warps: usize,
    #[comptime] col_groups: usize,
    #[comptime] stage_h: bool,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[define(F)] _dtype: StorageType,
) {
    let threads = comptime!(warps * 32);
    let row_warps = comptime!(warps / col_groups);
    let tiles = comptime!(dt / col_groups / MN);
    let mtw = comptime!(rt / row_warps / MM);
    let frags = comptime!(2 * (rt / row_warps / MM) * (dt / col_groups / MN));
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let warp = tid / 32;
    let wrow = (warp % row_warps) * comptime!(rt / row_warps);
    let wcol = (warp / row_warps) * comptime!(dt / col_groups);
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
    let h_base = bh * nblocks * dkp * dcp + r0 * dcp + c0;

    let bsz = comptime!(chunk * (rt + PAD));
    let csz = comptime!(chunk * (dt + PAD));
    let mut sbk = SharedMemory::<F>::new_aligned(2 * bsz, 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(2 * csz, 32usize);
    let sh_len = comptime!(if stage_h { rt * (dt + PAD) } else { 2 });
    let mut sh = SharedMemory::<Pair<F>>::new_aligned(sh_len, 32usize);
    let mut pw = SharedMemory::<f32>::new(chunk + 1);
    decay_powers(&mut pw, sv, chunk, threads);

    // The initial state, straight into the accumulators.
    let mut acc = Array::<Pair<f32>>::new(frags);
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(sv);
    }
    let s_base = bi * state.stride(0) + hi * state.stride(1);
    #[unroll]
    for i in 0..frags {
        let row = r0 + wrow + state_row(i, g, tiles);
        let col = c0 + wcol + state_col(i, tq, tiles);
        let mut v = Pair::<f32>::new(0.0);
        if has_state {
            v = initial_pair::<F>(state, s_base, row, col, da, dc, scale, transpose_state);
        }
        acc[i] = v;
    }

    // Each chunk's operands arrive in registers one chunk ahead, under the previous chunk's
    // update (two chunks ahead, two register sets in turn, measured no faster on the H200).
    let nv = N::value();
    let mut rb = Array::<Vector<F, N>>::new(comptime!(chunk * rt / (threads * nv)));
    let mut rc = Array::<Vector<F, N>>::new(comptime!(chunk * dt / (threads * nv)));
    fetch_states_chunk::<F, N>(
        b, c, &ops, 0, r0, c0, &mut rb, &mut rc, chunk, rt, dt, reverse, threads,
    );
    sync_cube();
    let at = StatesStep {
        h_base,
        dcp,
        r0,
        c0,
        wrow,
        wcol,
        g,
        tq,
    };
    for blk in 0..nblocks {
        states_step::<F, N>(
            b,
            c,
            &ops,
            h,
            &mut acc,
            &mut rb,
            &mut rc,
            &mut sbk,
            &mut sc,
            &mut sh,
            &pw,
            blk,
            blk + 1,
            &at,
            stage_h,
            chunk,
            dkp,
            rt,
            dt,
            tiles,
            mtw,
            frags,
            reverse,
            threads,
        );
    }

    // The final state, from the accumulators.
    let mut fscale = 1.0f32;
    if state_exp0 {
        fscale = f32::exp(-sv);
    }
    let o_base = bi * out.stride(0) + hi * out.stride(1) + n * out.stride(2);
    #[unroll]
    for i in 0..frags {
        let row = r0 + wrow + state_row(i, g, tiles);
        let col = c0 + wcol + state_col(i, tq, tiles);
        let v = acc[i];
        #[unroll]
        for j in 0..2usize {
            if row < da && col + j < dc {
                out[o_base + row * out.stride(2) + (col + j) * out.stride(3)] =
                    F::cast_from(v[j] * fscale);
            }
        }
    }
}

/// [`stage_output_chunk`] by `cp.async`, into the shared tiles at the given bases,
/// by the `threads` units numbered `tid` that compute this chunk: no staging registers, so the
/// copies of one chunk run under another chunk's products.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_output_chunk_async<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    h: &Tensor<Vector<F, N>>,
    oc: &OutputChunk,
    sa: &mut SharedMemory<F>,
    sb: &mut SharedMemory<F>,
    sc: &mut SharedMemory<F>,
    sh: &mut SharedMemory<F>,
    base_k: usize,
    base_c: usize,
    base_h: usize,
    c0: usize,
    tid: usize,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
    #[comptime] h_t: bool,
    #[comptime] threads: usize,
) {
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    copy_tile_async::<F, N>(
        a, oc.a_base, oc.a_st, oc.a_sd, oc.n, oc.da, oc.t0, oc.len, 0, sa, base_k, tid, ks, chunk,
        dkp, reverse, threads,
    );
    copy_tile_async::<F, N>(
        b, oc.b_base, oc.b_st, oc.b_sd, oc.n, oc.da, oc.t0, oc.len, 0, sb, base_k, tid, ks, chunk,
        dkp, reverse, threads,
    );
    copy_tile_async::<F, N>(
        c, oc.c_base, oc.c_st, oc.c_sd, oc.n, oc.dc, oc.t0, oc.len, c0, sc, base_c, tid, cs, chunk,
        dt, reverse, threads,
    );
    if h_t {
        // Rows c0.. of the other scan's H are this scan's columns; zero past its rows.
        copy_tile_async::<F, N>(
            h,
            oc.h_block,
            oc.h_cols,
            1,
            oc.h_rows,
            dkp,
            c0,
            oc.h_rows - c0,
            0,
            sh,
            base_h,
            tid,
            ks,
            dt,
            dkp,
            false,
            threads,
        );
    } else {
        copy_tile_async::<F, N>(
            h, oc.h_block, oc.h_cols, 1, oc.h_rows, oc.h_cols, 0, oc.h_rows, c0, sh, base_h, tid,
            cs, dkp, dt, false, threads,
        );
    }
}

/// Chunks' outputs with the scores and outputs in registers: one cube per (`dt` output columns,
/// `cpc` consecutive chunks, batch x head) of `cpc x chunk / 16 x dt / 64` warps; within its
/// chunk's `chunk / 16 x dt / 64` warps, warp `w` owns the 16 rows `16 (w % (chunk / 16))..` and
/// the 64 columns `64 (w / (chunk / 16))..` of the tile.
/// `O = lambda^(i+1) (A H) + mask(A B^T lambda^(i-j)) C`, the scores' accumulators becoming the
/// second product's `A` fragments without leaving the registers. With `copy_async` the chunks
/// are staged by `cp.async` (no staging registers; with `cpc = 2` the cube's 512 units cap the
/// registers at 128, so one chunk's copies run under the other's products), else through
/// registers (`cpc = 1`). Same contract as `split`'s `chunk_output_kernel` (`h_t`: `H`
/// is the transposed scan's, whose states were written with `hdt`-column tiles).
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)]
#[cube(launch_unchecked)]
pub(crate) fn chunk_output_mma_kernel<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    s: &Tensor<F>,
    h: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Pair<F>>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] hdt: usize,
    #[comptime] cpc: usize,
    #[comptime] async_copy: bool,
    #[comptime] reverse: bool,
    #[comptime] h_t: bool,
    #[define(F)] _dtype: StorageType,
) {
    let mtiles = comptime!(chunk / MM);
    let chunk_threads = comptime!(chunk / MM * (dt / 64) * 32);
    let threads = comptime!(cpc * chunk / MM * (dt / 64) * 32);
    let wtiles = comptime!(64 / MN);
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let sub = tid / chunk_threads;
    let warp = (tid % chunk_threads) / 32;
    let mt = warp % mtiles;
    let wcol = (warp / mtiles) * 64;
    let n = a.shape(2);
    let dc = c.shape(3);
    let heads = a.shape(1);
    let bh = CUBE_POS_Z as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let blk = CUBE_POS_Y as usize * cpc + sub;
    let c0 = CUBE_POS_X as usize * dt;
    let t0 = blk * chunk;
    // 0 for a cube's second chunk past the sequence: it stages nothing and stores nothing.
    let mut len = 0usize;
    if t0 < n {
        len = n - t0;
        if len > chunk {
            len = chunk;
        }
    }
    let sv = f32::cast_from(s[hi * s.stride(0)]);

    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    // H as `dkp x dt` (row stride `cs`), or with `h_t` as its transpose `dt x dkp` (stride `ks`).
    let sh_len = comptime!(if h_t {
        dt * (dkp + PAD)
    } else {
        dkp * (dt + PAD)
    });
    let base_k = sub * comptime!(chunk * (dkp + PAD));
    let base_c = sub * comptime!(chunk * (dt + PAD));
    let base_h = sub * sh_len;
    let mut sa = SharedMemory::<F>::new_aligned(comptime!(cpc * chunk * ks), 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(comptime!(cpc * chunk * ks), 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(comptime!(cpc * chunk * cs), 32usize);
    let mut sh = SharedMemory::<F>::new_aligned(comptime!(cpc * sh_len), 32usize);
    let mut pw = SharedMemory::<f32>::new(chunk + 1);

    if async_copy {
        let barrier = Barrier::shared(threads as u32, tid == 0);
        if len > 0 {
            let oc = output_chunk::<F, N>(a, b, c, bh, blk, chunk, hdt, h_t);
            stage_output_chunk_async::<F, N>(
                a,
                b,
                c,
                h,
                &oc,
                &mut sa,
                &mut sb,
                &mut sc,
                &mut sh,
                base_k,
                base_c,
                base_h,
                c0,
                tid % chunk_threads,
                chunk,
                dkp,
                dt,
                reverse,
                h_t,
                chunk_threads,
            );
        }
        decay_powers(&mut pw, sv, chunk, threads);
        barrier.commit_copy_async();
        barrier.arrive_and_wait();
    } else {
        decay_powers(&mut pw, sv, chunk, threads);
        let nv = N::value();
        let mut ra = Array::<Vector<F, N>>::new(comptime!(chunk * dkp / (threads * nv)));
        stage_output_chunk::<F, N>(
            a, b, c, h, &mut sa, &mut sb, &mut sc, &mut sh, &mut ra, bh, blk, c0, chunk, dkp, dt,
            hdt, reverse, h_t, threads,
        );
        sync_cube();
    }

    let ktiles = comptime!(chunk / MN);
    let row_lo = mt * MM + g;

    // Scores of this warp's 16 rows against the keys up to its diagonal tile, masked and decayed
    // by lambda^(i-j) in the accumulators.
    let mut sx = Array::<Pair<f32>>::new(comptime!(2 * chunk / MN));
    #[unroll]
    for i in 0..2 * ktiles {
        sx[i] = Pair::<f32>::new(0.0);
    }
    #[unroll]
    for kk in 0..dkp / MK {
        let fa = frag_a::<F>(&sa, base_k, mt * MM, kk * MK, ks, false);
        #[unroll]
        for tp in 0..ktiles / 2 {
            if tp <= mt {
                let fb = frag_b2::<F>(&sb, base_k, kk * MK, tp * 2 * MN, ks, true);
                mma_half::<F>(&fa, &fb, 0usize, &mut sx, 4 * tp);
                mma_half::<F>(&fa, &fb, 1usize, &mut sx, 4 * tp + 2);
            }
        }
    }
    // P = mask and decay, rounded: the accumulator pairs of key tiles 2k and 2k+1 are the `A`
    // fragment of the 16 keys 16k.. (rows g, g+8; keys 2tq.., 2tq+8..).
    let mut fp = Array::<Pair<F>>::new(comptime!(2 * chunk / MN));
    #[unroll]
    for t in 0..ktiles {
        #[unroll]
        for half in 0..2usize {
            let i = row_lo + half * 8;
            let mut v = Pair::<f32>::new(0.0);
            #[unroll]
            for j in 0..2usize {
                let key = t * MN + 2 * tq + j;
                if key <= i {
                    v[j] = sx[2 * t + half][j] * pw[i - key];
                }
            }
            fp[2 * t + half] = Pair::<F>::cast_from(v);
        }
    }

    // O = A H, each row decayed by lambda^(i+1); then O += P C.
    let mut acc = Array::<Pair<f32>>::new(comptime!(2 * wtiles));
    #[unroll]
    for i in 0..2 * wtiles {
        acc[i] = Pair::<f32>::new(0.0);
    }
    #[unroll]
    for kk in 0..dkp / MK {
        let fa = frag_a::<F>(&sa, base_k, mt * MM, kk * MK, ks, false);
        #[unroll]
        for tp in 0..wtiles / 2 {
            let n0 = wcol + tp * 2 * MN;
            let fb = if h_t {
                frag_b2::<F>(&sh, base_h, kk * MK, n0, ks, true)
            } else {
                frag_b2::<F>(&sh, base_h, kk * MK, n0, cs, false)
            };
            mma_half::<F>(&fa, &fb, 0usize, &mut acc, 4 * tp);
            mma_half::<F>(&fa, &fb, 1usize, &mut acc, 4 * tp + 2);
        }
    }
    let w_lo = Pair::<f32>::new(pw[row_lo + 1]);
    let w_hi = Pair::<f32>::new(pw[row_lo + 9]);
    #[unroll]
    for t in 0..wtiles {
        acc[2 * t] = acc[2 * t] * w_lo;
        acc[2 * t + 1] = acc[2 * t + 1] * w_hi;
    }
    #[unroll]
    for kv in 0..chunk / MK {
        if kv <= mt {
            let mut fa = Array::<Pair<F>>::new(4usize);
            #[unroll]
            for q in 0..4usize {
                fa[q] = fp[4 * kv + q];
            }
            #[unroll]
            for tp in 0..wtiles / 2 {
                let fb = frag_b2::<F>(&sc, base_c, kv * MK, wcol + tp * 2 * MN, cs, false);
                mma_half::<F>(&fa, &fb, 0usize, &mut acc, 4 * tp);
                mma_half::<F>(&fa, &fb, 1usize, &mut acc, 4 * tp + 2);
            }
        }
    }

    // Rows inside the sequence, columns inside `dc`: one pair per store straight from the
    // accumulators (16 bytes on each of 8 rows per warp store; staging them through shared
    // memory for whole 128-byte rows measured 3-13% slower on the H200).
    let o_base = bi * out.stride(0) + hi * out.stride(1);
    let o_st = out.stride(2);
    #[unroll]
    for t in 0..wtiles {
        #[unroll]
        for half in 0..2usize {
            let i = row_lo + half * 8;
            let col = c0 + wcol + t * MN + 2 * tq;
            if i < len && col < dc {
                let tt = t0 + i;
                let p = if reverse { n - 1 - tt } else { tt };
                out[(o_base + p * o_st + col) / 2] = Pair::<F>::cast_from(acc[2 * t + half]);
            }
        }
    }
}

/// Launches `chunk_states_mma_kernel` with states cubes `geo` over `[b, c, s, state, h, out]`
/// (the kernel's arguments, in order) for `bh` batch x heads, `dc` state columns, `chunk`-token
/// chunks and a contracted dim padded to `dkp`; writes `h` and the final state as
/// `chunk_states_kernel` does.
///
/// # Safety
/// As for `split::launch_states`, with `nv >= 2` dividing every stride of `h`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_states<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [b, c, s, state, h, out]: [CubeTensor<R>; 6],
    [bh, dc]: [usize; 2],
    nv: usize,
    geo: StatesGeometry,
    chunk: usize,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = b.dtype;
    super::usage::record("chunk_states_mma_kernel (tensor cores)");
    chunk_states_mma_kernel::launch_unchecked::<R>(
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
        chunk,
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
}

/// Launches `chunk_output_mma_kernel` with `dt` output columns per cube over
/// `[a, b, c, s, h, out]` (the kernel's arguments, in order) for `nblocks` chunks of `chunk`
/// tokens, `bh` batch x heads, `dc` output columns and a contracted dim padded to `dkp`; `H`
/// written with `hdt`-column tiles, transposed with `h_t`. One chunk per cube, staged through
/// registers (the kernel's `cp.async` staging, one or two chunks per cube, runs no faster and
/// no default takes it).
///
/// # Safety
/// As for `split::launch_output`, with `nv >= 2`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_output<R: CubeRuntime>(
    client: &ComputeClient<R>,
    [a, b, c, s, h, out]: [CubeTensor<R>; 6],
    [nblocks, bh, dc]: [usize; 3],
    nv: usize,
    [chunk, dt, hdt]: [usize; 3],
    dkp: usize,
    reverse: bool,
    h_t: bool,
) {
    let dtype = a.dtype;
    let (cpc, async_copy) = (1, false);
    super::usage::record("chunk_output_mma_kernel (tensor cores)");
    chunk_output_mma_kernel::launch_unchecked::<R>(
        client,
        CubeCount::Static(
            dc.div_ceil(dt) as u32,
            nblocks.div_ceil(cpc) as u32,
            bh as u32,
        ),
        CubeDim::new_1d((cpc * chunk / 16 * (dt / 64) * 32) as u32),
        nv,
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        s.into_tensor_arg(),
        h.into_tensor_arg(),
        out.into_tensor_arg(),
        chunk,
        dkp,
        dt,
        hdt,
        cpc,
        async_copy,
        reverse,
        h_t,
        dtype.into(),
    );
}
