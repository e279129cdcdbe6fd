//! The whole scan in one launch with the state in registers, for CUDA: no `H` buffer.
//!
//! The split pair ([`super::mma`]) writes every chunk's state `H` (input dtype) and reads it back:
//! at B=4, H=32, D=128 that is as many bytes as `q`, `k`, `v` and `o` together. Here one cube
//! (16 warps per 128 state columns at D=128; `chunk / 16 * dt / 32` warps per `dt` columns in
//! general) per batch x head walks the chunks in order, as Lightning Attention-2's forward
//! does, and keeps the f32 state in its warps' `mma` accumulators; the state each chunk starts
//! from goes through a shared tile (rounded to the input dtype, as the split pair's `H`) to the
//! products that read it. Phase `j`, between two barriers:
//!
//! ```text
//! copies of chunk j+1 issued (cp.async)
//! P_j  = mask(A B^T lambda^(i-j)), each 16 x 16 tile once          into shared memory
//! O_j  = lambda^(i+1) (A H_j)                                      registers, until phase j+1
//! S   <- lambda^len S + B^T (w C),  w = lambda^(len-1-t) per token  the warp's block of S
//! H_j+1 = S rounded                                                into the other H buffer
//! O_j-1 += P_j-1 C_j-1, stored                                     (P from phase j-1)
//! barrier (P_j, H_j+1 published; chunk j+1 landed)
//! ```
//!
//! One barrier per chunk, and each warp has two chunks' independent products to interleave;
//! the price is a third `C` buffer (a chunk's `C` serves two phases) and the token weights
//! applied to `C`'s fragments in registers. It pays where the batch x heads fill the device (one
//! cube per SM) and the `H` bytes would dominate; `split::fused_geometry` decides. Same contract
//! as the split pair (`out` packs the outputs and the final state). `kernels/README.md` has its
//! measurements, and how the chunk step was counted (`gpu_run.sh`'s `sass` step).

use cubecl::{prelude::barrier::Barrier, prelude::*};

use super::mma::{
    copy_tile_async, frag_a, frag_b2, initial_pair, mma_half, state_col, state_row, Pair, MK, MM,
    MN,
};
use super::split::{output_chunk, OutputChunk};
use super::tiled::{decay_powers, PAD};

/// Output columns per warp (its rows: one 16-row `mma` tile).
const OCOLS: usize = 32;

/// The kernel's tiling, fixed by the chunk, the contracted dim `dkp` and the cube's `dt`
/// columns; the kernel, its phases and the launcher's choice (`split::fused_geometry`) all read
/// it, so they cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tiling {
    chunk: usize,
    dkp: usize,
    dt: usize,
    /// Warps per 16-row tile of the chunk (one per 32 output columns), warps and units per cube.
    groups: usize,
    warps: usize,
    pub(crate) threads: usize,
    /// State rows per warp (64 where the columns allow: fewer `C` fragments to decay per
    /// product), warps along the state's rows, state columns per warp and their 8-column tiles.
    srows: usize,
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
    /// The tiling, if the kernel takes it: `dkp` a multiple of 32 up to 128, whole 16-column
    /// state tiles per warp, whole `nv`-element vectors per unit when a chunk is staged
    /// (`nv >= 2`: `o` and the state go out in pairs).
    pub(crate) fn checked(chunk: usize, dkp: usize, dt: usize, nv: usize) -> Option<Self> {
        let warps = chunk / MM * (dt / OCOLS);
        let fits = nv >= 2
            && warps > 0
            && dkp <= 128
            && dkp % 32 == 0
            && Self::state_rows(dkp, dt, warps).is_some()
            && (chunk * dkp) % (warps * 32 * nv) == 0
            && (chunk * dt) % (warps * 32 * nv) == 0;
        fits.then(|| Self::new(chunk, dkp, dt))
    }

    /// The shared memory one cube takes with `elem`-byte inputs: double-buffered `A`, `B`, `H`
    /// and `P`, three `C` buffers (a chunk's `C` serves two phases), the decay powers and token
    /// weights, and 64 bytes for the barrier and alignment.
    pub(crate) fn shared_bytes(&self, elem: usize) -> usize {
        let (c, dkp, dt) = (self.chunk, self.dkp, self.dt);
        let tiles =
            4 * c * (dkp + PAD) + 3 * c * (dt + PAD) + 2 * dkp * (dt + PAD) + 2 * c * (c + PAD);
        elem * tiles + 4 * (3 * c + 1) + 64
    }

    /// State rows per warp: 64 or 32, whichever divides `dkp` and leaves each warp whole
    /// 16-column tiles of the `dt` columns.
    fn state_rows(dkp: usize, dt: usize, warps: usize) -> Option<usize> {
        [64, 32].into_iter().find(|&r| {
            let row_warps = dkp / r;
            dkp % r == 0 && warps % row_warps == 0 && (dt / (warps / row_warps)) % 16 == 0
        })
    }

    fn new(chunk: usize, dkp: usize, dt: usize) -> Self {
        let groups = dt / OCOLS;
        let warps = chunk / MM * groups;
        let srows = Self::state_rows(dkp, dt, warps).unwrap_or(32);
        let row_warps = dkp / srows;
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
            srows,
            row_warps,
            scols,
            stiles: scols / MN,
            ptiles,
            ntiles,
            rtiles: ntiles.div_ceil(warps),
            sfrags: 2 * (srows / MM) * (scols / MN),
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

/// The shared tiles: `A`, `B`, `H` and `P` double-buffered (by chunk parity), `C` in three
/// buffers (chunk `j`'s in `j % 3`), the decay powers `pw[d] = lambda^d` and the token weights
/// `wt` of the state update (`lambda^(chunk-1-t)`, then the last chunk's).
#[derive(CubeType)]
struct Tiles<F: Float> {
    sa: SharedMemory<F>,
    sb: SharedMemory<F>,
    sc: SharedMemory<F>,
    sh: SharedMemory<F>,
    sp: SharedMemory<F>,
    pw: SharedMemory<f32>,
    wt: SharedMemory<f32>,
}

/// The fused scan: one cube of `chunk / 16 * dt / 32` warps per (`dt` columns from
/// `CUBE_POS_X * dt`, batch x head `CUBE_POS_Z`), one barrier per chunk.
///
/// Phase `j` ([`phase`]) runs chunk `j`'s products that need only its inputs and `H_j`
/// ([`front`]: the scores into `P`, `A H`, the state update and `H_(j+1)`) beside chunk
/// `j - 1`'s that need the `P` made in the phase before ([`back`]: `O += P C` and the stores),
/// while chunk `j + 1`'s inputs arrive by `cp.async`; so one barrier per chunk both publishes
/// `P` and `H` and waits for the copies, and each warp has two chunks' independent products to
/// interleave. The walk takes phases two at a time so that each knows its double buffers at
/// compile time; the lanes' mask and decay factors for their score tiles (the same tiles in
/// every chunk) are computed once, into registers.
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
    let otiles = comptime!(OCOLS / MN);
    let tid = UNIT_POS_X as usize;
    let lane = tid % 32;
    let g = lane / 4;
    let tq = lane % 4;
    let warp = tid / 32;
    let mt = warp / groups;
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
    let kbuf = comptime!(chunk * (dkp + PAD));
    let cbuf = comptime!(chunk * (dt + PAD));
    let hbuf = comptime!(dkp * (dt + PAD));
    let mut sm = Tiles::<F> {
        sa: SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize),
        sb: SharedMemory::<F>::new_aligned(comptime!(2 * kbuf), 32usize),
        sc: SharedMemory::<F>::new_aligned(comptime!(3 * cbuf), 32usize),
        sh: SharedMemory::<F>::new_aligned(comptime!(2 * hbuf), 32usize),
        sp: SharedMemory::<F>::new_aligned(comptime!(2 * chunk * (chunk + PAD)), 32usize),
        pw: SharedMemory::<f32>::new(chunk + 1),
        wt: SharedMemory::<f32>::new_aligned(comptime!(2 * chunk), 8usize),
    };
    let barrier = Barrier::shared(threads as u32, tid == 0);

    if nblocks > 0 {
        stage_chunk::<F, N>(
            a, b, c, &oc, 0, c0, &mut sm, 0, 0, tid, chunk, dkp, dt, reverse, threads,
        );
    }
    barrier.commit_copy_async();
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
    put_state::<F>(
        &acc_s,
        &mut sm.sh,
        h_pair,
        cs,
        comptime!(tl.srows),
        stiles,
        comptime!(2 * hbuf),
    );
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
    let mut acc0 = Array::<Pair<f32>>::new(comptime!(2 * otiles));
    let mut acc1 = Array::<Pair<f32>>::new(comptime!(2 * otiles));
    if nblocks > 0 {
        phase::<F, N>(
            a, b, c, &oc, out, &mut sm, &barrier, &mut acc_s, &mut acc0, &mut acc1, &sw, &tiles,
            &wk, 0, 0usize, false, chunk, dkp, dt, reverse,
        );
    }
    for pair in 0..nblocks / 2 {
        let j = 2 * pair + 1;
        phase::<F, N>(
            a, b, c, &oc, out, &mut sm, &barrier, &mut acc_s, &mut acc1, &mut acc0, &sw, &tiles,
            &wk, j, 1usize, true, chunk, dkp, dt, reverse,
        );
        if j + 1 < nblocks {
            phase::<F, N>(
                a,
                b,
                c,
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
                chunk,
                dkp,
                dt,
                reverse,
            );
        }
    }
    if nblocks > 0 {
        let last = nblocks - 1;
        let cb = (last % 3) * cbuf;
        if last % 2 == 0 {
            back::<F>(
                out, &sm, &mut acc0, &wk, last, cb, 0usize, chunk, dt, reverse,
            );
        } else {
            back::<F>(
                out, &sm, &mut acc1, &wk, last, cb, 1usize, chunk, dt, reverse,
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

/// Phase `j` of the walk (its double buffers `cur = j % 2`): chunk `j + 1`'s copies issued,
/// chunk `j`'s [`front`] into `acc_new`, chunk `j - 1`'s [`back`] from `acc_old` (with
/// `finish`), then the one barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn phase<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
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
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
) {
    let cbuf = comptime!(chunk * (dt + PAD));
    let next = j + 1 < wk.nblocks;
    if next {
        stage_chunk::<F, N>(
            a,
            b,
            c,
            oc,
            j + 1,
            wk.c0,
            sm,
            comptime!((1 - cur) * chunk * (dkp + PAD)),
            ((j + 1) % 3) * cbuf,
            wk.tid,
            chunk,
            dkp,
            dt,
            reverse,
            comptime!(Tiling::new(chunk, dkp, dt).threads),
        );
    }
    barrier.commit_copy_async();
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
        chunk,
        dkp,
        dt,
    );
    if finish {
        back::<F>(
            out,
            sm,
            acc_old,
            wk,
            j - 1,
            ((j + 2) % 3) * cbuf,
            comptime!(1 - cur),
            chunk,
            dt,
            reverse,
        );
    }
    barrier.arrive_and_wait();
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
/// layout).
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
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
) {
    let tl = comptime!(Tiling::new(chunk, dkp, dt));
    let warps = comptime!(tl.warps);
    let stiles = comptime!(tl.stiles);
    let ntiles = comptime!(tl.ntiles);
    let rtiles = comptime!(tl.rtiles);
    let sfrags = comptime!(tl.sfrags);
    let otiles = comptime!(OCOLS / MN);
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let ab = comptime!(cur * chunk * (dkp + PAD));
    let hb = comptime!(cur * dkp * (dt + PAD));
    let pb = comptime!(cur * chunk * (chunk + PAD));
    let warp = wk.tid / 32;
    let row_lo = wk.mt * MM + wk.g;
    let mut len = wk.n - j * chunk;
    if len > chunk {
        len = chunk;
    }

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
                let fa = frag_a::<F>(&sm.sa, ab, tm * MM, kk * MK, ks, false);
                let fb = frag_b2::<F>(&sm.sb, ab, kk * MK, tk * MK, ks, true);
                mma_half::<F>(&fa, &fb, 0usize, &mut sx, 0usize);
                mma_half::<F>(&fa, &fb, 1usize, &mut sx, 2usize);
            }
            let mut spp = sm
                .sp
                .slice_mut(pb, comptime!(pb + chunk * (chunk + PAD)))
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
    #[unroll]
    for i in 0..2 * otiles {
        acc[i] = Pair::<f32>::new(0.0);
    }
    #[unroll]
    for kk in 0..dkp / MK {
        let fa = frag_a::<F>(&sm.sa, ab, wk.mt * MM, kk * MK, ks, false);
        #[unroll]
        for tp in 0..otiles / 2 {
            let fb = frag_b2::<F>(&sm.sh, hb, kk * MK, wk.wcol + tp * 2 * MN, cs, false);
            mma_half::<F>(&fa, &fb, 0usize, acc, 4 * tp);
            mma_half::<F>(&fa, &fb, 1usize, acc, 4 * tp + 2);
        }
    }
    let w_lo = Pair::<f32>::new(sm.pw[row_lo + 1]);
    let w_hi = Pair::<f32>::new(sm.pw[row_lo + 9]);
    #[unroll]
    for t in 0..otiles {
        acc[2 * t] = acc[2 * t] * w_lo;
        acc[2 * t + 1] = acc[2 * t + 1] * w_hi;
    }

    // S <- lambda^len S + B^T (w C), 16 tokens at a time: lane tq's tokens in a fragment of C
    // are 2 tq, 2 tq + 1 (registers 0 and 2) and those + 8 (1 and 3).
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
        let wv = sm
            .wt
            .slice(wbase + kk * MK, wbase + kk * MK + 10)
            .into_vectorized()
            .with_vector_size::<Const<2>>();
        let w_lo = wv[0];
        let w_hi = wv[4];
        let mut fds = Array::<Pair<F>>::new(comptime!(2 * stiles));
        #[unroll]
        for tp in 0..stiles / 2 {
            let fb = frag_b2::<F>(&sm.sc, cb, kk * MK, wk.scol + tp * 2 * MN, cs, false);
            #[unroll]
            for h in 0..2usize {
                let lo = 4 * tp + 2 * h;
                fds[lo] = Pair::<F>::cast_from(Pair::<f32>::cast_from(fb[2 * h]) * w_lo);
                fds[lo + 1] = Pair::<F>::cast_from(Pair::<f32>::cast_from(fb[2 * h + 1]) * w_hi);
            }
        }
        #[unroll]
        for rt in 0..rts {
            let fa = frag_a::<F>(&sm.sb, ab, wk.srow + rt * MM, kk * MK, ks, true);
            #[unroll]
            for tp in 0..stiles / 2 {
                let mut fd = Array::<Pair<F>>::new(4usize);
                #[unroll]
                for q in 0..4usize {
                    fd[q] = fds[4 * tp + q];
                }
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
            comptime!((1 - cur) * dkp * (dt + PAD) / 2) + wk.h_pair,
            cs,
            comptime!(tl.srows),
            stiles,
            comptime!(2 * dkp * (dt + PAD)),
        );
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
    #[comptime] chunk: usize,
    #[comptime] dt: usize,
    #[comptime] reverse: bool,
) {
    let ptiles = comptime!(chunk / MK);
    let otiles = comptime!(OCOLS / MN);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let pb = comptime!(cur * chunk * (chunk + PAD));
    #[unroll]
    for kv in 0..ptiles {
        if kv <= wk.mt {
            let fp = frag_a::<F>(&sm.sp, pb, wk.mt * MM, kv * MK, ps, false);
            #[unroll]
            for tp in 0..otiles / 2 {
                let fb = frag_b2::<F>(&sm.sc, cb, kv * MK, wk.wcol + tp * 2 * MN, cs, false);
                mma_half::<F>(&fp, &fb, 0usize, acc, 4 * tp);
                mma_half::<F>(&fp, &fb, 1usize, acc, 4 * tp + 2);
            }
        }
    }
    let t0 = j * chunk;
    let mut len = wk.n - t0;
    if len > chunk {
        len = chunk;
    }
    let row_lo = wk.mt * MM + wk.g;
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
}

/// Chunk `blk`'s `A`, `B` (`chunk x dkp`, row stride `dkp + PAD`, from `kb`) and `C`
/// (`chunk x dt` from column `c0`, stride `dt + PAD`, from `cb`) into the shared tiles by
/// `cp.async`, zero past the sequence and the head dims; the caller commits.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    c: &Tensor<Vector<F, N>>,
    oc: &OutputChunk,
    blk: usize,
    c0: usize,
    sm: &mut Tiles<F>,
    kb: usize,
    cb: usize,
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
    copy_tile_async::<F, N>(
        a, oc.a_base, oc.a_st, oc.a_sd, oc.n, oc.da, t0, len, 0, &mut sm.sa, kb, tid, ks, chunk,
        dkp, reverse, threads,
    );
    copy_tile_async::<F, N>(
        b, oc.b_base, oc.b_st, oc.b_sd, oc.n, oc.da, t0, len, 0, &mut sm.sb, kb, tid, ks, chunk,
        dkp, reverse, threads,
    );
    copy_tile_async::<F, N>(
        c, oc.c_base, oc.c_st, oc.c_sd, oc.n, oc.dc, t0, len, c0, &mut sm.sc, cb, tid, cs, chunk,
        dt, reverse, threads,
    );
}

/// The warp's state accumulators (`srows` rows), rounded, into the shared `H` tile: `at` is the
/// pair index of the lane's first element (the warp's block, its row `l / 4` and pair `l % 4`,
/// the buffer), so each store's own offset is a constant (row stride `stride`, even).
#[cube]
fn put_state<F: Float>(
    acc_s: &Array<Pair<f32>>,
    sh: &mut SharedMemory<F>,
    at: usize,
    #[comptime] stride: usize,
    #[comptime] srows: usize,
    #[comptime] stiles: usize,
    #[comptime] len: usize,
) {
    let mut shp = sh
        .slice_mut(0, len)
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    #[unroll]
    for i in 0..2 * (srows / MM) * stiles {
        let row = (i / (2 * stiles)) * MM + (i % 2) * 8;
        let col = ((i / 2) % stiles) * MN;
        shp[at + row * (stride / 2) + col / 2] = Pair::<F>::cast_from(acc_s[i]);
    }
}
