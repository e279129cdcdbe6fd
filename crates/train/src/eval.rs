//! Batches, the language-model loss, validation loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, IndexingUpdateOp, Int, Tensor};
use scalelab_blocks::precision::{cast_to, float_dtype, stats_dtype};
use scalelab_blocks::{HybridDecoder, KernelBackend};
use scalelab_data::{Dataset, Split};

use crate::loader::HostBatch;

/// Inputs and next-token targets of sequences `first .. first + batch` of a split, each
/// `seq_len` long: `([batch, seq_len], [batch, seq_len])`.
pub fn batch<B: Backend>(
    data: &dyn Dataset,
    split: Split,
    first: u64,
    batch: usize,
    seq_len: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    HostBatch::read(data, split, first, batch, seq_len).upload(device)
}

/// Mean next-token cross-entropy in nats: logits `[b, t, vocab]` (any float dtype), targets
/// `[b, t]`; returns `[1]` in f32 (f64 for f64 logits).
///
/// The statistics run in f32, but nothing of vocabulary size is kept for the backward in f32:
/// the forward computes the loss and its gradient `(softmax - onehot) / n` together (as fused
/// cross-entropy kernels do), rounds the gradient to the logits' dtype, and the backward is
/// one multiply by it. Plain `log_softmax` under autodiff would keep f32 `[b * t, vocab]`
/// tensors alive until the backward (4 GB at 32K tokens and a 32K vocabulary).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let n = b * t;
    let dtype = float_dtype(&logits);
    let wide = stats_dtype(dtype);
    let logits = logits.reshape([n, v]);
    let targets = targets.reshape([n, 1]);
    let x = cast_to(logits.clone().detach(), wide);
    let max = x.clone().max_dim(1);
    let shifted = x - max;
    let lse = shifted.clone().exp().sum_dim(1).log(); // [n, 1], relative to max
    let target = shifted.clone().gather(1, targets.clone());
    let loss = (lse.clone() - target).mean(); // [1], f32, no graph
    let minus_one = Tensor::<B, 2>::full([n, 1], -1.0, &loss.device()).cast(wide);
    let grad = (shifted - lse)
        .exp()
        .scatter(1, targets, minus_one, IndexingUpdateOp::Add)
        .div_scalar(n as f64);
    let grad = cast_to(grad, dtype);
    // `surrogate`'s gradient with respect to the logits is `grad`; its value is cancelled.
    let surrogate = cast_to((logits * grad).sum(), wide);
    surrogate.clone() - surrogate.detach() + loss
}

/// The textbook form of [`cross_entropy`] (`-mean(log_softmax(logits)[target])` in the logits'
/// dtype): its test reference.
pub fn cross_entropy_reference<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    log_softmax(logits.reshape([b * t, v]), 1)
        .gather(1, targets.reshape([b * t, 1]))
        .mean()
        .neg()
}

/// Mean validation loss over `batches` fixed batches of the validation split.
pub fn validation_loss<B: KernelBackend>(
    model: &HybridDecoder<B>,
    data: &dyn Dataset,
    batches: u64,
    batch_size: usize,
    seq_len: usize,
    device: &B::Device,
) -> f64 {
    let mut total = 0.0;
    for i in 0..batches {
        let (x, y) = batch::<B>(
            data,
            Split::Validation,
            i * batch_size as u64,
            batch_size,
            seq_len,
            device,
        );
        total += cross_entropy(model.forward(x).logits, y)
            .into_scalar()
            .elem::<f64>();
    }
    total / batches.max(1) as f64
}
