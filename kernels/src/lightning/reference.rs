//! Plain tensor-op forms of the lightning-attention core, the oracles every kernel is tested
//! against. All three compute the same function:
//!
//! ```text
//! kv_t = lambda * kv_{t-1} + k_t^T v_t      (kv_{-1} = initial state, or zero)
//! o_t  = q_t kv_t = sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t kv_{-1}
//! ```
//!
//! with `lambda = exp(-s)` per head, no scaling of `q k^T`. Shapes: `q, k: [batch, heads, seq, dk]`,
//! `v: [batch, heads, seq, dv]`, `s: [heads]`, state `[batch, heads, dk, dv]`.

use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};

/// `x` in `dtype`, without a cast node when it already is (Burn records one either way).
fn in_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}

/// `s` in the wider of its dtype and `dtype`, where the decay factors are computed before
/// they are rounded to `dtype`, that of the tensor they scale. `s` may be wider than the inputs
/// (f32 decays under f16 ones keep a trained `ds` in range) or narrower than a state (f32
/// rates for an f64 recurrence).
fn rates_for<B: Backend>(s: &Tensor<B, 1>, dtype: DType) -> Tensor<B, 1> {
    if dtype.size() > s.dtype().size() {
        in_dtype(s.clone(), dtype)
    } else {
        s.clone()
    }
}

/// `exp(-s_h * e)` for every head `h` and every exponent `e`: `[1, heads, len(e), 1]` in
/// `dtype` (see [`rates_for`]).
fn decay_powers<B: Backend>(
    s: &Tensor<B, 1>,
    exponents: Tensor<B, 1>,
    dtype: DType,
) -> Tensor<B, 4> {
    let s = rates_for(s, dtype);
    let [heads] = s.dims();
    let [n] = exponents.dims();
    let exponents = in_dtype(exponents, s.dtype());
    let powers = (s.reshape([1, heads, 1, 1]) * exponents.reshape([1, 1, n, 1]))
        .neg()
        .exp();
    in_dtype(powers, dtype)
}

/// The causal decay mask `M[i, j] = lambda^(i-j)` for `i >= j`, else 0: `[1, heads, n, n]` in
/// `dtype` (see [`rates_for`]).
fn decay_mask<B: Backend>(s: &Tensor<B, 1>, n: usize, dtype: DType) -> Tensor<B, 4> {
    let s = rates_for(s, dtype);
    let [heads] = s.dims();
    let device = s.device();
    let pos = in_dtype(
        Tensor::<B, 1, Int>::arange(0..n as i64, &device).float(),
        s.dtype(),
    );
    let diff = pos.clone().reshape([n, 1]) - pos.reshape([1, n]);
    let causal = in_dtype(diff.clone().greater_equal_elem(0.0).float(), s.dtype());
    let decay = (s.reshape([1, heads, 1, 1]) * diff.clamp_min(0.0).reshape([1, 1, n, n]))
        .neg()
        .exp();
    in_dtype(decay * causal.reshape([1, 1, n, n]), dtype)
}

/// Positions `from, from+1, ..., from+n-1` as floats.
fn positions<B: Backend>(from: i64, n: usize, device: &B::Device) -> Tensor<B, 1> {
    Tensor::<B, 1, Int>::arange(from..from + n as i64, device).float()
}

fn zero_state<B: Backend>(q: &Tensor<B, 4>, v: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, _, dk] = q.dims();
    let dv = v.dims()[3];
    Tensor::<B, 4>::zeros([b, h, dk, dv], &q.device()).cast(q.dtype())
}

/// Quadratic form: the whole `[seq, seq]` decayed score matrix at once. O(n^2 d) time and
/// O(n^2) memory: the test oracle, not for long sequences.
///
/// Returns `(o [batch, heads, seq, dv], final state [batch, heads, dk, dv])`.
pub fn naive<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [_, _, n, _] = q.dims();
    let (device, dt) = (q.device(), q.dtype());
    let scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * decay_mask(&s, n, dt);
    let mut o = scores.matmul(v.clone());
    // kv_{n-1} = sum_j lambda^(n-1-j) k_j^T v_j (+ lambda^n kv_{-1})
    let to_end = decay_powers(
        &s,
        positions::<B>(0, n, &device).neg() + (n as f64 - 1.0),
        dt,
    );
    let mut last = (k * to_end).swap_dims(2, 3).matmul(v);
    if let Some(s0) = state {
        o = o + (q * decay_powers(&s, positions::<B>(1, n, &device), dt)).matmul(s0.clone());
        last = last + s0 * decay_powers(&s, positions::<B>(n as i64, 1, &device), dt);
    }
    (o, last)
}

/// Chunked form (Lightning Attention-2): blocks of `block` tokens; inside a block the masked,
/// decayed `(Q K^T) V`, across blocks the running `K^T V` state. O(n d^2 + n B d). Any `seq`:
/// the last block may be shorter.
///
/// Returns `(o [batch, heads, seq, dv], final state [batch, heads, dk, dv])`.
pub fn chunked<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
    block: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    assert!(
        block > 0,
        "lightning attention: block size must be at least 1"
    );
    let [_, _, n, _] = q.dims();
    let device = q.device();
    let mut kv = state.unwrap_or_else(|| zero_state(&q, &v));
    let dt = q.dtype();
    let full = BlockDecays::new(&s, block.min(n.max(1)), &device, dt);
    let mut outputs = Vec::with_capacity(n.div_ceil(block));
    for start in (0..n).step_by(block) {
        let len = block.min(n - start);
        let tail;
        let d = if len == full.len {
            &full
        } else {
            tail = BlockDecays::new(&s, len, &device, dt);
            &tail
        };
        let (qi, ki, vi) = (
            q.clone().narrow(2, start, len),
            k.clone().narrow(2, start, len),
            v.clone().narrow(2, start, len),
        );
        let intra =
            (qi.clone().matmul(ki.clone().swap_dims(2, 3)) * d.mask.clone()).matmul(vi.clone());
        let inter = (qi * d.from_start.clone()).matmul(kv.clone());
        outputs.push(intra + inter);
        kv = kv * d.whole.clone() + (ki * d.to_end.clone()).swap_dims(2, 3).matmul(vi);
    }
    (Tensor::cat(outputs, 2), kv)
}

/// The decay factors of one block of `len` tokens, in the inputs' dtype.
struct BlockDecays<B: Backend> {
    len: usize,
    /// `M[i, j] = lambda^(i-j)`, causal: `[1, h, len, len]`.
    mask: Tensor<B, 4>,
    /// `lambda^(i+1)`, applied to `q` against the incoming state: `[1, h, len, 1]`.
    from_start: Tensor<B, 4>,
    /// `lambda^(len-1-i)`, applied to `k` for the outgoing state: `[1, h, len, 1]`.
    to_end: Tensor<B, 4>,
    /// `lambda^len`, the decay of the state across the block: `[1, h, 1, 1]`.
    whole: Tensor<B, 4>,
}

impl<B: Backend> BlockDecays<B> {
    fn new(s: &Tensor<B, 1>, len: usize, device: &B::Device, dt: DType) -> Self {
        let last = len as f64 - 1.0;
        Self {
            len,
            mask: decay_mask(s, len, dt),
            from_start: decay_powers(s, positions::<B>(1, len, device), dt),
            to_end: decay_powers(s, positions::<B>(0, len, device).neg() + last, dt),
            whole: decay_powers(s, positions::<B>(len as i64, 1, device), dt),
        }
    }
}

/// Recurrent form: one token at a time, `kv_t = lambda kv_{t-1} + k_t^T v_t`, `o_t = q_t kv_t`.
/// What decoding does; O(n d^2) with a constant-size state.
///
/// A `state` of another float dtype than `q` (an f32 state under bf16 inputs) sets the dtype the
/// recurrence runs in; the final state keeps it, `o` comes back in `q`'s dtype.
///
/// Returns `(o [batch, heads, seq, dv], final state [batch, heads, dk, dv])`.
pub fn recurrent<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let out_dtype = q.dtype();
    if let Some(dtype) = state
        .as_ref()
        .map(|st| st.dtype())
        .filter(|d| *d != out_dtype)
    {
        let (o, last) = recurrent(q.cast(dtype), k.cast(dtype), v.cast(dtype), s, state);
        return (o.cast(out_dtype), last);
    }
    let [_, _, n, _] = q.dims();
    let device = q.device();
    let lambda = decay_powers(&s, positions::<B>(1, 1, &device), out_dtype);
    let mut kv = state.unwrap_or_else(|| zero_state(&q, &v));
    let mut outputs = Vec::with_capacity(n);
    for t in 0..n {
        let (qt, kt, vt) = (
            q.clone().narrow(2, t, 1),
            k.clone().narrow(2, t, 1),
            v.clone().narrow(2, t, 1),
        );
        kv = kv * lambda.clone() + kt.swap_dims(2, 3).matmul(vt);
        outputs.push(qt.matmul(kv.clone()));
    }
    (Tensor::cat(outputs, 2), kv)
}

/// The general decayed causal scan behind the forward pass and all three gradients, in plain
/// tensor ops (the oracle of the `scan` kernel): with `a, b: [batch, heads, n, da]`,
/// `c: [batch, heads, n, dc]`, time reversed when `opts.reverse`, `e = 0` when `opts.state_exp0`
/// else 1,
///
/// ```text
/// out_t = sum_{j<=t} lambda^(t-j) (a_t . b_j) c_j + lambda^(t+e) a_t S0
/// S_n   = lambda^(1-e) (sum_j lambda^(n-1-j) b_j^T c_j + lambda^(n-1+e) S0)
/// ```
///
/// `S0 = state` (transposed first when `opts.transpose_state`). Returns the packed
/// `[batch, heads, n + da, dc]`: rows `0..n` are `out`, rows `n..` the final state.
pub fn scan<B: Backend>(
    a: Tensor<B, 4>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
    opts: super::options::ScanOptions,
) -> Tensor<B, 4> {
    let [heads] = s.dims();
    let lambda = in_dtype(s.clone().neg().exp().reshape([1, heads, 1, 1]), a.dtype());
    let flip = |x: Tensor<B, 4>| if opts.reverse { x.flip([2]) } else { x };
    let state = state.map(|st| {
        let st = if opts.transpose_state {
            st.swap_dims(2, 3)
        } else {
            st
        };
        if opts.state_exp0 {
            st / lambda.clone()
        } else {
            st
        }
    });
    let (out, last) = chunked(flip(a), flip(b), flip(c), s, state, 64);
    let last = if opts.state_exp0 { last * lambda } else { last };
    Tensor::cat(vec![flip(out), last], 2)
}

/// `|got - want| / |want|` over all elements, in f64: how the tests and benchmarks compare a
/// kernel or form with its oracle (f32 arithmetic lands near 1e-6, bf16 inputs near 1e-3).
pub fn relative_error(got: TensorData, want: TensorData) -> f64 {
    let got: Vec<f64> = got.convert::<f64>().to_vec().expect("float data");
    let want: Vec<f64> = want.convert::<f64>().to_vec().expect("float data");
    assert_eq!(got.len(), want.len(), "relative_error: lengths differ");
    let num: f64 = got.iter().zip(&want).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = want.iter().map(|y| y * y).sum();
    // An all-zero `want` gives 0 for an all-zero `got` and a huge error otherwise.
    (num / den.max(1e-300)).sqrt()
}
