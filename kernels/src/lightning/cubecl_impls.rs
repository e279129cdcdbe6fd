//! [`LightningBackend`] for the CubeCL backends: `CubeBackend` runs the kernels through
//! [`super::launch`] directly; `Fusion<B>` registers them as fusion custom operations (the stream executes them
//! on the inner backend's primitives, in order with the fused element-wise work around them).

use burn::tensor::{ops::FloatTensor, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::{launch, LightningBackend, ScanOptions};

impl<R, F, I, BT> LightningBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn lightning_kernel_available() -> bool {
        true
    }

    fn lightning_scan(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        s: FloatTensor<Self>,
        state: Option<FloatTensor<Self>>,
        opts: ScanOptions,
    ) -> FloatTensor<Self> {
        launch::scan(a, b, c, s, state, opts)
    }

    fn lightning_dk_dv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        s: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        launch::dk_dv(q, k, v, d_o, s, d_state)
    }

    fn lightning_decode_step(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        let p = |x: Tensor<Self, 4>| x.into_primitive().tensor();
        let (o, st) = launch::decode(p(q), p(k), p(v), s.into_primitive().tensor(), p(state));
        let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
        (t(o), t(st))
    }
}

/// The fusion custom operation running one scan on the inner backend.
#[derive(Clone, Debug)]
struct ScanOp<B> {
    desc: CustomOpIr,
    opts: ScanOptions,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + LightningBackend> Operation<B::FusionRuntime> for ScanOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let mut get = |i: usize| handles.get_float_tensor::<B>(&inputs[i]);
        let (a, b, c, s) = (get(0), get(1), get(2), get(3));
        let state = (inputs.len() == 5).then(|| get(4));
        let out = B::lightning_scan(a, b, c, s, state, self.opts);
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, out);
    }
}

/// The fusion custom operation running the backward's two reverse scans on the inner backend.
#[derive(Clone, Debug)]
struct DkDvOp<B> {
    desc: CustomOpIr,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + LightningBackend> Operation<B::FusionRuntime> for DkDvOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let mut get = |i: usize| handles.get_float_tensor::<B>(&inputs[i]);
        let (q, k, v, d_o, s, d_state) = (get(0), get(1), get(2), get(3), get(4), get(5));
        let (dk, dv) = B::lightning_dk_dv(q, k, v, d_o, s, d_state);
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, dk);
        handles.register_float_tensor::<B>(&self.desc.outputs[1].id, dv);
    }
}

/// The fusion custom operation running one decode step on the inner backend.
#[derive(Clone, Debug)]
struct DecodeOp<B> {
    desc: CustomOpIr,
    _b: core::marker::PhantomData<B>,
}

impl<B: FusionBackend + LightningBackend> Operation<B::FusionRuntime> for DecodeOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = &self.desc.inputs;
        let mut get = |i: usize| -> Tensor<B, 4> {
            Tensor::from_primitive(TensorPrimitive::Float(
                handles.get_float_tensor::<B>(&inputs[i]),
            ))
        };
        let (q, k, v, st) = (get(0), get(1), get(2), get(4));
        let s = Tensor::from_primitive(TensorPrimitive::Float(
            handles.get_float_tensor::<B>(&inputs[3]),
        ));
        let (o, st) = B::lightning_decode_step(q, k, v, s, st);
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, o.into_primitive().tensor());
        handles.register_float_tensor::<B>(&self.desc.outputs[1].id, st.into_primitive().tensor());
    }
}

impl<B: FusionBackend + LightningBackend> LightningBackend for Fusion<B> {
    fn lightning_kernel_available() -> bool {
        B::lightning_kernel_available()
    }

    fn lightning_scan(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        s: FloatTensor<Self>,
        state: Option<FloatTensor<Self>>,
        opts: ScanOptions,
    ) -> FloatTensor<Self> {
        let client = a.client.clone();
        let [batch, heads, n, da] = a.shape.dims::<4>();
        let dc = c.shape[3];
        let dtype = a.dtype;
        let mut ins = vec![a, b, c, s];
        ins.extend(state);
        let streams = OperationStreams::with_inputs(ins.iter());
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            [batch, heads, n + da, dc].into(),
            dtype,
        );
        let ins: Vec<TensorIr> = ins.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("lightning_scan", &ins, &[out]);
        let op = ScanOp::<B> {
            desc: desc.clone(),
            opts,
            _b: core::marker::PhantomData,
        };
        client
            .register(streams, OperationIr::Custom(desc), op)
            .remove(0)
    }

    fn lightning_dk_dv(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        s: FloatTensor<Self>,
        d_state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = q.client.clone();
        let [batch, heads, n, dk] = q.shape.dims::<4>();
        let dv = v.shape[3];
        let dtype = q.dtype;
        let ins = [q, k, v, d_o, s, d_state];
        let streams = OperationStreams::with_inputs(ins.iter());
        let out =
            |shape: [usize; 4]| TensorIr::uninit(client.create_empty_handle(), shape.into(), dtype);
        let outs = [
            out([batch, heads, n + dv, dk]),
            out([batch, heads, n + dk, dv]),
        ];
        let ins: Vec<TensorIr> = ins.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("lightning_dk_dv", &ins, &outs);
        let op = DkDvOp::<B> {
            desc: desc.clone(),
            _b: core::marker::PhantomData,
        };
        let mut outs = client.register(streams, OperationIr::Custom(desc), op);
        let dv_ = outs.pop().expect("dk_dv: two outputs");
        let dk_ = outs.pop().expect("dk_dv: two outputs");
        (dk_, dv_)
    }

    fn lightning_decode_step(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        s: Tensor<Self, 1>,
        state: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        let p = |x: Tensor<Self, 4>| x.into_primitive().tensor();
        let ins = [p(q), p(k), p(v), s.into_primitive().tensor(), p(state)];
        let client = ins[0].client.clone();
        let dtype = ins[0].dtype;
        let [batch, heads, _, dk] = ins[0].shape.dims::<4>();
        let dv = ins[2].shape[3];
        let streams = OperationStreams::with_inputs(ins.iter());
        let o = TensorIr::uninit(
            client.create_empty_handle(),
            [batch, heads, 1, dv].into(),
            dtype,
        );
        let st = TensorIr::uninit(
            client.create_empty_handle(),
            [batch, heads, dk, dv].into(),
            ins[4].dtype,
        );
        let ins: Vec<TensorIr> = ins.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("lightning_decode", &ins, &[o, st]);
        let op = DecodeOp::<B> {
            desc: desc.clone(),
            _b: core::marker::PhantomData,
        };
        let mut outs = client.register(streams, OperationIr::Custom(desc), op);
        let st = outs.pop().expect("decode: two outputs");
        let o = outs.pop().expect("decode: two outputs");
        let t = |x| Tensor::from_primitive(TensorPrimitive::Float(x));
        (t(o), t(st))
    }
}
