//! The `#[cube]` helpers the scan kernels share, in shared memory and registers: the initial
//! and final states ([`load_state`], [`store_state`]), the 16x16x16 tile products of the `cmma`
//! kernels ([`tile_mma`] and the loops over a chunk's tiles built on it), the decay powers, and
//! the staging of a chunk's operands for the split pair's two passes. No kernel here, and no
//! import of a kernel file.

use cubecl::prelude::*;

use super::geometry::{PAD, T16, THREADS, WARPS};

/// Loads rows `r0..r0 + rows`, columns `c0..c0 + dt` of the initial state (`[B, H, da, dc]`, or
/// `[B, H, dc, da]` transposed) into `dst` (f32, row stride `stride`), zero without a state or
/// past its edges. With `state_exp0` it is scaled by `exp(s)` so that the carried-state term
/// reads `lambda^t`.
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn load_state<F: Float>(
    state: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    bi: usize,
    hi: usize,
    r0: usize,
    c0: usize,
    da: usize,
    dc: usize,
    sv: f32,
    #[comptime] rows: usize,
    #[comptime] dt: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
    #[comptime] has_state: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
) {
    let tid = UNIT_POS_X as usize;
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(sv);
    }
    #[unroll]
    for r in 0..rows * dt / threads {
        let e = tid + r * threads;
        let row = e / dt;
        let col = e % dt;
        let mut val = 0.0f32;
        if has_state {
            if r0 + row < da && c0 + col < dc {
                let sb = bi * state.stride(0) + hi * state.stride(1);
                let idx = if transpose_state {
                    sb + (c0 + col) * state.stride(2) + (r0 + row) * state.stride(3)
                } else {
                    sb + (r0 + row) * state.stride(2) + (c0 + col) * state.stride(3)
                };
                val = f32::cast_from(state[idx]) * scale;
            }
        }
        dst[row * stride + col] = val;
    }
}

/// Writes columns `c0..c0 + dt` of the final state from `src` (f32, row stride `stride`) to the
/// packed output rows starting at `base`, undoing [`load_state`]'s `exp(s)` under `state_exp0`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_state<F: Float>(
    out: &mut Tensor<F>,
    src: &SharedMemory<f32>,
    base: usize,
    o_st: usize,
    o_sd: usize,
    c0: usize,
    da: usize,
    dc: usize,
    sv: f32,
    #[comptime] rows: usize,
    #[comptime] dt: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
    #[comptime] state_exp0: bool,
) {
    let tid = UNIT_POS_X as usize;
    let mut scale = 1.0f32;
    if state_exp0 {
        scale = f32::exp(-sv);
    }
    #[unroll]
    for r in 0..rows * dt / threads {
        let e = tid + r * threads;
        let row = e / dt;
        let col = e % dt;
        if row < da && c0 + col < dc {
            out[base + row * o_st + (c0 + col) * o_sd] =
                F::cast_from(src[row * stride + col] * scale);
        }
    }
}

/// One warp's 16x16 f32 tile of `out = [out] + A1 B1 [+ A2 B2]`, operands in shared memory.
///
/// An operand starts at its tile's first element; a row-major `A` (`M x K`) steps along `K` by
/// 16 elements, a column-major one by 16 rows, and the other way round for `B` (`K x N`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_mma<F: Float>(
    a1: &SharedMemory<F>,
    a1_start: usize,
    #[comptime] a1_stride: usize,
    #[comptime] a1_row: bool,
    b1: &SharedMemory<F>,
    b1_start: usize,
    #[comptime] b1_stride: usize,
    #[comptime] b1_row: bool,
    k1: usize,
    a2: &SharedMemory<F>,
    a2_start: usize,
    #[comptime] a2_stride: usize,
    b2: &SharedMemory<F>,
    b2_start: usize,
    #[comptime] b2_stride: usize,
    k2: usize,
    out: &mut SharedMemory<f32>,
    out_start: usize,
    #[comptime] out_stride: usize,
    #[comptime] init: bool,
    #[comptime] use_cmma: bool,
) {
    // The second product (when `k2 > 0`) is always row-major A times row-major B.
    let a1_step = comptime!(if a1_row { T16 } else { T16 * a1_stride });
    let b1_step = comptime!(if b1_row { T16 * b1_stride } else { T16 });
    let a2_step = comptime!(T16);
    let b2_step = comptime!(T16 * b2_stride);
    if use_cmma {
        let a1_layout = comptime!(if a1_row {
            cmma::MatrixLayout::RowMajor
        } else {
            cmma::MatrixLayout::ColMajor
        });
        let b1_layout = comptime!(if b1_row {
            cmma::MatrixLayout::RowMajor
        } else {
            cmma::MatrixLayout::ColMajor
        });
        let acc = cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            T16,
            T16,
            T16,
            cmma::MatrixLayout::Undefined,
            0.0,
        );
        if init {
            cmma::load_with_layout(
                &acc,
                &out.slice(out_start, out.len()),
                comptime!(out_stride as u32),
                cmma::MatrixLayout::RowMajor,
            );
        }
        for kk in 0..k1 {
            let am = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::A,
                T16,
                T16,
                T16,
                a1_layout,
                &a1.slice(a1_start + kk * a1_step, a1.len()),
                comptime!(a1_stride as u32),
            );
            let bm = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::B,
                T16,
                T16,
                T16,
                b1_layout,
                &b1.slice(b1_start + kk * b1_step, b1.len()),
                comptime!(b1_stride as u32),
            );
            cmma::execute::<F, F, f32, f32>(&am, &bm, &acc, &acc);
        }
        for kk in 0..k2 {
            let am = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::A,
                T16,
                T16,
                T16,
                cmma::MatrixLayout::RowMajor,
                &a2.slice(a2_start + kk * a2_step, a2.len()),
                comptime!(a2_stride as u32),
            );
            let bm = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::B,
                T16,
                T16,
                T16,
                cmma::MatrixLayout::RowMajor,
                &b2.slice(b2_start + kk * b2_step, b2.len()),
                comptime!(b2_stride as u32),
            );
            cmma::execute::<F, F, f32, f32>(&am, &bm, &acc, &acc);
        }
        cmma::store(
            &mut out.slice_mut(out_start, out.len()),
            &acc,
            comptime!(out_stride as u32),
            cmma::MatrixLayout::RowMajor,
        );
    } else {
        // Each lane owns 8 consecutive elements of the tile.
        let lane = UNIT_POS_X as usize % 32;
        #[unroll]
        for r in 0..8usize {
            let e = lane * 8 + r;
            let row = e / T16;
            let col = e % T16;
            let mut acc = 0.0f32;
            if init {
                acc = out[out_start + row * out_stride + col];
            }
            for kk in 0..k1 * T16 {
                let ai = if a1_row {
                    a1_start + row * a1_stride + kk
                } else {
                    a1_start + kk * a1_stride + row
                };
                let bi = if b1_row {
                    b1_start + kk * b1_stride + col
                } else {
                    b1_start + col * b1_stride + kk
                };
                acc += f32::cast_from(a1[ai]) * f32::cast_from(b1[bi]);
            }
            for kk in 0..k2 * T16 {
                acc += f32::cast_from(a2[a2_start + row * a2_stride + kk])
                    * f32::cast_from(b2[b2_start + kk * b2_stride + col]);
            }
            out[out_start + row * out_stride + col] = acc;
        }
    }
}

/// This warp's share of the scores `A B^T` of one chunk (`chunk x chunk`, f32, row stride `xs`),
/// the 16x16 tiles on and below the diagonal only; `A` and `B` are `chunk x dkp` (stride `ks`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn score_tiles<F: Float>(
    sa: &SharedMemory<F>,
    sb: &SharedMemory<F>,
    sx: &mut SharedMemory<f32>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] ks: usize,
    #[comptime] xs: usize,
    #[comptime] warps: usize,
    #[comptime] use_cmma: bool,
) {
    let ct = comptime!(chunk / T16);
    let mut t = UNIT_POS_X as usize / 32;
    while t < ct * ct {
        let tm = t / ct;
        let tn = t % ct;
        if tn <= tm {
            tile_mma::<F>(
                sa,
                tm * T16 * ks,
                ks,
                true,
                sb,
                tn * T16 * ks,
                ks,
                false,
                comptime!(dkp / T16),
                sa,
                0,
                ks,
                sb,
                0,
                ks,
                0,
                sx,
                tm * T16 * xs + tn * T16,
                xs,
                false,
                use_cmma,
            );
        }
        t += warps;
    }
}

/// This warp's share of the state update `S += (decayed B)^T C`: `S` is `rows x dt` f32 (stride
/// `fs`), `B` is `chunk x rows` (stride `ks`), `C` is `chunk x dt` (stride `cs`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_tiles<F: Float>(
    sbk: &SharedMemory<F>,
    sc: &SharedMemory<F>,
    sf: &mut SharedMemory<f32>,
    #[comptime] chunk: usize,
    #[comptime] rows: usize,
    #[comptime] dt: usize,
    #[comptime] ks: usize,
    #[comptime] cs: usize,
    #[comptime] fs: usize,
    #[comptime] warps: usize,
    #[comptime] use_cmma: bool,
) {
    let nt = comptime!(dt / T16);
    let mut t = UNIT_POS_X as usize / 32;
    while t < comptime!(rows / T16) * nt {
        let tm = t / nt;
        let tn = t % nt;
        tile_mma::<F>(
            sbk,
            tm * T16,
            ks,
            false,
            sc,
            tn * T16,
            cs,
            true,
            comptime!(chunk / T16),
            sbk,
            0,
            ks,
            sc,
            0,
            cs,
            0,
            sf,
            tm * T16 * fs + tn * T16,
            fs,
            true,
            use_cmma,
        );
        t += warps;
    }
}

/// `pw[d] = lambda^d` for `d` in `0..=chunk`, however many threads the cube has (a 64-thread
/// cube must still write `pw[64]`).
#[cube]
pub(crate) fn decay_powers(
    pw: &mut SharedMemory<f32>,
    sv: f32,
    #[comptime] chunk: usize,
    #[comptime] threads: usize,
) {
    #[unroll]
    for r in 0..comptime!(chunk / threads + 1) {
        let d = UNIT_POS_X as usize + r * threads;
        if d <= chunk {
            pw[d] = f32::exp(-sv * f32::cast_from(d));
        }
    }
}

/// The causal mask and decay `lambda^(i-j)` (`pw[d] = lambda^d`) on the f32 scores `sx`, rounded
/// into `sp` (row stride `ps`) for the next product.
#[cube]
pub(crate) fn mask_scores<F: Float>(
    sx: &SharedMemory<f32>,
    sp: &mut SharedMemory<F>,
    pw: &SharedMemory<f32>,
    #[comptime] chunk: usize,
    #[comptime] xs: usize,
    #[comptime] ps: usize,
) {
    let tid = UNIT_POS_X as usize;
    #[unroll]
    for r in 0..chunk * chunk / THREADS {
        let e = tid + r * THREADS;
        let i = e / chunk;
        let j = e % chunk;
        let mut v = 0.0f32;
        if j <= i {
            v = sx[i * xs + j] * pw[i - j];
        }
        sp[i * ps + j] = F::cast_from(v);
    }
}

/// This warp's share of one chunk's outputs `O = Aq S + P C` into `sx` (f32, stride `xs`): `Aq`
/// the decayed queries (`chunk x dkp`, stride `ks`), `S` the state (`dkp x dt`, row stride `ss`;
/// with `s_t` stored transposed, `dt x dkp`), `P` the masked scores (only the tiles on and below
/// the diagonal are read), `C` the values (stride `cs`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn output_tiles<F: Float>(
    saq: &SharedMemory<F>,
    sst: &SharedMemory<F>,
    sp: &SharedMemory<F>,
    sc: &SharedMemory<F>,
    sx: &mut SharedMemory<f32>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] ks: usize,
    #[comptime] ss: usize,
    #[comptime] s_t: bool,
    #[comptime] cs: usize,
    #[comptime] ps: usize,
    #[comptime] xs: usize,
    #[comptime] use_cmma: bool,
) {
    let nt = comptime!(dt / T16);
    let mut t = UNIT_POS_X as usize / 32;
    while t < comptime!(chunk / T16) * nt {
        let tm = t / nt;
        let tn = t % nt;
        let s_start = if s_t { tn * T16 * ss } else { tn * T16 };
        tile_mma::<F>(
            saq,
            tm * T16 * ks,
            ks,
            true,
            sst,
            s_start,
            ss,
            comptime!(!s_t),
            comptime!(dkp / T16),
            sp,
            tm * T16 * ps,
            ps,
            sc,
            tn * T16,
            cs,
            tm + 1,
            sx,
            tm * T16 * xs + tn * T16,
            xs,
            false,
            use_cmma,
        );
        t += WARPS;
    }
}

/// Reads one chunk (`chunk` rows, `width` columns from `col0`) of `x` into registers, zero past
/// the sequence (`len` rows left) and past the last column. Strides and sizes come in as values:
/// reading them from the tensor's metadata at every element costs a dependent global load each.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch<F: Float>(
    x: &Tensor<F>,
    base: usize,
    stride_t: usize,
    stride_d: usize,
    n: usize,
    ncols: usize,
    t0: usize,
    len: usize,
    col0: usize,
    regs: &mut Array<F>,
    #[comptime] chunk: usize,
    #[comptime] width: usize,
    #[comptime] reverse: bool,
    #[comptime] threads: usize,
) {
    let tid = UNIT_POS_X as usize;
    #[unroll]
    for r in 0..chunk * width / threads {
        let e = tid + r * threads;
        let i = e / width;
        let d = e % width;
        let mut v = F::from_int(0);
        if i < len && col0 + d < ncols {
            let t = t0 + i;
            let p = if reverse { n - 1 - t } else { t };
            v = x[base + p * stride_t + (col0 + d) * stride_d];
        }
        regs[r] = v;
    }
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

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};

    /// The decay table a cube of `threads` units builds for `s[0]`, read back by one unit.
    #[cube(launch_unchecked)]
    fn decay_table_kernel(
        s: &Array<f32>,
        out: &mut Array<f32>,
        #[comptime] chunk: usize,
        #[comptime] threads: usize,
    ) {
        let mut pw = SharedMemory::<f32>::new(chunk + 1);
        decay_powers(&mut pw, s[0], chunk, threads);
        sync_cube();
        if UNIT_POS_X == 0 {
            for d in 0..chunk + 1 {
                out[d] = pw[d];
            }
        }
    }

    /// Every entry up to `lambda^chunk`, whether the cube has fewer threads than entries (the
    /// 64-thread states cube left `lambda^64` unwritten before) or more.
    #[test]
    fn decay_table_is_whole_for_any_cube_size() {
        let client = WgpuRuntime::client(&WgpuDevice::default());
        let (s, chunk) = (0.3f32, 64usize);
        for threads in [32usize, 64, 128, 256] {
            let s_in = client.create_from_slice(f32::as_bytes(&[s]));
            let out = client.create_from_slice(f32::as_bytes(&vec![-1.0f32; chunk + 1]));
            // SAFETY: one cube; `out` has the `chunk + 1` entries the kernel writes, `s` one.
            unsafe {
                decay_table_kernel::launch_unchecked::<WgpuRuntime>(
                    &client,
                    CubeCount::Static(1, 1, 1),
                    CubeDim::new_1d(threads as u32),
                    ArrayArg::from_raw_parts(s_in, 1),
                    ArrayArg::from_raw_parts(out.clone(), chunk + 1),
                    chunk,
                    threads,
                );
            }
            let got = client.read_one_unchecked(out);
            for (d, &v) in f32::from_bytes(&got).iter().enumerate() {
                let want = (-s * d as f32).exp();
                assert!(
                    (v - want).abs() <= 1e-5 * want,
                    "{threads} threads: lambda^{d} = {v}, want {want}"
                );
            }
        }
    }
}
