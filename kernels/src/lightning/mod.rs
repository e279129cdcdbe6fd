//! Lightning attention: the MiniMax decayed linear-attention core.
//!
//! [`reference`](mod@reference) holds the plain tensor-op forms (naive, chunked, recurrent, and
//! the general [`reference::scan`]). [`LightningBackend::lightning_attention`] is what model code
//! calls: backends without a kernel run the chunked reference; the CubeCL backends
//! (`CubeBackend`, and `Fusion<CubeBackend>` through a fusion custom op) run the kernels through
//! `launch`, which asks [`dispatch`] which kernel runs, and `Autodiff` over them records two
//! backward nodes: the output's, whose gradients are three more kernel scans, and the final
//! state's, a closed form in tensor ops.
//!
//! The modules, none importing another in a loop: `options` ([`ScanOptions`]), `reference`,
//! `usage` (launch counts), `geometry` (tile sizes, no policy) and `dispatch` (the choice, pure)
//! are compiled with every backend; with a CubeCL backend, `launch` (entry points: checks,
//! buffers, the dispatch's plan) calls the kernel files `plain`, `tiled`, `split`, `mma`,
//! `mma_fused` and `decode`, which share the helpers of `tiles` and `fragments` and never import
//! each other.

#[cfg(feature = "cubecl")]
mod cubecl_impls;
#[cfg(feature = "cubecl")]
mod decode;
pub mod dispatch;
#[cfg(feature = "cubecl")]
pub(crate) mod fragments;
pub mod geometry;
#[cfg(feature = "cubecl")]
pub mod launch;
#[cfg(feature = "cubecl")]
mod mma;
#[cfg(feature = "cubecl")]
mod mma_fused;
mod options;
#[cfg(feature = "cubecl")]
mod plain;
pub mod reference;
#[cfg(feature = "cubecl")]
mod split;
#[cfg(feature = "cubecl")]
mod tiled;
#[cfg(feature = "cubecl")]
mod tiles;
pub use crate::usage;

pub use options::ScanOptions;

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{
    backend::Backend, ops::FloatTensor, DType, FloatDType, Int, Tensor, TensorPrimitive,
};

/// A backend that can run the lightning-attention core.
///
/// Implemented for every backend scalelab supports; the default bodies are the plain references,
/// so a backend without a dedicated kernel is still correct. A kernel backend overrides
/// [`Self::lightning_kernel_available`], [`Self::lightning_scan`] and
/// [`Self::lightning_decode_step`]; `lightning_attention` then runs the kernel, and under
/// `Autodiff` a custom backward node runs the gradient scans.
pub trait LightningBackend: crate::gemm::GemmBackend {
    /// Causal decayed linear attention, `o_t = sum_{j<=t} exp(-s (t-j)) (q_t . k_j) v_j`, continued
    /// from `state` when given.
    ///
    /// - `q, k`: `[batch, heads, seq, dk]`; `v`: `[batch, heads, seq, dv]`
    /// - `s`: `[heads]`, decay rates (`lambda = exp(-s)`), in any float dtype: keep trained
    ///   decays in f32 under f16 inputs, as `ds` of a slow head passes f16's 65504 by 1K tokens
    ///   (it comes back in `s`'s dtype; the kernels read the rates rounded to the inputs')
    /// - `state`: `[batch, heads, dk, dv]`, the `K^T V` state carried in from earlier tokens
    /// - `block`: the reference's block size (kernels choose their own tiles; same function)
    /// - returns `(o [batch, heads, seq, dv], final state [batch, heads, dk, dv])`
    fn lightning_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Option<Tensor<Self, 4>>,
        block: usize,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        check_attention_inputs(&q, &k, &v, &s, state.as_ref(), block);
        if !Self::lightning_kernel_available() {
            usage::record("reference::chunked (tensor ops)");
            return reference::chunked(q, k, v, s, state, block);
        }
        let [_, _, n, dk] = q.dims();
        let packed = Self::lightning_scan(
            prim(q),
            prim(k),
            prim(v),
            s.into_primitive().tensor(),
            state.map(prim),
            ScanOptions::default(),
        );
        unpack(tensor(packed), n, dk)
    }

    /// Whether [`Self::lightning_scan`] runs a kernel (otherwise `lightning_attention` uses the
    /// chunked reference directly).
    fn lightning_kernel_available() -> bool {
        false
    }

    /// One decayed causal scan (the forward pass, or one of the three gradient scans) on
    /// primitives; returns the packed `[batch, heads, n + da, dc]` output and final state.
    /// Default: [`reference::scan`].
    fn lightning_scan(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        s: FloatTensor<Self>,
        state: Option<FloatTensor<Self>>,
        opts: ScanOptions,
    ) -> FloatTensor<Self> {
        reference::scan(
            tensor::<Self>(a),
            tensor::<Self>(b),
            tensor::<Self>(c),
            Tensor::from_primitive(TensorPrimitive::Float(s)),
            state.map(tensor),
            opts,
        )
        .into_primitive()
        .tensor()
    }

    /// The backward's two reverse scans: `dk = reverse scan(v, do, q)` from `dS_n^T` and
    /// `dv = reverse scan(k, q, do)` from `dS_n` (both with [`ScanOptions::state_exp0`]).
    /// Returns `(dk, dv)`: `dk` in rows `0..n` of a `[batch, heads, n + dv, dk]` tensor (the rest
    /// unspecified), `dv` packed as [`Self::lightning_scan`] packs it (rows `n..`: `dS0`). A
    /// kernel backend may share the two scans' chunk states (one is the other's transpose).
    /// Default: two [`Self::lightning_scan`]s.
    fn lightning_dk_dv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        s: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dk = Self::lightning_scan(
            v,
            d_o.clone(),
            q.clone(),
            s.clone(),
            Some(d_state.clone()),
            ScanOptions::DK,
        );
        let dv = Self::lightning_scan(k, q, d_o, s, Some(d_state), ScanOptions::DV);
        (dk, dv)
    }

    /// One decode step: `state' = lambda state + k^T v`, `o = q state'`, with `q, k: [batch,
    /// heads, 1, dk]`, `v: [batch, heads, 1, dv]`, `state: [batch, heads, dk, dv]`; returns
    /// `(o [batch, heads, 1, dv], state')`.
    ///
    /// The state keeps its own float dtype, which may be wider than the inputs': f32 under a
    /// bf16 model, as MiniMax keeps it (a bf16 state would be rounded at every step). `o` has
    /// `q`'s dtype. Checks the inputs, then runs [`Self::lightning_decode_step`].
    fn lightning_decode(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        check_decode_inputs(&q, &k, &v, &s, &state);
        Self::lightning_decode_step(q, k, v, s, state)
    }

    /// [`Self::lightning_decode`] on inputs already checked: what a kernel backend overrides.
    /// Default: [`reference::recurrent`].
    fn lightning_decode_step(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        reference::recurrent(q, k, v, s, Some(state))
    }
}

/// The layout every lightning-attention entry point takes, for its error messages.
const LAYOUT: &str = "q, k: [batch, heads, seq, dk]; v: [batch, heads, seq, dv]; s: [heads]; \
                      state: [batch, heads, dk, dv]";

/// Stops with an error naming the input, its shape and the shape expected, before mismatched
/// inputs reach a kernel or fail deep inside a tensor op.
fn check_inputs(
    op: &str,
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    s: [usize; 1],
    state: Option<[usize; 4]>,
) {
    let [batch, heads, seq, dk] = q;
    let dv = v[3];
    let fail = |name: &str, got: &[usize], want: String| -> ! {
        panic!("{op}: {name} is {got:?}, expected {want} (with q {q:?}; {LAYOUT})")
    };
    if q.contains(&0) {
        fail("q", &q, "no zero dimension".into());
    }
    if k != q {
        fail("k", &k, format!("{q:?}, the shape of q"));
    }
    if v[..3] != q[..3] || dv == 0 {
        fail(
            "v",
            &v,
            format!("[{batch}, {heads}, {seq}, dv] with dv >= 1"),
        );
    }
    if s != [heads] {
        fail("s", &s, format!("[{heads}], one decay rate per head"));
    }
    if let Some(st) = state {
        if st != [batch, heads, dk, dv] {
            fail("state", &st, format!("[{batch}, {heads}, {dk}, {dv}]"));
        }
    }
}

/// [`check_inputs`] for [`LightningBackend::lightning_attention`]: also a block of at least 1.
fn check_attention_inputs<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    s: &Tensor<B, 1>,
    state: Option<&Tensor<B, 4>>,
    block: usize,
) {
    let op = "lightning_attention";
    check_inputs(
        op,
        q.dims(),
        k.dims(),
        v.dims(),
        s.dims(),
        state.map(|st| st.dims()),
    );
    assert!(
        block >= 1,
        "{op}: block is 0; use 64 (any size >= 1 computes the same)"
    );
}

/// [`check_inputs`] for one decode step: also one token per call.
fn check_decode_inputs<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    s: &Tensor<B, 1>,
    state: &Tensor<B, 4>,
) {
    let op = "lightning_decode";
    check_inputs(
        op,
        q.dims(),
        k.dims(),
        v.dims(),
        s.dims(),
        Some(state.dims()),
    );
    let seq = q.dims()[2];
    assert!(
        seq == 1,
        "{op}: q has {seq} tokens, a decode step takes one ({LAYOUT}); use lightning_attention \
         with the state for more"
    );
}

fn prim<B: Backend>(x: Tensor<B, 4>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// Splits a packed `[.., n + d, dc]` scan result into `(rows 0..n, rows n..n+d)`.
fn unpack<B: Backend>(packed: Tensor<B, 4>, n: usize, d: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
    (packed.clone().narrow(2, 0, n), packed.narrow(2, n, d))
}

/// The gradients of lightning attention's output from three kernel scans (Lightning
/// Attention-2's two loops, the reverse one split by output): `(dq, dk, dv, ds, d state0)` for
/// the cotangent `d_o` of `o` (the final state's cotangent is [`final_state_grads`]'s).
///
/// `ds` uses the identity `ds_h = -sum_t (t+1) (q_t . dq_t - k_t . dk_t)` summed over the batch,
/// in tensor ops; it loses relative precision like `1e-7 * seq * s` in f32 (cancellation), so
/// about 1e-3 at 64K tokens and `s = 1`. Under f16/bf16 inputs its `dq` and `dk` come from two
/// more scans in f32 (`ds_scans`): the position weights multiply whatever the half-precision
/// scans round (their outputs, and the scores and states their tensor-core products take in
/// the input dtype), while `ds` itself stays small under steep decays, so from those scans
/// `ds` was off by 4e-2 to 8e-2 at 2K tokens under MiniMax's decays and by over 100% under
/// steep ones (on the H200). With
/// `want_ds = false` (the decays are not trained) `ds` is zeros and costs nothing.
#[allow(clippy::type_complexity)]
pub fn lightning_grads<B: LightningBackend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    s: FloatTensor<B>,
    state: Option<FloatTensor<B>>,
    d_o: FloatTensor<B>,
    want_ds: bool,
) -> (
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 1>,
    Option<Tensor<B, 4>>,
) {
    let (q, k, v) = (tensor::<B>(q), tensor::<B>(k), tensor::<B>(v));
    let d_o = tensor::<B>(d_o);
    let s = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(s));
    let [batch, heads, n, dk] = q.dims();
    let dvdim = v.dims()[3];
    let device = q.device();
    // The reverse scans start from the final state's cotangent, zero here.
    let d_state = Tensor::<B, 4>::zeros([batch, heads, dk, dvdim], &device).cast(q.dtype());
    let has_state = state.is_some();
    let half = matches!(q.dtype(), DType::F16 | DType::BF16);
    let state_in = if want_ds && half { state.clone() } else { None };
    let sp = || s.clone().into_primitive().tensor();

    let dq = dq_scan(d_o.clone(), v.clone(), k.clone(), s.clone(), state);
    let (dk_, dv_) = B::lightning_dk_dv(
        prim(q.clone()),
        prim(k.clone()),
        prim(v.clone()),
        prim(d_o.clone()),
        sp(),
        prim(d_state),
    );
    let (dk_, dv_) = (tensor::<B>(dk_), tensor::<B>(dv_));
    let dk_ = dk_.narrow(2, 0, n);
    let (dv_, d_state0) = unpack(dv_, n, dk);
    debug_assert_eq!(dv_.dims()[3], dvdim);

    if !want_ds {
        let ds = Tensor::<B, 1>::zeros([heads], &device).cast(s.dtype());
        return (dq, dk_, dv_, ds, has_state.then_some(d_state0));
    }
    // In f32 whatever the input dtype: the sum runs over every token, weighted by position.
    let f32_ = |x: Tensor<B, 4>| x.cast(FloatDType::F32);
    let pos = f32_(
        Tensor::<B, 1, Int>::arange(1..n as i64 + 1, &device)
            .float()
            .reshape([1, 1, n, 1]),
    );
    let (dq_f32, dk_f32) = if half {
        let s = s.clone().cast(FloatDType::F32);
        let state = state_in.map(|st| f32_(tensor::<B>(st)));
        let (q, k, v, d_o) = (f32_(q.clone()), f32_(k.clone()), f32_(v), f32_(d_o));
        ds_scans::<B>(q, k, v, d_o, s, state)
    } else {
        (f32_(dq.clone()), f32_(dk_.clone()))
    };
    let db = (f32_(q) * dq_f32).sum_dim(3) - (f32_(k) * dk_f32).sum_dim(3);
    let ds = (db * pos).sum_dim(2).sum_dim(0).reshape([heads]);
    (
        dq,
        dk_,
        dv_,
        ds.neg().cast(s.dtype()),
        has_state.then_some(d_state0),
    )
}

/// `dq` and `dk` again from scans of f32 inputs, for [`lightning_grads`]'s `ds` under f16/bf16
/// inputs (why: there). Two f32 scans, run only when the decays are trained.
fn ds_scans<B: LightningBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    d_o: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, heads, n, dk] = q.dims();
    let dv = v.dims()[3];
    let d_state = Tensor::<B, 4>::zeros([batch, heads, dk, dv], &q.device()).cast(FloatDType::F32);
    let dq = dq_scan(d_o.clone(), v.clone(), k, s.clone(), state.map(prim));
    let dk_ = B::lightning_scan(
        prim(v),
        prim(d_o),
        prim(q),
        s.into_primitive().tensor(),
        Some(prim(d_state)),
        ScanOptions::DK,
    );
    (dq, tensor::<B>(dk_).narrow(2, 0, n))
}

/// The `dq` scan of the backward pass, `[batch, heads, seq, dk]`.
fn dq_scan<B: LightningBackend>(
    d_o: Tensor<B, 4>,
    v: Tensor<B, 4>,
    k: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<FloatTensor<B>>,
) -> Tensor<B, 4> {
    let n = d_o.dims()[2];
    let packed = B::lightning_scan(
        prim(d_o),
        prim(v),
        prim(k),
        s.into_primitive().tensor(),
        state,
        ScanOptions::DQ,
    );
    tensor::<B>(packed).narrow(2, 0, n)
}

/// The gradients of the final state `S_n = lambda^n S_0 + sum_t lambda^(n-1-t) k_t^T v_t` for
/// its cotangent `g`: `(dk, dv, ds, d state0)` (`q` gets none). In tensor ops (two matmuls over
/// the sequence, at least f32): the final state takes part in a loss rarely (carried-state
/// training), and then this costs less than a scan. `ds` only with `want_ds`.
#[allow(clippy::type_complexity)]
pub fn final_state_grads<B: Backend>(
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    s: Tensor<B, 1>,
    state: Option<Tensor<B, 4>>,
    g: Tensor<B, 4>,
    want_ds: bool,
) -> (
    Tensor<B, 4>,
    Tensor<B, 4>,
    Option<Tensor<B, 1>>,
    Option<Tensor<B, 4>>,
) {
    let [_, heads, n, _] = k.dims();
    let device = k.device();
    let dtype = k.dtype();
    // At least f32, whatever the inputs' dtype (f64 stays f64).
    let wide = if dtype == burn::tensor::DType::F64 {
        FloatDType::F64
    } else {
        FloatDType::F32
    };
    let f32_ = |x: Tensor<B, 4>| x.cast(wide);
    let rate = s.clone().cast(wide).reshape([1, heads, 1, 1]);
    // lambda^(n-1-t) per head and token.
    let age = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
        .float()
        .cast(wide)
        .flip([0])
        .reshape([1, 1, n, 1]);
    let w = (rate.clone().neg() * age.clone()).exp();
    let g32 = f32_(g);
    let dv = (f32_(k.clone()) * w.clone()).matmul(g32.clone());
    let dk = (f32_(v.clone()) * w).matmul(g32.clone().swap_dims(2, 3));
    let whole = (rate.neg() * (n as f64)).exp();
    let d_state0 = state
        .as_ref()
        .map(|_| (g32.clone() * whole.clone()).cast(dtype));
    let ds = want_ds.then(|| {
        // d<S_n, g>/ds = -sum_t (n-1-t) lambda^(n-1-t) <k_t^T v_t, g> - n lambda^n <S_0, g>,
        // and lambda^(n-1-t) <k_t^T v_t, g> = dv_t . v_t.
        let tokens = (dv.clone() * f32_(v)).sum_dim(3) * age;
        let mut ds = tokens.sum_dim(2).sum_dim(0).reshape([heads]);
        if let Some(st) = state {
            let carried = (f32_(st) * g32 * whole).sum_dim(3).sum_dim(2).sum_dim(0);
            ds = ds + carried.reshape([heads]) * (n as f64);
        }
        ds.neg().cast(s.dtype())
    });
    (dk.cast(dtype), dv.cast(dtype), ds, d_state0)
}

/// Registers each gradient of `values` with its parent node among `parents`, where both exist.
macro_rules! register_grads {
    ($b:ty, $grads:expr, $parents:expr, $values:expr) => {
        for (node, value) in $parents.into_iter().zip($values) {
            if let (Some(node), Some(value)) = (node, value) {
                $grads.register::<$b>(node.id, value);
            }
        }
    };
}

/// The backward node of kernel-backed lightning attention's output `o` under `Autodiff`.
#[derive(Debug)]
struct LightningBackward;

/// What the output's backward node keeps: `q, k, v, s` and the initial state if any.
type SavedInputs<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
);

impl<B: LightningBackend> Backward<B, 5> for LightningBackward {
    type State = SavedInputs<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v, s, state) = ops.state;
        // The decay's gradient (two full-size reductions) only when `s` is tracked: MiniMax's
        // decays are fixed.
        let want_ds = ops.parents[3].is_some();
        let (dq, dk, dv, ds, dst) = lightning_grads::<B>(q, k, v, s, state, grad, want_ds);
        let values = [
            Some(prim(dq)),
            Some(prim(dk)),
            Some(prim(dv)),
            Some(ds.into_primitive().tensor()),
            dst.map(prim),
        ];
        register_grads!(B, grads, ops.parents, values);
    }
}

/// The backward node of kernel-backed lightning attention's final state under `Autodiff`: a
/// node of its own, so that a loss on `o` alone never builds the state's cotangent.
#[derive(Debug)]
struct FinalStateBackward;

impl<B: LightningBackend> Backward<B, 5> for FinalStateBackward {
    type State = SavedInputs<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 5>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let g = tensor::<B>(grads.consume::<B>(&ops.node));
        let (_, k, v, s, state) = ops.state;
        let want_ds = ops.parents[3].is_some();
        let (dk, dv, ds, dst) = final_state_grads::<B>(
            tensor(k),
            tensor(v),
            Tensor::from_primitive(TensorPrimitive::Float(s)),
            state.map(tensor),
            g,
            want_ds,
        );
        let values = [
            None,
            Some(prim(dk)),
            Some(prim(dv)),
            ds.map(|x| x.into_primitive().tensor()),
            dst.map(prim),
        ];
        register_grads!(B, grads, ops.parents, values);
    }
}

impl<B: LightningBackend, C: CheckpointStrategy> LightningBackend for Autodiff<B, C> {
    fn lightning_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Option<Tensor<Self, 4>>,
        block: usize,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        check_attention_inputs(&q, &k, &v, &s, state.as_ref(), block);
        if !B::lightning_kernel_available() {
            return reference::chunked(q, k, v, s, state, block);
        }
        let [batch, heads, n, dk] = q.dims();
        let dv = v.dims()[3];
        let has_state = state.is_some();
        // An untracked zero tensor stands in for a missing state: the node always has 5 parents.
        // In q's dtype, not the device's default (Burn fixes that per device at first use).
        let state = state
            .unwrap_or_else(|| Tensor::zeros([batch, heads, dk, dv], (&q.device(), q.dtype())));
        let (q, k, v, s, st) = (
            prim(q),
            prim(k),
            prim(v),
            s.into_primitive().tensor(),
            prim(state),
        );
        let nodes = [
            q.node.clone(),
            k.node.clone(),
            v.node.clone(),
            s.node.clone(),
            st.node.clone(),
        ];
        let inner_state = has_state.then(|| st.primitive.clone());
        let packed = tensor::<B>(B::lightning_scan(
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
            s.primitive.clone(),
            inner_state.clone(),
            ScanOptions::default(),
        ));
        let (o, last) = unpack(packed, n, dk);
        let saved = || {
            (
                q.primitive.clone(),
                k.primitive.clone(),
                v.primitive.clone(),
                s.primitive.clone(),
                inner_state.clone(),
            )
        };
        // Two nodes: the output's gradient is the three kernel scans, the final state's two
        // matmuls, and neither builds the other's cotangent.
        let o = match LightningBackward
            .prepare::<C>(nodes.clone())
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved(), prim(o)),
            OpsKind::UnTracked(prep) => prep.finish(prim(o)),
        };
        let last = match FinalStateBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved(), prim(last)),
            OpsKind::UnTracked(prep) => prep.finish(prim(last)),
        };
        (tensor(o), tensor(last))
    }

    /// Decoding is inference: with no input tracked the inner backend's step runs (its kernel);
    /// a tracked input takes the reference, whose tensor ops record their gradients.
    fn lightning_decode_step(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        let tracked = [&q, &k, &v, &state].into_iter().any(is_tracked) || is_tracked(&s);
        if tracked || !B::lightning_kernel_available() {
            return reference::recurrent(q, k, v, s, Some(state));
        }
        let (o, state) =
            B::lightning_decode_step(q.inner(), k.inner(), v.inner(), s.inner(), state.inner());
        (Tensor::from_inner(o), Tensor::from_inner(state))
    }
}

/// Whether an `Autodiff` tensor takes part in a gradient computation.
fn is_tracked<B: Backend, C: CheckpointStrategy, const D: usize>(
    x: &Tensor<Autodiff<B, C>, D>,
) -> bool {
    !x.clone()
        .into_primitive()
        .tensor()
        .node
        .requirement
        .is_none()
}
