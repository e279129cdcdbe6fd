//! Which kernel runs: the one place that decides.
//!
//! [`settings`] reads the `SCALELAB_LIGHTNING_*` environment once into [`Settings`]; an unknown
//! variable or value stops with an error naming the accepted ones. [`DeviceFacts`] is what the
//! choice needs to know of a device (`launch::device_facts` reads it from a CubeCL client; a test
//! makes one up). The functions below choose for a (device, settings, dtype, shape) and touch no
//! tensor, so the choice itself is tested on the CPU; [`choose_scan`] composes them as the
//! launcher does. The kernel files launch the geometry they are given; `launch` asks here.
//!
//! A scan (the forward, or one of the backward's three) runs, in this order of checks:
//!
//! 1. `scan_kernel` (the plain kernel) for f32 inputs, under `SCALELAB_LIGHTNING_SCAN=plain`,
//!    on devices without 16x16x16 `cmma` tiles for f16/bf16 with f32 accumulation, for a
//!    contracted head dim past 128, or where the split pair's shared memory does not fit.
//! 2. `tiled_scan_kernel` where the split pair's chunk states `H` would pass the kernels' 32-bit
//!    indexing (B=4 at 64 heads and 64K tokens).
//! 3. The one-launch kernel (`chunk_fused_mma_kernel`) where the device has `mma` (`m16n8k16`),
//!    `ldmatrix` and `cp.async` for the dtype, its tiling takes the head dims and its cubes keep
//!    at least 70% of the device's cube slots busy ([`fills_device`]).
//! 4. Otherwise the split pair, each pass on its register (`mma`) kernel where the device and
//!    the shape allow it, else on its `cmma` kernel.
//!
//! The backward's `dk` and `dv` scans share one states pass where the split pair applies to
//! both ([`dk_dv_route`]); decode runs `decode_warp_kernel`.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use burn::tensor::DType;

use super::geometry::{
    padded, plain, state_rows, states_fit, FusedGeometry, Schedule, StatesGeometry, TiledConfig,
    Tiling, MK, MM, MN, ST_THREADS, THREADS,
};

// ---- Settings.

/// The prefix of the kernels' environment variables: a variable under it that is not a setting
/// is an error (a typo, or a knob that no longer exists).
pub const PREFIX: &str = "SCALELAB_LIGHTNING_";
/// The one setting: which kernels the scans run ([`ScanMode`]).
pub const SCAN_VAR: &str = "SCALELAB_LIGHTNING_SCAN";
/// Every setting's variable.
pub const VARIABLES: [&str; 1] = [SCAN_VAR];

/// Which kernels the scans run, `SCALELAB_LIGHTNING_SCAN`: for benchmarks and A/B checks;
/// nothing needs it set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ScanMode {
    /// `auto` (unset): the choice of [the module docs](self).
    #[default]
    Auto,
    /// `plain`: every scan on `scan_kernel`, to compare the tensor-core kernels with it.
    Plain,
    /// `split`: tensor-core scans on the split pair, never on the one-launch kernel.
    Split,
    /// `fused`: the one-launch kernel wherever it applies, whether or not its cubes fill the
    /// device.
    Fused,
}

impl ScanMode {
    /// The accepted spellings, the default first.
    pub const SPELLINGS: [(&'static str, ScanMode); 4] = [
        ("auto", ScanMode::Auto),
        ("plain", ScanMode::Plain),
        ("split", ScanMode::Split),
        ("fused", ScanMode::Fused),
    ];
}

/// The kernels' settings: the environment's, read once per process ([`settings`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `SCALELAB_LIGHTNING_SCAN`.
    pub scan: ScanMode,
}

/// A setting the environment gives wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingsError {
    /// A setting's variable with a value it does not take.
    Value {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// The values it takes, its default first.
        accepted: Vec<&'static str>,
    },
    /// A `SCALELAB_LIGHTNING_*` variable that is no setting.
    Unknown {
        /// The variable.
        variable: String,
    },
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Value {
                variable,
                value,
                accepted,
            } => write!(
                f,
                "{variable}={value:?} is not a value it takes; accepted: {} (unset: {})",
                accepted.join(", "),
                accepted[0]
            ),
            SettingsError::Unknown { variable } => write!(
                f,
                "{variable} is set, but the lightning kernels have no such setting (a typo, or a \
                 knob that was removed); the settings are: {}",
                VARIABLES.join(", ")
            ),
        }
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// The settings from this process's environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        }))
    }

    /// The settings from `(variable, value)` pairs; variables outside [`PREFIX`] are ignored.
    /// The variables are read in name order, so the error reported is the same every run.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut ours: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.as_ref().starts_with(PREFIX))
            .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()))
            .collect();
        ours.sort();
        let mut settings = Settings::default();
        for (variable, value) in ours {
            match variable.as_str() {
                SCAN_VAR => settings.scan = parse(&variable, &value, &ScanMode::SPELLINGS)?,
                _ => return Err(SettingsError::Unknown { variable }),
            }
        }
        Ok(settings)
    }
}

/// The value whose spelling `value` is among `choices`.
fn parse<T: Copy>(
    variable: &str,
    value: &str,
    choices: &[(&'static str, T)],
) -> Result<T, SettingsError> {
    choices
        .iter()
        .find(|(spelling, _)| *spelling == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| SettingsError::Value {
            variable: variable.to_owned(),
            value: value.to_owned(),
            accepted: choices.iter().map(|(spelling, _)| *spelling).collect(),
        })
}

thread_local! {
    static OVERRIDE: Cell<Option<Settings>> = const { Cell::new(None) };
}

/// The settings in force: the environment's, read once per process (a wrong one stops the
/// process with [`SettingsError`]'s message), or [`with_settings`]'s on this thread.
pub fn settings() -> Settings {
    if let Some(settings) = OVERRIDE.with(Cell::get) {
        return settings;
    }
    static FROM_ENV: OnceLock<Settings> = OnceLock::new();
    *FROM_ENV.get_or_init(|| {
        Settings::from_env().unwrap_or_else(|err| panic!("lightning kernels: {err}"))
    })
}

/// Runs `f` with `settings` in force on this thread instead of the environment's: a test or a
/// benchmark comparing kernels in one process. Kernels launched from another thread do not see
/// them; Burn's fusion backend may run its custom operations later, so use `CubeBackend` (no
/// fusion) under an override.
pub fn with_settings<T>(settings: Settings, f: impl FnOnce() -> T) -> T {
    crate::overrides::with_override(&OVERRIDE, settings, f)
}

// ---- Devices.

/// What the choice needs to know of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The CubeCL runtime is CUDA: the tile loops may move vectors through shared memory, and
    /// the register kernels may run.
    pub cuda: bool,
    /// 16x16x16 `cmma` tiles of f16 inputs with f32 accumulation.
    pub cmma_f16: bool,
    /// The same for bf16 inputs.
    pub cmma_bf16: bool,
    /// `mma.m16n8k16` of f16 inputs with f32 accumulators, and `ldmatrix` of f16.
    pub mma_f16: bool,
    /// The same for bf16.
    pub mma_bf16: bool,
    /// `cp.async` copies into shared memory.
    pub copy_async: bool,
    /// Bulk tensor copies (TMA).
    pub tma: bool,
    /// Shared memory per cube, in bytes.
    pub max_shared_memory: usize,
    /// Streaming multiprocessors (1 where the device does not say).
    pub sms: usize,
}

impl DeviceFacts {
    fn cmma(&self, dtype: DType) -> bool {
        match dtype {
            DType::F16 => self.cmma_f16,
            DType::BF16 => self.cmma_bf16,
            _ => false,
        }
    }

    fn mma(&self, dtype: DType) -> bool {
        match dtype {
            DType::F16 => self.mma_f16,
            DType::BF16 => self.mma_bf16,
            _ => false,
        }
    }
}

// ---- One scan.

/// The tile of the tensor-core kernels: 64-token chunks, 64 columns per cube.
pub const TILE: TiledConfig = TiledConfig {
    chunk: 64,
    dt: 64,
    cmma: true,
};

/// The first choice for one scan: the plain kernel, `tiled_scan_kernel`, or the tensor-core
/// kernels with this tile (then [`tensor_core_plan`], once the launcher knows the inputs'
/// vector width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanRoute {
    /// `scan_kernel`, [`plain_columns`] output columns per cube.
    Plain,
    /// `tiled_scan_kernel`: one launch, no `H` buffer.
    Tiled(TiledConfig),
    /// The one-launch kernel or the split pair ([`tensor_core_plan`]).
    TensorCores(TiledConfig),
}

/// The tensor-core tile for a scan contracting `da` columns of `dtype` on this device, if
/// these inputs take one: f16 or bf16 with `cmma` on the device, a contracted dim of at most
/// 128, and the split pair's shared memory within the device's.
pub fn tensor_core_tile(dev: &DeviceFacts, dtype: DType, da: usize) -> Option<TiledConfig> {
    if !matches!(dtype, DType::F16 | DType::BF16) || padded(da) > 128 || !dev.cmma(dtype) {
        return None;
    }
    (TILE.split_smem(da, dtype.size()) <= dev.max_shared_memory).then_some(TILE)
}

/// The route of a scan of `a: shape` (`[batch, heads, n, da]`) with `dc` output columns.
pub fn scan_route(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    shape: [usize; 4],
    dc: usize,
) -> ScanRoute {
    if settings.scan == ScanMode::Plain {
        return ScanRoute::Plain;
    }
    match tensor_core_tile(dev, dtype, shape[3]) {
        Some(cfg) => route_with_tile(shape, dc, cfg),
        None => ScanRoute::Plain,
    }
}

/// The tensor-core route with tile `cfg`: the split pair's family, or `tiled_scan_kernel`
/// where the pair's chunk states would pass 32-bit indexing.
pub fn route_with_tile(shape: [usize; 4], dc: usize, cfg: TiledConfig) -> ScanRoute {
    if states_fit(shape, dc, cfg) {
        ScanRoute::TensorCores(cfg)
    } else {
        ScanRoute::Tiled(cfg)
    }
}

/// `scan_kernel`'s output columns per cube for a contracted dim of `da`: 32 where the state
/// tile fits the device's shared memory, else 16.
pub fn plain_columns(dev: &DeviceFacts, da: usize) -> usize {
    let dkp = da.div_ceil(plain::KC).max(1) * plain::KC;
    if plain::smem(dkp, plain::DT_WIDE) <= dev.max_shared_memory {
        plain::DT_WIDE
    } else {
        plain::DT_WIDE / 2
    }
}

/// The widest vector (in elements, at most 16 bytes) the tile loops of the split pair can move
/// whole, for a contracted dim padded to `dkp`, inputs `da` and outputs `dc` wide: every loop
/// gives each thread whole vectors, and the head dims are multiples of it. Vectors reinterpret
/// shared memory, which only the CUDA backend supports: 1 elsewhere. The launcher lowers it to
/// 1 where a tensor is not aligned to it.
pub fn tile_vector(dev: &DeviceFacts, cfg: TiledConfig, dims: [usize; 3], elem: usize) -> usize {
    let [dkp, da, dc] = dims;
    if !dev.cuda {
        return 1;
    }
    let rt = state_rows(dkp);
    let (c, dt) = (cfg.chunk, cfg.dt);
    [8, 4, 2]
        .into_iter()
        .find(|&nv| {
            nv * elem <= 16
                && da % nv == 0
                && dc % nv == 0
                && [c * dkp, c * dt, dkp * dt]
                    .iter()
                    .all(|x| x % (THREADS * nv) == 0)
                && [c * rt, c * dt, rt * dt]
                    .iter()
                    .all(|x| x % (ST_THREADS * nv) == 0)
        })
        .unwrap_or(1)
}

/// The second choice of a tensor-core scan: the one-launch kernel, or the split pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorCorePlan {
    /// `chunk_fused_mma_kernel`.
    Fused(FusedGeometry),
    /// The states pass, then the output pass.
    Split(SplitPlan),
}

/// The split pair's two kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// The states pass.
    pub states: StatesKernel,
    /// The output pass.
    pub output: OutputKernel,
}

/// The split pair's states pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatesKernel {
    /// `chunk_states_kernel` (shared-memory `cmma` tiles, or plain loops).
    Cmma,
    /// `chunk_states_mma_kernel` (the state in registers).
    Mma(StatesGeometry),
}

/// The split pair's output pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKernel {
    /// `chunk_output_kernel` (shared-memory `cmma` tiles, or plain loops).
    Cmma,
    /// `chunk_output_mma_kernel`, `dt` output columns per cube.
    Mma {
        /// Output columns per cube.
        dt: usize,
    },
}

/// The kernels of a tensor-core scan with tile `cfg`, `bh` batch x heads, a contracted dim
/// padded to `dkp`, `dc` output columns and inputs moved in vectors of `nv`.
pub fn tensor_core_plan(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    cfg: TiledConfig,
    [bh, dkp, dc]: [usize; 3],
    nv: usize,
) -> TensorCorePlan {
    match fused_geometry(dev, settings, dtype, cfg, [bh, dkp, dc], nv) {
        Some(geo) => TensorCorePlan::Fused(geo),
        None => TensorCorePlan::Split(SplitPlan {
            states: states_kernel(dev, dtype, cfg, [bh, dkp, dc]),
            output: output_kernel(dev, dtype, cfg, [dkp, dc], nv),
        }),
    }
}

/// Whether this device runs `mma.m16n8k16` and `ldmatrix` for `dtype` (f32 accumulators),
/// under the tensor-core tile.
fn has_mma(dev: &DeviceFacts, dtype: DType, cfg: TiledConfig) -> bool {
    cfg.cmma && dev.cuda && dev.mma(dtype)
}

/// Warps per cube of the register states kernel in its 64 x 64 tiles.
const MMA_STATES_WARPS: usize = 4;

/// The states pass for this scan: the register kernel where it applies (`mma` on this device,
/// 64-row state tiles, whole 16-row and 8-column tiles per warp), else `chunk_states_kernel`.
/// A 128 x 128 state takes one 16-warp cube per batch x head where the 64 x 64 tiles (3
/// four-warp cubes per SM: 168 registers a thread) would need a second wave: the chain then runs
/// once, and `__launch_bounds__(512)` caps the registers at 128.
fn states_kernel(
    dev: &DeviceFacts,
    dtype: DType,
    cfg: TiledConfig,
    [bh, dkp, dc]: [usize; 3],
) -> StatesKernel {
    let rt = state_rows(dkp);
    let warps = MMA_STATES_WARPS;
    let usable = rt == 64
        && rt % (warps * MM) == 0
        && cfg.dt % MN == 0
        && cfg.chunk % MK == 0
        && has_mma(dev, dtype, cfg);
    if !usable {
        return StatesKernel::Cmma;
    }
    let whole_fits = dkp == 128 && dc.div_ceil(cfg.dt) * cfg.dt == 128;
    let whole = whole_fits && 4 * bh > 3 * dev.sms;
    StatesKernel::Mma(if whole {
        StatesGeometry {
            rt: 128,
            dt: 128,
            warps: 16,
            col_groups: 2,
            stage_h: true,
        }
    } else {
        StatesGeometry {
            rt,
            dt: cfg.dt,
            warps,
            col_groups: 1,
            stage_h: true,
        }
    })
}

/// The output pass for this scan: the register kernel where it applies (`mma` on this device,
/// 64-token chunks, pairs of elements aligned (`nv >= 2`), every thread a whole number of
/// vectors), with 128 columns per cube (the scores computed once for a 128-wide head) unless
/// `dc` fits 64; else `chunk_output_kernel`.
fn output_kernel(
    dev: &DeviceFacts,
    dtype: DType,
    cfg: TiledConfig,
    [dkp, dc]: [usize; 2],
    nv: usize,
) -> OutputKernel {
    let dt = if dc > 64 { 128 } else { 64 };
    let threads = cfg.chunk / 16 * (dt / 64) * 32;
    let whole = [cfg.chunk * dkp, cfg.chunk * dt, dkp * dt]
        .iter()
        .all(|x| x % (threads * nv) == 0);
    let usable = cfg.chunk == 64 && nv >= 2 && dkp <= 128 && whole && has_mma(dev, dtype, cfg);
    if usable {
        OutputKernel::Mma { dt }
    } else {
        OutputKernel::Cmma
    }
}

/// The one-launch kernel's geometry for this scan, if it runs: a tiling it takes
/// ([`Tiling::checked`]: 64-token chunks, 128 columns per cube (64 for head dims up to 64),
/// 32-row warp tiles, or 16 where 32 do not fit) within the device's shared memory, `mma` and
/// `cp.async` on the device, and the settings asking for it: under [`ScanMode::Auto`] where its
/// cubes fill the device ([`fills_device`]).
pub fn fused_geometry(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    cfg: TiledConfig,
    [bh, dkp, dc]: [usize; 3],
    nv: usize,
) -> Option<FusedGeometry> {
    let asked = Schedule {
        packed_weights: true,
        row_scores: true,
        tma: true,
    };
    let sched = schedule_for(asked, dtype);
    let (c, dt) = (64, if dc > 64 { 128 } else { 64 });
    let tiling_with = |r| Tiling::checked(c, dkp, dt, r, nv).map(|t| (r, t));
    let (orows, tiling) = tiling_with(32).or_else(|| tiling_with(16))?;
    let smem = tiling.shared_bytes(dtype.size());
    let fits = smem <= dev.max_shared_memory && dev.copy_async && has_mma(dev, dtype, cfg);
    // An SM's shared memory is the most one cube may take plus the 1 KB the driver keeps per
    // cube (Hopper: 227 + 1 KB; Ampere: 163 + 1 KB).
    let per_sm = ((dev.max_shared_memory + 1024) / (smem + 1024))
        .min(2048 / tiling.threads)
        .max(1);
    let wanted = match settings.scan {
        ScanMode::Auto => fills_device(bh * dc.div_ceil(dt), dev.sms * per_sm),
        ScanMode::Fused => true,
        ScanMode::Split | ScanMode::Plain => false,
    };
    (fits && wanted).then_some(FusedGeometry {
        chunk: c,
        dt,
        orows,
        threads: tiling.threads,
        sched: tiling.with_schedule(sched).sched,
    })
}

/// The schedule asked for, as `dtype` allows it: packed token weights for bf16 only, as f16's
/// narrow exponent would flush the weights of steep decays to zero.
fn schedule_for(asked: Schedule, dtype: DType) -> Schedule {
    Schedule {
        packed_weights: asked.packed_weights && dtype == DType::BF16,
        ..asked
    }
}

/// Whether `cubes` keep at least 70% of a device's `slots` (cubes resident at once) busy over
/// their waves: a wave takes as long whether full or not, and the split pair, which has no such
/// steps, runs at about 1.4x the one-launch kernel's time on a full device (H200), in proportion
/// to the batch x heads.
pub fn fills_device(cubes: usize, slots: usize) -> bool {
    let slots = slots.max(1);
    cubes > 0 && 10 * cubes >= 7 * cubes.div_ceil(slots) * slots
}

/// Whether the one-launch kernel stages its chunks by bulk tensor copies (TMA): where the
/// device has them and every input fits them (`inputs_fit`: 16-byte aligned strides and start,
/// no broadcast); else by `cp.async`.
pub fn fused_by_tma(dev: &DeviceFacts, geo: &FusedGeometry, inputs_fit: bool) -> bool {
    geo.sched.tma && dev.tma && inputs_fit
}

/// The kernels one scan runs, all choices made (for contiguous inputs: the launcher may lower
/// the vector width of strided ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanChoice {
    /// `scan_kernel`, `dt` output columns per cube.
    Plain {
        /// Output columns per cube.
        dt: usize,
    },
    /// `tiled_scan_kernel`.
    Tiled(TiledConfig),
    /// `chunk_fused_mma_kernel`.
    Fused(FusedGeometry),
    /// The split pair.
    Split(TiledConfig, SplitPlan),
}

/// Every choice for one scan of `a: shape` (`[batch, heads, n, da]`) with `dc` output columns,
/// in the launcher's order.
pub fn choose_scan(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    shape: [usize; 4],
    dc: usize,
) -> ScanChoice {
    let [batch, heads, _, da] = shape;
    match scan_route(dev, settings, dtype, shape, dc) {
        ScanRoute::Plain => ScanChoice::Plain {
            dt: plain_columns(dev, da),
        },
        ScanRoute::Tiled(cfg) => ScanChoice::Tiled(cfg),
        ScanRoute::TensorCores(cfg) => {
            let dkp = padded(da);
            let nv = tile_vector(dev, cfg, [dkp, da, dc], dtype.size());
            match tensor_core_plan(dev, settings, dtype, cfg, [batch * heads, dkp, dc], nv) {
                TensorCorePlan::Fused(geo) => ScanChoice::Fused(geo),
                TensorCorePlan::Split(plan) => ScanChoice::Split(cfg, plan),
            }
        }
    }
}

// ---- The backward's `dk` and `dv` scans.

/// How the backward's two reverse scans run: apart, each on its route, or as a pair sharing
/// the split pair's states pass (the `dk` scan's chunk states are the `dv` scan's transposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkDvRoute {
    /// Two scans: `dk = reverse scan(v, do, q)` and `dv = reverse scan(k, q, do)`.
    TwoScans {
        /// The `dk` scan's route.
        dk: ScanRoute,
        /// The `dv` scan's route.
        dv: ScanRoute,
    },
    /// One pair with this tile ([`pair_plan`]).
    Shared(TiledConfig),
}

/// The route of the backward's `dk` and `dv` scans for `q: shape` (`[batch, heads, n, dk]`)
/// and `dv`-wide values: one tile for both, chosen for the wider head dim.
pub fn dk_dv_route(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    shape: [usize; 4],
    dv: usize,
) -> DkDvRoute {
    let tile = if settings.scan == ScanMode::Plain {
        None
    } else {
        tensor_core_tile(dev, dtype, shape[3].max(dv))
    };
    dk_dv_route_with(dev, dtype, shape, dv, tile)
}

/// [`dk_dv_route`] with the tile given (`None`: the plain kernel): shared where the pair's
/// chunk states stay within 32-bit indexing and both scans' shared memory fits.
pub fn dk_dv_route_with(
    dev: &DeviceFacts,
    dtype: DType,
    shape: [usize; 4],
    dv: usize,
    tile: Option<TiledConfig>,
) -> DkDvRoute {
    let [batch, heads, n, dk] = shape;
    let elem = dtype.size();
    let shared = tile.filter(|cfg| {
        states_fit(shape, dv, *cfg)
            && cfg.split_smem(dk, elem).max(cfg.split_smem(dv, elem)) <= dev.max_shared_memory
    });
    if let Some(cfg) = shared {
        return DkDvRoute::Shared(cfg);
    }
    let route = |shape, dc| tile.map_or(ScanRoute::Plain, |cfg| route_with_tile(shape, dc, cfg));
    DkDvRoute::TwoScans {
        dk: route([batch, heads, n, dv], dk),
        dv: route(shape, dv),
    }
}

/// The vector width of the shared pair: [`tile_vector`] of both scans.
pub fn pair_vector(
    dev: &DeviceFacts,
    cfg: TiledConfig,
    [dk, dv]: [usize; 2],
    elem: usize,
) -> usize {
    let (dkp, dvp) = (padded(dk), padded(dv));
    tile_vector(dev, cfg, [dkp, dk, dv], elem).min(tile_vector(dev, cfg, [dvp, dv, dk], elem))
}

/// The kernels of the shared pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairPlan {
    /// Two one-launch scans (each keeps its own state in registers: no `H` to share).
    Fused {
        /// The `dv` scan's geometry.
        dv: FusedGeometry,
        /// The `dk` scan's geometry.
        dk: FusedGeometry,
    },
    /// One states pass (the `dv` scan's), then each scan's output pass, the `dk` one reading
    /// the states transposed.
    Split {
        /// The states pass.
        states: StatesKernel,
        /// The `dv` scan's output pass.
        dv_output: OutputKernel,
        /// The `dk` scan's output pass.
        dk_output: OutputKernel,
    },
}

/// The kernels of the shared pair with tile `cfg`, `bh` batch x heads, head dims `dk` and `dv`
/// and inputs moved in vectors of `nv`: the one-launch kernel for both scans where it runs for
/// both, else the split pair's passes.
pub fn pair_plan(
    dev: &DeviceFacts,
    settings: &Settings,
    dtype: DType,
    cfg: TiledConfig,
    [bh, dk, dv]: [usize; 3],
    nv: usize,
) -> PairPlan {
    let (dkp, dvp) = (padded(dk), padded(dv));
    let fused = (
        fused_geometry(dev, settings, dtype, cfg, [bh, dkp, dv], nv),
        fused_geometry(dev, settings, dtype, cfg, [bh, dvp, dk], nv),
    );
    if let (Some(dv_geo), Some(dk_geo)) = fused {
        return PairPlan::Fused {
            dv: dv_geo,
            dk: dk_geo,
        };
    }
    PairPlan::Split {
        states: states_kernel(dev, dtype, cfg, [bh, dkp, dv]),
        dv_output: output_kernel(dev, dtype, cfg, [dkp, dv], nv),
        dk_output: output_kernel(dev, dtype, cfg, [dvp, dk], nv),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An H100 or H200 through CubeCL's CUDA runtime (132 SMs, 227 KB per cube).
    fn hopper() -> DeviceFacts {
        DeviceFacts {
            cuda: true,
            cmma_f16: true,
            cmma_bf16: true,
            mma_f16: true,
            mma_bf16: true,
            copy_async: true,
            tma: true,
            max_shared_memory: 232_448,
            sms: 132,
        }
    }

    /// A device with `cmma` tiles and none of the register kernels' instructions (a Vulkan
    /// device with cooperative matrices, say), 64 KB per cube.
    fn cmma_only() -> DeviceFacts {
        DeviceFacts {
            cuda: false,
            mma_f16: false,
            mma_bf16: false,
            copy_async: false,
            tma: false,
            max_shared_memory: 65_536,
            sms: 40,
            ..hopper()
        }
    }

    /// wgpu without tensor cores (lavapipe: 32 KB per cube).
    fn no_tensor_cores() -> DeviceFacts {
        DeviceFacts {
            cmma_f16: false,
            cmma_bf16: false,
            max_shared_memory: 32_768,
            sms: 1,
            ..cmma_only()
        }
    }

    const AUTO: Settings = Settings {
        scan: ScanMode::Auto,
    };

    fn mode(scan: ScanMode) -> Settings {
        Settings { scan }
    }

    fn bf16(
        dev: &DeviceFacts,
        settings: Settings,
        b: usize,
        h: usize,
        n: usize,
        d: usize,
    ) -> ScanChoice {
        choose_scan(dev, &settings, DType::BF16, [b, h, n, d], d)
    }

    fn is_fused(c: ScanChoice) -> bool {
        matches!(c, ScanChoice::Fused(_))
    }

    #[test]
    fn settings_default_to_auto_and_take_their_spellings() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(Settings::from_vars(none), Ok(Settings::default()));
        assert_eq!(Settings::default().scan, ScanMode::Auto);
        for (spelling, scan) in ScanMode::SPELLINGS {
            let got = Settings::from_vars([(SCAN_VAR, spelling), ("PATH", "/bin")]);
            assert_eq!(got, Ok(Settings { scan }));
        }
    }

    #[test]
    fn a_wrong_setting_is_an_error_naming_the_choices() {
        let err = Settings::from_vars([(SCAN_VAR, "Plain")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SCALELAB_LIGHTNING_SCAN=\"Plain\" is not a value it takes; accepted: auto, plain, \
             split, fused (unset: auto)"
        );
        let err =
            Settings::from_vars([("SCALELAB_LIGHTNING_FUSED_L2", "256"), (SCAN_VAR, "plain")])
                .unwrap_err();
        assert_eq!(
            err,
            SettingsError::Unknown {
                variable: "SCALELAB_LIGHTNING_FUSED_L2".into()
            }
        );
        assert!(err
            .to_string()
            .contains("the settings are: SCALELAB_LIGHTNING_SCAN"));
        // Other prefixes are not ours.
        assert!(Settings::from_vars([("SCALELAB_LIGHTNINGX", "1")]).is_ok());
    }

    #[test]
    fn an_override_holds_on_its_thread_only_while_it_runs() {
        let split = mode(ScanMode::Split);
        let before = settings();
        assert_eq!(with_settings(split, settings), split);
        assert_eq!(
            with_settings(split, || std::thread::spawn(settings).join().unwrap()),
            before
        );
        assert_eq!(settings(), before);
    }

    #[test]
    fn f32_and_devices_without_tensor_cores_take_the_plain_kernel() {
        let h = hopper();
        let f32_scan = choose_scan(&h, &AUTO, DType::F32, [4, 32, 2048, 128], 128);
        assert_eq!(f32_scan, ScanChoice::Plain { dt: 32 });
        for dev in [no_tensor_cores(), cmma_only()] {
            let c = choose_scan(&dev, &AUTO, DType::F32, [1, 2, 100, 64], 64);
            assert!(matches!(c, ScanChoice::Plain { .. }), "{dev:?}: {c:?}");
        }
        assert!(matches!(
            bf16(&no_tensor_cores(), AUTO, 4, 32, 2048, 128),
            ScanChoice::Plain { .. }
        ));
        // A contracted dim past 128, or plain asked for.
        assert!(matches!(
            bf16(&h, AUTO, 4, 32, 2048, 256),
            ScanChoice::Plain { .. }
        ));
        assert!(matches!(
            bf16(&h, mode(ScanMode::Plain), 4, 32, 2048, 128),
            ScanChoice::Plain { .. }
        ));
        // 16 columns where 32 do not fit the shared memory: dk 128 on lavapipe's 32 KB.
        assert_eq!(plain_columns(&no_tensor_cores(), 128), 16);
        assert_eq!(plain_columns(&no_tensor_cores(), 64), 32);
    }

    #[test]
    fn hopper_half_precision_runs_one_launch_where_the_device_fills() {
        let h = hopper();
        // The benchmark shape (B x H = 128, one cube each of 132 SMs), bf16 and f16.
        let big = bf16(&h, AUTO, 4, 32, 2048, 128);
        let ScanChoice::Fused(geo) = big else {
            panic!("B=4 H=32 D=128: {big:?}");
        };
        assert_eq!(
            (geo.chunk, geo.dt, geo.orows, geo.threads),
            (64, 128, 32, 256)
        );
        assert!(geo.sched.packed_weights && geo.sched.row_scores && geo.sched.tma);
        let f16 = choose_scan(&h, &AUTO, DType::F16, [4, 32, 2048, 128], 128);
        let ScanChoice::Fused(geo16) = f16 else {
            panic!("f16: {f16:?}");
        };
        assert!(!geo16.sched.packed_weights, "f16 weighs in f32");
        // MiniMax's 64 heads at B=2; head dim 64 (64 columns per cube, spread score tiles).
        assert!(is_fused(bf16(&h, AUTO, 2, 64, 1000, 128)));
        let ScanChoice::Fused(g64) = bf16(&h, AUTO, 4, 64, 2048, 64) else {
            panic!("D=64 at B x H = 256");
        };
        assert_eq!(g64.dt, 64);
        assert!(!g64.sched.row_scores);
        // 92 cubes of 132 slots is under 70%, 93 is over.
        assert!(!is_fused(bf16(&h, AUTO, 1, 92, 1024, 128)));
        assert!(is_fused(bf16(&h, AUTO, 1, 93, 1024, 128)));
    }

    #[test]
    fn hopper_small_batch_x_heads_runs_the_split_pair_in_registers() {
        let h = hopper();
        let small = bf16(&h, AUTO, 1, 8, 4096, 128);
        let ScanChoice::Split(cfg, plan) = small else {
            panic!("B x H = 8: {small:?}");
        };
        assert_eq!(cfg, TILE);
        let tiles = StatesGeometry {
            rt: 64,
            dt: 64,
            warps: 4,
            col_groups: 1,
            stage_h: true,
        };
        assert_eq!(plan.states, StatesKernel::Mma(tiles));
        assert_eq!(plan.output, OutputKernel::Mma { dt: 128 });
        // Where 64 x 64 state tiles would take a second wave (4 x 112 > 3 x 132), one 16-warp
        // cube per 128 x 128 state.
        let ScanChoice::Split(_, plan) = bf16(&h, mode(ScanMode::Split), 4, 28, 4096, 128) else {
            panic!("split asked for");
        };
        assert!(matches!(plan.states, StatesKernel::Mma(g) if g.rt == 128 && g.warps == 16));
        // The one-launch kernel asked for at B x H = 8; the split pair asked for at 128.
        assert!(is_fused(bf16(&h, mode(ScanMode::Fused), 1, 8, 4096, 128)));
        assert!(!is_fused(bf16(&h, mode(ScanMode::Split), 4, 32, 4096, 128)));
    }

    #[test]
    fn shapes_outside_the_register_kernels_keep_the_cmma_passes() {
        let h = hopper();
        // dk 96: 32-row state tiles (the register states kernel takes 64), outputs in registers.
        let ScanChoice::Split(_, plan) = bf16(&h, AUTO, 1, 4, 300, 96) else {
            panic!("dk 96");
        };
        assert_eq!(plan.states, StatesKernel::Cmma);
        assert_eq!(plan.output, OutputKernel::Mma { dt: 128 });
        // dk 33: no vector of two divides it, so both passes are the cmma kernels, and the
        // one-launch kernel (which stores pairs) does not apply even when asked for.
        for settings in [AUTO, mode(ScanMode::Fused)] {
            let c = bf16(&h, settings, 4, 32, 300, 33);
            let ScanChoice::Split(_, plan) = c else {
                panic!("dk 33: {c:?}");
            };
            assert_eq!(
                (plan.states, plan.output),
                (StatesKernel::Cmma, OutputKernel::Cmma)
            );
        }
        // A device with cmma and nothing more: the cmma pair, whatever the batch.
        let c = bf16(&cmma_only(), AUTO, 4, 32, 2048, 64);
        assert_eq!(
            c,
            ScanChoice::Split(
                TILE,
                SplitPlan {
                    states: StatesKernel::Cmma,
                    output: OutputKernel::Cmma
                }
            )
        );
        // Head dim 128 needs more shared memory than 64 KB: the plain kernel there.
        assert!(matches!(
            bf16(&cmma_only(), AUTO, 4, 32, 2048, 128),
            ScanChoice::Plain { .. }
        ));
    }

    #[test]
    fn chunk_states_past_32_bit_indexing_take_the_tiled_kernel() {
        let h = hopper();
        assert_eq!(bf16(&h, AUTO, 4, 64, 65536, 128), ScanChoice::Tiled(TILE));
        assert!(is_fused(bf16(&h, AUTO, 4, 32, 65536, 128)));
    }

    #[test]
    fn the_backward_pair_shares_its_states_pass_where_the_split_pair_applies() {
        let h = hopper();
        let route = |dtype, b, hh, n, dk, dv| dk_dv_route(&h, &AUTO, dtype, [b, hh, n, dk], dv);
        assert_eq!(
            route(DType::BF16, 4, 32, 2048, 128, 128),
            DkDvRoute::Shared(TILE)
        );
        let plain = DkDvRoute::TwoScans {
            dk: ScanRoute::Plain,
            dv: ScanRoute::Plain,
        };
        assert_eq!(route(DType::F32, 4, 32, 2048, 128, 128), plain);
        // One tile for both, from the wider head dim: dv 192 puts both scans on the plain kernel.
        assert_eq!(route(DType::BF16, 1, 2, 100, 64, 192), plain);
        // Chunk states past 32-bit indexing: both scans on tiled_scan_kernel.
        assert_eq!(
            route(DType::BF16, 4, 64, 65536, 128, 128),
            DkDvRoute::TwoScans {
                dk: ScanRoute::Tiled(TILE),
                dv: ScanRoute::Tiled(TILE)
            }
        );
        let nv = pair_vector(&h, TILE, [128, 128], 2);
        assert_eq!(nv, 8);
        let pair =
            |b: usize, settings| pair_plan(&h, &settings, DType::BF16, TILE, [b, 128, 128], nv);
        assert!(matches!(pair(128, AUTO), PairPlan::Fused { .. }));
        assert!(matches!(pair(8, AUTO), PairPlan::Split { .. }));
        assert!(matches!(
            pair(8, mode(ScanMode::Fused)),
            PairPlan::Fused { .. }
        ));
        let PairPlan::Split {
            states,
            dv_output,
            dk_output,
        } = pair(128, mode(ScanMode::Split))
        else {
            panic!("split asked for");
        };
        assert!(matches!(states, StatesKernel::Mma(_)));
        assert_eq!(dv_output, OutputKernel::Mma { dt: 128 });
        assert_eq!(dk_output, OutputKernel::Mma { dt: 128 });
    }

    #[test]
    fn bulk_copies_where_the_device_and_the_inputs_allow() {
        let ScanChoice::Fused(geo) = bf16(&hopper(), AUTO, 4, 32, 2048, 128) else {
            panic!("fused");
        };
        assert!(fused_by_tma(&hopper(), &geo, true));
        assert!(!fused_by_tma(&hopper(), &geo, false));
        let ampere = DeviceFacts {
            tma: false,
            max_shared_memory: 166_912,
            sms: 108,
            ..hopper()
        };
        assert!(!fused_by_tma(&ampere, &geo, true));
    }

    #[test]
    fn one_launch_scans_where_their_waves_fill_the_device() {
        // B=4 at H=32 and H=64 (D=128) on the H200's 132 SMs, one cube each: one wave, two.
        assert!(fills_device(128, 132));
        assert!(fills_device(256, 132));
        // A second wave a fifth full, a quarter of the device, nothing.
        assert!(!fills_device(160, 132));
        assert!(!fills_device(32, 132));
        assert!(!fills_device(0, 132));
        assert!(fills_device(93, 132) && !fills_device(92, 132));
        // Two cubes per SM: B=4, H=32 in 64-column cubes fills one wave of 264 slots.
        assert!(fills_device(256, 264) && !fills_device(128, 264));
    }

    #[test]
    fn packed_weights_only_for_bf16() {
        let packed = Schedule {
            packed_weights: true,
            ..Schedule::default()
        };
        assert!(schedule_for(packed, DType::BF16).packed_weights);
        assert!(!schedule_for(packed, DType::F16).packed_weights);
        assert!(!schedule_for(packed, DType::F32).packed_weights);
        assert!(!schedule_for(Schedule::default(), DType::BF16).packed_weights);
    }
}
