//! The kernels' tile geometry, on the host: the constants their bodies take, their shared-memory
//! sizes and the launch geometries [`super::dispatch`] chooses from. No kernel code and no policy
//! here, so that the dispatch (compiled with or without a CubeCL backend) and every kernel file
//! read the same numbers.

// Without a CubeCL backend only the dispatch reads this module; the kernels' own constants wait
// for the kernel files.
#![cfg_attr(not(feature = "cubecl"), allow(dead_code))]

// ---- The `cmma` kernels (`tiled_scan_kernel`, the split pair's `chunk_states_kernel` and
// `chunk_output_kernel`) and the tile helpers of `tiles`.

/// Threads per cube: 8 warps of 32.
pub(crate) const THREADS: usize = 256;
/// Warps per cube.
pub(crate) const WARPS: usize = 8;
/// Row padding of the input-dtype tiles, in elements (16 bytes: rows land on different banks,
/// tile starts stay 32-byte aligned).
pub(crate) const PAD: usize = 8;
/// Row padding of the f32 tiles, in elements.
pub(crate) const PADF: usize = 4;
/// The tile edge of one tensor-core product.
pub(crate) const T16: usize = 16;

/// Threads per cube of `chunk_states_kernel`: 4 warps, so that 4 cubes fit an SM and every
/// (row tile, column tile, batch x head) chain of a B=4, H=32, D=128 scan runs in one wave.
pub(crate) const ST_THREADS: usize = 128;
/// Warps per cube of `chunk_states_kernel`.
pub(crate) const ST_WARPS: usize = 4;

/// The tile of the `cmma` kernels (the split pair's shared-memory forms and `tiled_scan_kernel`),
/// and of the split pair's register forms: tokens per chunk and output columns per cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledConfig {
    /// Tokens per chunk (32 or 64).
    pub chunk: usize,
    /// Output columns per cube (16, 32 or 64).
    pub dt: usize,
    /// Tensor-core tile products (`false`: the same kernels with plain loops, which is how the
    /// wgpu tests run them).
    pub cmma: bool,
}

impl TiledConfig {
    /// Shared memory of one cube of the split pair (the larger kernel's) in bytes, for a
    /// contracted dim of `da` and inputs of `elem` bytes.
    pub fn split_smem(&self, da: usize, elem: usize) -> usize {
        split_smem(*self, padded(da), elem)
    }

    /// Shared memory of one cube of `tiled_scan_kernel` in bytes, for a contracted dim of `da`
    /// and inputs of `elem` bytes.
    pub fn tiled_smem(&self, da: usize, elem: usize) -> usize {
        tiled_smem(*self, padded(da), elem)
    }
}

/// Stops with the reason when `cfg` is not a geometry the `cmma` kernels have, or their `smem`
/// bytes of shared memory per cube are more than the device's `smem_max`.
pub(crate) fn check_tiled(cfg: TiledConfig, smem: usize, smem_max: usize) {
    assert!(
        matches!(cfg.chunk, 32 | 64) && matches!(cfg.dt, 16 | 32 | 64),
        "tiled scan: chunk 32 or 64, dt 16, 32 or 64 (got {cfg:?})"
    );
    assert!(
        smem <= smem_max,
        "tiled scan ({cfg:?}): {smem} bytes of shared memory needed, the device has {smem_max}"
    );
}

/// Shared memory of one cube in bytes, for a contracted dim padded to `dkp` and inputs of
/// `elem` bytes.
pub fn tiled_smem(cfg: TiledConfig, dkp: usize, elem: usize) -> usize {
    let (c, dt) = (cfg.chunk, cfg.dt);
    elem * (4 * c * (dkp + PAD) + c * (dt + PAD) + dkp * (dt + PAD) + c * (c + PAD))
        + 4 * (dkp * (dt + PADF) + c * (c.max(dt) + PADF) + c + 1)
}

/// The contracted dim padded to whole tiles.
pub(crate) fn padded(da: usize) -> usize {
    da.div_ceil(T16).max(1) * T16
}

/// State rows per cube of `chunk_states_kernel` for a contracted dim padded to `dkp`: the
/// widest of 64, 32, 16 that divides it.
pub(crate) fn state_rows(dkp: usize) -> usize {
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

/// Whether the chunk states of this scan (`H`, `ceil(n / chunk) x dk x dc` values per batch x
/// head) stay within the kernels' 32-bit indexing; the dispatch runs `tiled_scan_kernel`
/// (no `H`) otherwise.
pub(crate) fn states_fit(shape: [usize; 4], dc: usize, cfg: TiledConfig) -> bool {
    let [batch, heads, n, da] = shape;
    let h_len = batch * heads * n.div_ceil(cfg.chunk) * padded(da) * dc.div_ceil(cfg.dt) * cfg.dt;
    h_len <= u32::MAX as usize
}

// ---- The split pair's register kernels (`mma`) and the one-launch kernel (`mma_fused`).

/// The `mma` shape: state rows per warp, state columns per instruction, tokens per instruction.
pub(crate) const MM: usize = 16;
pub(crate) const MN: usize = 8;
pub(crate) const MK: usize = 16;

/// Columns per slab of [`Lay::Slabs`] (32 bytes of f16/bf16 per row: one bulk-copy box wide).
pub(crate) const SLAB: usize = 16;

/// How a shared tile of row-major `[r][c]` elements lies in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Lay {
    /// Rows one after another, this many elements apart (padded so that `ldmatrix`'s eight
    /// row addresses fall in distinct banks).
    Rows(usize),
    /// As the bulk tensor copies (TMA) land it: slabs of [`SLAB`] columns (32 bytes per row,
    /// the copy's box), `rows` rows each, one after another. The copy's 32-byte swizzle
    /// exchanges a row's two 16-byte halves on rows `4..8` of every 8, which keeps an
    /// `ldmatrix`'s eight rows conflict-free; the tile must start on a 256-byte boundary.
    /// (8-column slabs, 16-byte rows, need no swizzle but twice the boxes: 1.18x the forward's
    /// time at 2K.) With `reversed`, row `r` of the tile lies at slab row `rows - 1 - r` (a
    /// reverse scan's chunk, copied in the sequence's order).
    Slabs { rows: usize, reversed: bool },
}

impl Lay {
    /// The tile's size in elements, with `rows` rows of `cols` columns.
    pub(crate) fn elems(self, rows: usize, cols: usize) -> usize {
        match self {
            Lay::Rows(stride) => rows * stride,
            Lay::Slabs { .. } => rows * cols,
        }
    }

    /// `(row stride, slabs, rows, reversed)`: the stride for [`Lay::Rows`], the rest for
    /// [`Lay::Slabs`].
    pub(crate) fn parts(self) -> (usize, bool, usize, bool) {
        match self {
            Lay::Rows(stride) => (stride, false, 0, false),
            Lay::Slabs { rows, reversed } => (0, true, rows, reversed),
        }
    }
}

/// One states cube of `mma`'s register kernel (`chunk_states_mma_kernel`): `rt` state rows and
/// `dt` state columns, `warps` warps splitting the columns into `col_groups` groups, `H` stored
/// through shared memory (`stage_h`) or straight from the accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatesGeometry {
    pub(crate) rt: usize,
    pub(crate) dt: usize,
    pub(crate) warps: usize,
    pub(crate) col_groups: usize,
    pub(crate) stage_h: bool,
}

/// The one-launch register kernel's geometry (`chunk_fused_mma_kernel`): tokens per chunk, state
/// and output columns per cube, output rows per warp, units per cube and the chunk step's
/// schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedGeometry {
    pub(crate) chunk: usize,
    pub(crate) dt: usize,
    pub(crate) orows: usize,
    pub(crate) threads: usize,
    pub(crate) sched: Schedule,
}

/// Output columns per warp.
pub(crate) const OCOLS: usize = 32;

/// The kernel's tiling, fixed by the chunk, the contracted dim `dkp`, the cube's `dt` columns
/// and the rows of each warp's output tile; the kernel, its phases and the dispatch's choice
/// (`dispatch::fused_geometry`) all read it, so they cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tiling {
    pub(crate) chunk: usize,
    pub(crate) dkp: usize,
    pub(crate) dt: usize,
    /// Output rows per warp (16 or 32: one or two `mma` row tiles) and those tiles; warps per
    /// such block of the chunk's rows (one per 32 output columns), warps and units per cube.
    pub(crate) orows: usize,
    pub(crate) mts: usize,
    pub(crate) groups: usize,
    pub(crate) warps: usize,
    pub(crate) threads: usize,
    /// State rows per warp (64 where the columns allow: fewer `C` fragments to weigh per
    /// product), warps along the state's rows, state columns per warp and their 8-column tiles.
    pub(crate) srows: usize,
    pub(crate) row_warps: usize,
    pub(crate) scols: usize,
    pub(crate) stiles: usize,
    /// 16-row tiles per chunk, score tiles on and below the diagonal, score tiles per warp.
    pub(crate) ptiles: usize,
    pub(crate) ntiles: usize,
    pub(crate) rtiles: usize,
    /// State accumulator pairs per lane.
    pub(crate) sfrags: usize,
    /// How the chunk step is scheduled ([`Schedule`]).
    pub(crate) sched: Schedule,
    /// A reverse scan's chunks staged by bulk copies, whose rows land in the sequence's order:
    /// reversed in the tiles ([`Lay::Slabs`]).
    pub(crate) reversed: bool,
}

/// How the chunk step is computed, beside the tiling; chosen by [`super::dispatch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Schedule {
    /// The state update's token weights as input-dtype pairs, one packed multiply per pair of
    /// `C` (bf16 only: its exponent range is f32's, so rounding the weight costs 2^-9 relative
    /// and nothing underflows), instead of unpacking `C` to f32, weighing and repacking.
    pub(crate) packed_weights: bool,
    /// Each warp makes the score tiles of its own output rows against key tile `warp % groups`
    /// inside its `A H` loop, from that loop's `A` fragments (one `ldmatrix` of keys per step
    /// of the contraction for all its rows, where spread tiles load `A` and `B` for each: 608
    /// instead of 704 `ldmatrix` per cube and chunk at D=128, for 6 tiles above the diagonal
    /// made and dropped); and each phase finishes chunk `j - 1` before starting chunk `j`, so
    /// that the two chunks' output accumulators are never live together (room for the score
    /// accumulators). Taken where the cube's column groups of warps are as many as the chunk's
    /// key tiles ([`Tiling::with_schedule`]).
    pub(crate) row_scores: bool,
    /// `A`, `B` and `C` staged by bulk tensor copies (TMA) of [`SLAB`]-column boxes
    /// ([`Lay::Slabs`]), not `cp.async` copies into padded rows. One unit issues a chunk's boxes
    /// on the phase's barrier, which also counts their bytes; the boxes zero-fill past the
    /// sequence and the head dims, so no unit computes a copy's address or bounds.
    pub(crate) tma: bool,
}

impl Tiling {
    /// The tiling, if the kernel takes it: warp tiles of 16 or 32 rows that divide the chunk,
    /// `dkp` a multiple of 32 up to 128, whole 16-column state tiles per warp and at most 64
    /// state accumulators per lane, whole `nv`-element vectors per unit when a chunk is staged
    /// (`nv >= 2`: `o` and the state go out in pairs).
    pub(crate) fn checked(
        chunk: usize,
        dkp: usize,
        dt: usize,
        orows: usize,
        nv: usize,
    ) -> Option<Self> {
        let warps = chunk / orows.max(1) * (dt / OCOLS);
        let fits = nv >= 2
            && (orows == 16 || orows == 32)
            && chunk % orows == 0
            && dt % OCOLS == 0
            && warps > 0
            && dkp <= 128
            && dkp % 32 == 0
            && Self::state_rows(dkp, dt, warps).is_some()
            && (chunk * dkp) % (warps * 32 * nv) == 0
            && (chunk * dt) % (warps * 32 * nv) == 0;
        fits.then(|| Self::new(chunk, dkp, dt, orows))
            .filter(|t| t.sfrags <= 32)
    }

    /// This tiling with the chunk step scheduled as `sched` says (row scores only where each
    /// column group of warps can take one key tile).
    pub(crate) fn with_schedule(self, sched: Schedule) -> Self {
        let row_scores = sched.row_scores && self.groups == self.ptiles;
        Self {
            sched: Schedule {
                row_scores,
                ..sched
            },
            ..self
        }
    }

    /// Score tiles per warp: its output row tiles ([`Schedule::row_scores`]) or its share of
    /// the lower triangle spread over all warps.
    pub(crate) fn score_slots(&self) -> usize {
        if self.sched.row_scores {
            self.mts
        } else {
            self.rtiles
        }
    }

    /// The shared memory one cube takes with `elem`-byte inputs: double-buffered `A`, `B`, `H`
    /// and `P`, three `C` buffers (a chunk's `C` serves two phases), the decay powers and token
    /// weights (f32 and input-dtype copies), and 64 bytes for the barrier and alignment (1 KB
    /// more under bulk copies, whose tiles start on 1 KB boundaries).
    pub(crate) fn shared_bytes(&self, elem: usize) -> usize {
        let (c, dkp, dt) = (self.chunk, self.dkp, self.dt);
        let tiles = 4 * self.kbuf() + 3 * self.cbuf() + 2 * dkp * (dt + PAD) + 2 * c * (c + PAD);
        let align = if self.sched.tma { 1024 } else { 0 };
        elem * (tiles + 2 * c) + 4 * (3 * c + 1) + 64 + align
    }

    /// How a chunk's `A` and `B` (`chunk x dkp`) lie in shared memory.
    pub(crate) fn lay_k(&self) -> Lay {
        self.lay(self.dkp)
    }

    /// How a chunk's `C` (`chunk x dt`) lies in shared memory.
    pub(crate) fn lay_c(&self) -> Lay {
        self.lay(self.dt)
    }

    fn lay(&self, cols: usize) -> Lay {
        if self.sched.tma {
            Lay::Slabs {
                rows: self.chunk,
                reversed: self.reversed,
            }
        } else {
            Lay::Rows(cols + PAD)
        }
    }

    /// One buffer of `A` or `B`, and of `C`, in elements.
    pub(crate) fn kbuf(&self) -> usize {
        self.lay_k().elems(self.chunk, self.dkp)
    }

    pub(crate) fn cbuf(&self) -> usize {
        self.lay_c().elems(self.chunk, self.dt)
    }

    /// The alignment of the staged tiles in bytes: 1 KB under bulk copies (a 32-byte swizzle
    /// is read from address bits 4 and 7, so a slab must start on a 256-byte boundary).
    pub(crate) fn tile_align(&self) -> usize {
        if self.sched.tma {
            1024
        } else {
            32
        }
    }

    /// State rows per warp: 64 or 32, whichever divides `dkp` and leaves each warp whole
    /// 16-column tiles of the `dt` columns.
    fn state_rows(dkp: usize, dt: usize, warps: usize) -> Option<usize> {
        [64, 32].into_iter().find(|&r| {
            let row_warps = dkp / r;
            dkp % r == 0
                && row_warps > 0
                && warps % row_warps == 0
                && (dt / (warps / row_warps)) % 16 == 0
        })
    }

    pub(crate) fn new(chunk: usize, dkp: usize, dt: usize, orows: usize) -> Self {
        let groups = dt / OCOLS;
        let warps = chunk / orows * groups;
        let srows = Self::state_rows(dkp, dt, warps).unwrap_or(32);
        let row_warps = dkp / srows;
        let scols = dt / (warps / row_warps);
        let ptiles = chunk / MK;
        let ntiles = ptiles * (ptiles + 1) / 2;
        Self {
            chunk,
            dkp,
            dt,
            orows,
            mts: orows / MM,
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
            sched: Schedule::default(),
            reversed: false,
        }
    }

    /// This tiling for a scan in reverse order (`reverse`): the staged rows reversed where
    /// bulk copies stage them.
    pub(crate) fn in_order(self, reverse: bool) -> Self {
        Self {
            reversed: reverse && self.sched.tma,
            ..self
        }
    }
}

// ---- The decode kernel (`decode_warp_kernel`).

/// Warps per `decode_warp_kernel` cube (each on its own state).
pub(crate) const DECODE_WARPS: usize = 4;
/// State rows each decode unit loads before writing any (16: as fast as or faster than 8 and
/// 32 rows, and than a cube of warps per state, at every batch measured).
pub(crate) const DECODE_ROWS: usize = 16;

/// `scan_kernel`'s constants and shared memory (the plain kernel, any dtype and device).
pub(crate) mod plain {
    /// Threads per cube.
    pub(crate) const THREADS: usize = 256;
    /// Tokens per block (the intra-block square is `CHUNK x CHUNK`).
    pub(crate) const CHUNK: usize = 32;
    /// Width of the slices of the contracted dimension loaded at once.
    pub(crate) const KC: usize = 32;
    /// Output columns per cube: 32 where the state tile fits in shared memory, else 16.
    pub(crate) const DT_WIDE: usize = 32;

    /// Shared memory of `scan_kernel` in bytes, for a padded contracted dim `dkp` and `dt`
    /// columns.
    pub(crate) fn smem(dkp: usize, dt: usize) -> usize {
        4 * (dkp * dt + 2 * CHUNK * (KC + 1) + CHUNK * dt + CHUNK * (CHUNK + 1) + 2 * CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_states_beyond_32_bit_indexing_fall_back() {
        let cfg = TiledConfig {
            chunk: 64,
            dt: 64,
            cmma: true,
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

    /// An H100's or H200's shared memory per cube.
    const HOPPER: usize = 232_448;

    #[test]
    fn default_tilings_fit_an_sm() {
        // The benchmark's head dim, 32-row warp tiles: 8 warps, a 64 x 32 state block each.
        let t = Tiling::checked(64, 128, 128, 32, 8).expect("D=128 is taken");
        assert_eq!((t.warps, t.threads, t.srows, t.scols), (8, 256, 64, 32));
        assert_eq!((t.rtiles, t.sfrags), (2, 32));
        assert_eq!(t.shared_bytes(2), 211_012);
        // Row scores: 4 column groups of warps for the 4 key tiles; each warp 2 score tiles.
        let rows = Schedule {
            row_scores: true,
            ..Schedule::default()
        };
        let tr = t.with_schedule(rows);
        assert!(tr.sched.row_scores);
        assert_eq!((tr.score_slots(), t.score_slots()), (2, 2));
        // Head dim 64 (64 columns per cube, 2 groups for 4 key tiles) keeps spread tiles.
        let t64r = Tiling::checked(64, 64, 64, 32, 8)
            .unwrap()
            .with_schedule(rows);
        assert!(!t64r.sched.row_scores);
        // 16-row tiles (where 32 rows do not fit): 16 warps, a 64 x 16 block each.
        let t16 = Tiling::checked(64, 128, 128, 16, 8).expect("16 rows are taken");
        assert_eq!((t16.warps, t16.srows, t16.scols), (16, 64, 16));
        assert_eq!(t16.shared_bytes(2), t.shared_bytes(2));
        // Head dim 64: 4 warps, 64 x 16 blocks; dk = 64 with dv = 128 and the 32 x 64 tile.
        let t64 = Tiling::checked(64, 64, 64, 32, 8).expect("D=64 is taken");
        assert_eq!((t64.warps, t64.srows, t64.scols), (4, 64, 16));
        assert!(Tiling::checked(64, 64, 128, 32, 8).is_some());
        assert!(Tiling::checked(32, 128, 64, 16, 8).is_some());
        for t in [t, t16, t64] {
            assert!(t.shared_bytes(4) > t.shared_bytes(2));
            assert!(t.shared_bytes(2) <= HOPPER, "{t:?}");
        }
        // Bulk copies: A, B and C unpadded in slabs, 1 KB more for their alignment.
        for reverse in [false, true] {
            let tma = t
                .with_schedule(Schedule {
                    tma: true,
                    ..Schedule::default()
                })
                .in_order(reverse);
            assert_eq!((tma.kbuf(), tma.cbuf()), (64 * 128, 64 * 128));
            let lay = Lay::Slabs {
                rows: 64,
                reversed: reverse,
            };
            assert_eq!(tma.lay_c(), lay);
            let unpadded = 2 * (4 * 64 * 8 + 3 * 64 * 8);
            assert_eq!(tma.shared_bytes(2), t.shared_bytes(2) - unpadded + 1024);
        }
    }
}
