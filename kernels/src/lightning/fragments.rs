//! The `#[cube]` helpers of the register kernels (`mma`'s split pair and `mma_fused`'s
//! one-launch kernel), for CUDA: `mma` fragments as plain registers in the layout PTX documents
//! for `m16n8k16` (lane `l`: rows `l / 4` and `+ 8`, columns `2 (l % 4)` and `+ 1` of an
//! accumulator tile), loaded by `ldmatrix` from tiles laid out as [`Lay`] says, and `cp.async`
//! copies of a chunk into shared memory. No kernel here, and no import of a kernel file.

use cubecl::{
    cmma::MmaDefinition, ir::MatrixIdent, prelude::barrier::copy_async_checked, prelude::*,
};

use super::geometry::{Lay, MK, MM, MN, SLAB};

/// A pair of elements, the unit of `mma` fragments (32-bit registers of f16/bf16).
pub(crate) type Pair<E> = Vector<E, Const<2>>;

/// Four 8x8 matrices of `sm` into the registers of one `mma` operand by `ldmatrix` (`.trans`
/// with `trans`), each lane pointing where [`lane_offset`] says. `r0` is a multiple of 8 and
/// `c0` of 16.
#[cube]
#[allow(clippy::too_many_arguments)]
fn ldm<F: Float>(
    sm: &SharedMemory<F>,
    base: usize,
    r0: usize,
    c0: usize,
    #[comptime] lay: Lay,
    #[comptime] swap: bool,
    #[comptime] trans: bool,
    #[comptime] ident: MatrixIdent,
) -> Array<Pair<F>> {
    let def = MmaDefinition::<F, F, f32>::new(MM, MN, MK);
    let off = lane_offset(UNIT_POS_X as usize % 32, base, r0, c0, lay, swap);
    def.load_matrix::<F, Const<2>>(&sm.slice(off, off + 8), ident, 4usize, trans)
}

/// The `A` fragment (16 x 16) at rows `m0..`, columns `k0..` of a row-major `[m][k]` tile, or
/// with `stored_t` of `A` stored transposed, a row-major `[k][m]` tile.
#[cube]
pub(crate) fn frag_a<F: Float>(
    sm: &SharedMemory<F>,
    base: usize,
    m0: usize,
    k0: usize,
    #[comptime] stride: usize,
    #[comptime] stored_t: bool,
) -> Array<Pair<F>> {
    frag_a_in::<F>(sm, base, m0, k0, comptime!(Lay::Rows(stride)), stored_t)
}

/// The element of the tile at `base` (laid out as `lay` says) whose address lane `lane` gives
/// [`ldm`]: row `lane % 8` of matrix `j = lane / 8`, at rows `r0 + 8 * (j % 2)..`, columns
/// `c0 + 8 * (j / 2)..` (`swap`: `j / 2` and `j % 2` exchanged).
#[cube]
pub(crate) fn lane_offset(
    lane: usize,
    base: usize,
    r0: usize,
    c0: usize,
    #[comptime] lay: Lay,
    #[comptime] swap: bool,
) -> usize {
    let j = lane / 8;
    let (jr, jc) = if swap { (j / 2, j % 2) } else { (j % 2, j / 2) };
    let row = lane % 8 + 8 * jr;
    // The lane's own part apart, so a tile offset known at compile time folds into the
    // instruction's immediate instead of costing address arithmetic per load.
    let (stride, slabs, rows, reversed) = comptime!(lay.parts());
    if comptime!(!slabs) {
        base + r0 * stride + c0 + (row * stride + 8 * jc)
    } else {
        // Row `r0 + row` at slab row `r0 + row`, or reversed `(rows - 1 - r0) - row`. Its
        // bit 2 flips the 16-byte halves of 32-byte rows; reversed, the 8 rows' order and so
        // that bit are mirrored (`rows - 1 - r0` is 7 modulo 8).
        let mut flip = (lane % 8) / 4;
        let mut rows_part = r0 * SLAB;
        let mut lane_part = row * SLAB;
        if comptime!(reversed) {
            flip = 1 - flip;
            rows_part = 0;
            lane_part = ((comptime!(rows.max(1) - 1) - r0) - row) * SLAB;
        }
        base + (c0 / SLAB) * comptime!(rows * SLAB) + rows_part + (lane_part + 8 * (jc ^ flip))
    }
}

/// [`frag_a`] from a tile laid out as `lay` says.
#[cube]
pub(crate) fn frag_a_in<F: Float>(
    sm: &SharedMemory<F>,
    base: usize,
    m0: usize,
    k0: usize,
    #[comptime] lay: Lay,
    #[comptime] stored_t: bool,
) -> Array<Pair<F>> {
    if stored_t {
        ldm::<F>(sm, base, k0, m0, lay, true, true, MatrixIdent::A)
    } else {
        ldm::<F>(sm, base, m0, k0, lay, false, false, MatrixIdent::A)
    }
}

/// The `B` fragments of two 8-column tiles (`k0..k0 + 16` x `n0..n0 + 16`) of a row-major
/// `[k][n]` tile, or with `stored_t` of `B` stored transposed, a row-major `[n][k]` tile:
/// registers 0-1 the first tile's, 2-3 the second's.
#[cube]
pub(crate) fn frag_b2<F: Float>(
    sm: &SharedMemory<F>,
    base: usize,
    k0: usize,
    n0: usize,
    #[comptime] stride: usize,
    #[comptime] stored_t: bool,
) -> Array<Pair<F>> {
    frag_b2_in::<F>(sm, base, k0, n0, comptime!(Lay::Rows(stride)), stored_t)
}

/// [`frag_b2`] from a tile laid out as `lay` says.
#[cube]
pub(crate) fn frag_b2_in<F: Float>(
    sm: &SharedMemory<F>,
    base: usize,
    k0: usize,
    n0: usize,
    #[comptime] lay: Lay,
    #[comptime] stored_t: bool,
) -> Array<Pair<F>> {
    if stored_t {
        ldm::<F>(sm, base, n0, k0, lay, true, false, MatrixIdent::B)
    } else {
        ldm::<F>(sm, base, k0, n0, lay, false, true, MatrixIdent::B)
    }
}

/// `acc[at..at + 2] += a * b[2 half..2 half + 2]`: one `mma` on an 8-column tile whose `B`
/// fragment is half `half` of a [`frag_b2`] pair.
#[cube]
pub(crate) fn mma_half<F: Float>(
    a: &Array<Pair<F>>,
    b: &Array<Pair<F>>,
    #[comptime] half: usize,
    acc: &mut Array<Pair<f32>>,
    at: usize,
) {
    let def = MmaDefinition::<F, F, f32>::new(MM, MN, MK);
    let mut fb = Array::<Pair<F>>::new(2usize);
    fb[0] = b[2 * half];
    fb[1] = b[2 * half + 1];
    let mut fc = Array::<Pair<f32>>::new(2usize);
    fc[0] = acc[at];
    fc[1] = acc[at + 1];
    def.execute_inplace(a, &fb, &mut fc);
    acc[at] = fc[0];
    acc[at + 1] = fc[1];
}

/// The row within a warp's block of the state of its accumulator pair `i` (16-row tile
/// `i / (2 tiles)` of `tiles` 8-column tiles, lane group `g`, upper half `i % 2`).
#[cube]
pub(crate) fn state_row(i: usize, g: usize, #[comptime] tiles: usize) -> usize {
    (i / (2 * tiles)) * MM + g + (i % 2) * 8
}

/// The first column within a warp's block of the state of its accumulator pair `i` (8-column
/// tile `(i / 2) % tiles`, lane `tq` of its group).
#[cube]
pub(crate) fn state_col(i: usize, tq: usize, #[comptime] tiles: usize) -> usize {
    ((i / 2) % tiles) * MN + 2 * tq
}

/// The initial state's elements (`row`, `col`) and (`row`, `col + 1`) in f32, times `scale`,
/// from `state[s_base..]` (`[da, dc]`, or `[dc, da]` with `transpose_state`); zero outside
/// `da x dc`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn initial_pair<F: Float>(
    state: &Tensor<F>,
    s_base: usize,
    row: usize,
    col: usize,
    da: usize,
    dc: usize,
    scale: f32,
    #[comptime] transpose_state: bool,
) -> Pair<f32> {
    let mut v = Pair::<f32>::new(0.0);
    #[unroll]
    for j in 0..2usize {
        if row < da && col + j < dc {
            let idx = if transpose_state {
                s_base + (col + j) * state.stride(2) + row * state.stride(3)
            } else {
                s_base + row * state.stride(2) + (col + j) * state.stride(3)
            };
            v[j] = f32::cast_from(state[idx]) * scale;
        }
    }
    v
}

/// Copies `rows x width` elements of `x` (rows `t0..` in scan order, columns from `col0`) into
/// the shared tile at `dst[dst_base..]` (row stride `stride`) by `cp.async`, `N` elements per
/// copy, zero-filled past the sequence (`len` rows) and past `ncols`; `tid` is this unit's
/// index among the `threads` that share the tile. The caller commits and waits on a barrier.
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn copy_tile_async<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    base: usize,
    stride_t: usize,
    stride_d: usize,
    n: usize,
    ncols: usize,
    t0: usize,
    len: usize,
    col0: usize,
    dst: &mut SharedMemory<F>,
    dst_base: usize,
    tid: usize,
    #[comptime] stride: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] reverse: bool,
    #[comptime] threads: usize,
) {
    let nv = N::value();
    let wv = comptime!(width / nv);
    #[unroll]
    for r in 0..rows * wv / threads {
        let e = tid + r * threads;
        let i = e / wv;
        let d = (e % wv) * nv;
        let t = t0 + i;
        let mut p = t;
        if reverse {
            if t < n {
                p = n - 1 - t;
            }
        }
        let inside = i < len && col0 + d < ncols;
        let mut idx = 0usize;
        if inside {
            idx = (base + p * stride_t + (col0 + d) * stride_d) / nv;
        }
        let off = dst_base + i * stride + d;
        // Reinterpreted without rescaling the offset: `cp.async` adds the slice's offset to the
        // scalar shared array (`with_vector_size` would count it in vectors).
        let mut dv = unsafe {
            dst.slice_mut(off, off + nv)
                .downcast_unchecked::<Vector<F, N>>()
        };
        copy_async_checked(
            &x.slice(idx, idx + usize::cast_from(inside)),
            &mut dv,
            comptime!(nv as u32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a bulk copy of 2-byte elements lands element `(r, c)` of a tile in 16-column
    /// slabs of `rows` rows (reversed: row `rows - 1 - r`): boxes one after another, 32-byte
    /// rows under the 32-byte swizzle, which flips address bit 4 (the row's 16-byte half)
    /// where bit 7 is set.
    fn landed(r: usize, c: usize, rows: usize, reversed: bool) -> usize {
        let r = if reversed { rows - 1 - r } else { r };
        let byte = 2 * ((c / 16) * rows * 16 + r * 16 + c % 16);
        (byte ^ (((byte >> 7) & 1) << 4)) / 2
    }

    /// Each lane's address under every layout is its element's, and under slabs each 8x8
    /// matrix's eight 16-byte rows cover the 32 banks once (no conflicts).
    #[test]
    fn lane_offsets_find_their_elements_without_bank_conflicts() {
        for (rows, cols) in [(64, 128), (64, 64), (32, 128)] {
            let slabs = [false, true].map(|reversed| Lay::Slabs { rows, reversed });
            for lay in std::iter::once(Lay::Rows(cols + 8)).chain(slabs) {
                // The second of a double buffer: a multiple of the 1 KB alignment.
                let base = lay.elems(rows, cols);
                for swap in [false, true] {
                    for r0 in (0..rows).step_by(16) {
                        for c0 in (0..cols).step_by(16) {
                            let offs: Vec<usize> = (0..32)
                                .map(|l| lane_offset(l, base, r0, c0, lay, swap))
                                .collect();
                            for (l, &off) in offs.iter().enumerate() {
                                let j = l / 8;
                                let (jr, jc) = if swap { (j / 2, j % 2) } else { (j % 2, j / 2) };
                                let (r, c) = (r0 + 8 * jr + l % 8, c0 + 8 * jc);
                                let want = match lay {
                                    Lay::Rows(stride) => r * stride + c,
                                    Lay::Slabs { rows, reversed } => landed(r, c, rows, reversed),
                                };
                                assert_eq!(off, base + want, "{lay:?} swap {swap} lane {l}");
                            }
                            for m in offs.chunks(8) {
                                let mut banks = [0; 32];
                                for off in m {
                                    for w in 0..4 {
                                        banks[(off * 2 / 4 + w) % 32] += 1;
                                    }
                                }
                                assert_eq!(banks, [1; 32], "{lay:?} at ({r0}, {c0}): {m:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}
