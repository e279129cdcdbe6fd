//! The CubeCL kernels against the plain references, on Burn's wgpu backend (in CI: Mesa's
//! lavapipe Vulkan driver on the CPU). Outputs, final states and every gradient, f32, relative
//! error `|x - ref| / |ref|` under 1e-4 (f32 arithmetic lands near 1e-6). Fresh random inputs
//! per check; the memory pool is filled with NaN before each kernel run, so an element the kernel
//! fails to write shows up as NaN.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::{
    ndarray::NdArray,
    wgpu::{CubeBackend, WgpuDevice, WgpuRuntime},
    Autodiff, Wgpu,
};
use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
use common::*;
use scalelab_kernels::lightning::dispatch::ScanRoute;
use scalelab_kernels::lightning::geometry::TiledConfig;
use scalelab_kernels::lightning::{launch, reference, LightningBackend, ScanOptions};

/// The kernel backend without fusion.
type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[test]
fn scan_kernel_matches_reference() {
    scan_matches::<Cube>();
}

#[test]
fn scan_kernel_matches_reference_under_fusion() {
    scan_matches::<Wgpu>();
}

#[test]
fn attention_and_gradients_match_reference() {
    attention_and_grads_match::<Cube>();
}

#[test]
fn attention_and_gradients_match_reference_under_fusion() {
    attention_and_grads_match::<Wgpu>();
}

#[test]
fn decode_kernel_matches_reference() {
    decode_runs().into_iter().for_each(decode_matches::<Cube>);
}

#[test]
fn decode_kernel_matches_reference_under_fusion() {
    decode_runs().into_iter().for_each(decode_matches::<Wgpu>);
}

/// Shared memory per cube on the test device, in bytes.
fn smem_max(device: &WgpuDevice) -> usize {
    let probe = on::<Cube, 1>(&TensorData::from([0.0f32]), device).into_primitive();
    probe
        .tensor()
        .client
        .properties()
        .hardware
        .max_shared_memory_size
}

/// The tensor-core kernels' bodies (the split pair and `tiled_scan_kernel`, their tile products
/// as plain loops) against
/// `reference::scan`: every option combination, with and without state, at 16 output columns per
/// cube (the plainest and fullest at 32). Lavapipe offers 32 KiB
/// of shared memory, which holds 32-token chunks at contracted dims up to 16 in f32; the shapes
/// cover one short chunk, several chunks with a tail, padded head dims and several column tiles.
#[test]
fn tiled_scan_matches_reference() {
    let device = Default::default();
    let smem_max = smem_max(&device);
    let cases = [
        (1usize, 2usize, 5usize, 16usize, 24usize, vec![0.1, 1.0]),
        (2, 3, 77, 16, 40, vec![1e-3, 0.5, 8.0]),
        (1, 2, 100, 9, 33, vec![0.05, 2.0]),
        // Three state-row tiles in the split kernels (too wide for `tiled_scan_kernel` here).
        (1, 2, 70, 40, 20, vec![0.3, 4.0]),
    ];
    let mut seed = 900;
    let mut runs = 0;
    for (b, h, n, dk, dv, slopes) in cases {
        for (dt, split) in [(16, false), (32, false), (16, true), (32, true)] {
            let cfg = TiledConfig {
                chunk: 32,
                dt,
                cmma: false,
            };
            let (smem, route) = if split {
                (cfg.split_smem(dk, 4), ScanRoute::TensorCores(cfg))
            } else {
                (cfg.tiled_smem(dk, 4), ScanRoute::Tiled(cfg))
            };
            if smem > smem_max {
                continue;
            }
            // Every option combination at 16 columns; at 32 (two column tiles per warp loop)
            // the plainest and the fullest, which keeps lavapipe's cold shader builds short.
            let all_bits: Vec<u8> = if dt == 16 {
                (0..8).collect()
            } else {
                vec![0, 7]
            };
            for bits in all_bits {
                let opts = ScanOptions {
                    reverse: bits & 1 != 0,
                    transpose_state: bits & 2 != 0,
                    state_exp0: bits & 4 != 0,
                };
                let with_state = bits != 0;
                let a = data(&mut seed, [b, h, n, dk], 0.5);
                let bb = data(&mut seed, [b, h, n, dk], 0.5);
                let cc = data(&mut seed, [b, h, n, dv], 0.5);
                let st_shape = if opts.transpose_state {
                    [b, h, dv, dk]
                } else {
                    [b, h, dk, dv]
                };
                let st = data(&mut seed, st_shape, 0.5);
                let s = TensorData::from(slopes.as_slice());
                let r = |x: &TensorData| {
                    Tensor::<NdArray<f64>, 4>::from_data(x.clone(), &Default::default())
                };
                let want = reference::scan::<NdArray<f64>>(
                    r(&a),
                    r(&bb),
                    r(&cc),
                    Tensor::from_data(s.clone(), &Default::default()),
                    with_state.then(|| r(&st)),
                    opts,
                );
                poison::<Cube>(&device, b * h * (n + dk) * dv);
                let p = |x: &TensorData| on::<Cube, 4>(x, &device).into_primitive().tensor();
                let got = launch::scan_with(
                    p(&a),
                    p(&bb),
                    p(&cc),
                    on::<Cube, 1>(&s, &device).into_primitive().tensor(),
                    with_state.then(|| p(&st)),
                    opts,
                    route,
                );
                let got =
                    Tensor::<Cube, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(got));
                check(
                    &format!(
                        "tiled scan n={n} dk={dk} dv={dv} {route:?} {opts:?} state={with_state}"
                    ),
                    got.into_data(),
                    want.into_data(),
                    TOL,
                );
                runs += 1;
            }
        }
    }
    assert!(
        runs >= 68,
        "only {runs} tiled runs fit {smem_max} bytes of shared memory"
    );
}

/// The backward's shared-states pair (`launch::dk_dv_with`, one states pass for the `dk` and `dv`
/// scans, the `dk` outputs reading the `dv` scan's states transposed) against the two scans of
/// `reference::scan`, with the split kernels' bodies as plain loops: unequal head dims on both
/// sides, several chunks and a tail, several column and state-row tiles.
#[test]
fn shared_state_gradient_scans_match_reference() {
    let device = Default::default();
    let smem_max = smem_max(&device);
    let mut runs = 0;
    let cases = [
        (1usize, 2usize, 5usize, 16usize, 24usize, vec![0.1, 1.0]),
        (2, 1, 77, 16, 40, vec![8.0]),
        (1, 2, 70, 40, 16, vec![1e-3, 0.7]),
        (1, 1, 100, 9, 33, vec![0.05]),
    ];
    let mut seed = 1300;
    for (b, h, n, dk, dv, slopes) in cases {
        for dt in [16, 32] {
            let cfg = TiledConfig {
                chunk: 32,
                dt,
                cmma: false,
            };
            if cfg.split_smem(dk, 4).max(cfg.split_smem(dv, 4)) > smem_max {
                continue;
            }
            let q = data(&mut seed, [b, h, n, dk], 0.5);
            let k = data(&mut seed, [b, h, n, dk], 0.5);
            let v = data(&mut seed, [b, h, n, dv], 0.5);
            let d_o = data(&mut seed, [b, h, n, dv], 0.5);
            let d_state = data(&mut seed, [b, h, dk, dv], 0.5);
            let s = TensorData::from(slopes.as_slice());
            let r = |x: &TensorData| {
                Tensor::<NdArray<f64>, 4>::from_data(x.clone(), &Default::default())
            };
            let rs = || Tensor::<NdArray<f64>, 1>::from_data(s.clone(), &Default::default());
            let reverse = ScanOptions {
                reverse: true,
                transpose_state: true,
                state_exp0: true,
            };
            // `transpose_state` reads the `[dk, dv]` state as `[dv, dk]`'s transpose.
            let want_dk = reference::scan::<NdArray<f64>>(
                r(&v),
                r(&d_o),
                r(&q),
                rs(),
                Some(r(&d_state)),
                reverse,
            )
            .narrow(2, 0, n);
            let want_dv = reference::scan::<NdArray<f64>>(
                r(&k),
                r(&q),
                r(&d_o),
                rs(),
                Some(r(&d_state)),
                ScanOptions {
                    transpose_state: false,
                    ..reverse
                },
            );
            poison::<Cube>(&device, b * h * (n + dk.max(dv)) * dk.max(dv));
            let p = |x: &TensorData| on::<Cube, 4>(x, &device).into_primitive().tensor();
            let (got_dk, got_dv) = launch::dk_dv_with(
                p(&q),
                p(&k),
                p(&v),
                p(&d_o),
                on::<Cube, 1>(&s, &device).into_primitive().tensor(),
                p(&d_state),
                Some(cfg),
            );
            let t = |x| Tensor::<Cube, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(x));
            let what = format!("n={n} dk={dk} dv={dv} dt={dt}");
            check(
                &format!("shared-state dk {what}"),
                t(got_dk).narrow(2, 0, n).into_data(),
                want_dk.into_data(),
                TOL,
            );
            check(
                &format!("shared-state dv and dS0 {what}"),
                t(got_dv).into_data(),
                want_dv.into_data(),
                TOL,
            );
            runs += 1;
        }
    }
    assert!(
        runs >= 5,
        "only {runs} runs fit {smem_max} bytes of shared memory"
    );
}

#[test]
fn decode_under_autodiff_runs_the_kernel_or_records_gradients() {
    // Untracked inputs take the inner backend's kernel; a tracked one takes the reference, whose
    // gradients reach it. Both give the same step.
    type A = Autodiff<Cube>;
    let device = Default::default();
    let mut seed = 990;
    let (b, h, dk, dv) = (2, 2, 16, 24);
    let s = TensorData::from([0.1f64, 1.0].as_slice());
    let (q, k, v) = (
        data(&mut seed, [b, h, 1, dk], 0.5),
        data(&mut seed, [b, h, 1, dk], 0.5),
        data(&mut seed, [b, h, 1, dv], 0.5),
    );
    let st = data(&mut seed, [b, h, dk, dv], 0.5);
    let step = |q: Tensor<A, 4>| {
        A::lightning_decode(
            q,
            on(&k, &device),
            on(&v, &device),
            on(&s, &device),
            on(&st, &device),
        )
    };
    let (o_kernel, st_kernel) = step(on(&q, &device));
    let q_tracked = on::<A, 4>(&q, &device).require_grad();
    let (o_ref, st_ref) = step(q_tracked.clone());
    check(
        "autodiff decode o",
        o_kernel.to_data(),
        o_ref.to_data(),
        TOL,
    );
    check(
        "autodiff decode state",
        st_kernel.to_data(),
        st_ref.to_data(),
        TOL,
    );
    // d sum(o) / dq = the new state summed over its columns.
    let grads = o_ref.sum().backward();
    let dq = q_tracked
        .grad(&grads)
        .expect("a gradient for the tracked q");
    let want = st_kernel.inner().sum_dim(3).swap_dims(2, 3);
    check("autodiff decode dq", dq.to_data(), want.to_data(), TOL);
}

#[test]
fn half_precision_decay_gradient_matches_reference() {
    half_precision_ds_matches::<Cube>();
}

#[test]
fn half_precision_decay_gradient_matches_reference_under_fusion() {
    half_precision_ds_matches::<Wgpu>();
}

/// Softmax attention's recomputing backward node on the GPU-style backend (wgpu through fusion,
/// f32, GQA 4, an odd length) against the f64 reference's autodiff: output and `dq, dk, dv`.
#[test]
fn softmax_attention_and_gradients_match_reference_under_fusion() {
    use scalelab_kernels::AttentionBackend;
    type G = Autodiff<Wgpu>;
    let device = WgpuDevice::default();
    let (b, h, kvh, t, d) = (2, 8, 2, 37, 16);
    let rnd = |shape: [usize; 4], seed: u64| {
        Ref::seed(&Default::default(), seed);
        Tensor::<Ref, 4>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    };
    let (q, k, v, r) = (
        rnd([b, h, t, d], 1),
        rnd([b, kvh, t, d], 2),
        rnd([b, kvh, t, d], 3),
        rnd([b, h, t, d], 4),
    );
    let scale = 1.0 / (d as f64).sqrt();
    let on_gpu = |x: &Tensor<Ref, 4>| {
        Tensor::<G, 4>::from_data(x.to_data().convert::<f32>(), &device).require_grad()
    };
    let (gq, gk, gv) = (on_gpu(&q), on_gpu(&k), on_gpu(&v));
    let o = G::softmax_attention(gq.clone(), gk.clone(), gv.clone(), scale);
    let grads = (o.clone() * on_gpu(&r).detach()).sum().backward();
    let (rq, rk, rv) = (q.require_grad(), k.require_grad(), v.require_grad());
    let o_ref = Ref::softmax_attention(rq.clone(), rk.clone(), rv.clone(), scale);
    let ref_grads = (o_ref.clone() * r).sum().backward();
    check("o", o.into_data(), o_ref.into_data(), TOL);
    for (name, x, y) in [("dq", &gq, &rq), ("dk", &gk, &rk), ("dv", &gv, &rv)] {
        check(
            name,
            x.grad(&grads).unwrap().into_data(),
            y.grad(&ref_grads).unwrap().into_data(),
            TOL,
        );
    }
}
