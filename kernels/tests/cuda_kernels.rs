//! Every lightning kernel the dispatch keeps, on a CUDA device, against the references in f64 on
//! the host: the plain kernel, `tiled_scan_kernel`, the split pair (its register and its `cmma`
//! passes), the one-launch kernel (bulk copies and `cp.async`), the backward's pair of reverse
//! scans, `lightning_attention` with every gradient under `Autodiff` in each scan mode, and
//! decode; in f32, bf16 and f16 where the kernel runs them, on shapes with a ragged last chunk,
//! unequal head dims and small and large batch x heads.
//!
//! ```sh
//! cargo test --release -p scalelab-kernels --features cuda --test cuda_kernels
//! ```
//!
//! Without a CUDA device (no `libcuda.so.1`, or no device behind it) every test prints that it
//! was skipped and passes. The tests take turns (one lock): each checks, from
//! `usage::launches()`, that the kernels it forces are the ones that ran. Relative errors:
//! f32 1e-4 (2e-3 through `Autodiff`, whose final-state gradients use Burn's f32 matmul, which
//! may run as TF32); f16 2e-3 and bf16 1e-2 on one scan (4e-3 and 1.5e-2 through `Autodiff`).
#![cfg(feature = "cuda")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::backend::cuda::CudaDevice;
use burn::backend::{ndarray::NdArray, Cuda};
use burn::tensor::{ops::FloatTensor, FloatDType, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::CubeBackend;
use common::*;
use cubecl::cuda::CudaRuntime;
use cubecl::Runtime;
use scalelab_kernels::lightning::dispatch::{
    self, DeviceFacts, ScanMode, ScanRoute, Settings, TILE,
};
use scalelab_kernels::lightning::{launch, reference, usage, ScanOptions};

/// The kernel backend without fusion: launches run on the calling thread, under its settings.
type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;
/// Burn's CUDA backend (fusion), as the trainer runs it.
type Fused = Cuda;

const BF16: FloatDType = FloatDType::BF16;
const F16: FloatDType = FloatDType::F16;
const F32: FloatDType = FloatDType::F32;

/// The option sets of the four scans: the forward, `dq`, `dk` and `dv` (bits: 1 `reverse`,
/// 2 `transpose_state`, 4 `state_exp0`).
const SCANS: [u8; 4] = [0, 2, 7, 5];

/// Writes a line to stderr past the test harness's capture: a skip shows without
/// `--nocapture`.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The CUDA device's facts, or `None` (with the reason printed once) where there is none.
fn device() -> Option<DeviceFacts> {
    static FACTS: OnceLock<Option<DeviceFacts>> = OnceLock::new();
    *FACTS.get_or_init(|| {
        // SAFETY: loading the driver library runs its initializers, as CubeCL's own load does.
        if let Err(err) = unsafe { libloading::Library::new("libcuda.so.1") } {
            say(&format!("cuda_kernels: skipped, no CUDA driver ({err})"));
            return None;
        }
        let probe = std::panic::catch_unwind(|| {
            let device = CudaDevice::default();
            let x = Tensor::<Cube, 1>::from_floats([1.0, 2.0], &device);
            assert_eq!(x.sum().into_scalar(), 3.0);
            launch::device_facts(&CudaRuntime::client(&device))
        });
        match probe {
            Ok(facts) => {
                eprintln!("cuda_kernels: {facts:?}");
                Some(facts)
            }
            Err(_) => {
                say("cuda_kernels: skipped, no CUDA device (its initialization failed)");
                None
            }
        }
    })
}

/// The lock the tests take turns on (so that each one's launch counts are its own), and the
/// device's facts; `None` where there is no device.
fn start(test: &str) -> Option<(MutexGuard<'static, ()>, DeviceFacts)> {
    static TURN: Mutex<()> = Mutex::new(());
    let Some(facts) = device() else {
        say(&format!("{test}: skipped (no CUDA device)"));
        return None;
    };
    let guard = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Some((guard, facts))
}

/// Runs `f` and returns the kernels it launched, by name and count.
fn launched<T>(f: impl FnOnce() -> T) -> (T, BTreeMap<&'static str, u64>) {
    let before = usage::launches();
    let out = f();
    let after = usage::launches();
    let delta = after
        .into_iter()
        .filter_map(|(name, n)| {
            let n = n - before.get(name).copied().unwrap_or(0);
            (n > 0).then_some((name, n))
        })
        .collect();
    (out, delta)
}

/// Stops unless every kernel named (a prefix of a launch count's name) ran, and no other
/// `unwanted` one.
fn assert_ran(what: &str, ran: &BTreeMap<&'static str, u64>, wanted: &[&str], unwanted: &[&str]) {
    for w in wanted {
        assert!(
            ran.keys().any(|name| name.starts_with(w)),
            "{what}: {w} did not run; ran {ran:?}"
        );
    }
    for u in unwanted {
        assert!(
            !ran.keys().any(|name| name.starts_with(u)),
            "{what}: {u} ran; ran {ran:?}"
        );
    }
}

/// A float primitive of `Cube`.
type Prim = FloatTensor<Cube>;

/// One scan on `Cube` on the route given, under `settings`.
fn routed(
    settings: Settings,
    route: ScanRoute,
) -> impl Fn(Prim, Prim, Prim, Prim, Option<Prim>, ScanOptions) -> Prim {
    move |a, b, c, s, state, opts| {
        dispatch::with_settings(settings, || {
            launch::scan_with(a, b, c, s, state, opts, route)
        })
    }
}

fn mode(scan: ScanMode) -> Settings {
    Settings { scan }
}

/// The tolerance of one scan in `dtype`.
fn scan_tol(dtype: FloatDType) -> f64 {
    match dtype {
        F16 => 2e-3,
        BF16 => 1e-2,
        _ => TOL,
    }
}

/// The tolerance of `lightning_attention` and its gradients in `dtype`.
fn attention_tol(dtype: FloatDType) -> f64 {
    match dtype {
        F16 => 4e-3,
        BF16 => 1.5e-2,
        _ => 2e-3,
    }
}

#[test]
fn the_dispatch_reads_this_device() {
    let Some((_turn, facts)) = start("the_dispatch_reads_this_device") else {
        return;
    };
    let settings = dispatch::settings();
    for (b, h) in [(1, 8), (4, 32)] {
        let choice = dispatch::choose_scan(
            &facts,
            &settings,
            burn::tensor::DType::BF16,
            [b, h, 4096, 128],
            128,
        );
        eprintln!("bf16 B={b} H={h} T=4096 D=128: {choice:?}");
    }
    let f32_choice = dispatch::choose_scan(
        &facts,
        &settings,
        burn::tensor::DType::F32,
        [4, 32, 4096, 128],
        128,
    );
    assert!(matches!(f32_choice, dispatch::ScanChoice::Plain { .. }));
}

#[test]
fn plain_kernel_scans_match_reference() {
    let Some((_turn, _)) = start("plain_kernel_scans_match_reference") else {
        return;
    };
    let cases = [
        Case::new(1, 2, 77, 64, 64, &[0.05, 2.0]),
        Case::new(2, 3, 130, 32, 40, &[1e-3, 0.5, 8.0]),
        Case::new(1, 2, 64, 128, 128, &[0.02, 0.7]),
    ];
    let scan = routed(dispatch::settings(), ScanRoute::Plain);
    for dtype in [F32, BF16, F16] {
        let bits: &[u8] = if dtype == F32 {
            &[0, 1, 2, 3, 4, 5, 6, 7]
        } else {
            &SCANS
        };
        let (runs, ran) = launched(|| {
            scan_matches_with::<Cube>("plain", &cases, dtype, scan_tol(dtype), bits, 2000, &scan)
        });
        assert!(runs > 0);
        assert_ran("plain", &ran, &["scan_kernel"], &["chunk_", "tiled_"]);
    }
}

#[test]
fn tiled_kernel_scans_match_reference() {
    let Some((_turn, facts)) = start("tiled_kernel_scans_match_reference") else {
        return;
    };
    if !facts.cmma_bf16 || !facts.cmma_f16 {
        say("tiled_kernel_scans_match_reference: skipped (no cmma tiles for f16/bf16)");
        return;
    }
    let cases = [
        Case::new(1, 2, 77, 64, 40, &[0.05, 2.0]),
        Case::new(1, 2, 200, 128, 128, &[0.02, 8.0]),
    ];
    let scan = routed(dispatch::settings(), ScanRoute::Tiled(TILE));
    for dtype in [BF16, F16] {
        let (_, ran) = launched(|| {
            scan_matches_with::<Cube>("tiled", &cases, dtype, scan_tol(dtype), &SCANS, 2100, &scan)
        });
        assert_ran(
            "tiled",
            &ran,
            &["tiled_scan_kernel"],
            &["scan_kernel", "chunk_"],
        );
    }
}

#[test]
fn split_pair_scans_match_reference() {
    let Some((_turn, facts)) = start("split_pair_scans_match_reference") else {
        return;
    };
    if !facts.cmma_bf16 || !facts.cmma_f16 {
        say("split_pair_scans_match_reference: skipped (no cmma tiles for f16/bf16)");
        return;
    }
    let scan = routed(mode(ScanMode::Split), ScanRoute::TensorCores(TILE));
    // The register passes: 64 x 64 state tiles, and at B x H = 128 one 16-warp cube per
    // 128 x 128 state; head dim 64; unequal head dims.
    let registers = [
        Case::new(1, 2, 77, 128, 128, &[0.05, 2.0]),
        Case::new(1, 2, 130, 64, 64, &[0.02, 8.0]),
        Case::new(1, 2, 200, 64, 128, &[1e-3, 0.5]),
    ];
    let whole = [Case::new(4, 32, 77, 128, 128, &[0.3; 32])];
    // The cmma passes: head dim 96 (32-row state tiles) keeps the register output pass; 33
    // (no vector of two) takes the cmma kernels for both.
    let cmma_states = [Case::new(1, 3, 100, 96, 96, &[0.05, 0.5, 4.0])];
    let cmma_both = [Case::new(1, 2, 70, 33, 33, &[0.1, 1.0])];
    let mma = ["chunk_states_mma_kernel", "chunk_output_mma_kernel"];
    for dtype in [BF16, F16] {
        let tol = scan_tol(dtype);
        let (_, ran) = launched(|| {
            scan_matches_with::<Cube>("split", &registers, dtype, tol, &SCANS, 2200, &scan)
        });
        if facts.mma_bf16 && facts.mma_f16 {
            assert_ran(
                "split, registers",
                &ran,
                &mma,
                &["chunk_fused", "tiled_", "scan_kernel"],
            );
        }
        let (_, ran) = launched(|| {
            scan_matches_with::<Cube>("split, cmma", &cmma_both, dtype, tol, &SCANS, 2300, &scan)
        });
        assert_ran(
            "split, cmma",
            &ran,
            &["chunk_states_kernel", "chunk_output_kernel"],
            &["chunk_fused", "tiled_", "scan_kernel"],
        );
    }
    let (_, ran) = launched(|| {
        scan_matches_with::<Cube>("split, 96", &cmma_states, BF16, 1e-2, &SCANS, 2400, &scan)
    });
    assert_ran(
        "split, 96",
        &ran,
        &["chunk_states_kernel"],
        &["chunk_fused"],
    );
    let (_, ran) = launched(|| {
        scan_matches_with::<Cube>("split, whole", &whole, BF16, 1e-2, &[0, 7], 2500, &scan)
    });
    assert_ran("split, whole", &ran, &["chunk_"], &["chunk_fused"]);
}

#[test]
fn one_launch_kernel_scans_match_reference() {
    let Some((_turn, facts)) = start("one_launch_kernel_scans_match_reference") else {
        return;
    };
    if !(facts.mma_bf16 && facts.mma_f16 && facts.copy_async) {
        say("one_launch_kernel_scans_match_reference: skipped (no mma or cp.async)");
        return;
    }
    let scan = routed(mode(ScanMode::Fused), ScanRoute::TensorCores(TILE));
    // Head dim 128 (each warp its rows' score tiles), 64 (score tiles spread over the warps),
    // 64 with 128 value columns, each with a ragged last chunk; by bulk copies where the device
    // has them.
    let aligned = [
        Case::new(1, 2, 77, 128, 128, &[0.05, 2.0]),
        Case::new(1, 2, 130, 64, 64, &[0.02, 8.0]),
        Case::new(2, 1, 200, 64, 128, &[0.3]),
    ];
    // Head dim 62: rows of 124 bytes, which bulk copies cannot read: `cp.async`.
    let unaligned = [Case::new(1, 2, 100, 62, 62, &[0.1, 1.0])];
    let tma = "chunk_fused_mma_kernel (tensor cores, one launch, TMA)";
    let cp_async = "chunk_fused_mma_kernel (tensor cores, one launch)";
    for dtype in [BF16, F16] {
        let tol = scan_tol(dtype);
        let (_, ran) = launched(|| {
            scan_matches_with::<Cube>("one launch", &aligned, dtype, tol, &SCANS, 2600, &scan)
        });
        let want = if facts.tma { tma } else { cp_async };
        assert_ran(
            "one launch",
            &ran,
            &[want],
            &["chunk_states", "chunk_output", "tiled_"],
        );
        let (_, ran) = launched(|| {
            scan_matches_with::<Cube>(
                "one launch, cp.async",
                &unaligned,
                dtype,
                tol,
                &SCANS,
                2700,
                &scan,
            )
        });
        assert_eq!(
            ran.get(cp_async).copied().unwrap_or(0),
            2 * SCANS.len() as u64,
            "{ran:?}"
        );
    }
}

/// `launch::dk_dv` (the backward's two reverse scans) under `settings` against the two scans of
/// `reference::scan`, in `dtype`.
fn pair_matches(what: &str, settings: Settings, cases: &[Case], dtype: FloatDType, seed: u64) {
    let device = Default::default();
    let mut seed = seed;
    let tol = scan_tol(dtype);
    for c in cases {
        let (b, h, n, dk, dv) = (c.b, c.h, c.n, c.dk, c.dv);
        let q = rounded(data(&mut seed, [b, h, n, dk], 0.5), dtype);
        let k = rounded(data(&mut seed, [b, h, n, dk], 0.5), dtype);
        let v = rounded(data(&mut seed, [b, h, n, dv], 0.5), dtype);
        let d_o = rounded(data(&mut seed, [b, h, n, dv], 0.5), dtype);
        let d_state = rounded(data(&mut seed, [b, h, dk, dv], 0.5), dtype);
        let s = rounded(TensorData::from(c.s.as_slice()), dtype);
        let r =
            |x: &TensorData| Tensor::<NdArray<f64>, 4>::from_data(x.clone(), &Default::default());
        let rs = || Tensor::<NdArray<f64>, 1>::from_data(s.clone(), &Default::default());
        let want_dk = reference::scan(
            r(&v),
            r(&d_o),
            r(&q),
            rs(),
            Some(r(&d_state)),
            ScanOptions::DK,
        )
        .narrow(2, 0, n);
        let want_dv = reference::scan(
            r(&k),
            r(&q),
            r(&d_o),
            rs(),
            Some(r(&d_state)),
            ScanOptions::DV,
        );
        poison::<Cube>(&device, b * h * (n + dk.max(dv)) * dk.max(dv));
        let p = |x: &TensorData| {
            on_as::<Cube, 4>(x, &device, dtype)
                .into_primitive()
                .tensor()
        };
        let (got_dk, got_dv) = dispatch::with_settings(settings, || {
            launch::dk_dv(
                p(&q),
                p(&k),
                p(&v),
                p(&d_o),
                on::<Cube, 1>(&s, &device).into_primitive().tensor(),
                p(&d_state),
            )
        });
        let t = |x| Tensor::<Cube, 4>::from_primitive(TensorPrimitive::Float(x));
        let at = format!("{what} {dtype:?} B={b} H={h} n={n} dk={dk} dv={dv}");
        check(
            &format!("{at}: dk"),
            t(got_dk).narrow(2, 0, n).into_data(),
            want_dk.into_data(),
            tol,
        );
        check(
            &format!("{at}: dv and dS0"),
            t(got_dv).into_data(),
            want_dv.into_data(),
            tol,
        );
    }
}

#[test]
fn backward_pair_matches_reference() {
    let Some((_turn, facts)) = start("backward_pair_matches_reference") else {
        return;
    };
    if !facts.cmma_bf16 || !facts.cmma_f16 {
        say("backward_pair_matches_reference: skipped (no cmma tiles for f16/bf16)");
        return;
    }
    let cases = [
        Case::new(1, 2, 77, 64, 128, &[0.05, 2.0]),
        Case::new(1, 2, 130, 128, 64, &[0.02, 8.0]),
        Case::new(2, 1, 64, 128, 128, &[0.3]),
        Case::new(1, 2, 70, 33, 40, &[0.1, 1.0]),
    ];
    for dtype in [BF16, F16] {
        let (_, ran) =
            launched(|| pair_matches("split pair", mode(ScanMode::Split), &cases, dtype, 3000));
        assert_ran(
            "split pair",
            &ran,
            &["chunk_states", "chunk_output"],
            &["chunk_fused", "tiled_"],
        );
        if facts.mma_bf16 && facts.copy_async {
            let (_, ran) = launched(|| {
                pair_matches(
                    "one-launch pair",
                    mode(ScanMode::Fused),
                    &cases[..3],
                    dtype,
                    3100,
                )
            });
            assert_ran(
                "one-launch pair",
                &ran,
                &["chunk_fused"],
                &["chunk_states", "tiled_"],
            );
        }
    }
}

/// The shapes of the `Autodiff` checks: a ragged last chunk, unequal head dims, MiniMax's head.
fn attention_cases() -> Vec<Case> {
    vec![
        Case::new(1, 2, 77, 64, 64, &[0.05, 2.0]),
        Case::new(2, 2, 130, 64, 128, &[1e-3, 8.0]),
        Case::new(1, 2, 200, 128, 128, &[0.02, 0.7]),
    ]
}

#[test]
fn attention_and_gradients_match_reference_in_every_mode() {
    let Some((_turn, facts)) = start("attention_and_gradients_match_reference_in_every_mode")
    else {
        return;
    };
    let cases = attention_cases();
    // f32 runs the plain kernel in every mode.
    let (_, ran) = launched(|| {
        attention_and_grads_match_with::<Cube>("f32", &cases, F32, attention_tol(F32), 4000)
    });
    assert_ran("f32", &ran, &["scan_kernel"], &["chunk_", "tiled_"]);
    for scan in [
        ScanMode::Auto,
        ScanMode::Plain,
        ScanMode::Split,
        ScanMode::Fused,
    ] {
        for dtype in [BF16, F16] {
            let what = format!("{scan:?}");
            let (_, ran) = launched(|| {
                dispatch::with_settings(mode(scan), || {
                    attention_and_grads_match_with::<Cube>(
                        &what,
                        &cases,
                        dtype,
                        attention_tol(dtype),
                        4100,
                    )
                })
            });
            eprintln!("{what} {dtype:?}: {ran:?}");
            let tensor_cores = facts.cmma_bf16 && facts.cmma_f16;
            match scan {
                ScanMode::Plain => assert_ran(&what, &ran, &["scan_kernel"], &["chunk_", "tiled_"]),
                ScanMode::Split if tensor_cores => assert_ran(
                    &what,
                    &ran,
                    &["chunk_states", "chunk_output"],
                    &["chunk_fused"],
                ),
                ScanMode::Fused if facts.mma_bf16 && facts.copy_async => {
                    assert_ran(&what, &ran, &["chunk_fused"], &["chunk_states"])
                }
                _ => {}
            }
        }
    }
}

#[test]
fn attention_at_large_batch_x_heads_matches_reference() {
    let Some((_turn, _)) = start("attention_at_large_batch_x_heads_matches_reference") else {
        return;
    };
    // B x H = 128: the one-launch kernel by default on an H100 or H200.
    let cases = [Case::new(4, 32, 130, 128, 128, &[0.3; 32])];
    let (_, ran) = launched(|| {
        attention_and_grads_match_with::<Cube>(
            "B x H = 128",
            &cases,
            BF16,
            attention_tol(BF16),
            4200,
        )
    });
    eprintln!("B x H = 128, bf16: {ran:?}");
}

#[test]
fn attention_under_fusion_matches_reference() {
    let Some((_turn, _)) = start("attention_under_fusion_matches_reference") else {
        return;
    };
    let cases = attention_cases();
    for dtype in [F32, BF16, F16] {
        attention_and_grads_match_with::<Fused>(
            "fusion",
            &cases,
            dtype,
            attention_tol(dtype),
            4300,
        );
    }
}

/// [`decode_runs`] with bf16 inputs (and an f32 state) besides.
fn all_decode_runs() -> Vec<DecodeRun> {
    let mut runs: Vec<DecodeRun> = decode_runs().into_iter().collect();
    runs.push(DecodeRun {
        input: BF16,
        rates: F32,
        seed: 970,
        shape: (4, 2, 128, 128),
        s: &[0.02, 2.0],
        steps: 3,
    });
    runs
}

#[test]
fn decode_kernel_matches_reference() {
    let Some((_turn, _)) = start("decode_kernel_matches_reference") else {
        return;
    };
    all_decode_runs()
        .into_iter()
        .for_each(decode_matches::<Cube>);
    all_decode_runs()
        .into_iter()
        .for_each(decode_matches::<Fused>);
}

#[test]
fn half_precision_decay_gradient_matches_reference() {
    let Some((_turn, _)) = start("half_precision_decay_gradient_matches_reference") else {
        return;
    };
    half_precision_ds_matches::<Cube>();
}

#[test]
fn settings_errors_name_the_variable_and_the_choices() {
    // No device needed: the settings are parsed on the host.
    let err = Settings::from_vars([("SCALELAB_LIGHTNING_SCAN", "fast")]).unwrap_err();
    assert!(
        err.to_string().contains("auto, plain, split, fused"),
        "{err}"
    );
    let unknown = Settings::from_vars([("SCALELAB_LIGHTNING_DECODE", "warp16")]).unwrap_err();
    assert!(
        unknown.to_string().contains("SCALELAB_LIGHTNING_DECODE"),
        "{unknown}"
    );
}
