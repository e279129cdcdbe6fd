//! The three reference forms of lightning attention agree on outputs, final states and all
//! gradients, for block sizes that do and do not divide the length, and for decays near 0 and 1.

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{
    backend::Backend, DType, Distribution, FloatDType, Tensor, TensorData, Tolerance,
};
use scalelab_kernels::lightning::final_state_grads;
use scalelab_kernels::lightning::reference::{
    chunked, naive, recurrent, relative_error as rel_err,
};

type B = Autodiff<NdArray<f64>>;

struct Inputs {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: Tensor<B, 1>,
    s0: Tensor<B, 4>,
    /// Random cotangents, so the "loss" weighs every output element differently.
    r_out: Tensor<B, 4>,
    r_state: Tensor<B, 4>,
}

fn inputs(seed: u64, b: usize, h: usize, n: usize, dk: usize, dv: usize, s: &[f64]) -> Inputs {
    let device = Default::default();
    B::seed(&device, seed);
    let rnd = |shape: [usize; 4]| {
        Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 0.5), &device).require_grad()
    };
    Inputs {
        q: rnd([b, h, n, dk]),
        k: rnd([b, h, n, dk]),
        v: rnd([b, h, n, dv]),
        s: Tensor::<B, 1>::from_data(TensorData::from(s), &device).require_grad(),
        s0: rnd([b, h, dk, dv]),
        r_out: Tensor::random([b, h, n, dv], Distribution::Normal(0.0, 1.0), &device),
        r_state: Tensor::random([b, h, dk, dv], Distribution::Normal(0.0, 1.0), &device),
    }
}

/// Outputs, final state and gradients (q, k, v, s, initial state) of one form.
fn run(
    x: &Inputs,
    with_state: bool,
    form: impl Fn(
        Tensor<B, 4>,
        Tensor<B, 4>,
        Tensor<B, 4>,
        Tensor<B, 1>,
        Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>),
) -> Vec<TensorData> {
    let state = with_state.then(|| x.s0.clone());
    let (o, last) = form(x.q.clone(), x.k.clone(), x.v.clone(), x.s.clone(), state);
    let loss = (o.clone() * x.r_out.clone()).sum() + (last.clone() * x.r_state.clone()).sum();
    let g = loss.backward();
    let mut out = vec![
        o.inner().into_data(),
        last.inner().into_data(),
        x.q.grad(&g).unwrap().into_data(),
        x.k.grad(&g).unwrap().into_data(),
        x.v.grad(&g).unwrap().into_data(),
        x.s.grad(&g).unwrap().into_data(),
    ];
    if with_state {
        out.push(x.s0.grad(&g).unwrap().into_data());
    }
    out
}

const NAMES: [&str; 7] = [
    "o",
    "final state",
    "dq",
    "dk",
    "dv",
    "ds",
    "d(initial state)",
];

fn assert_same(case: &str, a: &[TensorData], b: &[TensorData]) {
    assert_close(case, &NAMES, a, b);
}

/// Each of `a` within 1e-9 (relative to its largest magnitude, at least 1) of the same in `b`.
fn assert_close(case: &str, names: &[&str], a: &[TensorData], b: &[TensorData]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = x.iter::<f64>().fold(1e-12_f64, |m, v| m.max(v.abs()));
        let err = x
            .iter::<f64>()
            .zip(y.iter::<f64>())
            .fold(0.0_f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= 1e-9 * scale.max(1.0),
            "{case}: {} differs: max abs err {err:e} (scale {scale:e})",
            names[i]
        );
    }
}

/// Decay rates spanning lambda near 1 (s = 1e-6), the MiniMax range, and lambda near 0 (s = 20).
const DECAYS: [f64; 4] = [1e-6, 0.05, 0.9, 20.0];

#[test]
fn chunked_and_recurrent_equal_naive() {
    let mut seed = 0;
    for &n in &[1usize, 5, 16, 17, 63] {
        for &block in &[1usize, 4, 16, 64] {
            for with_state in [false, true] {
                seed += 1;
                let x = inputs(seed, 2, 4, n, 8, 6, &DECAYS);
                let want = run(&x, with_state, naive);
                let case = format!("n={n} block={block} state={with_state}");
                assert_same(
                    &format!("chunked {case}"),
                    &want,
                    &run(&x, with_state, |q, k, v, s, st| {
                        chunked(q, k, v, s, st, block)
                    }),
                );
                if block == 4 {
                    assert_same(
                        &format!("recurrent {case}"),
                        &want,
                        &run(&x, with_state, recurrent),
                    );
                }
            }
        }
    }
}

/// The closed form the kernel backend's final-state node uses (two matmuls, no scan) gives the
/// gradients autodiff takes through the naive form, for a loss on the final state alone.
#[test]
fn final_state_closed_form_gradients_equal_autodiff() {
    for (seed, n, with_state) in [
        (31, 1, false),
        (32, 17, true),
        (33, 40, false),
        (34, 40, true),
    ] {
        let x = inputs(seed, 2, 4, n, 8, 6, &DECAYS);
        let state = with_state.then(|| x.s0.clone());
        let (_, last) = naive(x.q.clone(), x.k.clone(), x.v.clone(), x.s.clone(), state);
        let g = (last * x.r_state.clone()).sum().backward();
        let mut want = vec![
            x.k.grad(&g).unwrap().into_data(),
            x.v.grad(&g).unwrap().into_data(),
            x.s.grad(&g).unwrap().into_data(),
        ];
        if with_state {
            want.push(x.s0.grad(&g).unwrap().into_data());
        }
        assert!(
            x.q.grad(&g)
                .is_none_or(|dq| dq.abs().max().into_scalar() == 0.0),
            "the final state does not depend on q"
        );
        let (dk, dv, ds, dst) = final_state_grads(
            x.k.clone().inner(),
            x.v.clone().inner(),
            x.s.clone().inner(),
            with_state.then(|| x.s0.clone().inner()),
            x.r_state.clone().inner(),
            true,
        );
        let mut got = vec![dk.into_data(), dv.into_data(), ds.unwrap().into_data()];
        got.extend(dst.map(|d| d.into_data()));
        assert_close(
            &format!("final state n={n} state={with_state}"),
            &["dk", "dv", "ds", "d(initial state)"],
            &want,
            &got,
        );
    }
}

#[test]
fn pieces_with_carried_state_equal_the_whole() {
    let x = inputs(99, 1, 4, 50, 8, 8, &DECAYS);
    let (whole, whole_state) =
        chunked(x.q.clone(), x.k.clone(), x.v.clone(), x.s.clone(), None, 16);
    let mut state = None;
    let mut parts = Vec::new();
    for (start, len) in [(0, 7), (7, 16), (23, 1), (24, 26)] {
        let part = |t: &Tensor<B, 4>| t.clone().narrow(2, start, len);
        let (o, st) = chunked(part(&x.q), part(&x.k), part(&x.v), x.s.clone(), state, 16);
        parts.push(o);
        state = Some(st);
    }
    let pieced = Tensor::cat(parts, 2);
    pieced
        .into_data()
        .assert_approx_eq::<f64>(&whole.into_data(), Tolerance::absolute(1e-10));
    state
        .unwrap()
        .into_data()
        .assert_approx_eq::<f64>(&whole_state.into_data(), Tolerance::absolute(1e-10));
}

#[test]
fn no_decay_is_plain_causal_linear_attention() {
    // With s = 0 the core is o_t = q_t sum_{j<=t} k_j^T v_j: check it against a direct cumulative sum.
    let x = inputs(7, 1, 2, 9, 3, 2, &[0.0, 0.0]);
    let (o, _) = chunked(x.q.clone(), x.k.clone(), x.v.clone(), x.s.clone(), None, 4);
    let kv = x.k.clone().unsqueeze_dim::<5>(4) * x.v.clone().unsqueeze_dim::<5>(3); // [b,h,n,dk,dv]
    let prefix = kv.cumsum(2);
    let want = (x.q.clone().unsqueeze_dim::<5>(4) * prefix)
        .sum_dim(3)
        .squeeze_dim::<4>(3);
    o.into_data()
        .assert_approx_eq::<f64>(&want.into_data(), Tolerance::absolute(1e-10));
}

#[test]
fn causal_changing_a_later_token_leaves_earlier_outputs() {
    let x = inputs(3, 1, 4, 20, 8, 8, &DECAYS);
    let (o1, _) = chunked(x.q.clone(), x.k.clone(), x.v.clone(), x.s.clone(), None, 8);
    let bump = |t: &Tensor<B, 4>| {
        t.clone().slice_assign(
            [0..1, 0..4, 12..13, 0..8],
            Tensor::ones([1, 4, 1, 8], &t.device()) * 3.0,
        )
    };
    let (o2, _) = chunked(bump(&x.q), bump(&x.k), bump(&x.v), x.s.clone(), None, 8);
    o1.clone()
        .narrow(2, 0, 12)
        .into_data()
        .assert_approx_eq::<f64>(
            &o2.clone().narrow(2, 0, 12).into_data(),
            Tolerance::absolute(1e-12),
        );
    let later = (o1.narrow(2, 12, 8) - o2.narrow(2, 12, 8))
        .abs()
        .max()
        .into_scalar();
    assert!(
        later > 1e-3,
        "changing token 12 must change output 12 onwards"
    );
}

#[test]
fn recurrent_runs_in_the_state_dtype() {
    // Decoding a narrow model with a wide state (f32 under bf16; here f64 under f32 inputs): the
    // recurrence runs in the state's dtype and the state keeps it, while `o` has the inputs'.
    type N = NdArray<f64>;
    let device = Default::default();
    N::seed(&device, 7);
    let (b, h, n, d) = (1, 2, 400, 16);
    let rnd =
        |shape: [usize; 4]| Tensor::<N, 4>::random(shape, Distribution::Normal(0.0, 0.5), &device);
    let narrow = |x: Tensor<N, 4>| x.cast(FloatDType::F32);
    let (q, k, v) = (
        narrow(rnd([b, h, n, d])),
        narrow(rnd([b, h, n, d])),
        narrow(rnd([b, h, n, d])),
    );
    let s0 = rnd([b, h, d, d]);
    // Decays near 1: the state remembers every step's rounding.
    let s = Tensor::<N, 1>::from_floats([1e-3, 1e-2], &device);
    let wide = |x: &Tensor<N, 4>| x.clone().cast(FloatDType::F64);

    let (o_want, st_want) = recurrent(wide(&q), wide(&k), wide(&v), s.clone(), Some(s0.clone()));
    let (o, st) = recurrent(
        q.clone(),
        k.clone(),
        v.clone(),
        s.clone().cast(FloatDType::F32),
        Some(s0.clone()),
    );
    assert_eq!(o.dtype(), DType::F32);
    assert_eq!(st.dtype(), DType::F64);
    let e_state = rel_err(st.into_data(), st_want.clone().into_data());
    assert!(e_state < 1e-12, "f64 state: {e_state:e}");
    let e_out = rel_err(o.into_data(), o_want.into_data());
    assert!(e_out < 1e-6, "o, rounded to f32 once: {e_out:e}");

    // The same steps with a state of the inputs' dtype drift by f32 rounding.
    let (_, st_narrow) = recurrent(q, k, v, s.cast(FloatDType::F32), Some(narrow(s0)));
    assert_eq!(st_narrow.dtype(), DType::F32);
    let e_narrow = rel_err(st_narrow.into_data(), st_want.into_data());
    assert!(e_narrow > 1e-9, "an f32 state should drift: {e_narrow:e}");
}

/// f32 decay rates under f16 inputs (CPU `Flex` backend, the reference forms): `ds`, which here
/// passes f16's largest value (65504), comes back finite in f32 and close to the f64 value, while
/// the other quantities keep the inputs' dtype.
#[test]
fn f32_decays_under_f16_inputs_keep_ds_in_range() {
    use burn::backend::Flex;
    use scalelab_kernels::lightning::LightningBackend;
    type H = Autodiff<Flex>;
    let x = inputs(41, 1, 2, 300, 16, 16, &[1e-4, 0.02]);
    // Slow heads and a state loss: d<S_n, 1>/ds carries -n lambda^n <S0, 1>, about -1e5 in head
    // 0, above the output's share (its cotangent scaled down, as its sign is random).
    let s0 = (x.s0.clone().abs() + 1.0).detach().require_grad();
    let r_out = x.r_out.clone() * 0.1;
    let (o, last) = naive(
        x.q.clone(),
        x.k.clone(),
        x.v.clone(),
        x.s.clone(),
        Some(s0.clone()),
    );
    let want = ((o * r_out.clone()).sum() + last.sum()).backward();
    let want_ds = x.s.grad(&want).unwrap().into_data();
    let biggest = want_ds.iter::<f64>().fold(0.0_f64, |m, v| m.max(v.abs()));
    assert!(
        biggest > 65504.0,
        "the case must pass f16's range: |ds| {biggest:e}"
    );

    let dev = Default::default();
    let on = |t: &Tensor<B, 4>, dtype| Tensor::<H, 4>::from_data(t.to_data(), (&dev, dtype));
    let [q, k, v, st] = [&x.q, &x.k, &x.v, &s0].map(|t| on(t, DType::F16).require_grad());
    let s = Tensor::<H, 1>::from_data(x.s.to_data(), (&dev, DType::F32)).require_grad();
    let (o, last) = H::lightning_attention(q.clone(), k, v, s.clone(), Some(st), 64);
    assert_eq!((o.dtype(), last.dtype()), (DType::F16, DType::F16));
    let loss = (o * on(&r_out, DType::F16)).sum().cast(DType::F32) + last.cast(DType::F32).sum();
    let g = loss.backward();
    assert_eq!(q.grad(&g).unwrap().dtype(), DType::F16);
    let ds = s.grad(&g).unwrap().into_data();
    assert_eq!(ds.dtype, DType::F32);
    let err = rel_err(ds, want_ds);
    assert!(
        err < 1e-2,
        "ds of f32 decays under f16 inputs: relative error {err:e}"
    );
}
