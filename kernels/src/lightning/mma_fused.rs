//! The whole scan in one launch with the state in registers, for CUDA: no `H` buffer.
//!
//! The split pair ([`super::mma`]) writes every chunk's state `H` (input dtype) and reads it back:
//! at B=4, H=32, D=128 that is as many bytes as `q`, `k`, `v` and `o` together. Here one cube of
//! 16 warps per (128 state columns, batch x head) walks the chunks in order, as Lightning
//! Attention-2's forward does, and keeps the f32 state in its warps' `mma` accumulators; each
//! chunk's inputs arrive by `cp.async` while the previous chunk computes, and the state each
//! chunk starts from goes through a double-buffered shared tile (rounded to the input dtype, as
//! the split pair's `H`) to the products that read it. Per chunk:
//!
//! ```text
//! P   = mask(A B^T lambda^(i-j)), each 16 x 16 tile once      into shared memory
//! O   = lambda^(i+1) (A H)                                   warp (16 rows, 32 columns) of O
//! S  <- lambda^len S + (lambda^(len-1-i) B)^T C              warp (32 rows, 32 columns at D=128) of S
//! H   = S rounded, into the other shared buffer;  barrier;  O += P C;  barrier (next chunk landed)
//! ```
//!
//! The chain per chunk is then the whole chunk's products rather than the state update alone,
//! so it pays where the batch x heads fill the device (one cube per SM) and the `H` bytes would
//! dominate; `split::fused_geometry` decides. Same contract as the split pair (`out` packs the
//! outputs and the final state). On the H200 its forward and gradient scans match the f32
//! kernel within 3.0e-3 (`lightning --check-kernels`), and at B=4, H=32, D=128 it took the
//! forward from 1.02 to 0.73 ms at 8K and from 7.2 to 5.1 ms at 64K.

use cubecl::{prelude::barrier::Barrier, prelude::*};

use super::mma::{
    copy_tile_async, frag_a, frag_b2, initial_pair, mma_half, state_col, state_row, Pair, MK, MM,
    MN,
};
use super::split::{output_chunk, OutputChunk};
use super::tiled::{decay_powers, PAD};

/// Output columns per warp (its rows: one 16-row `mma` tile).
const OCOLS: usize = 32;
/// State rows per warp (two 16-row `mma` tiles, so each `B` fragment of the update serves two
/// products).
const SROWS: usize = 32;

/// Scales the `A` fragment of 16 state rows x 16 tokens (`kk * 16..` of the chunk) in place by
/// each token's weight `lambda^(len-1-i)` (0 past `len`): registers 0-1 hold tokens `2 tq` and
/// `+ 1`, registers 2-3 tokens `2 tq + 8` and `+ 9`.
#[cube]
fn decay_tokens<F: Float>(
    fa: &mut Array<Pair<F>>,
    pw: &SharedMemory<f32>,
    kk: usize,
    tq: usize,
    len: usize,
) {
    #[unroll]
    for hi in 0..2usize {
        let mut w = Pair::<f32>::new(0.0);
        #[unroll]
        for j in 0..2usize {
            let t = kk * MK + 2 * tq + 8 * hi + j;
            if t < len {
                w[j] = pw[len - 1 - t];
            }
        }
        #[unroll]
        for r in 0..2usize {
            let at = 2 * hi + r;
            fa[at] = Pair::<F>::cast_from(Pair::<f32>::cast_from(fa[at]) * w);
        }
    }
}

/// The fused scan: one cube of `4 * dt / 32` warps per (`dt` columns from `CUBE_POS_X * dt`,
/// batch x head `CUBE_POS_Z`), two barriers per chunk.
///
/// - Before the first barrier each warp computes its share of three independent products:
///   the 16 x 16 score tiles (row tile `w / groups`, key tiles `w % groups`, `+ groups`, ..., on
///   and below the diagonal; `groups = dt / 32`), masked, decayed and rounded into the shared `P`
///   tile, so each score is computed once; `A H` for its output rows `16 (w / groups)..` and
///   columns `32 (w % groups)..`; and the state update of its 32 x `scols` block of the state,
///   rows `32 (w % (dkp / 32))..`, whose rounded copy goes to the other `H` buffer.
/// - After it, `O += P C` from the shared `P`, then the stores and the barrier that also waits
///   for the next chunk's copies.
///
/// The four row tiles of a chunk, which differ in work along the diagonal, share each SM
/// sub-partition (warp `w` runs on sub-partition `w % 4`). In the state accumulators lane `l`
/// holds, for each 16-row tile `m` and 8-column tile `t` of the warp's block, rows `+ l / 4` and
/// `+ l / 4 + 8`, columns `2 (l % 4)` and `+ 1` (the `mma` layout).
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
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[define(F)] _dtype: StorageType,
) {
    let groups = comptime!(dt / OCOLS);
    let warps = comptime!(chunk / MM * groups);
    let threads = comptime!(warps * 32);
    let row_warps = comptime!(dkp / SROWS);
    let scols = comptime!(dt / (warps / row_warps));
    let stiles = comptime!(scols / MN);
    let otiles = comptime!(OCOLS / MN);
    let ptiles = comptime!(chunk / MK);
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let warp = tid / 32;
    let mt = warp / groups;
    let wcol = (warp % groups) * OCOLS;
    let srow = (warp % row_warps) * SROWS;
    let scol = (warp / row_warps) * scols;
    let bh = CUBE_POS_Z as usize;
    let c0 = CUBE_POS_X as usize * dt;
    let heads = a.shape(1);
    let bi = bh / heads;
    let hi = bh % heads;
    let oc = output_chunk::<F, N>(a, b, c, bh, 0, chunk, dt, false);
    let (n, da, dc) = (oc.n, oc.da, oc.dc);
    let nblocks = (n + chunk - 1) / chunk;
    let sv = f32::cast_from(s[hi * s.stride(0)]);

    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let kbuf = comptime!(chunk * (dkp + PAD));
    let cbuf = comptime!(chunk * (dt + PAD));
    let hbuf = comptime!(dkp * (dt + PAD));
    let mut sa = SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(comptime!(2 * cbuf), 32usize);
    let mut sh = SharedMemory::<F>::new_aligned(comptime!(2 * hbuf), 32usize);
    let mut sp = SharedMemory::<F>::new_aligned(comptime!(chunk * (chunk + PAD)), 32usize);
    let mut pw = SharedMemory::<f32>::new(chunk + 1);
    let barrier = Barrier::shared(threads as u32, tid == 0);

    if nblocks > 0 {
        stage_chunk::<F, N>(
            a, b, c, &oc, 0, c0, &mut sa, &mut sb, &mut sc, 0, tid, chunk, dkp, dt, reverse,
            threads,
        );
    }
    barrier.commit_copy_async();
    decay_powers(&mut pw, sv, chunk, threads);

    // The initial state, straight into the accumulators, and its rounded copy into H buffer 0.
    let sfrags = comptime!(2 * (SROWS / MM) * stiles);
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
    put_state::<F>(&acc_s, &mut sh, 0, srow, scol, g, tq, cs, stiles);
    barrier.arrive_and_wait();

    let o_base = bi * out.stride(0) + hi * out.stride(1);
    let o_st = out.stride(2);
    let row_lo = mt * MM + g;
    for blk in 0..nblocks {
        let cur = blk % 2;
        let t0 = blk * chunk;
        let mut len = n - t0;
        if len > chunk {
            len = chunk;
        }
        if blk + 1 < nblocks {
            stage_chunk::<F, N>(
                a,
                b,
                c,
                &oc,
                blk + 1,
                c0,
                &mut sa,
                &mut sb,
                &mut sc,
                1 - cur,
                tid,
                chunk,
                dkp,
                dt,
                reverse,
                threads,
            );
        }
        barrier.commit_copy_async();
        let ab = cur * kbuf;
        let cb = cur * cbuf;
        let hb = cur * hbuf;

        // The score tiles of this warp, masked and decayed by lambda^(i-j), into P.
        #[unroll]
        for r in 0..(ptiles + groups - 1) / groups {
            let kv = warp % groups + r * groups;
            if kv <= mt {
                let mut sx = Array::<Pair<f32>>::new(4usize);
                #[unroll]
                for i in 0..4usize {
                    sx[i] = Pair::<f32>::new(0.0);
                }
                #[unroll]
                for kk in 0..dkp / MK {
                    let fa = frag_a::<F>(&sa, ab, mt * MM, kk * MK, ks, false);
                    let fb = frag_b2::<F>(&sb, ab, kk * MK, kv * MK, ks, true);
                    mma_half::<F>(&fa, &fb, 0usize, &mut sx, 0usize);
                    mma_half::<F>(&fa, &fb, 1usize, &mut sx, 2usize);
                }
                #[unroll]
                for q in 0..4usize {
                    let i = row_lo + (q % 2) * 8;
                    let key = kv * MK + (q / 2) * MN + 2 * tq;
                    let mut v = Pair::<f32>::new(0.0);
                    #[unroll]
                    for j in 0..2usize {
                        if key + j <= i {
                            v[j] = sx[q][j] * pw[i - key - j];
                        }
                    }
                    let off = i * ps + key;
                    let mut dv = sp
                        .slice_mut(off, off + 2)
                        .into_vectorized()
                        .with_vector_size::<Const<2>>();
                    dv[0] = Pair::<F>::cast_from(v);
                }
            }
        }

        // A H for this warp's 16 rows and 32 columns, each row decayed by lambda^(i+1).
        let mut acc = Array::<Pair<f32>>::new(comptime!(2 * otiles));
        #[unroll]
        for i in 0..2 * otiles {
            acc[i] = Pair::<f32>::new(0.0);
        }
        #[unroll]
        for kk in 0..dkp / MK {
            let fa = frag_a::<F>(&sa, ab, mt * MM, kk * MK, ks, false);
            #[unroll]
            for tp in 0..otiles / 2 {
                let fb = frag_b2::<F>(&sh, hb, kk * MK, wcol + tp * 2 * MN, cs, false);
                mma_half::<F>(&fa, &fb, 0usize, &mut acc, 4 * tp);
                mma_half::<F>(&fa, &fb, 1usize, &mut acc, 4 * tp + 2);
            }
        }
        let w_lo = Pair::<f32>::new(pw[row_lo + 1]);
        let w_hi = Pair::<f32>::new(pw[row_lo + 9]);
        #[unroll]
        for t in 0..otiles {
            acc[2 * t] = acc[2 * t] * w_lo;
            acc[2 * t + 1] = acc[2 * t + 1] * w_hi;
        }

        // S <- lambda^len S + (decayed B)^T C, 16 tokens at a time; its rounded copy is the next
        // chunk's H.
        let whole = Pair::<f32>::new(pw[len]);
        #[unroll]
        for i in 0..sfrags {
            acc_s[i] = acc_s[i] * whole;
        }
        #[unroll]
        for kk in 0..chunk / MK {
            let mut fa0 = frag_a::<F>(&sb, ab, srow, kk * MK, ks, true);
            let mut fa1 = frag_a::<F>(&sb, ab, srow + MM, kk * MK, ks, true);
            decay_tokens::<F>(&mut fa0, &pw, kk, tq, len);
            decay_tokens::<F>(&mut fa1, &pw, kk, tq, len);
            #[unroll]
            for tp in 0..stiles / 2 {
                let fb = frag_b2::<F>(&sc, cb, kk * MK, scol + tp * 2 * MN, cs, false);
                mma_half::<F>(&fa0, &fb, 0usize, &mut acc_s, 4 * tp);
                mma_half::<F>(&fa0, &fb, 1usize, &mut acc_s, 4 * tp + 2);
                let hi_tile = comptime!(2 * stiles);
                mma_half::<F>(&fa1, &fb, 0usize, &mut acc_s, hi_tile + 4 * tp);
                mma_half::<F>(&fa1, &fb, 1usize, &mut acc_s, hi_tile + 4 * tp + 2);
            }
        }
        if blk + 1 < nblocks {
            put_state::<F>(
                &acc_s,
                &mut sh,
                (1 - cur) * hbuf,
                srow,
                scol,
                g,
                tq,
                cs,
                stiles,
            );
        }
        sync_cube();

        // O += P C over the key tiles up to the diagonal, then the rows inside the sequence.
        #[unroll]
        for kv in 0..ptiles {
            if kv <= mt {
                let fp = frag_a::<F>(&sp, 0, mt * MM, kv * MK, ps, false);
                #[unroll]
                for tp in 0..otiles / 2 {
                    let fb = frag_b2::<F>(&sc, cb, kv * MK, wcol + tp * 2 * MN, cs, false);
                    mma_half::<F>(&fp, &fb, 0usize, &mut acc, 4 * tp);
                    mma_half::<F>(&fp, &fb, 1usize, &mut acc, 4 * tp + 2);
                }
            }
        }
        #[unroll]
        for t in 0..otiles {
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
        barrier.arrive_and_wait();
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
            out[(o_base + (n + row) * o_st + col) / 2] = Pair::<F>::cast_from(acc_s[i] * fs);
        }
    }
}

/// Chunk `blk`'s `A`, `B` (`chunk x dkp`, row stride `dkp + PAD`) and `C` (`chunk x dt` from
/// column `c0`, stride `dt + PAD`) into shared buffer `buf` by `cp.async`, zero past the
/// sequence and the head dims; the caller commits.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    oc: &OutputChunk,
    blk: usize,
    c0: usize,
    sa: &mut SharedMemory<F>,
    sb: &mut SharedMemory<F>,
    sc: &mut SharedMemory<F>,
    buf: usize,
    tid: usize,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
    #[comptime] threads: usize,
) {
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let t0 = blk * chunk;
    let mut len = oc.n - t0;
    if len > chunk {
        len = chunk;
    }
    let kb = buf * comptime!(chunk * (dkp + PAD));
    let cb = buf * comptime!(chunk * (dt + PAD));
    copy_tile_async::<F, N>(
        a, oc.a_base, oc.a_st, oc.a_sd, oc.n, oc.da, t0, len, 0, sa, kb, tid, ks, chunk, dkp,
        reverse, threads,
    );
    copy_tile_async::<F, N>(
        b, oc.b_base, oc.b_st, oc.b_sd, oc.n, oc.da, t0, len, 0, sb, kb, tid, ks, chunk, dkp,
        reverse, threads,
    );
    copy_tile_async::<F, N>(
        c, oc.c_base, oc.c_st, oc.c_sd, oc.n, oc.dc, t0, len, c0, sc, cb, tid, cs, chunk, dt,
        reverse, threads,
    );
}

/// The warp's state accumulators, rounded, into the shared `H` tile at `sh[base..]` (row stride
/// `stride`), one pair per store.
#[cube]
#[allow(clippy::too_many_arguments)]
fn put_state<F: Float>(
    acc_s: &Array<Pair<f32>>,
    sh: &mut SharedMemory<F>,
    base: usize,
    srow: usize,
    scol: usize,
    g: usize,
    tq: usize,
    #[comptime] stride: usize,
    #[comptime] stiles: usize,
) {
    #[unroll]
    for i in 0..2 * (SROWS / MM) * stiles {
        let row = srow + state_row(i, g, stiles);
        let col = scol + state_col(i, tq, stiles);
        let off = base + row * stride + col;
        let mut dv = sh
            .slice_mut(off, off + 2)
            .into_vectorized()
            .with_vector_size::<Const<2>>();
        dv[0] = Pair::<F>::cast_from(acc_s[i]);
    }
}
