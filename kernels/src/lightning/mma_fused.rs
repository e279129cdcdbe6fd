//! The whole scan in one launch with the state in registers, for CUDA: no `H` buffer.
//!
//! The split pair ([`super::mma`]) writes every chunk's state `H` (input dtype) and reads it back:
//! at B=4, H=32, D=128 that is as many bytes as `q`, `k`, `v` and `o` together. Here one cube
//! (16 warps per 128 state columns at D=128; `chunk / 16 * dt / 32` warps per `dt` columns in
//! general) per batch x head walks the chunks in order, as Lightning
//! Attention-2's forward does, and keeps the f32 state in its warps' `mma` accumulators; each
//! chunk's inputs arrive by `cp.async` while the previous chunk computes, and the state each
//! chunk starts from goes through a double-buffered shared tile (rounded to the input dtype, as
//! the split pair's `H`) to the products that read it. Per chunk:
//!
//! ```text
//! P   = mask(A B^T lambda^(i-j)), each 16 x 16 tile once      into shared memory
//! O   = lambda^(i+1) (A H)                                   warp (16 rows, 32 columns) of O
//! B'  = lambda^(len-1-i) B                                   into shared memory, once
//! barrier;  O += P C, store O
//! S  <- lambda^len S + B'^T C                                warp (32 rows, 32 columns at D=128) of S
//! H   = S rounded, into the other shared buffer;  barrier (next chunk landed)
//! ```
//!
//! The chain per chunk is then the whole chunk's products rather than the state update alone,
//! so it pays where the batch x heads fill the device (one cube per SM) and the `H` bytes would
//! dominate; `split::fused_geometry` decides. Same contract as the split pair (`out` packs the
//! outputs and the final state). On the H200 its forward and gradient scans match the f32
//! kernel within 2.9e-3 at head dim 128 (`lightning --check-kernels`); at B=4, H=32, D=128 it
//! takes the forward to 0.51 ms at 8K and 4.0 ms at 64K (the split pair: 1.02 and 7.2), its
//! chunk step 589 instructions per warp (session 10; `kernels/README.md` has how).

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

/// Chunk rows of `src[base..]` (`rows x width`, row stride `width + PAD`) into `dst`, each
/// token's row times its weight `lambda^(len-1-i)` (0 past `len`), in f32 and rounded once: the
/// state update's decayed `B`, made once per chunk in whole vectors rather than per fragment.
#[cube]
#[allow(clippy::too_many_arguments)]
fn decay_rows<F: Float, N: Size>(
    src: &SharedMemory<F>,
    base: usize,
    dst: &mut SharedMemory<F>,
    pw: &SharedMemory<f32>,
    len: usize,
    tid: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] threads: usize,
) {
    let nv = N::value();
    let wv = comptime!(width / nv);
    let stride = comptime!(width + PAD);
    #[unroll]
    for r in 0..rows * wv / threads {
        let e = tid + r * threads;
        let i = e / wv;
        let off = i * stride + (e % wv) * nv;
        let mut w = 0.0f32;
        if i < len {
            w = pw[len - 1 - i];
        }
        let x = src
            .slice(base + off, base + off + nv)
            .into_vectorized()
            .with_vector_size::<N>()[0];
        let mut y = dst
            .slice_mut(off, off + nv)
            .into_vectorized()
            .with_vector_size::<N>();
        y[0] = Vector::<F, N>::cast_from(Vector::<f32, N>::cast_from(x) * Vector::<f32, N>::new(w));
    }
}

/// The kernel's tiling, fixed by the chunk, the contracted dim `dkp` and the cube's `dt`
/// columns; the kernel, [`chunk_step`] and the launcher's choice (`split::fused_geometry`) all
/// read it, so they cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tiling {
    chunk: usize,
    dkp: usize,
    dt: usize,
    /// Warps per 16-row tile of the chunk (one per 32 output columns), warps and units per cube.
    groups: usize,
    warps: usize,
    pub(crate) threads: usize,
    /// Warps along the state's rows, state columns per warp and their 8-column `mma` tiles.
    row_warps: usize,
    scols: usize,
    stiles: usize,
    /// 16-row tiles per chunk, score tiles on and below the diagonal, score tiles per warp.
    ptiles: usize,
    ntiles: usize,
    rtiles: usize,
    /// State accumulator pairs per lane.
    sfrags: usize,
}

impl Tiling {
    /// The tiling, if the kernel takes it: `dkp` a multiple of 32 up to 128 (32-row state
    /// blocks), whole 16-column state tiles per warp, whole `nv`-element vectors per unit when
    /// a chunk is staged (`nv >= 2`: `o` and the state go out in pairs).
    pub(crate) fn checked(chunk: usize, dkp: usize, dt: usize, nv: usize) -> Option<Self> {
        let warps = chunk / MM * (dt / OCOLS);
        let row_warps = dkp / SROWS;
        let fits = nv >= 2
            && dkp <= 128
            && dkp % SROWS == 0
            && warps % row_warps == 0
            && (dt / (warps / row_warps)) % 16 == 0
            && (chunk * dkp) % (warps * 32 * nv) == 0;
        fits.then(|| Self::new(chunk, dkp, dt))
    }

    /// The shared memory one cube takes with `elem`-byte inputs: the kernel's tiles
    /// (double-buffered `A`, `B`, `C` and `H`, the decayed `B` and `P`), the decay powers, and
    /// 64 bytes for the barrier and alignment.
    pub(crate) fn shared_bytes(&self, elem: usize) -> usize {
        let (c, dkp, dt) = (self.chunk, self.dkp, self.dt);
        let tiles = 2 * (2 * c * (dkp + PAD) + c * (dt + PAD) + dkp * (dt + PAD))
            + c * (dkp + PAD)
            + c * (c + PAD);
        elem * tiles + 4 * (c + 1) + 64
    }

    fn new(chunk: usize, dkp: usize, dt: usize) -> Self {
        let groups = dt / OCOLS;
        let warps = chunk / MM * groups;
        let row_warps = dkp / SROWS;
        let scols = dt / (warps / row_warps);
        let ptiles = chunk / MK;
        let ntiles = ptiles * (ptiles + 1) / 2;
        Self {
            chunk,
            dkp,
            dt,
            groups,
            warps,
            threads: warps * 32,
            row_warps,
            scols,
            stiles: scols / MN,
            ptiles,
            ntiles,
            rtiles: ntiles.div_ceil(warps),
            sfrags: 2 * (SROWS / MM) * (scols / MN),
        }
    }
}

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
    /// The warp's output rows (`16 mt..`) and columns (`wcol..`), and its block of the state.
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

/// The fused scan: one cube of `chunk / 16 * dt / 32` warps per (`dt` columns from
/// `CUBE_POS_X * dt`, batch x head `CUBE_POS_Z`), two barriers per chunk ([`chunk_step`]).
///
/// The chunks alternate between two sets of shared buffers; the walk takes them two at a time
/// so that each step knows its buffers at compile time, and each buffer's offset is a constant
/// in the loads' addresses. The lanes' mask and decay factors for their score tiles
/// (the same tiles in every chunk) are computed once, into registers.
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
    let tl = comptime!(Tiling::new(chunk, dkp, dt));
    let groups = comptime!(tl.groups);
    let row_warps = comptime!(tl.row_warps);
    let warps = comptime!(tl.warps);
    let threads = comptime!(tl.threads);
    let stiles = comptime!(tl.stiles);
    let ptiles = comptime!(tl.ptiles);
    let rtiles = comptime!(tl.rtiles);
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let warp = tid / 32;
    let mt = warp / groups;
    let wcol = (warp % groups) * OCOLS;
    let srow = (warp % row_warps) * SROWS;
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
    let kbuf = comptime!(chunk * (dkp + PAD));
    let cbuf = comptime!(chunk * (dt + PAD));
    let hbuf = comptime!(dkp * (dt + PAD));
    let mut sa = SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(comptime!(2 * cbuf), 32usize);
    let mut sh = SharedMemory::<F>::new_aligned(comptime!(2 * hbuf), 32usize);
    let mut sd = SharedMemory::<F>::new_aligned(kbuf, 32usize);
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
    put_state::<F>(&acc_s, &mut sh, h_pair, cs, stiles, comptime!(2 * hbuf));
    barrier.arrive_and_wait();

    // Score tiles `warp, warp + warps, ...` of the chunk's `ntiles` on and below the diagonal
    // (row tile m holds tiles m (m + 1) / 2 ..), spread so that the SM sub-partitions
    // (warp % 4) compute within one tile of each other; and each lane's mask and decay
    // lambda^(i-j) on them.
    let mut tiles = Array::<usize>::new(comptime!(2 * rtiles));
    let mut sw = Array::<Pair<f32>>::new(comptime!(4 * rtiles));
    #[unroll]
    for r in 0..rtiles {
        let idx = warp + r * warps;
        let mut tm = 0usize;
        let mut tk = 0usize;
        #[unroll]
        for m in 0..ptiles {
            let first = m * (m + 1) / 2;
            if idx >= first {
                tm = m;
                tk = idx - first;
            }
        }
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
                    w[j] = pw[i - key - j];
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
    for pair in 0..(nblocks + 1) / 2 {
        let blk = 2 * pair;
        chunk_step::<F, N>(
            a, b, c, &oc, out, &mut sa, &mut sb, &mut sc, &mut sh, &mut sd, &mut sp, &pw, &barrier,
            &mut acc_s, &sw, &tiles, &wk, blk, 0usize, chunk, dkp, dt, reverse,
        );
        if blk + 1 < nblocks {
            chunk_step::<F, N>(
                a,
                b,
                c,
                &oc,
                out,
                &mut sa,
                &mut sb,
                &mut sc,
                &mut sh,
                &mut sd,
                &mut sp,
                &pw,
                &barrier,
                &mut acc_s,
                &sw,
                &tiles,
                &wk,
                blk + 1,
                1usize,
                chunk,
                dkp,
                dt,
                reverse,
            );
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

/// One chunk `blk` of the walk, its inputs in shared buffer `cur` (the next chunk's copies go
/// to the other), two barriers:
///
/// - before the first, each warp's share of the products that need only the chunk's inputs
///   and `H`: its score tiles, masked, decayed and rounded into the shared `P` tile (each score
///   computed once); `A H` for its output rows `16 mt..` and columns `wcol..`, each row decayed
///   by `lambda^(i+1)`; and the cube's decayed copy of `B` for the state update;
/// - after it, `O += P C` from the shared `P` and the stores, then the state update of its
///   32 x `scols` block of the state (rows `srow..`), whose rounded copy goes to the other `H`
///   buffer; then the barrier that also waits for the next chunk's copies. The two halves carry
///   about as many products each.
///
/// In the state accumulators lane `l` holds, for each 16-row tile `m` and 8-column tile `t` of
/// the warp's block, rows `+ l / 4` and `+ l / 4 + 8`, columns `2 (l % 4)` and `+ 1` (the `mma`
/// layout).
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_step<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    oc: &OutputChunk,
    out: &mut Tensor<Pair<F>>,
    sa: &mut SharedMemory<F>,
    sb: &mut SharedMemory<F>,
    sc: &mut SharedMemory<F>,
    sh: &mut SharedMemory<F>,
    sd: &mut SharedMemory<F>,
    sp: &mut SharedMemory<F>,
    pw: &SharedMemory<f32>,
    barrier: &Barrier,
    acc_s: &mut Array<Pair<f32>>,
    sw: &Array<Pair<f32>>,
    tiles: &Array<usize>,
    wk: &Walk,
    blk: usize,
    #[comptime] cur: usize,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
) {
    let tl = comptime!(Tiling::new(chunk, dkp, dt));
    let warps = comptime!(tl.warps);
    let stiles = comptime!(tl.stiles);
    let ptiles = comptime!(tl.ptiles);
    let ntiles = comptime!(tl.ntiles);
    let rtiles = comptime!(tl.rtiles);
    let sfrags = comptime!(tl.sfrags);
    let otiles = comptime!(OCOLS / MN);
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let ab = comptime!(cur * chunk * (dkp + PAD));
    let cb = comptime!(cur * chunk * (dt + PAD));
    let hb = comptime!(cur * dkp * (dt + PAD));
    let other_h = comptime!((1 - cur) * dkp * (dt + PAD) / 2);
    let warp = wk.tid / 32;
    let row_lo = wk.mt * MM + wk.g;
    let t0 = blk * chunk;
    let mut len = wk.n - t0;
    if len > chunk {
        len = chunk;
    }
    if blk + 1 < wk.nblocks {
        stage_chunk::<F, N>(
            a,
            b,
            c,
            oc,
            blk + 1,
            wk.c0,
            sa,
            sb,
            sc,
            comptime!(1 - cur),
            wk.tid,
            chunk,
            dkp,
            dt,
            reverse,
            comptime!(tl.threads),
        );
    }
    barrier.commit_copy_async();

    // This warp's score tiles, masked and decayed, into P.
    #[unroll]
    for r in 0..rtiles {
        if warp + r * warps < ntiles {
            let tm = tiles[2 * r];
            let tk = tiles[2 * r + 1];
            let mut sx = Array::<Pair<f32>>::new(4usize);
            #[unroll]
            for i in 0..4usize {
                sx[i] = Pair::<f32>::new(0.0);
            }
            #[unroll]
            for kk in 0..dkp / MK {
                let fa = frag_a::<F>(sa, ab, tm * MM, kk * MK, ks, false);
                let fb = frag_b2::<F>(sb, ab, kk * MK, tk * MK, ks, true);
                mma_half::<F>(&fa, &fb, 0usize, &mut sx, 0usize);
                mma_half::<F>(&fa, &fb, 1usize, &mut sx, 2usize);
            }
            let mut spp = sp
                .slice_mut(0, comptime!(chunk * (chunk + PAD)))
                .into_vectorized()
                .with_vector_size::<Const<2>>();
            let at = (tm * MM + wk.g) * (ps / 2) + tk * (MK / 2) + wk.tq;
            #[unroll]
            for q in 0..4usize {
                spp[at + (q % 2) * (4 * ps) + (q / 2) * (MN / 2)] =
                    Pair::<F>::cast_from(sx[q] * sw[4 * r + q]);
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
        let fa = frag_a::<F>(sa, ab, wk.mt * MM, kk * MK, ks, false);
        #[unroll]
        for tp in 0..otiles / 2 {
            let fb = frag_b2::<F>(sh, hb, kk * MK, wk.wcol + tp * 2 * MN, cs, false);
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

    // Each token's key row decayed by lambda^(len-1-i), for the state update.
    decay_rows::<F, N>(
        sb,
        ab,
        sd,
        pw,
        len,
        wk.tid,
        chunk,
        dkp,
        comptime!(tl.threads),
    );
    sync_cube();

    // O += P C over the key tiles up to the diagonal, then the rows inside the sequence.
    #[unroll]
    for kv in 0..ptiles {
        if kv <= wk.mt {
            let fp = frag_a::<F>(sp, 0, wk.mt * MM, kv * MK, ps, false);
            #[unroll]
            for tp in 0..otiles / 2 {
                let fb = frag_b2::<F>(sc, cb, kv * MK, wk.wcol + tp * 2 * MN, cs, false);
                mma_half::<F>(&fp, &fb, 0usize, &mut acc, 4 * tp);
                mma_half::<F>(&fp, &fb, 1usize, &mut acc, 4 * tp + 2);
            }
        }
    }
    #[unroll]
    for half in 0..2usize {
        let i = row_lo + half * 8;
        let tt = t0 + i;
        // Rows past the sequence compute an address they never store to.
        let p = if reverse { wk.n - 1 - tt } else { tt };
        let row_at = wk.o_pair + p * wk.o_st;
        let inside = i < len;
        #[unroll]
        for t in 0..otiles {
            let v = Pair::<F>::cast_from(acc[2 * t + half]);
            if inside && t * MN < wk.cols_in {
                out[row_at + t * (MN / 2)] = v;
            }
        }
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
        let fa0 = frag_a::<F>(sd, 0, wk.srow, kk * MK, ks, true);
        let fa1 = frag_a::<F>(sd, 0, wk.srow + MM, kk * MK, ks, true);
        #[unroll]
        for tp in 0..stiles / 2 {
            let fb = frag_b2::<F>(sc, cb, kk * MK, wk.scol + tp * 2 * MN, cs, false);
            mma_half::<F>(&fa0, &fb, 0usize, acc_s, 4 * tp);
            mma_half::<F>(&fa0, &fb, 1usize, acc_s, 4 * tp + 2);
            let hi_tile = comptime!(2 * stiles);
            mma_half::<F>(&fa1, &fb, 0usize, acc_s, hi_tile + 4 * tp);
            mma_half::<F>(&fa1, &fb, 1usize, acc_s, hi_tile + 4 * tp + 2);
        }
    }
    if blk + 1 < wk.nblocks {
        put_state::<F>(
            acc_s,
            sh,
            other_h + wk.h_pair,
            cs,
            stiles,
            comptime!(2 * dkp * (dt + PAD)),
        );
    }
    barrier.arrive_and_wait();
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

/// The warp's state accumulators, rounded, into the shared `H` tile: `at` is the pair index of
/// the lane's first element (the warp's block, its row `l / 4` and pair `l % 4`, the buffer), so
/// each store's own offset is a constant (row stride `stride`, even).
#[cube]
fn put_state<F: Float>(
    acc_s: &Array<Pair<f32>>,
    sh: &mut SharedMemory<F>,
    at: usize,
    #[comptime] stride: usize,
    #[comptime] stiles: usize,
    #[comptime] len: usize,
) {
    let mut shp = sh
        .slice_mut(0, len)
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    #[unroll]
    for i in 0..2 * (SROWS / MM) * stiles {
        let row = (i / (2 * stiles)) * MM + (i % 2) * 8;
        let col = ((i / 2) % stiles) * MN;
        shp[at + row * (stride / 2) + col / 2] = Pair::<F>::cast_from(acc_s[i]);
    }
}
