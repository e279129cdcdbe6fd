//! The kernels' entry points on CubeCL tensors: [`scan`], [`dk_dv`] (the backward's two reverse
//! scans) and [`decode`], what the `LightningBackend` implementations of the CubeCL backends
//! run. Each checks its inputs, asks [`super::dispatch`] which kernels run (with this device's
//! [`device_facts`] and the [`dispatch::settings`]), prepares the tensors (contiguous copies
//! where a kernel's vector loads need them, the output and the chunk-state buffers) and calls
//! the kernel files' launchers. [`scan_with`] and [`dk_dv_with`] take the first choice from the
//! caller instead, to run a given kernel (the tests).

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::features::MmaConfig;
use cubecl::ir::{features::Tma, ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

use super::dispatch::{
    self, DeviceFacts, DkDvRoute, OutputKernel, PairPlan, ScanRoute, StatesKernel, TensorCorePlan,
};
use super::geometry::{
    check_tiled, padded, plain as plain_geometry, split_smem, states_fit, FusedGeometry,
    TiledConfig, DECODE_ROWS, MK, MM, MN,
};
use super::options::ScanOptions;
use super::{decode as decode_kernel, mma, mma_fused, plain, split, tiled};

/// What [`super::dispatch`] needs to know of the device behind `client`.
pub fn device_facts<R: CubeRuntime>(client: &ComputeClient<R>) -> DeviceFacts {
    let props = client.properties();
    let matmul = &props.features.matmul;
    let f32_acc: StorageType = ElemType::Float(FloatKind::F32).into();
    let cmma = |dtype: DType| {
        let elem: StorageType = dtype.into();
        matmul.cmma.contains(&MmaConfig {
            a_type: elem,
            b_type: elem,
            cd_type: f32_acc,
            m: 16,
            n: 16,
            k: 16,
        })
    };
    let mma = |dtype: DType| {
        let elem: StorageType = dtype.into();
        let want = MmaConfig {
            a_type: elem,
            b_type: elem,
            cd_type: f32_acc,
            m: MM as u32,
            n: MN as u32,
            k: MK as u32,
        };
        matmul.mma.contains(&want) && matmul.ldmatrix.contains(&elem)
    };
    DeviceFacts {
        cuda: R::name(client) == "cuda",
        cmma_f16: cmma(DType::F16),
        cmma_bf16: cmma(DType::BF16),
        mma_f16: mma(DType::F16),
        mma_bf16: mma(DType::BF16),
        copy_async: props.features.copy_async,
        tma: props.features.tma.contains(Tma::Base),
        max_shared_memory: props.hardware.max_shared_memory_size,
        sms: props.hardware.num_streaming_multiprocessors.unwrap_or(1) as usize,
    }
}

/// The float dtype `tensors` share (`q, k, v` and the like), or a panic naming the rule.
fn check_same_float(tensors: &[&CubeTensor<impl CubeRuntime>]) -> DType {
    let dtype = tensors[0].dtype;
    for t in tensors {
        assert_eq!(
            t.dtype, dtype,
            "lightning kernels: q, k, v (and the state and cotangents of a scan) must share one \
             float dtype"
        );
    }
    dtype
}

/// The decay rates `s` in the kernels' dtype `dtype`. `s` may have its own float dtype: f32
/// decays under f16 inputs keep a trained `ds` (which reaches 1e5 at 1K tokens under slow
/// decays) inside its dtype's range; the kernels read the rates rounded to `dtype`.
fn rates_in<R: CubeRuntime>(s: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    assert!(
        s.dtype.is_float(),
        "lightning kernels: s (the decay rates) must be a float tensor"
    );
    if s.dtype == dtype {
        s
    } else {
        burn_cubecl::kernel::cast(s, dtype)
    }
}

/// Stops with an error naming the fix when an input buffer or an output of `out_len` elements
/// would pass the kernels' 32-bit indexing.
fn check_indexing<R: CubeRuntime>(inputs: &[&CubeTensor<R>], out_len: usize) {
    let largest = inputs
        .iter()
        .map(|t| t.handle.size_in_used() as usize / t.dtype.size())
        .chain([out_len])
        .max()
        .unwrap_or(0);
    assert!(
        largest <= u32::MAX as usize,
        "lightning scan: a tensor of {largest} elements exceeds the kernels' 32-bit indexing; \
         run fewer sequences or heads per call"
    );
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
pub(crate) fn aligned<R: CubeRuntime>(t: CubeTensor<R>, nv: usize) -> CubeTensor<R> {
    if nv == 1 || vector_aligned(&t, nv) {
        t
    } else {
        into_contiguous(t)
    }
}

/// One decayed causal scan of `(a, b, c)` from `state` (see [`super::reference::scan`]): the
/// packed `[B, H, n + da, dc]` result, from the kernels [`dispatch::scan_route`] and
/// [`dispatch::tensor_core_plan`] choose.
pub fn scan<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    s: CubeTensor<R>,
    state: Option<CubeTensor<R>>,
    opts: ScanOptions,
) -> CubeTensor<R> {
    let facts = device_facts(&a.client);
    let shape = a.meta.shape().dims::<4>();
    let dc = c.meta.shape()[3];
    let route = dispatch::scan_route(&facts, &dispatch::settings(), a.dtype, shape, dc);
    scan_with(a, b, c, s, state, opts, route)
}

/// [`scan`] on the route given: `Plain` runs `scan_kernel`, `Tiled(cfg)` `tiled_scan_kernel`,
/// `TensorCores(cfg)` the one-launch kernel or the split pair as [`dispatch::tensor_core_plan`]
/// chooses (a `cfg` with `cmma: false` runs the `cmma` kernels' bodies as plain loops, on any
/// device).
pub fn scan_with<R: CubeRuntime>(
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    s: CubeTensor<R>,
    state: Option<CubeTensor<R>>,
    opts: ScanOptions,
    route: ScanRoute,
) -> CubeTensor<R> {
    let dtype = check_same_float(&[&a, &b, &c]);
    let s = rates_in(s, dtype);
    let [batch, heads, n, da] = a.meta.shape().dims::<4>();
    let dc = c.meta.shape()[3];
    assert_eq!(b.meta.shape().dims::<4>(), [batch, heads, n, da], "scan: b");
    assert_eq!(c.meta.shape().dims::<4>(), [batch, heads, n, dc], "scan: c");
    assert_eq!(
        s.meta.shape().num_elements(),
        heads,
        "scan: s must be [heads]"
    );
    check_indexing(&[&a, &b, &c], batch * heads * (n + da) * dc);
    let client = a.client.clone();
    let out = empty_device_contiguous_dtype::<R>(
        client.clone(),
        a.device.clone(),
        Shape::new([batch, heads, n + da, dc]),
        dtype,
    );
    let has_state = state.is_some();
    let state = match state {
        Some(st) => {
            assert_eq!(st.dtype, dtype, "scan: state dtype");
            let want = if opts.transpose_state {
                [batch, heads, dc, da]
            } else {
                [batch, heads, da, dc]
            };
            assert_eq!(st.meta.shape().dims::<4>(), want, "scan: state shape");
            st
        }
        None => a.clone(),
    };
    let facts = device_facts(&client);
    match route {
        ScanRoute::Plain => {
            let dkp = da.div_ceil(plain_geometry::KC).max(1) * plain_geometry::KC;
            assert!(dkp <= 256, "lightning kernels: head dims up to 256");
            let dt = dispatch::plain_columns(&facts, da);
            let smem = plain_geometry::smem(dkp, dt);
            assert!(
                smem <= facts.max_shared_memory,
                "lightning scan: {smem} bytes of shared memory needed, the device has {}",
                facts.max_shared_memory
            );
            let s = into_contiguous(s);
            // SAFETY: the shapes are checked above.
            unsafe {
                plain::launch(
                    &client,
                    [a, b, c, s, state, out.clone()],
                    [dkp, dt],
                    has_state,
                    opts,
                );
            }
        }
        ScanRoute::Tiled(cfg) => {
            let s = into_contiguous(s);
            // SAFETY: the shapes are checked above.
            unsafe {
                tiled::launch(
                    &client,
                    [a, b, c, s, state, out.clone()],
                    cfg,
                    has_state,
                    opts,
                );
            }
        }
        ScanRoute::TensorCores(cfg) => {
            let s = into_contiguous(s);
            tensor_core_scan(
                &client,
                &facts,
                [a, b, c, s, state, out.clone()],
                cfg,
                has_state,
                opts,
            );
        }
    }
    out
}

/// The one-launch kernel or the split pair, on inputs [`scan_with`] has checked; writes `out`.
fn tensor_core_scan<R: CubeRuntime>(
    client: &ComputeClient<R>,
    facts: &DeviceFacts,
    [a, b, c, s, state, out]: [CubeTensor<R>; 6],
    cfg: TiledConfig,
    has_state: bool,
    opts: ScanOptions,
) {
    let dtype = a.dtype;
    let elem = dtype.size();
    let shape = a.meta.shape().dims::<4>();
    let [batch, heads, n, da] = shape;
    let dc = c.meta.shape()[3];
    assert!(
        states_fit(shape, dc, cfg),
        "lightning scan: the split pair's chunk states of a {shape:?} scan pass the kernels' \
         32-bit indexing (the dispatch runs tiled_scan_kernel there)"
    );
    let dkp = padded(da);
    check_tiled(cfg, split_smem(cfg, dkp, elem), facts.max_shared_memory);
    let nblocks = n.div_ceil(cfg.chunk);
    let col_tiles = dc.div_ceil(cfg.dt);
    let bh = batch * heads;
    let nv = dispatch::tile_vector(facts, cfg, [dkp, da, dc], elem);
    let (a, b, c) = (aligned(a, nv), aligned(b, nv), aligned(c, nv));
    let nv = if [&a, &b, &c, &out].iter().all(|t| vector_aligned(t, nv)) {
        nv
    } else {
        1
    };
    let plan =
        dispatch::tensor_core_plan(facts, &dispatch::settings(), dtype, cfg, [bh, dkp, dc], nv);
    let plan = match plan {
        TensorCorePlan::Fused(geo) => {
            // SAFETY: shapes checked by `scan_with`; `geo` is the dispatch's for these shapes
            // and `nv`, which every tensor is aligned to.
            unsafe {
                fused(
                    client,
                    facts,
                    [a, b, c, s, state, out],
                    geo,
                    [bh, dc],
                    nv,
                    dkp,
                    has_state,
                    opts,
                );
            }
            return;
        }
        TensorCorePlan::Split(plan) => plan,
    };
    let h = empty_device_contiguous_dtype::<R>(
        client.clone(),
        a.device.clone(),
        Shape::new([(bh * nblocks * dkp).max(1), col_tiles * cfg.dt]),
        dtype,
    );
    // SAFETY: shapes checked by `scan_with`, every row past `n` and column past the head dims
    // guarded in the kernels; `h` has exactly the `bh x chunks x dkp x dcp` elements the states
    // pass writes.
    unsafe {
        states_pass(
            client,
            plan.states,
            [
                b.clone(),
                c.clone(),
                s.clone(),
                state,
                h.clone(),
                out.clone(),
            ],
            [bh, dc],
            nv,
            cfg,
            dkp,
            has_state,
            opts,
        );
        if nblocks == 0 {
            return;
        }
        output_pass(
            client,
            plan.output,
            [a, b, c, s, h, out],
            [nblocks, bh, dc],
            nv,
            cfg,
            dkp,
            opts.reverse,
            false,
        );
    }
}

/// Launches the one-launch kernel, by bulk copies where [`dispatch::fused_by_tma`] says so.
///
/// # Safety
/// As `mma_fused::launch`.
#[allow(clippy::too_many_arguments)]
unsafe fn fused<R: CubeRuntime>(
    client: &ComputeClient<R>,
    facts: &DeviceFacts,
    tensors: [CubeTensor<R>; 6],
    geo: FusedGeometry,
    [bh, dc]: [usize; 2],
    nv: usize,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    let inputs_fit = tensors[..3].iter().all(|t| tma_fits(t));
    let tma = dispatch::fused_by_tma(facts, &geo, inputs_fit);
    mma_fused::launch(
        client,
        tensors,
        geo,
        tma,
        [bh, dc],
        nv,
        dkp,
        has_state,
        opts,
    );
}

/// Launches the states pass over `[b, c, s, state, h, out]` on the kernel the dispatch chose.
///
/// # Safety
/// As `split::launch_states` and `mma::launch_states`.
#[allow(clippy::too_many_arguments)]
unsafe fn states_pass<R: CubeRuntime>(
    client: &ComputeClient<R>,
    kernel: StatesKernel,
    tensors: [CubeTensor<R>; 6],
    [bh, dc]: [usize; 2],
    nv: usize,
    cfg: TiledConfig,
    dkp: usize,
    has_state: bool,
    opts: ScanOptions,
) {
    match kernel {
        StatesKernel::Mma(geo) => mma::launch_states(
            client,
            tensors,
            [bh, dc],
            nv,
            geo,
            cfg.chunk,
            dkp,
            has_state,
            opts,
        ),
        StatesKernel::Cmma => {
            split::launch_states(client, tensors, [bh, dc], nv, cfg, dkp, has_state, opts)
        }
    }
}

/// Launches the output pass over `[a, b, c, s, h, out]` on the kernel the dispatch chose, `H`
/// transposed with `h_t`.
///
/// # Safety
/// As `split::launch_output` and `mma::launch_output`.
#[allow(clippy::too_many_arguments)]
unsafe fn output_pass<R: CubeRuntime>(
    client: &ComputeClient<R>,
    kernel: OutputKernel,
    tensors: [CubeTensor<R>; 6],
    [nblocks, bh, dc]: [usize; 3],
    nv: usize,
    cfg: TiledConfig,
    dkp: usize,
    reverse: bool,
    h_t: bool,
) {
    match kernel {
        OutputKernel::Mma { dt } => mma::launch_output(
            client,
            tensors,
            [nblocks, bh, dc],
            nv,
            [cfg.chunk, dt, cfg.dt],
            dkp,
            reverse,
            h_t,
        ),
        OutputKernel::Cmma => split::launch_output(
            client,
            tensors,
            [nblocks, bh, dc],
            nv,
            cfg,
            dkp,
            reverse,
            h_t,
        ),
    }
}

/// The backward's two reverse scans, `dk = reverse scan(v, do, q)` from `dS_n^T` and
/// `dv = reverse scan(k, q, do)` from `dS_n` (both `state_exp0`), on the route
/// [`dispatch::dk_dv_route`] chooses: one shared states pass where the split pair applies to
/// both, else two [`scan`]s. Returns `(dk, dv)` with `dk` in rows `0..n` of a
/// `[B, H, n + dv, dk]` tensor and `dv` packed with `dS0` in its rows `n..`.
pub fn dk_dv<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let facts = device_facts(&q.client);
    let shape = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let route = dispatch::dk_dv_route(&facts, &dispatch::settings(), q.dtype, shape, dv);
    dk_dv_routed(q, k, v, d_o, s, d_state, route)
}

/// [`dk_dv`] with the tile given (`None`: two scans on the plain kernel), as
/// [`dispatch::dk_dv_route_with`] routes it.
pub fn dk_dv_with<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
    tile: Option<TiledConfig>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let facts = device_facts(&q.client);
    let shape = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let route = dispatch::dk_dv_route_with(&facts, q.dtype, shape, dv, tile);
    dk_dv_routed(q, k, v, d_o, s, d_state, route)
}

/// [`dk_dv`] on `route`.
fn dk_dv_routed<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
    route: DkDvRoute,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let s = rates_in(s, check_same_float(&[&q, &k, &v, &d_o, &d_state]));
    match route {
        DkDvRoute::TwoScans { dk, dv } => {
            let d_k = scan_with(
                v,
                d_o.clone(),
                q.clone(),
                s.clone(),
                Some(d_state.clone()),
                ScanOptions::DK,
                dk,
            );
            let d_v = scan_with(k, q, d_o, s, Some(d_state), ScanOptions::DV, dv);
            (d_k, d_v)
        }
        DkDvRoute::Shared(cfg) => shared_pair(q, k, v, d_o, s, d_state, cfg),
    }
}

/// The backward's `dv = reverse scan(k, q, do)` from `dS` and `dk = reverse scan(v, do, q)` from
/// `dS^T` on one states pass: the `dk` scan's chunk states are the `dv` scan's transposed, so
/// the states pass runs once and the output pass twice, the second reading `H` transposed (or,
/// where the dispatch says so, two one-launch scans). Returns `(dk, dv)` as [`dk_dv`].
fn shared_pair<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    d_o: CubeTensor<R>,
    s: CubeTensor<R>,
    d_state: CubeTensor<R>,
    cfg: TiledConfig,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = q.meta.shape().dims::<4>();
    let [batch, heads, n, dk] = shape;
    let dv = v.meta.shape()[3];
    assert_eq!(k.meta.shape().dims::<4>(), shape, "dk_dv: k");
    assert_eq!(
        d_o.meta.shape().dims::<4>(),
        [batch, heads, n, dv],
        "dk_dv: do"
    );
    assert_eq!(
        v.meta.shape().dims::<4>(),
        [batch, heads, n, dv],
        "dk_dv: v"
    );
    assert_eq!(
        d_state.meta.shape().dims::<4>(),
        [batch, heads, dk, dv],
        "dk_dv: state"
    );
    assert_eq!(
        s.meta.shape().num_elements(),
        heads,
        "dk_dv: s must be [heads]"
    );
    let client = q.client.clone();
    let facts = device_facts(&client);
    let s = into_contiguous(s);
    let dtype = q.dtype;
    let elem = dtype.size();
    let (dkp, dvp) = (padded(dk), padded(dv));
    let smem = split_smem(cfg, dkp, elem).max(split_smem(cfg, dvp, elem));
    check_tiled(cfg, smem, facts.max_shared_memory);
    let nv = dispatch::pair_vector(&facts, cfg, [dk, dv], elem);
    let [q, k, v, d_o] = [q, k, v, d_o].map(|t| aligned(t, nv));
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
    let plan = dispatch::pair_plan(&facts, &dispatch::settings(), dtype, cfg, [bh, dk, dv], nv);
    let (states, dv_output, dk_output) = match plan {
        PairPlan::Fused {
            dv: dv_geo,
            dk: dk_geo,
        } => {
            // SAFETY: each scan's shapes are the dv and dk scans' checked above; the geometries
            // are the dispatch's for them and `nv`.
            unsafe {
                fused(
                    &client,
                    &facts,
                    [
                        k,
                        q.clone(),
                        d_o.clone(),
                        s.clone(),
                        d_state.clone(),
                        dv_out.clone(),
                    ],
                    dv_geo,
                    [bh, dv],
                    nv,
                    dkp,
                    true,
                    ScanOptions::DV,
                );
                fused(
                    &client,
                    &facts,
                    [v, d_o, q, s, d_state, dk_out.clone()],
                    dk_geo,
                    [bh, dk],
                    nv,
                    dvp,
                    true,
                    ScanOptions::DK,
                );
            }
            return (dk_out, dv_out);
        }
        PairPlan::Split {
            states,
            dv_output,
            dk_output,
        } => (states, dv_output, dk_output),
    };
    let h = empty([
        1,
        1,
        (bh * nblocks * dkp).max(1),
        dv.div_ceil(cfg.dt) * cfg.dt,
    ]);
    // SAFETY: shapes checked above, every row past `n` and column past the head dims guarded in
    // the kernels; the transposed read of `h` stays inside its rows.
    unsafe {
        states_pass(
            &client,
            states,
            [
                q.clone(),
                d_o.clone(),
                s.clone(),
                d_state,
                h.clone(),
                dv_out.clone(),
            ],
            [bh, dv],
            nv,
            cfg,
            dkp,
            true,
            ScanOptions::DV,
        );
        if nblocks == 0 {
            return (dk_out, dv_out);
        }
        output_pass(
            &client,
            dv_output,
            [
                k,
                q.clone(),
                d_o.clone(),
                s.clone(),
                h.clone(),
                dv_out.clone(),
            ],
            [nblocks, bh, dv],
            nv,
            cfg,
            dkp,
            true,
            false,
        );
        output_pass(
            &client,
            dk_output,
            [v, d_o, q, s, h, dk_out.clone()],
            [nblocks, bh, dk],
            nv,
            cfg,
            dvp,
            true,
            true,
        );
    }
    (dk_out, dv_out)
}

/// One recurrent step on `decode_warp_kernel`, `(o [B, H, 1, dv], new state [B, H, dk, dv])`;
/// the state may have its own float dtype (the new state keeps it).
pub fn decode<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    s: CubeTensor<R>,
    state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    // One decode kernel and no setting for it; read the settings anyway, so that a wrong
    // `SCALELAB_LIGHTNING_*` variable stops a decode-only process too.
    dispatch::settings();
    let dtype = check_same_float(&[&q, &k, &v]);
    let s = rates_in(s, dtype);
    let state_dtype = state.dtype;
    assert!(
        state_dtype.is_float(),
        "lightning decode: the state must be a float tensor"
    );
    let [batch, heads, one, dk] = q.meta.shape().dims::<4>();
    assert_eq!(one, 1, "decode: one token per call");
    let dv = v.meta.shape()[3];
    assert_eq!(
        state.meta.shape().dims::<4>(),
        [batch, heads, dk, dv],
        "decode: state shape"
    );
    let client = q.client.clone();
    let o = empty_device_contiguous_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, heads, 1, dv]),
        dtype,
    );
    let state_out = empty_device_contiguous_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, heads, dk, dv]),
        state_dtype,
    );
    // The widest state access of at most 16 bytes that every row, `v` and `o` allow.
    let nv = [4, 2]
        .into_iter()
        .find(|&nv| {
            nv * state_dtype.size() <= 16
                && dv % nv == 0
                && [&v, &state, &o, &state_out]
                    .iter()
                    .all(|t| vector_aligned(t, nv))
        })
        .unwrap_or(1);
    // SAFETY: the shapes are checked above; `nv` divides `dv` and every stride and offset of the
    // vector tensors.
    unsafe {
        decode_kernel::launch(
            &client,
            [q, k, v, s, state, o.clone(), state_out.clone()],
            nv,
            DECODE_ROWS,
        );
    }
    (o, state_out)
}
