//! What the kernel tests share (`wgpu_kernels`, `cuda_kernels`): random inputs, the relative
//! error, and the checks of a backend's kernels against the references in f64 on the host.
//! Each check takes the inputs' dtype: f16 and bf16 inputs are rounded to it for the reference
//! too, so a check measures the kernel's own error.
#![allow(dead_code)] // each test binary uses part of these

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{
    backend::Backend, bf16, f16, ops::FloatTensor, DType, Distribution, FloatDType, Tensor,
    TensorData, TensorPrimitive,
};
use scalelab_kernels::lightning::{reference, LightningBackend, ScanOptions};
use scalelab_kernels::AttentionBackend;

/// The oracle: f64 on the CPU.
pub type Ref = Autodiff<NdArray<f64>>;

/// The relative error allowed of f32 kernels (f32 arithmetic lands near 1e-6).
pub const TOL: f64 = 1e-4;

/// `|got - want| / |want|` (over all elements), after checking that every element is finite
/// (an element the kernel failed to write shows up as NaN, see [`poison`]).
pub fn rel_err(name: &str, got: TensorData, want: TensorData) -> f64 {
    let g: Vec<f64> = got.clone().convert::<f64>().to_vec().unwrap();
    assert!(
        g.iter().all(|x| x.is_finite()),
        "{name}: non-finite output (unwritten?)"
    );
    reference::relative_error(got, want)
}

/// Stops unless [`rel_err`] is under `tol`.
pub fn check(name: &str, got: TensorData, want: TensorData, tol: f64) {
    let e = rel_err(name, got, want);
    assert!(e < tol, "{name}: relative error {e:e} over {tol:e}");
}

/// Fills freshly allocated device memory with NaN and frees it, so the next allocations of that
/// size reuse poisoned memory.
pub fn poison<B: Backend>(device: &B::Device, numel: usize) {
    let t = Tensor::<B, 1>::full([numel * 2], f32::NAN, device);
    let _ = t.into_data();
}

/// One shape and its decay rates.
pub struct Case {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub dk: usize,
    pub dv: usize,
    pub s: Vec<f64>,
}

impl Case {
    /// `b x h` heads of `n` tokens, head dims `dk` and `dv`, decay rates `s` (one per head).
    pub fn new(b: usize, h: usize, n: usize, dk: usize, dv: usize, s: &[f64]) -> Self {
        assert_eq!(s.len(), h, "one decay rate per head");
        Case {
            b,
            h,
            n,
            dk,
            dv,
            s: s.to_vec(),
        }
    }

    fn what(&self) -> String {
        format!(
            "B={} H={} n={} dk={} dv={}",
            self.b, self.h, self.n, self.dk, self.dv
        )
    }
}

/// Normal random host data of `shape`, the seed advanced first.
pub fn data(seed: &mut u64, shape: [usize; 4], std: f64) -> TensorData {
    *seed += 1;
    <NdArray<f64> as Backend>::seed(&Default::default(), *seed);
    Tensor::<NdArray<f64>, 4>::random(shape, Distribution::Normal(0.0, std), &Default::default())
        .into_data()
}

/// The wgpu tests' shapes.
pub fn cases() -> Vec<Case> {
    vec![
        // tail shorter than a block, head dims not multiples of the tile
        Case::new(1, 2, 5, 16, 24, &[0.1, 1.0]),
        // several blocks and a tail; decays near 1 and near 0
        Case::new(2, 3, 77, 32, 40, &[1e-3, 0.5, 8.0]),
        // exact blocks, the MiniMax head shape
        Case::new(1, 2, 64, 128, 128, &[0.02, 0.7]),
    ]
}

/// `x` on `device`, in f32.
pub fn on<B: Backend, const D: usize>(x: &TensorData, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(x.clone().convert::<f32>(), device)
}

/// `x` on `device`, in `dtype` (made in f32, then cast: the device's default float dtype stays
/// f32 whatever the test's dtype).
pub fn on_as<B: Backend, const D: usize>(
    x: &TensorData,
    device: &B::Device,
    dtype: FloatDType,
) -> Tensor<B, D> {
    let t = on::<B, D>(x, device);
    if dtype == FloatDType::F32 {
        t
    } else {
        t.cast(dtype)
    }
}

/// `x` as the kernels see it in `dtype`: rounded to f16 or bf16 (f32's rounding is far below
/// the f32 tolerance, and left out).
pub fn rounded(x: TensorData, dtype: FloatDType) -> TensorData {
    match dtype {
        FloatDType::F16 => x.convert::<f16>().convert::<f64>(),
        FloatDType::BF16 => x.convert::<bf16>().convert::<f64>(),
        _ => x,
    }
}

/// The host tensor of `x` for the reference.
fn host<const D: usize>(x: &TensorData) -> Tensor<NdArray<f64>, D> {
    Tensor::from_data(x.clone(), &Default::default())
}

/// One scan on backend `B`'s primitives: `(a, b, c, s, state, opts) -> packed output`.
pub type ScanFn<'a, B> = &'a dyn Fn(
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    ScanOptions,
) -> FloatTensor<B>;

/// `scan` (a kernel scan, or `B::lightning_scan`) against `reference::scan` on `cases`, in
/// `dtype` (the decay rates in f32), for the option combinations `bits` (bit 0 `reverse`, 1
/// `transpose_state`, 2 `state_exp0`), each with and without an initial state. Returns the runs.
#[allow(clippy::too_many_arguments)]
pub fn scan_matches_with<B: LightningBackend>(
    what: &str,
    cases: &[Case],
    dtype: FloatDType,
    tol: f64,
    bits: &[u8],
    seed: u64,
    scan: ScanFn<B>,
) -> usize {
    let device = Default::default();
    let mut seed = seed;
    let mut runs = 0;
    for c in cases {
        for &bits in bits {
            for with_state in [false, true] {
                let opts = ScanOptions {
                    reverse: bits & 1 != 0,
                    transpose_state: bits & 2 != 0,
                    state_exp0: bits & 4 != 0,
                };
                let a = rounded(data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5), dtype);
                let bb = rounded(data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5), dtype);
                let cc = rounded(data(&mut seed, [c.b, c.h, c.n, c.dv], 0.5), dtype);
                let st_shape = if opts.transpose_state {
                    [c.b, c.h, c.dv, c.dk]
                } else {
                    [c.b, c.h, c.dk, c.dv]
                };
                let st = rounded(data(&mut seed, st_shape, 0.5), dtype);
                let s = rounded(TensorData::from(c.s.as_slice()), dtype);
                let want = reference::scan::<NdArray<f64>>(
                    host(&a),
                    host(&bb),
                    host(&cc),
                    host(&s),
                    with_state.then(|| host(&st)),
                    opts,
                );
                poison::<B>(&device, c.b * c.h * (c.n + c.dk) * c.dv);
                let p = |x: &TensorData| on_as::<B, 4>(x, &device, dtype).into_primitive().tensor();
                let got = scan(
                    p(&a),
                    p(&bb),
                    p(&cc),
                    on::<B, 1>(&s, &device).into_primitive().tensor(),
                    with_state.then(|| p(&st)),
                    opts,
                );
                let got = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(got));
                assert_eq!(got.dtype(), DType::from(dtype), "{what}: output dtype");
                check(
                    &format!(
                        "{what} {dtype:?} scan {} {opts:?} state={with_state}",
                        c.what()
                    ),
                    got.into_data(),
                    want.into_data(),
                    tol,
                );
                runs += 1;
            }
        }
    }
    runs
}

/// `B::lightning_scan` against `reference::scan` in f32 on [`cases`], every option combination.
pub fn scan_matches<B: LightningBackend>() {
    scan_matches_with::<B>(
        "lightning_scan",
        &cases(),
        FloatDType::F32,
        TOL,
        &[0, 1, 2, 3, 4, 5, 6, 7],
        100,
        &B::lightning_scan,
    );
}

/// `lightning_attention` under `Autodiff`: outputs, final state and the gradients of q, k, v,
/// s and the initial state, against the naive quadratic form in f64 on the same inputs rounded
/// to `dtype` (the decay rates, rounded too, and their gradient in f32), with and without an
/// initial state.
pub fn attention_and_grads_match_with<B: LightningBackend>(
    what: &str,
    cases: &[Case],
    dtype: FloatDType,
    tol: f64,
    seed: u64,
) {
    let device = Default::default();
    let mut seed = seed;
    for c in cases {
        for with_state in [false, true] {
            let q = rounded(data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5), dtype);
            let k = rounded(data(&mut seed, [c.b, c.h, c.n, c.dk], 0.5), dtype);
            let v = rounded(data(&mut seed, [c.b, c.h, c.n, c.dv], 0.5), dtype);
            let st = rounded(data(&mut seed, [c.b, c.h, c.dk, c.dv], 0.5), dtype);
            let ro = rounded(data(&mut seed, [c.b, c.h, c.n, c.dv], 1.0), dtype);
            let rs = rounded(data(&mut seed, [c.b, c.h, c.dk, c.dv], 1.0), dtype);
            // The kernels read the rates rounded to the inputs' dtype: rounded for both sides
            // (the f32 scans of `ds` read them as given).
            let s = rounded(TensorData::from(c.s.as_slice()), dtype);

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
            let t4 = |x: &TensorData| on_as::<Autodiff<B>, 4>(x, &device, dtype);
            let kq = t4(&q).require_grad();
            let kk = t4(&k).require_grad();
            let kv = t4(&v).require_grad();
            let kst = t4(&st).require_grad();
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
            assert_eq!(o.dtype(), DType::from(dtype), "{what}: o dtype");
            let loss = (o.clone() * t4(&ro)).sum() + (last.clone() * t4(&rs)).sum();
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
                        "{what} {dtype:?} {name} {} s={:?} state={with_state}",
                        c.what(),
                        c.s
                    ),
                    gg,
                    w,
                    tol,
                );
            }
        }
    }
}

/// [`attention_and_grads_match_with`] in f32 on [`cases`].
pub fn attention_and_grads_match<B: LightningBackend>() {
    attention_and_grads_match_with::<B>("attention", &cases(), FloatDType::F32, TOL, 500);
}

/// One decode run: `steps` steps in a row from a random state, on inputs of `input` dtype.
pub struct DecodeRun {
    pub input: FloatDType,
    /// The decay rates' dtype (the kernels read them rounded to `input`).
    pub rates: FloatDType,
    pub seed: u64,
    pub shape: (usize, usize, usize, usize),
    pub s: &'static [f64],
    pub steps: usize,
}

/// The decode kernel against the recurrent reference (f64, on the same inputs rounded to the
/// run's input dtype), step after step. The state stays f32 whatever the inputs' dtype and
/// matches to f32 precision; `o` comes back in the inputs' dtype.
pub fn decode_matches<B: LightningBackend>(run: DecodeRun) {
    decode_matches_with::<B>(run, &B::lightning_decode);
}

/// One decode step on `B`: `(q, k, v, s, state) -> (o, state')`.
pub type DecodeStep<'a, B> = &'a dyn Fn(
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 1>,
    Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>);

/// [`decode_matches`] with the step given.
pub fn decode_matches_with<B: LightningBackend>(run: DecodeRun, step_fn: DecodeStep<B>) {
    let device = Default::default();
    let mut seed = run.seed;
    let (b, h, dk, dv) = run.shape;
    let round = |x: TensorData| rounded(x, run.input);
    let narrow = |x: &TensorData| on::<B, 4>(x, &device).cast(run.input);
    // `o` is rounded to the inputs' dtype once, after an f32 step.
    let o_tol = match run.input {
        FloatDType::F16 => 2e-3,
        FloatDType::BF16 => 1e-2,
        _ => TOL,
    };
    let s = round(TensorData::from(run.s));
    let mut st_ref = host::<4>(&data(&mut seed, [b, h, dk, dv], 0.5));
    let mut st: Tensor<B, 4> = on(&st_ref.to_data(), &device);
    for step in 0..run.steps {
        let q = round(data(&mut seed, [b, h, 1, dk], 0.5));
        let k = round(data(&mut seed, [b, h, 1, dk], 0.5));
        let v = round(data(&mut seed, [b, h, 1, dv], 0.5));
        let (o_ref, next_ref) = reference::recurrent::<NdArray<f64>>(
            host(&q),
            host(&k),
            host(&v),
            host(&s),
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
        let what = format!("{:?} decode {:?}", run.input, run.shape);
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
pub fn decode_runs() -> [DecodeRun; 6] {
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

/// `ds` weights each token's `q . dq - k . dk` by its position and sums: from half-precision
/// `dq` and `dk`, their rounding would come back multiplied by up to `seq` against a `ds` that
/// steep decays keep small. Five chunks, decays gentle to steep, f16 inputs against the f64
/// reference on the same rounded inputs; the decay rates in f16, then in f32 (`ds` comes back in
/// theirs).
pub fn half_precision_ds_matches<B: LightningBackend>() {
    let device = Default::default();
    let mut seed = 1200;
    let (b, h, n, d) = (1, 3, 320, 32);
    let round = |x: TensorData| rounded(x, FloatDType::F16);
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

/// Softmax attention through backend `B` (a kernel backend under `Autodiff`) against the f64
/// reference on the host, on the output and `dq, dk, dv`: `q: [b, h, t, d]`, `k, v: [b, kvh,
/// s, d]` rounded to `dtype`, loss `sum(o * r)`. Returns the kernel names launched meanwhile.
pub fn softmax_attention_matches<B>(
    device: &B::Device,
    seed: u64,
    [b, h, kvh, t, s, d]: [usize; 6],
    dtype: FloatDType,
    tol: f64,
) -> Vec<&'static str>
where
    B: burn::tensor::backend::AutodiffBackend + scalelab_kernels::AttentionBackend,
{
    let mut seed = seed;
    let q = rounded(data(&mut seed, [b, h, t, d], 1.0), dtype);
    let k = rounded(data(&mut seed, [b, kvh, s, d], 1.0), dtype);
    let v = rounded(data(&mut seed, [b, kvh, s, d], 1.0), dtype);
    let r = rounded(data(&mut seed, [b, h, t, d], 1.0), dtype);
    let scale = 1.0 / (d as f64).sqrt();
    let what = format!("b={b} h={h} kvh={kvh} t={t} s={s} d={d} {dtype:?}");

    let leaf = |x: &TensorData| Tensor::<Ref, 4>::from_data(x.clone(), &Default::default());
    let (qr, kr, vr) = (
        leaf(&q).require_grad(),
        leaf(&k).require_grad(),
        leaf(&v).require_grad(),
    );
    let o_ref = Ref::softmax_attention(qr.clone(), kr.clone(), vr.clone(), scale);
    let grads = (o_ref.clone() * leaf(&r)).sum().backward();
    let want = [
        o_ref.into_data(),
        qr.grad(&grads).unwrap().into_data(),
        kr.grad(&grads).unwrap().into_data(),
        vr.grad(&grads).unwrap().into_data(),
    ];

    poison::<B>(device, b * h * t.max(s) * d * 2);
    let before = scalelab_kernels::usage::launches();
    let leaf = |x: &TensorData| on_as::<B, 4>(x, device, dtype).require_grad();
    let (qk, kk, vk) = (leaf(&q), leaf(&k), leaf(&v));
    let o = B::softmax_attention(qk.clone(), kk.clone(), vk.clone(), scale);
    let loss = (o.clone().cast(FloatDType::F32) * on::<B, 4>(&r, device)).sum();
    let grads = loss.backward();
    let got = [
        o.into_data(),
        qk.grad(&grads).unwrap().into_data(),
        kk.grad(&grads).unwrap().into_data(),
        vk.grad(&grads).unwrap().into_data(),
    ];
    for ((name, got), want) in ["o", "dq", "dk", "dv"].into_iter().zip(got).zip(want) {
        check(&format!("{name} ({what})"), got, want, tol);
    }
    let after = scalelab_kernels::usage::launches();
    after
        .into_iter()
        .filter(|(name, n)| before.get(name) != Some(n))
        .map(|(name, _)| name)
        .collect()
}
