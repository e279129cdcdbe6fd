//! [`GemmBackend`] for the CubeCL backends: `CubeBackend` runs cuBLASLt when its runtime is CUDA
//! (and the `cuda` feature is on) and Burn's `matmul` otherwise; `Fusion<B>` registers the
//! product as a custom operation that the inner backend runs in stream order.

use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::{output_shape, GemmBackend};

impl<R, F, I, BT> GemmBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn gemm(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[cfg(feature = "cuda")]
        let (lhs, rhs) = match super::cublaslt::try_gemm(lhs, rhs) {
            Ok(out) => return out,
            Err(operands) => operands,
        };
        <Self as FloatTensorOps<Self>>::float_matmul(lhs, rhs)
    }
}

/// The fusion custom operation running one product on the inner backend.
#[derive(Clone, Debug)]
struct GemmOp<B> {
    desc: CustomOpIr,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + GemmBackend> Operation<B::FusionRuntime> for GemmOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let lhs = handles.get_float_tensor::<B>(&inputs[0]);
        let rhs = handles.get_float_tensor::<B>(&inputs[1]);
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, B::gemm(lhs, rhs));
    }
}

impl<B: FusionBackend + GemmBackend> GemmBackend for Fusion<B> {
    fn gemm(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let client = lhs.client.clone();
        let shape = output_shape(&lhs.shape, &rhs.shape);
        let out = TensorIr::uninit(client.create_empty_handle(), shape, lhs.dtype);
        let ins = [lhs, rhs];
        let streams = OperationStreams::with_inputs(ins.iter());
        let ins: Vec<TensorIr> = ins.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("gemm", &ins, &[out]);
        let op = GemmOp::<B> {
            desc: desc.clone(),
            _b: core::marker::PhantomData,
        };
        client
            .register(streams, OperationIr::Custom(desc), op)
            .remove(0)
    }
}
