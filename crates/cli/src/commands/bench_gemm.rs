//! `scalelab bench gemm`: matrix-product throughput of the build's device, the blocks' path
//! (`scalelab_kernels::gemm`: cuBLASLt on CUDA) against Burn's own matmul (`SCALELAB_GEMM=burn`),
//! for each shape's forward product and the two backward ones a linear layer runs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, FloatDType, Tensor};
use scalelab_kernels::gemm::{matmul, with_mode, GemmMode};
use serde::Serialize;

use crate::backend;

/// The device's tensors, without autodiff.
type Device = <backend::Train as AutodiffBackend>::InnerBackend;

/// Arguments of `scalelab bench gemm`.
#[derive(clap::Args)]
pub struct GemmArgs {
    /// Products as `MxKxN` (`[M, K] x [K, N]`), comma-separated; default: 8192^3 and the 125M
    /// anchors' linear layers at 16 x 2048 tokens (qkv, FFN in, FFN out, head).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8192x8192x8192,32768x768x2304,32768x768x2048,32768x2048x768,32768x768x32000"
    )]
    pub shapes: Vec<String>,
    /// The operands' dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Seconds of timed products per shape, product and path.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Also write the rows as JSON lines here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One timed product.
#[derive(Debug, Serialize)]
struct Row {
    /// `MxKxN` as given.
    shape: String,
    /// `x W` (forward), `dy W^T` (input gradient) or `x^T dy` (weight gradient).
    product: &'static str,
    /// `auto` (the blocks' path) or `burn`.
    path: &'static str,
    dtype: String,
    tflops: f64,
}

/// Runs the benchmark.
pub fn run(args: &GemmArgs) -> Result<()> {
    backend::ready()?;
    backend::kernel_cache(std::path::Path::new(".scalelab-cache"), None);
    let dtype = super::bench_flags::dtype_and_seconds(&args.dtype, args.seconds)?;
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s).map(|mkn| (s.clone(), mkn)))
        .collect::<Result<Vec<_>>>()?;
    let device = backend::device();
    let mut rows = Vec::new();
    println!("| shape MxKxN | product | blocks' path TFLOP/s | Burn matmul TFLOP/s | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, [m, k, n]) in shapes {
        let x = random(&[m, k], dtype, &device);
        let w = random(&[k, n], dtype, &device);
        let dy = random(&[m, n], dtype, &device);
        let products: [(&str, Tensor<Device, 2>, Tensor<Device, 2>); 3] = [
            ("x W", x.clone(), w.clone()),
            ("dy W^T", dy.clone(), w.transpose()),
            ("x^T dy", x.transpose(), dy),
        ];
        for (product, lhs, rhs) in products {
            let flops = 2.0 * (m * k * n) as f64;
            let ours = time(GemmMode::Auto, &lhs, &rhs, args.seconds, flops);
            let burn = time(GemmMode::Burn, &lhs, &rhs, args.seconds, flops);
            println!(
                "| {name} | {product} | {ours:.1} | {burn:.1} | {:.2}x |",
                ours / burn
            );
            for (path, tflops) in [("auto", ours), ("burn", burn)] {
                rows.push(Row {
                    shape: name.clone(),
                    product,
                    path,
                    dtype: args.dtype.clone(),
                    tflops,
                });
            }
        }
    }
    if let Some(path) = &args.json {
        let lines: Vec<String> = rows
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `MxKxN` as `[m, k, n]`.
fn parse_shape(s: &str) -> Result<[usize; 3]> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|d: &Vec<usize>| d.len() == 3 && d.iter().all(|&x| x > 0))
        .with_context(|| format!("--shapes: {s:?} is not MxKxN with three positive sizes"))?;
    Ok([dims[0], dims[1], dims[2]])
}

fn random(
    dims: &[usize; 2],
    dtype: FloatDType,
    device: &burn::tensor::Device<Device>,
) -> Tensor<Device, 2> {
    Tensor::<Device, 2>::random(*dims, Distribution::Normal(0.0, 1.0), device).cast(dtype)
}

/// TFLOP/s of `lhs @ rhs` on `mode`'s path: a warm-up (compilation, autotuning), then as many
/// products as fit in `seconds`, timed between two device syncs.
fn time(
    mode: GemmMode,
    lhs: &Tensor<Device, 2>,
    rhs: &Tensor<Device, 2>,
    seconds: f64,
    flops: f64,
) -> f64 {
    let device = lhs.device();
    with_mode(mode, || {
        let run = |reps: usize| {
            let start = Instant::now();
            for _ in 0..reps {
                drop(matmul(lhs.clone(), rhs.clone()));
            }
            Device::sync(&device).expect("device sync");
            start.elapsed().as_secs_f64()
        };
        run(3);
        let once = run(1).max(1e-6);
        let reps = ((seconds / once) as usize).clamp(3, 10_000);
        reps as f64 * flops / run(reps) / 1e12
    })
}

#[cfg(test)]
mod tests {
    use super::parse_shape;

    #[test]
    fn shapes_parse_and_bad_ones_name_the_flag() {
        assert_eq!(parse_shape("32768x768x2304").unwrap(), [32768, 768, 2304]);
        let err = parse_shape("32768x768").unwrap_err().to_string();
        assert!(err.contains("--shapes") && err.contains("MxKxN"), "{err}");
        assert!(parse_shape("0x1x1").is_err());
    }
}
