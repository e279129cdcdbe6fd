//! Which CPU backend trains faster: one forward+backward pass of the tiny models on `flex` and
//! on `ndarray`, timed in the same run.
//!
//! `cargo bench -p scalelab-blocks --bench cpu_backends` (add `-- BATCH SEQ` to change the shape).

use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{activation::log_softmax, Int, Tensor, TensorData};
use scalelab_blocks::{KernelBackend, ModelConfig, ModelConfigExt};

fn step_ms<B: KernelBackend>(cfg: &ModelConfig, batch: usize, seq: usize, reps: usize) -> f64
where
    Autodiff<B>: KernelBackend,
{
    let device = Default::default();
    let model = cfg.init::<Autodiff<B>>(&device);
    let ids: Vec<i64> = (0..batch * seq)
        .map(|i| ((i * 7919) % cfg.vocab_size) as i64)
        .collect();
    let tokens =
        Tensor::<Autodiff<B>, 2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
    let run = || {
        let out = model.forward(tokens.clone());
        let loss = log_softmax(out.logits, 2).mean().neg() + out.aux_loss.sum();
        let _grads = loss.backward();
    };
    run(); // warm-up
    let start = Instant::now();
    for _ in 0..reps {
        run();
    }
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (batch, seq) = (
        args.first().copied().unwrap_or(8),
        args.get(1).copied().unwrap_or(128),
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tiny");
    println!("forward+backward, batch {batch} x seq {seq}, ms per step (lower is better)");
    println!(
        "{:<20} {:>10} {:>10} {:>16}",
        "model", "flex", "ndarray", "ndarray / flex"
    );
    for name in [
        "tiny-softmax",
        "tiny-lightning",
        "tiny-hybrid",
        "tiny-hybrid-moe",
    ] {
        let cfg = ModelConfig::from_yaml_file(format!("{root}/{name}.yaml")).unwrap();
        let flex = step_ms::<Flex>(&cfg, batch, seq, 5);
        let ndarray = step_ms::<NdArray>(&cfg, batch, seq, 5);
        println!(
            "{name:<20} {flex:>10.1} {ndarray:>10.1} {:>16.2}",
            ndarray / flex
        );
    }
}
