//! The CubeCL kernels against the plain references, on Burn's wgpu backend (in CI: Mesa's
//! lavapipe Vulkan driver on the CPU). Outputs, final states and every gradient, f32, relative
//! error `|x - ref| / |ref|` under 1e-4 (f32 arithmetic lands near 1e-6). Fresh random inputs
//! per check; the memory pool is filled with NaN before each kernel run, so an element the kernel
//! fails to write shows up as NaN.
#![cfg(feature = "wgpu")]

use burn::backend::{
    ndarray::NdArray,
    wgpu::{CubeBackend, WgpuDevice, WgpuRuntime},
    Autodiff, Wgpu,
};
use burn::tensor::{backend::Backend, f16, DType, Distribution, FloatDType, Tensor, TensorData};
use scalelab_kernels::lightning::{reference, LightningBackend, ScanOptions};

/// The kernel backend without fusion.
type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// The oracle: f64 on the CPU.
type Ref = Autodiff<NdArray<f64>>;

const TOL: f64 = 1e-4;

fn rel_err(name: &str, got: TensorData, want: TensorData) -> f64 {
    let g: Vec<f64> = got.clone().convert::<f64>().to_vec().unwrap();
    assert!(
        g.iter().all(|x| x.is_finite()),
        "{name}: non-finite output (unwritten?)"
    );
    reference::relative_error(got, want)
}

fn check(name: &str, got: TensorData, want: TensorData, tol: f64) {
    let e = rel_err(name, got, want);
    assert!(e < tol, "{name}: relative error {e:e} over {tol:e}");
}

/// Fills freshly allocated device memory with NaN and frees it, so the next allocations of that
/// size reuse poisoned memory.
fn poison<B: Backend>(device: &B::Device, numel: usize) {
    let t = Tensor::<B, 1>::full([numel * 2], f32::NAN, device);
    let _ = t.into_data();
}

struct Case {
    b: usize,
    h: usize,
    n: usize,
    dk: usize,
    dv: usize,
    s: Vec<f64>,
}

fn data(seed: &mut u64, shape: [usize; 4], std: f64) -> TensorData {
    *seed += 1;
    <NdArray<f64> as Backend>::seed(&Default::default(), *seed);
    Tensor::<NdArray<f64>, 4>::random(shape, Distribution::Normal(0.0, std), &Default::default())
        .into_data()
}

fn cases() -> Vec<Case> {
    vec![
        // tail shorter than a block, head dims not multiples of the tile
        Case {
            b: 1,
            h: 2,
            n: 5,
            dk: 16,
            dv: 24,
            s: vec![0.1, 1.0],
        },
        // several blocks and a tail; decays near 1 and near 0
        Case {
            b: 2,
            h: 3,
            n: 77,
            dk: 32,
            dv: 40,
            s: vec![1e-3, 0.5, 8.0],
        },
        // exact blocks, the MiniMax head shape
        Case {
            b: 1,
            h: 2,
            n: 64,
            dk: 128,
            dv: 128,
            s: vec![0.02, 0.7],
        },
    ]
}

fn on<B: Backend, const D: usize>(x: &TensorData, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(x.clone().convert::<f32>(), device)
}

/// The scan kernel against `reference::scan`, every option combination, with and without state.
fn scan_matches<B: LightningBackend>() {
    let device = Default::default();
    let mut seed = 100;
    for c in cases() {
        for bits in 0..8u8 {
            for with_state in [false, true] {
                let opts = ScanOptions {
                    reverse: bits & 1 != 0,
                    transpose_state: bits & 2 != 0,
                    state_exp0: bits & 4 != 0,
                };
                let a = data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5);
                let bb = data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5);
                let cc = data(&mut seed, [c.b, c.h, c.n, c.dv], 0.5);
                let st_shape = if opts.transpose_state {
                    [c.b, c.h, c.dv, c.dk]
                } else {
                    [c.b, c.h, c.dk, c.dv]
                };
                let st = data(&mut seed, st_shape, 0.5);
                let s = TensorData::from(c.s.as_slice());
                let want = reference::scan::<NdArray<f64>>(
                    Tensor::from_data(a.clone(), &Default::default()),
                    Tensor::from_data(bb.clone(), &Default::default()),
                    Tensor::from_data(cc.clone(), &Default::default()),
                    Tensor::from_data(s.clone(), &Default::default()),
                    with_state.then(|| Tensor::from_data(st.clone(), &Default::default())),
                    opts,
                );
                poison::<B>(&device, c.b * c.h * (c.n + c.dk) * c.dv);
                let got = B::lightning_scan(
                    on::<B, 4>(&a, &device).into_primitive().tensor(),
                    on::<B, 4>(&bb, &device).into_primitive().tensor(),
                    on::<B, 4>(&cc, &device).into_primitive().tensor(),
                    on::<B, 1>(&s, &device).into_primitive().tensor(),
                    with_state.then(|| on::<B, 4>(&st, &device).into_primitive().tensor()),
                    opts,
                );
                let got = Tensor::<B, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(got));
                check(
                    &format!("scan n={} dk={} {opts:?} state={with_state}", c.n, c.dk),
                    got.into_data(),
                    want.into_data(),
                    TOL,
                );
            }
        }
    }
}

#[test]
fn scan_kernel_matches_reference() {
    scan_matches::<Cube>();
}

#[test]
fn scan_kernel_matches_reference_under_fusion() {
    scan_matches::<Wgpu>();
}

/// `lightning_attention` under `Autodiff`: outputs, final state and the gradients of q, k, v, s
/// and the initial state, against the naive quadratic form in f64.
fn attention_and_grads_match<B: LightningBackend>() {
    let device = Default::default();
    let mut seed = 500;
    for c in cases() {
        for with_state in [false, true] {
            let q = data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5);
            let k = data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5);
            let v = data(&mut seed, [c.b, c.h, c.n, c.dv], 0.5);
            let st = data(&mut seed, [c.b, c.h, c.dk, c.dv], 0.5);
            let ro = data(&mut seed, [c.b, c.h, c.n, c.dv], 1.0);
            let rs = data(&mut seed, [c.b, c.h, c.dk, c.dv], 1.0);
            let s = TensorData::from(c.s.as_slice());

            // Reference.
            let rd = Default::default();
            let rq = Tensor::<Ref, 4>::from_data(q.clone(), &rd).require_grad();
            let rk = Tensor::<Ref, 4>::from_data(k.clone(), &rd).require_grad();
            let rv = Tensor::<Ref, 4>::from_data(v.clone(), &rd).require_grad();
            let rst = Tensor::<Ref, 4>::from_data(st.clone(), &rd).require_grad();
            let rsd = Tensor::<Ref, 1>::from_data(s.clone(), &rd).require_grad();
            let (o, last) = reference::naive(
                rq.clone(),
                rk.clone(),
                rv.clone(),
                rsd.clone(),
                with_state.then(|| rst.clone()),
            );
            let loss = (o.clone() * Tensor::from_data(ro.clone(), &rd)).sum()
                + (last.clone() * Tensor::from_data(rs.clone(), &rd)).sum();
            let g = loss.backward();
            let mut want = vec![
                o.inner().into_data(),
                last.inner().into_data(),
                rq.grad(&g).unwrap().into_data(),
                rk.grad(&g).unwrap().into_data(),
                rv.grad(&g).unwrap().into_data(),
                rsd.grad(&g).unwrap().into_data(),
            ];
            if with_state {
                want.push(rst.grad(&g).unwrap().into_data());
            }

            // Kernel.
            let kq = on::<Autodiff<B>, 4>(&q, &device).require_grad();
            let kk = on::<Autodiff<B>, 4>(&k, &device).require_grad();
            let kv = on::<Autodiff<B>, 4>(&v, &device).require_grad();
            let kst = on::<Autodiff<B>, 4>(&st, &device).require_grad();
            let ks = on::<Autodiff<B>, 1>(&s, &device).require_grad();
            poison::<Autodiff<B>>(&device, c.b * c.h * (c.n + c.dk) * c.dv.max(c.dk));
            let (o, last) = Autodiff::<B>::lightning_attention(
                kq.clone(),
                kk.clone(),
                kv.clone(),
                ks.clone(),
                with_state.then(|| kst.clone()),
                64,
            );
            let loss = (o.clone() * on::<Autodiff<B>, 4>(&ro, &device)).sum()
                + (last.clone() * on::<Autodiff<B>, 4>(&rs, &device)).sum();
            let g = loss.backward();
            let mut got = vec![
                o.inner().into_data(),
                last.inner().into_data(),
                kq.grad(&g).unwrap().into_data(),
                kk.grad(&g).unwrap().into_data(),
                kv.grad(&g).unwrap().into_data(),
                ks.grad(&g).unwrap().into_data(),
            ];
            if with_state {
                got.push(kst.grad(&g).unwrap().into_data());
            }
            let names = ["o", "final state", "dq", "dk", "dv", "ds", "d state0"];
            for ((name, gg), w) in names.iter().zip(got).zip(want) {
                check(
                    &format!(
                        "{name} n={} dk={} s={:?} state={with_state}",
                        c.n, c.dk, c.s
                    ),
                    gg,
                    w,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn attention_and_gradients_match_reference() {
    attention_and_grads_match::<Cube>();
}

#[test]
fn attention_and_gradients_match_reference_under_fusion() {
    attention_and_grads_match::<Wgpu>();
}

/// One decode run: `steps` steps in a row from a random state, on inputs of `input` dtype.
struct DecodeRun {
    input: FloatDType,
    /// The decay rates' dtype (the kernels read them rounded to `input`).
    rates: FloatDType,
    seed: u64,
    shape: (usize, usize, usize, usize),
    s: &'static [f64],
    steps: usize,
}

/// The decode kernel against the recurrent reference (f64, on the same inputs rounded to the
/// run's input dtype), step after step. The state stays f32 whatever the inputs' dtype and
/// matches to f32 precision; `o` comes back in the inputs' dtype.
fn decode_matches<B: LightningBackend>(run: DecodeRun) {
    decode_matches_with::<B>(run, &B::lightning_decode);
}

/// One decode step on `B`: `(q, k, v, s, state) -> (o, state')`.
type DecodeStep<'a, B> = &'a dyn Fn(
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 1>,
    Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>);

/// [`decode_matches`] with the step given.
fn decode_matches_with<B: LightningBackend>(run: DecodeRun, step_fn: DecodeStep<B>) {
    let device = Default::default();
    let mut seed = run.seed;
    let (b, h, dk, dv) = run.shape;
    let f16_inputs = run.input == FloatDType::F16;
    let round = |x: TensorData| {
        if f16_inputs {
            x.convert::<f16>().convert::<f64>()
        } else {
            x
        }
    };
    let host =
        |x: &TensorData| Tensor::<NdArray<f64>, 4>::from_data(x.clone(), &Default::default());
    let narrow = |x: &TensorData| on::<B, 4>(x, &device).cast(run.input);
    let o_tol = if f16_inputs { 2e-3 } else { TOL };
    let s = round(TensorData::from(run.s));
    let mut st_ref = host(&data(&mut seed, [b, h, dk, dv], 0.5));
    let mut st: Tensor<B, 4> = on(&st_ref.to_data(), &device);
    for step in 0..run.steps {
        let q = round(data(&mut seed, [b, h, 1, dk], 0.5));
        let k = round(data(&mut seed, [b, h, 1, dk], 0.5));
        let v = round(data(&mut seed, [b, h, 1, dv], 0.5));
        let (o_ref, next_ref) = reference::recurrent::<NdArray<f64>>(
            host(&q),
            host(&k),
            host(&v),
            Tensor::from_data(s.clone(), &Default::default()),
            Some(st_ref),
        );
        poison::<B>(&device, b * h * dk * dv);
        let (o, next) = step_fn(
            narrow(&q),
            narrow(&k),
            narrow(&v),
            on::<B, 1>(&s, &device).cast(run.rates),
            st,
        );
        assert_eq!(o.dtype(), DType::from(run.input), "decode o dtype");
        assert_eq!(next.dtype(), DType::F32, "decode state dtype");
        let what = format!("{:?} decode", run.input);
        check(
            &format!("{what} o step {step}"),
            o.to_data(),
            o_ref.to_data(),
            o_tol,
        );
        check(
            &format!("{what} state step {step}"),
            next.to_data(),
            next_ref.to_data(),
            TOL,
        );
        st = next;
        st_ref = next_ref;
    }
}

/// f32 decodes (head dims not multiples of 32 or 8, value dims that allow vectors of 4, 2 and 1
/// state columns, and MiniMax's 128), then f16 inputs with an f32 state, with f16 and with f32
/// decay rates, a few steps each.
fn decode_runs() -> [DecodeRun; 6] {
    let f32_run = |seed, shape: (usize, usize, usize, usize)| DecodeRun {
        input: FloatDType::F32,
        rates: FloatDType::F32,
        seed,
        shape,
        s: &[1e-3, 0.3, 2.0, 8.0][..shape.1],
        steps: 3,
    };
    let f16_run = |rates, seed, steps| DecodeRun {
        input: FloatDType::F16,
        rates,
        seed,
        shape: (2, 4, 64, 40),
        s: &[1e-3, 0.05, 0.3, 2.0],
        steps,
    };
    [
        f32_run(900, (3, 2, 16, 40)),
        f32_run(905, (2, 2, 20, 38)),
        f32_run(907, (1, 2, 12, 33)),
        f32_run(910, (2, 4, 128, 128)),
        f16_run(FloatDType::F16, 950, 4),
        f16_run(FloatDType::F32, 960, 2),
    ]
}

#[test]
fn decode_kernel_matches_reference() {
    decode_runs().into_iter().for_each(decode_matches::<Cube>);
}

#[test]
fn every_decode_kernel_matches_reference() {
    use burn::tensor::TensorPrimitive;
    use scalelab_kernels::lightning::cube::{decode_with, DecodeKernel};
    // The default (`Warp { rows: 16 }`) runs in the tests above.
    for kernel in [
        DecodeKernel::Warp { rows: 8 },
        DecodeKernel::Warp { rows: 32 },
        DecodeKernel::Cube { groups: 8 },
        DecodeKernel::Cube { groups: 32 },
    ] {
        let step = |q, k, v, s: Tensor<Cube, 1>, st| {
            let p = |x: Tensor<Cube, 4>| x.into_primitive().tensor();
            let s = s.into_primitive().tensor();
            let (o, st) = decode_with(p(q), p(k), p(v), s, p(st), kernel);
            let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
            (t(o), t(st))
        };
        decode_runs()
            .into_iter()
            .for_each(|run| decode_matches_with::<Cube>(run, &step));
    }
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

/// The tensor-core kernels' bodies (split and fused, their tile products as plain loops) against
/// `reference::scan`: every option combination, with and without state, at 16 output columns per
/// cube (the plainest and fullest at 32). Lavapipe offers 32 KiB
/// of shared memory, which holds 32-token chunks at contracted dims up to 16 in f32; the shapes
/// cover one short chunk, several chunks with a tail, padded head dims and several column tiles.
#[test]
fn tiled_scan_matches_reference() {
    use scalelab_kernels::lightning::cube;
    use scalelab_kernels::lightning::tiled::TiledConfig;
    let device = Default::default();
    let smem_max = smem_max(&device);
    let cases = [
        (1usize, 2usize, 5usize, 16usize, 24usize, vec![0.1, 1.0]),
        (2, 3, 77, 16, 40, vec![1e-3, 0.5, 8.0]),
        (1, 2, 100, 9, 33, vec![0.05, 2.0]),
        // Three state-row tiles in the split kernels (too wide for the fused one here).
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
                split,
            };
            if cfg.smem(dk, 4) > smem_max {
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
                let got = cube::scan_with(
                    p(&a),
                    p(&bb),
                    p(&cc),
                    on::<Cube, 1>(&s, &device).into_primitive().tensor(),
                    with_state.then(|| p(&st)),
                    opts,
                    Some(cfg),
                );
                let got =
                    Tensor::<Cube, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(got));
                check(
                    &format!(
                        "tiled scan n={n} dk={dk} dv={dv} {cfg:?} {opts:?} state={with_state}"
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

/// The backward's shared-states pair (`cube::dk_dv_with`, one states pass for the `dk` and `dv`
/// scans, the `dk` outputs reading the `dv` scan's states transposed) against the two scans of
/// `reference::scan`, with the split kernels' bodies as plain loops: unequal head dims on both
/// sides, several chunks and a tail, several column and state-row tiles.
#[test]
fn shared_state_gradient_scans_match_reference() {
    use scalelab_kernels::lightning::cube;
    use scalelab_kernels::lightning::tiled::TiledConfig;
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
                split: true,
            };
            if cfg.smem(dk, 4).max(cfg.smem(dv, 4)) > smem_max {
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
            let (got_dk, got_dv) = cube::dk_dv_with(
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

/// `ds` weights each token's `q . dq - k . dk` by its position and sums: from half-precision
/// `dq` and `dk`, their rounding would come back multiplied by up to `seq` against a `ds` that
/// steep decays keep small. Five chunks, decays gentle to steep, f16 inputs against the f64
/// reference on the same rounded inputs; the decay rates in f16, then in f32 (`ds` comes back in
/// theirs).
fn half_precision_ds_matches<B: LightningBackend>() {
    let device = Default::default();
    let mut seed = 1200;
    let (b, h, n, d) = (1, 3, 320, 32);
    let round = |x: TensorData| x.convert::<f16>().convert::<f64>();
    let s = round(TensorData::from([0.02f64, 0.5, 3.0].as_slice()));
    for (with_state, rates) in [
        (false, FloatDType::F16),
        (true, FloatDType::F16),
        (true, FloatDType::F32),
    ] {
        let q = round(data(&mut seed, [b, h, n, d], 0.5));
        let k = round(data(&mut seed, [b, h, n, d], 0.5));
        let v = round(data(&mut seed, [b, h, n, d], 0.5));
        let st = round(data(&mut seed, [b, h, d, d], 0.5));
        let ro = round(data(&mut seed, [b, h, n, d], 1.0));

        let rd = Default::default();
        let rs = Tensor::<Ref, 1>::from_data(s.clone(), &rd).require_grad();
        let (o, _) = reference::naive(
            Tensor::<Ref, 4>::from_data(q.clone(), &rd),
            Tensor::from_data(k.clone(), &rd),
            Tensor::from_data(v.clone(), &rd),
            rs.clone(),
            with_state.then(|| Tensor::from_data(st.clone(), &rd)),
        );
        let g = (o * Tensor::from_data(ro.clone(), &rd)).sum().backward();
        let want: Vec<f64> = rs.grad(&g).unwrap().into_data().to_vec().unwrap();

        let half = |x: &TensorData| on::<Autodiff<B>, 4>(x, &device).cast(FloatDType::F16);
        let ks = on::<Autodiff<B>, 1>(&s, &device).cast(rates).require_grad();
        let (q, k, v) = (half(&q), half(&k), half(&v));
        assert_eq!(q.dtype(), DType::F16, "the test's inputs are f16");
        let state = with_state.then(|| half(&st));
        let (o, _) = Autodiff::<B>::lightning_attention(q, k, v, ks.clone(), state, 64);
        let g = (o.cast(FloatDType::F32) * on::<Autodiff<B>, 4>(&ro, &device))
            .sum()
            .backward();
        let ds = ks.grad(&g).unwrap();
        assert_eq!(
            ds.dtype(),
            DType::from(rates),
            "ds comes back in the rates' dtype"
        );
        // Head by head: a steep head's `ds` is far smaller than a gentle one's.
        let got: Vec<f64> = ds.into_data().convert::<f64>().to_vec().unwrap();
        for (head, (got, want)) in got.iter().zip(&want).enumerate() {
            let e = (got - want).abs() / want.abs();
            assert!(
                e < 2e-3,
                "f16 inputs, {rates:?} rates: ds of head {head} (initial state: {with_state}): \
                 {got:e}, reference {want:e}, relative error {e:e}"
            );
        }
    }
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
