//! `scalelab bench attention`: causal softmax attention on the build's device, forward and
//! forward+backward through `AttentionBackend` (the flash kernels on CUDA, or the path
//! `SCALELAB_ATTENTION` names), with the memory the device pool holds after each shape.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, FloatDType, Tensor};
use scalelab_kernels::AttentionBackend;
use serde::Serialize;

use crate::backend;

/// The device's tensors, without autodiff.
type Device = <backend::Train as AutodiffBackend>::InnerBackend;

/// Arguments of `scalelab bench attention`.
#[derive(clap::Args)]
pub struct AttentionArgs {
    /// Shapes as `BxHxKVxTxD` (batch, query heads, KV heads, tokens, head dim), comma-separated;
    /// default: B=4, H=32 with 8 and 32 KV heads, D=128, T = 2K, 8K and 32K.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4x32x8x2048x128,4x32x32x2048x128,4x32x8x8192x128,4x32x32x8192x128,4x32x8x32768x128,4x32x32x32768x128"
    )]
    pub shapes: Vec<String>,
    /// The inputs' dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Seconds of timed calls per shape and pass.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Also write the rows as JSON lines here, each as soon as it is measured.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One timed shape and pass.
#[derive(Debug, Serialize)]
struct Row {
    /// `BxHxKVxTxD` as given.
    shape: String,
    /// `fwd` or `fwd+bwd`.
    pass: &'static str,
    dtype: String,
    ms: f64,
    /// Causal FLOPs (`4 B H T^2 D / 2` forward, 2.5x that forward+backward) per second.
    tflops: f64,
    /// Bytes the device's memory pool held after the pass (its high-water mark), where the
    /// backend reports it.
    pool_gib: Option<f64>,
}

/// Runs the benchmark.
pub fn run(args: &AttentionArgs) -> Result<()> {
    backend::ready()?;
    backend::kernel_cache(std::path::Path::new(".scalelab-cache"), None);
    let dtype = super::bench_flags::dtype_and_seconds(&args.dtype, args.seconds)?;
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s).map(|dims| (s.clone(), dims)))
        .collect::<Result<Vec<_>>>()?;
    let device = backend::device();
    // Each row goes out as it is measured, so a run cut short keeps what it timed.
    let mut json = match &args.json {
        Some(path) => Some(
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
        ),
        None => None,
    };
    println!("| shape BxHxKVxTxD | pass | ms | TFLOP/s | pool GiB |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, [b, h, kvh, t, d]) in shapes {
        let fwd_flops = 2.0 * (b * h * t * t * d) as f64;
        for (pass, flops) in [("fwd", fwd_flops), ("fwd+bwd", 2.5 * fwd_flops)] {
            pool_release(&device);
            let secs = if pass == "fwd" {
                time_forward([b, h, kvh, t, d], dtype, args.seconds, &device)
            } else {
                time_forward_backward([b, h, kvh, t, d], dtype, args.seconds, &device)
            };
            let pool_gib = pool_gib(&device);
            let row = Row {
                shape: name.clone(),
                pass,
                dtype: args.dtype.clone(),
                ms: secs * 1e3,
                tflops: flops / secs / 1e12,
                pool_gib,
            };
            let pool = row.pool_gib.map_or("-".into(), |g| format!("{g:.2}"));
            println!(
                "| {} | {} | {:.3} | {:.1} | {pool} |",
                row.shape, row.pass, row.ms, row.tflops
            );
            if let Some(file) = json.as_mut() {
                use std::io::Write;
                writeln!(file, "{}", serde_json::to_string(&row)?)?;
                file.flush()?;
            }
        }
    }
    Ok(())
}

/// `BxHxKVxTxD` as `[b, h, kv, t, d]`, with `kv` dividing `h`.
fn parse_shape(s: &str) -> Result<[usize; 5]> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|d: &Vec<usize>| {
            d.len() == 5 && d.iter().all(|&x| x > 0) && d[1].is_multiple_of(d[2])
        })
        .with_context(|| {
            format!("--shapes: {s:?} is not BxHxKVxTxD with five positive sizes and KV dividing H")
        })?;
    Ok([dims[0], dims[1], dims[2], dims[3], dims[4]])
}

fn random<B: Backend>(
    dims: [usize; 4],
    dtype: FloatDType,
    device: &burn::tensor::Device<B>,
) -> Tensor<B, 4> {
    Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), device).cast(dtype)
}

/// Seconds per call of `step`: a warm-up (compilation, autotuning), then as many calls as fit in
/// `seconds`, timed between two device syncs.
fn per_call(seconds: f64, device: &burn::tensor::Device<Device>, mut step: impl FnMut()) -> f64 {
    let mut run = |reps: usize| {
        Device::sync(device).expect("device sync");
        let start = Instant::now();
        for _ in 0..reps {
            step();
        }
        Device::sync(device).expect("device sync");
        start.elapsed().as_secs_f64()
    };
    run(2);
    let once = run(1).max(1e-6);
    let reps = ((seconds / once) as usize).clamp(2, 1000);
    run(reps) / reps as f64
}

fn time_forward(
    [b, h, kvh, t, d]: [usize; 5],
    dtype: FloatDType,
    seconds: f64,
    device: &burn::tensor::Device<Device>,
) -> f64 {
    let q = random::<Device>([b, h, t, d], dtype, device);
    let k = random::<Device>([b, kvh, t, d], dtype, device);
    let v = random::<Device>([b, kvh, t, d], dtype, device);
    let scale = 1.0 / (d as f64).sqrt();
    per_call(seconds, device, || {
        drop(Device::softmax_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            scale,
        ));
    })
}

fn time_forward_backward(
    [b, h, kvh, t, d]: [usize; 5],
    dtype: FloatDType,
    seconds: f64,
    device: &burn::tensor::Device<Device>,
) -> f64 {
    type T = backend::Train;
    let q = random::<T>([b, h, t, d], dtype, device).require_grad();
    let k = random::<T>([b, kvh, t, d], dtype, device).require_grad();
    let v = random::<T>([b, kvh, t, d], dtype, device).require_grad();
    let d_o = random::<T>([b, h, t, d], dtype, device);
    let scale = 1.0 / (d as f64).sqrt();
    per_call(seconds, device, || {
        let o = T::softmax_attention(q.clone(), k.clone(), v.clone(), scale);
        drop((o * d_o.clone()).sum().backward());
    })
}

/// Frees the pool's unused pages, so the next reading is this shape's high-water mark.
fn pool_release(device: &burn::tensor::Device<Device>) {
    #[cfg(feature = "cuda")]
    {
        use cubecl::Runtime;
        cubecl::cuda::CudaRuntime::client(device).memory_cleanup();
    }
    let _ = device;
}

/// GiB the device's memory pool holds (CUDA builds).
fn pool_gib(device: &burn::tensor::Device<Device>) -> Option<f64> {
    #[cfg(feature = "cuda")]
    {
        use cubecl::Runtime;
        let usage = cubecl::cuda::CudaRuntime::client(device)
            .memory_usage()
            .ok()?;
        return Some(usage.bytes_reserved as f64 / (1u64 << 30) as f64);
    }
    #[allow(unreachable_code)]
    {
        let _ = device;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::parse_shape;

    #[test]
    fn shapes_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            parse_shape("4x32x8x2048x128").unwrap(),
            [4, 32, 8, 2048, 128]
        );
        let err = parse_shape("4x32x5x2048x128").unwrap_err().to_string();
        assert!(
            err.contains("--shapes") && err.contains("BxHxKVxTxD"),
            "{err}"
        );
        assert!(parse_shape("4x32x8x2048").is_err());
    }
}
