//! [`AttentionBackend`] for the CubeCL backends: `CubeBackend` runs the kernel that
//! [`super::dispatch`] chooses through [`super::launch`] (or the reference, when chosen);
//! `Fusion<B>` registers the forward and the backward as fusion custom operations on the inner
//! backend's primitives.

use burn::tensor::{ops::FloatTensor, DType, FloatDType, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::dispatch::AttentionKernel;
use super::{launch, reference, AttentionBackend};

impl<R, F, I, BT> AttentionBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match launch::kernel(&q, &v) {
            AttentionKernel::Reference => reference::forward_primitives::<Self>([q, k, v], scale),
            kernel => launch::forward([q, k, v], scale, kernel),
        }
    }

    fn attention_backward(
        [q, k, v, o]: [FloatTensor<Self>; 4],
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f64,
    ) -> [FloatTensor<Self>; 3] {
        let kernel = launch::kernel(&q, &v);
        if kernel == AttentionKernel::Reference || lse.dtype != DType::F32 {
            return reference::backward_primitives::<Self>([q, k, v, o], lse, d_o, scale);
        }
        // delta = rowsum(do * o) in f32: the backward's one pre-pass.
        let f32_ =
            |x| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(x)).cast(FloatDType::F32);
        let delta = (f32_(d_o.clone()) * f32_(o)).sum_dim(3).squeeze_dim::<3>(3);
        let delta = delta.into_primitive().tensor();
        let (dq, dk, dv) = launch::backward([q, k, v, d_o], [lse, delta], scale, kernel);
        [dq, dk, dv]
    }
}

/// The fusion custom operation running the forward on the inner backend.
#[derive(Clone, Debug)]
struct ForwardOp<B> {
    desc: CustomOpIr,
    scale: f64,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + AttentionBackend> Operation<B::FusionRuntime> for ForwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let mut get = |i: usize| handles.get_float_tensor::<B>(&inputs[i]);
        let (q, k, v) = (get(0), get(1), get(2));
        let (o, lse) = B::attention_forward(q, k, v, self.scale);
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, o);
        handles.register_float_tensor::<B>(&self.desc.outputs[1].id, lse);
    }
}

/// The fusion custom operation running the backward on the inner backend.
#[derive(Clone, Debug)]
struct BackwardOp<B> {
    desc: CustomOpIr,
    scale: f64,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + AttentionBackend> Operation<B::FusionRuntime> for BackwardOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let mut get = |i: usize| handles.get_float_tensor::<B>(&inputs[i]);
        let qkvo = [get(0), get(1), get(2), get(3)];
        let (lse, d_o) = (get(4), get(5));
        let grads = B::attention_backward(qkvo, lse, d_o, self.scale);
        for (out, grad) in self.desc.outputs.iter().zip(grads) {
            handles.register_float_tensor::<B>(&out.id, grad);
        }
    }
}

impl<B: FusionBackend + AttentionBackend> AttentionBackend for Fusion<B> {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = q.client.clone();
        let [b, h, t, _] = q.shape.dims::<4>();
        let dv = v.shape[3];
        // The reference's log-sum-exp is f64 for f64 inputs; the kernels' f32.
        let wide = if q.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let ins = [q, k, v];
        let streams = OperationStreams::with_inputs(ins.iter());
        let outs = [
            TensorIr::uninit(
                client.create_empty_handle(),
                [b, h, t, dv].into(),
                ins[0].dtype,
            ),
            TensorIr::uninit(client.create_empty_handle(), [b, h, t].into(), wide),
        ];
        let ins: Vec<TensorIr> = ins.into_iter().map(|x| x.into_ir()).collect();
        let desc = CustomOpIr::new("softmax_attention_forward", &ins, &outs);
        let op = ForwardOp::<B> {
            desc: desc.clone(),
            scale,
            _b: core::marker::PhantomData,
        };
        let mut outs = client.register(streams, OperationIr::Custom(desc), op);
        let lse = outs.pop().expect("attention forward: two outputs");
        let o = outs.pop().expect("attention forward: two outputs");
        (o, lse)
    }

    fn attention_backward(
        qkvo: [FloatTensor<Self>; 4],
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        scale: f64,
    ) -> [FloatTensor<Self>; 3] {
        let client = qkvo[0].client.clone();
        let grad = |x: &FloatTensor<Self>| {
            TensorIr::uninit(client.create_empty_handle(), x.shape.clone(), qkvo[0].dtype)
        };
        let outs = [grad(&qkvo[0]), grad(&qkvo[1]), grad(&qkvo[2])];
        let [q, k, v, o] = qkvo;
        let ins = [q, k, v, o, lse, d_o];
        let streams = OperationStreams::with_inputs(ins.iter());
        let ins: Vec<TensorIr> = ins.into_iter().map(|x| x.into_ir()).collect();
        let desc = CustomOpIr::new("softmax_attention_backward", &ins, &outs);
        let op = BackwardOp::<B> {
            desc: desc.clone(),
            scale,
            _b: core::marker::PhantomData,
        };
        let outs = client.register(streams, OperationIr::Custom(desc), op);
        let mut outs = outs.into_iter();
        [(); 3].map(|_| outs.next().expect("attention backward: three outputs"))
    }
}
