//! Matrix products for the model blocks: [`GemmBackend::gemm`] and its tensor form [`matmul`].
//!
//! On CUDA (the `cuda` feature) the products run through cuBLASLt ([`cublaslt`]) on cubecl's own
//! stream, bf16/f16 with f32 accumulation and f32 as TF32; every other backend, and CUDA under
//! `SCALELAB_GEMM=burn`, runs Burn's `matmul`, which is also the reference the GPU tests compare
//! with. Under `Autodiff` a backward node runs both gradient products through `gemm` as well, so
//! the forward and backward products of every linear layer take the same path.

#[cfg(feature = "cubecl")]
mod cubecl_impls;
#[cfg(feature = "cuda")]
pub mod cublaslt;

use std::cell::Cell;
use std::sync::OnceLock;

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{
    backend::Backend, ops::FloatTensor, Shape, Tensor, TensorMetadata, TensorPrimitive,
};

/// A backend that runs the blocks' matrix products; the default body is Burn's `matmul`.
pub trait GemmBackend: Backend {
    /// `lhs @ rhs`: `[..., m, k] x [..., k, n] -> [..., m, n]` in `lhs`'s dtype; each batch
    /// dimension is equal in both or 1 in one of them (broadcast).
    fn gemm(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }
}

/// `lhs @ rhs` through [`GemmBackend::gemm`]: `[..., m, k] x [..., k, n] -> [..., m, n]`.
pub fn matmul<B: GemmBackend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
) -> Tensor<B, D> {
    let (l, r) = (lhs.dims(), rhs.dims());
    assert!(
        D >= 2 && l[D - 1] == r[D - 2],
        "matmul: inner dimensions differ, lhs {l:?} x rhs {r:?}"
    );
    assert!(
        (0..D - 2).all(|i| l[i] == r[i] || l[i] == 1 || r[i] == 1),
        "matmul: batch dimensions neither equal nor 1, lhs {l:?} x rhs {r:?}"
    );
    let out = B::gemm(lhs.into_primitive().tensor(), rhs.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Products this process has run on cuBLASLt (0 without the `cuda` feature): what a training
/// log quotes to show that the steps took that path.
pub fn cublaslt_launches() -> u64 {
    #[cfg(feature = "cuda")]
    return cublaslt::launches();
    #[cfg(not(feature = "cuda"))]
    0
}

/// The shape of `lhs @ rhs`: batch dimensions broadcast, then `[m, n]`.
pub fn output_shape(lhs: &Shape, rhs: &Shape) -> Shape {
    let rank = lhs.num_dims();
    let mut dims: Vec<usize> = (0..rank - 2).map(|i| lhs[i].max(rhs[i])).collect();
    dims.extend([lhs[rank - 2], rhs[rank - 1]]);
    Shape::from(dims)
}

/// Which path the products take, `SCALELAB_GEMM`; nothing needs it set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmMode {
    /// `auto` (unset): cuBLASLt on CUDA, Burn's `matmul` elsewhere.
    #[default]
    Auto,
    /// `burn`: Burn's `matmul` everywhere (the reference; an A/B check).
    Burn,
}

/// The variable that sets [`GemmMode`].
pub const GEMM_VAR: &str = "SCALELAB_GEMM";

impl GemmMode {
    /// The accepted spellings, the default first.
    pub const SPELLINGS: [(&'static str, GemmMode); 2] =
        [("auto", GemmMode::Auto), ("burn", GemmMode::Burn)];

    /// The mode `value` spells, or an error that names the variable and the accepted values.
    pub fn parse(value: &str) -> Result<Self, GemmModeError> {
        crate::overrides::parse_setting(GEMM_VAR, &Self::SPELLINGS, value)
    }
}

/// A `SCALELAB_GEMM` value that is not one of [`GemmMode::SPELLINGS`].
pub type GemmModeError = crate::overrides::UnknownSetting;

thread_local! {
    static OVERRIDE: Cell<Option<GemmMode>> = const { Cell::new(None) };
}

/// The mode in force: `SCALELAB_GEMM`, read once per process (a wrong value stops the process
/// with [`GemmModeError`]'s message), or [`with_mode`]'s on this thread.
pub fn mode() -> GemmMode {
    if let Some(mode) = OVERRIDE.with(Cell::get) {
        return mode;
    }
    static FROM_ENV: OnceLock<GemmMode> = OnceLock::new();
    *FROM_ENV.get_or_init(|| crate::overrides::setting_from_env(GEMM_VAR, &GemmMode::SPELLINGS))
}

/// Runs `f` with `mode` in force on this thread: a test or benchmark comparing the paths in one
/// process (use `CubeBackend` without fusion, whose products run when called).
pub fn with_mode<T>(mode: GemmMode, f: impl FnOnce() -> T) -> T {
    crate::overrides::with_override(&OVERRIDE, mode, f)
}

/// The backward node of [`GemmBackend::gemm`] under `Autodiff`: `dlhs = grad rhs^T` and
/// `drhs = lhs^T grad`, each summed over the batch dimensions its operand broadcast.
#[derive(Debug)]
struct GemmBackward;

impl<B: GemmBackend> Backward<B, 2> for GemmBackward {
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>, Shape, Shape);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (lhs, rhs, lhs_shape, rhs_shape) = ops.state;
        let [lhs_node, rhs_node] = ops.parents;
        let rank = lhs_shape.num_dims();
        let t = |x: FloatTensor<B>| B::float_swap_dims(x, rank - 2, rank - 1);
        if let (Some(node), Some(rhs)) = (lhs_node, rhs) {
            let g = B::gemm(grad.clone(), t(rhs));
            grads.register::<B>(node.id, unbroadcast::<B>(g, &lhs_shape));
        }
        if let (Some(node), Some(lhs)) = (rhs_node, lhs) {
            let g = B::gemm(t(lhs), grad);
            grads.register::<B>(node.id, unbroadcast::<B>(g, &rhs_shape));
        }
    }
}

/// `g` summed over the batch dimensions where `shape` is 1 and `g` is not.
fn unbroadcast<B: Backend>(mut g: FloatTensor<B>, shape: &Shape) -> FloatTensor<B> {
    let dims = g.shape();
    for i in 0..shape.num_dims() - 2 {
        if shape[i] == 1 && dims[i] != 1 {
            g = B::float_sum_dim(g, i);
        }
    }
    g
}

impl<B: GemmBackend, C: CheckpointStrategy> GemmBackend for Autodiff<B, C> {
    fn gemm(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = B::gemm(lhs.primitive.clone(), rhs.primitive.clone());
        let nodes = [lhs.node.clone(), rhs.node.clone()];
        match GemmBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                // Each gradient needs the other operand only.
                let state = (
                    rhs.is_tracked().then(|| lhs.primitive.clone()),
                    lhs.is_tracked().then(|| rhs.primitive.clone()),
                    lhs.primitive.shape(),
                    rhs.primitive.shape(),
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn mode_takes_its_spellings_and_names_the_variable_otherwise() {
        assert_eq!(GemmMode::parse("auto"), Ok(GemmMode::Auto));
        assert_eq!(GemmMode::parse("burn"), Ok(GemmMode::Burn));
        let err = GemmMode::parse("cublas").unwrap_err().to_string();
        assert_eq!(
            err,
            "SCALELAB_GEMM=\"cublas\" is not a value it takes; accepted: auto, burn (unset: auto)"
        );
    }

    type Ad = burn::backend::Autodiff<burn::backend::NdArray<f64>>;

    /// Outputs and both gradients of `sum(c * (lhs @ rhs))` through [`matmul`] and through
    /// Burn's own `matmul` (whose autodiff node is the reference).
    fn grads_match<const D: usize>(l: [usize; D], r: [usize; D]) {
        use burn::tensor::Distribution::Normal;
        let device = Default::default();
        let lhs = Tensor::<Ad, D>::random(l, Normal(0.0, 1.0), &device);
        let rhs = Tensor::<Ad, D>::random(r, Normal(0.0, 1.0), &device);
        let out = output_shape(&lhs.shape(), &rhs.shape());
        let c = Tensor::<Ad, D>::random(out, Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (a, b) = (lhs.clone().require_grad(), rhs.clone().require_grad());
            let y = if ours {
                matmul(a.clone(), b.clone())
            } else {
                a.clone().matmul(b.clone())
            };
            let grads = (y.clone() * c.clone()).sum().backward();
            [y.inner(), a.grad(&grads).unwrap(), b.grad(&grads).unwrap()]
        };
        for (name, (ours, burn)) in ["y", "dlhs", "drhs"]
            .iter()
            .zip(run(true).into_iter().zip(run(false)))
        {
            assert_eq!(ours.dims(), burn.dims(), "{name} of {l:?} x {r:?}");
            ours.into_data().assert_approx_eq::<f64>(
                &burn.into_data(),
                burn::tensor::Tolerance::absolute(1e-9),
            );
        }
    }

    #[test]
    fn gradients_equal_burns_matmul_for_plain_batched_and_broadcast_operands() {
        grads_match([7, 5], [5, 3]);
        grads_match([4, 7, 5], [4, 5, 3]);
        grads_match([1, 7, 5], [4, 5, 3]);
        grads_match([4, 7, 5], [1, 5, 3]);
        grads_match([2, 3, 7, 5], [2, 1, 5, 3]);
    }

    #[test]
    fn a_frozen_operand_gets_no_gradient_and_the_other_one_does() {
        let device = Default::default();
        let x = Tensor::<Ad, 2>::ones([3, 4], &device).require_grad();
        let w = Tensor::<Ad, 2>::ones([4, 2], &device);
        let grads = matmul(x.clone(), w.clone()).sum().backward();
        assert!(w.grad(&grads).is_none());
        let dx = x.grad(&grads).expect("x is tracked");
        dx.into_data()
            .assert_eq(&TensorData::from([[2.0f64; 4]; 3]), false);
    }

    #[test]
    fn with_mode_overrides_on_this_thread_and_restores() {
        let before = mode();
        with_mode(GemmMode::Burn, || assert_eq!(mode(), GemmMode::Burn));
        assert_eq!(mode(), before);
    }
}
