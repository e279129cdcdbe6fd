//! A quick measurement of this machine's training speed, for time estimates.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Int, Tensor, TensorData};
use scalelab_blocks::ModelConfigExt;
use scalelab_train::RunConfig;

use crate::backend;

/// Training FLOP/s of one forward+backward step of `run`'s model (after a warm-up step), counted
/// in the run's FLOP convention. The batch is capped at 4 x 256 tokens so that sizing a GPU sweep
/// on a laptop stays quick; the estimate is rough for models far larger than the one measured.
pub fn flops_per_second(run: &RunConfig) -> Result<f64> {
    let device = backend::device();
    let model = run.model.init::<backend::Train>(&device);
    let (b, t) = (run.train.batch_size.min(4), run.train.seq_len.min(256));
    let mut run = run.clone();
    run.train.seq_len = t;
    let ids: Vec<i64> = (0..b * t)
        .map(|i| (i % run.model.vocab_size) as i64)
        .collect();
    let tokens = Tensor::<backend::Train, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
    let step = || {
        let out = model.forward(tokens.clone());
        let _ = (out.logits.mean() + out.aux_loss.sum()).backward();
    };
    step();
    let start = Instant::now();
    step();
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    Ok((b * t) as f64 * run.flops_per_token()? / secs)
}
