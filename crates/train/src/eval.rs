//! Batches, the language-model loss, validation loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use scalelab_blocks::{HybridDecoder, LightningBackend};
use scalelab_data::{Dataset, Split};

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
    let mut inputs = Vec::with_capacity(batch * seq_len);
    let mut targets = Vec::with_capacity(batch * seq_len);
    for i in 0..batch as u64 {
        let seq = data.sequence(split, first + i, seq_len + 1);
        inputs.extend(seq[..seq_len].iter().map(|&t| t as i64));
        targets.extend(seq[1..].iter().map(|&t| t as i64));
    }
    let tensor = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [batch, seq_len]), device);
    (tensor(inputs), tensor(targets))
}

/// Mean next-token cross-entropy in nats: logits `[b, t, vocab]`, targets `[b, t]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    log_softmax(logits.reshape([b * t, v]), 1)
        .gather(1, targets.reshape([b * t, 1]))
        .mean()
        .neg()
}

/// Mean validation loss over `batches` fixed batches of the validation split.
pub fn validation_loss<B: LightningBackend>(
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
