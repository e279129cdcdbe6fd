//! The tiled scan: the decayed causal scan of [`super::cube::scan`] in chunks of 32 or 64 tokens,
//! every product done as 16x16x16 tiles, on tensor cores (CubeCL `cmma`) where the device has
//! them for the input dtype. The same kernel body runs with the tile products written out as
//! plain loops (`use_cmma = false`), which is how CI checks its indexing, masks and decays over
//! lavapipe; the GPU check (`benches/lightning.rs --check`) covers the `cmma` instance.
//!
//! Per chunk of `C` tokens, one cube (8 warps) and `dt` output columns, everything in shared
//! memory except the next chunk's inputs, which are prefetched into registers while the current
//! one is computed:
//!
//! ```text
//! P   = mask(A B^T) * lambda^(i-j)             C x C      scores, rounded to the input dtype
//! O   = (lambda^(i+1) A) S + P V               C x dt     S: the carried state (input dtype copy)
//! S  <- lambda^len S + (lambda^(len-1-i) B)^T V    dk x dt    f32, in shared memory
//! ```

use burn::tensor::DType;
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind, StorageType as IrStorage};
use cubecl::prelude::*;

use super::cube::{load_state, store_state};
use super::ScanOptions;

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

/// The geometry of one tiled-scan launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledConfig {
    /// Tokens per chunk (32 or 64).
    pub chunk: usize,
    /// Output columns per cube (16, 32 or 64).
    pub dt: usize,
    /// Tensor-core tile products (`false`: the same kernels with plain loops).
    pub cmma: bool,
    /// Two launches, states in sequence then outputs in parallel ([`super::split`]), instead of
    /// the one fused `tiled_scan_kernel` walking the chunks.
    pub split: bool,
}

impl TiledConfig {
    /// Shared memory of one cube in bytes (the larger kernel's, when split), for a contracted
    /// dim of `da` and inputs of `elem` bytes.
    pub fn smem(&self, da: usize, elem: usize) -> usize {
        if self.split {
            super::split::split_smem(*self, padded(da), elem)
        } else {
            tiled_smem(*self, padded(da), elem)
        }
    }
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

fn storage(dtype: DType) -> IrStorage {
    dtype.into()
}

/// The tensor-core configuration for this device and dtype, if it has one: f16 or bf16 inputs
/// with f32 accumulation in 16x16x16 tiles, a contracted dim of at most 128, and the shared
/// memory to hold it.
pub fn cmma_config<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: DType,
    da: usize,
) -> Option<TiledConfig> {
    if !matches!(dtype, DType::F16 | DType::BF16) || padded(da) > 128 {
        return None;
    }
    let want = MmaConfig {
        a_type: storage(dtype),
        b_type: storage(dtype),
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m: 16,
        n: 16,
        k: 16,
    };
    let props = client.properties();
    if !props.features.matmul.cmma.contains(&want) {
        return None;
    }
    let (chunk, dt) = tile_override().unwrap_or((64, 64));
    let cfg = TiledConfig {
        chunk,
        dt,
        cmma: true,
        split: !force_fused(),
    };
    (cfg.smem(da, dtype.size()) <= props.hardware.max_shared_memory_size).then_some(cfg)
}

/// `SCALELAB_LIGHTNING_SCAN=fused` runs the one-launch `tiled_scan_kernel` instead of the
/// split pair, to compare the two.
fn force_fused() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FUSED.get_or_init(|| std::env::var("SCALELAB_LIGHTNING_SCAN").is_ok_and(|v| v == "fused"))
}

/// `SCALELAB_LIGHTNING_TILE=CHUNKxDT` (e.g. `32x64`) picks the tensor-core kernel's chunk and
/// column tile, for benchmarking the geometries; unset, 64 x 64.
fn tile_override() -> Option<(usize, usize)> {
    static TILE: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| {
        let v = std::env::var("SCALELAB_LIGHTNING_TILE").ok()?;
        let (c, d) = v.split_once('x')?;
        let tile = (c.parse().ok()?, d.parse().ok()?);
        let valid = matches!(tile.0, 32 | 64) && matches!(tile.1, 16 | 32 | 64);
        assert!(
            valid,
            "SCALELAB_LIGHTNING_TILE={v}: chunk 32 or 64, columns 16, 32 or 64 (e.g. 64x64)"
        );
        Some(tile)
    })
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

/// The tiled decayed causal scan: one cube per (`dt` output columns, batch x head), walking the
/// chunks in order. Arguments and output as in [`super::cube::scan`].
#[allow(
    clippy::too_many_arguments,
    clippy::collapsible_if,
    clippy::manual_div_ceil
)]
#[cube(launch_unchecked)]
fn tiled_scan_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    s: &Tensor<F>,
    state: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] chunk: usize,
    #[comptime] dkp: usize,
    #[comptime] dt: usize,
    #[comptime] has_state: bool,
    #[comptime] reverse: bool,
    #[comptime] transpose_state: bool,
    #[comptime] state_exp0: bool,
    #[comptime] use_cmma: bool,
    #[define(F)] _dtype: StorageType,
) {
    let tid = UNIT_POS_X as usize;
    let n = a.shape(2);
    let da = a.shape(3);
    let dc = c.shape(3);
    let heads = a.shape(1);
    let bh = CUBE_POS_Y as usize;
    let bi = bh / heads;
    let hi = bh % heads;
    let c0 = CUBE_POS_X as usize * dt;

    let sv = f32::cast_from(s[hi * s.stride(0)]);
    let a_base = bi * a.stride(0) + hi * a.stride(1);
    let b_base = bi * b.stride(0) + hi * b.stride(1);
    let c_base = bi * c.stride(0) + hi * c.stride(1);
    let o_base = bi * out.stride(0) + hi * out.stride(1);
    let a_st = a.stride(2);
    let a_sd = a.stride(3);
    let b_st = b.stride(2);
    let b_sd = b.stride(3);
    let c_st = c.stride(2);
    let c_sd = c.stride(3);
    let o_st = out.stride(2);
    let o_sd = out.stride(3);

    // Row strides (elements) of the shared tiles.
    let ks = comptime!(dkp + PAD);
    let cs = comptime!(dt + PAD);
    let ps = comptime!(chunk + PAD);
    let fs = comptime!(dt + PADF);
    let xs = comptime!((if chunk > dt { chunk } else { dt }) + PADF);

    let mut sa = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut saq = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sbk = SharedMemory::<F>::new_aligned(chunk * ks, 32usize);
    let mut sc = SharedMemory::<F>::new_aligned(chunk * cs, 32usize);
    let mut sst = SharedMemory::<F>::new_aligned(dkp * cs, 32usize);
    let mut sp = SharedMemory::<F>::new_aligned(chunk * ps, 32usize);
    // The f32 state (dkp x dt) and the f32 scores, then outputs, of the chunk (chunk x dt).
    let mut sf = SharedMemory::<f32>::new_aligned(dkp * fs, 32usize);
    let mut sx = SharedMemory::<f32>::new_aligned(chunk * xs, 32usize);
    // pw[d] = lambda^d, d = 0..=chunk.
    let mut pw = SharedMemory::<f32>::new(chunk + 1);

    decay_powers(&mut pw, sv, chunk, THREADS);
    load_state::<F>(
        state,
        &mut sf,
        bi,
        hi,
        0,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        fs,
        THREADS,
        has_state,
        transpose_state,
        state_exp0,
    );

    let mut ra = Array::<F>::new(chunk * dkp / THREADS);
    let mut rb = Array::<F>::new(chunk * dkp / THREADS);
    let mut rc = Array::<F>::new(chunk * dt / THREADS);
    let nblocks = (n + chunk - 1) / chunk;
    let mut len0 = n;
    if len0 > chunk {
        len0 = chunk;
    }
    fetch::<F>(
        a, a_base, a_st, a_sd, n, da, 0, len0, 0, &mut ra, chunk, dkp, reverse, THREADS,
    );
    fetch::<F>(
        b, b_base, b_st, b_sd, n, da, 0, len0, 0, &mut rb, chunk, dkp, reverse, THREADS,
    );
    fetch::<F>(
        c, c_base, c_st, c_sd, n, dc, 0, len0, c0, &mut rc, chunk, dt, reverse, THREADS,
    );
    sync_cube();

    for blk in 0..nblocks {
        let t0 = blk * chunk;
        let mut len = n - t0;
        if len > chunk {
            len = chunk;
        }

        // 1. Stage this chunk (plain, query-decayed and key-decayed copies), copy the state to
        //    the input dtype for the products and decay the f32 state by lambda^len.
        #[unroll]
        for r in 0..chunk * dkp / THREADS {
            let e = tid + r * THREADS;
            let i = e / dkp;
            let d = e % dkp;
            let av = ra[r];
            let bv = rb[r];
            let mut wk = 0.0f32;
            if i < len {
                wk = pw[len - 1 - i];
            }
            sa[i * ks + d] = av;
            saq[i * ks + d] = F::cast_from(f32::cast_from(av) * pw[i + 1]);
            sb[i * ks + d] = bv;
            sbk[i * ks + d] = F::cast_from(f32::cast_from(bv) * wk);
        }
        #[unroll]
        for r in 0..chunk * dt / THREADS {
            let e = tid + r * THREADS;
            sc[(e / dt) * cs + e % dt] = rc[r];
        }
        let whole = pw[len];
        #[unroll]
        for r in 0..dkp * dt / THREADS {
            let e = tid + r * THREADS;
            let row = e / dt;
            let col = e % dt;
            let v = sf[row * fs + col];
            sst[row * cs + col] = F::cast_from(v);
            sf[row * fs + col] = v * whole;
        }
        sync_cube();

        // Prefetch the next chunk; its loads are in flight during the products below.
        if blk + 1 < nblocks {
            let t1 = t0 + chunk;
            let mut len1 = n - t1;
            if len1 > chunk {
                len1 = chunk;
            }
            fetch::<F>(
                a, a_base, a_st, a_sd, n, da, t1, len1, 0, &mut ra, chunk, dkp, reverse, THREADS,
            );
            fetch::<F>(
                b, b_base, b_st, b_sd, n, da, t1, len1, 0, &mut rb, chunk, dkp, reverse, THREADS,
            );
            fetch::<F>(
                c, c_base, c_st, c_sd, n, dc, t1, len1, c0, &mut rc, chunk, dt, reverse, THREADS,
            );
        }

        // 2. Scores A B^T (tiles on and below the diagonal) and the state update.
        score_tiles::<F>(&sa, &sb, &mut sx, chunk, dkp, ks, xs, WARPS, use_cmma);
        state_tiles::<F>(
            &sbk, &sc, &mut sf, chunk, dkp, dt, ks, cs, fs, WARPS, use_cmma,
        );
        sync_cube();

        // 3. Causal mask and decay lambda^(i-j) on the scores.
        mask_scores::<F>(&sx, &mut sp, &pw, chunk, xs, ps);
        sync_cube();

        // 4. Outputs: the decayed queries against the carried state, plus the masked scores
        //    against this chunk's values (only the score tiles on and below the diagonal).
        output_tiles::<F>(
            &saq, &sst, &sp, &sc, &mut sx, chunk, dkp, dt, ks, cs, false, cs, ps, xs, use_cmma,
        );
        sync_cube();

        // 5. Write the chunk's outputs.
        #[unroll]
        for r in 0..chunk * dt / THREADS {
            let e = tid + r * THREADS;
            let i = e / dt;
            let j = e % dt;
            if i < len && c0 + j < dc {
                let tt = t0 + i;
                let p = if reverse { n - 1 - tt } else { tt };
                out[o_base + p * o_st + (c0 + j) * o_sd] = F::cast_from(sx[i * xs + j]);
            }
        }
    }
    sync_cube();

    store_state::<F>(
        out,
        &sf,
        o_base + n * o_st,
        o_st,
        o_sd,
        c0,
        da,
        dc,
        sv,
        dkp,
        dt,
        fs,
        THREADS,
        state_exp0,
    );
}

/// The validated inputs of one tiled scan and its freshly allocated packed output.
pub(crate) struct ScanArgs<R: CubeRuntime> {
    pub a: CubeTensor<R>,
    pub b: CubeTensor<R>,
    pub c: CubeTensor<R>,
    /// Contiguous `[heads]`.
    pub s: CubeTensor<R>,
    /// The initial state, or any tensor when `has_state` is false.
    pub state: CubeTensor<R>,
    pub has_state: bool,
    /// `[B, H, n + da, dc]`.
    pub out: CubeTensor<R>,
}

/// Stops with the reason when `cfg` is not a geometry the tiled kernels have, or their `smem`
/// bytes of shared memory per cube are more than the device has.
pub(crate) fn check_launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    cfg: TiledConfig,
    smem: usize,
) {
    assert!(
        matches!(cfg.chunk, 32 | 64) && matches!(cfg.dt, 16 | 32 | 64),
        "tiled scan: chunk 32 or 64, dt 16, 32 or 64 (got {cfg:?})"
    );
    let smem_max = client.properties().hardware.max_shared_memory_size;
    assert!(
        smem <= smem_max,
        "tiled scan ({cfg:?}): {smem} bytes of shared memory needed, the device has {smem_max}"
    );
}

/// Launches `tiled_scan_kernel` with the given geometry on inputs [`super::cube::scan_with`]
/// has checked; writes `args.out`.
pub(crate) fn launch<R: CubeRuntime>(
    client: &ComputeClient<R>,
    args: ScanArgs<R>,
    opts: ScanOptions,
    cfg: TiledConfig,
) {
    let shape = args.a.meta.shape().dims::<4>();
    if cfg.split && super::split::states_fit(shape, args.c.meta.shape()[3], cfg) {
        return super::split::launch(client, args, opts, cfg);
    }
    let dtype = args.a.dtype;
    let [batch, heads, _, da] = args.a.meta.shape().dims::<4>();
    let dc = args.c.meta.shape()[3];
    let dkp = padded(da);
    check_launch(client, cfg, tiled_smem(cfg, dkp, dtype.size()));
    let cube_count = CubeCount::Static(dc.div_ceil(cfg.dt) as u32, (batch * heads) as u32, 1);
    // SAFETY: every tensor index the kernel forms is guarded by the shape checks of `scan_with`
    // and its own bounds tests (rows past `n`, columns past `da`/`dc` are never read or written).
    super::usage::record("tiled_scan_kernel");
    unsafe {
        tiled_scan_kernel::launch_unchecked::<R>(
            client,
            cube_count,
            CubeDim::new_1d(THREADS as u32),
            args.a.into_tensor_arg(),
            args.b.into_tensor_arg(),
            args.c.into_tensor_arg(),
            args.s.into_tensor_arg(),
            args.state.into_tensor_arg(),
            args.out.into_tensor_arg(),
            cfg.chunk,
            dkp,
            cfg.dt,
            args.has_state,
            opts.reverse,
            opts.transpose_state,
            opts.state_exp0,
            cfg.cmma,
            dtype.into(),
        );
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
