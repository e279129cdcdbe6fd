//! How large the decay-rate gradient `ds` gets at `--check`'s MiniMax head shape (B=2, H=64,
//! T=1000, D=128; inputs normal with std 0.3, an initial state, MiniMax's slopes, the loss
//! `sum(o * ro) + sum(state)`), in f32 on the CPU through the chunked reference: the heads past
//! f16's largest value, 65504, are why f16 inputs want f32 decay rates (`kernels/README.md`,
//! "Inputs").
//!
//! `cargo run --release -p scalelab-kernels --example ds_range`

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
use scalelab_kernels::lightning::reference::chunked;

type B = Autodiff<NdArray<f32>>;

fn main() {
    let device = Default::default();
    B::seed(&device, 12);
    let (b, h, n, d) = (2, 64, 1000, 128);
    let rnd = |shape: [usize; 4]| {
        Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 0.3), &device).require_grad()
    };
    let (q, k, v, st, ro) = (
        rnd([b, h, n, d]),
        rnd([b, h, n, d]),
        rnd([b, h, n, d]),
        rnd([b, h, d, d]),
        rnd([b, h, n, d]),
    );
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    let s = Tensor::<B, 1>::from_data(TensorData::from(slopes.as_slice()), &device).require_grad();
    let (o, last) = chunked(q, k, v, s.clone(), Some(st), 64);
    let grads = ((o * ro).sum() + last.sum()).backward();
    let ds: Vec<f32> = s.grad(&grads).unwrap().into_data().to_vec().unwrap();
    let past: Vec<String> = ds
        .iter()
        .enumerate()
        .filter(|(_, x)| x.abs() > 65504.0)
        .map(|(i, x)| format!("head {i} (s = {:.4}): {x:.3e}", slopes[i]))
        .collect();
    let largest = ds.iter().fold(0f32, |m, x| m.max(x.abs()));
    println!(
        "largest |ds| {largest:.3e}; {} of {h} heads past f16's 65504",
        past.len()
    );
    for line in past {
        println!("  {line}");
    }
}
