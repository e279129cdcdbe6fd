//! Lightning-attention speed on CUDA: the kernels against the plain tensor-op reference on the
//! same device. Forward and forward+backward over T (B=4, H=32, D=128, bf16), and decode steps
//! (H=64, D=128, f32) at batch 1 and 256. Prints a table; with `--json PATH` also writes one JSON
//! object per measurement, which `kernels/bench/compare_fla.py` reads.
//!
//! `cargo bench -p scalelab-kernels --features cuda --bench lightning -- [--quick] [--json PATH]
//! [--check]`; `--check` first compares kernel and reference at H=64, D=128 (f32).
//!
//! Timing: two warm-up runs (the first compiles and autotunes), then the median of `reps` runs,
//! each ending in a device sync. Peak memory: the pool's reserved bytes after the run, the pool
//! cleaned before it.

use std::io::Write;
use std::time::Instant;

use burn::backend::cuda::CudaDevice;
use burn::backend::{Autodiff, Cuda};
use burn::tensor::{backend::Backend, bf16, Distribution, Tensor};
use cubecl::cuda::CudaRuntime;
use cubecl::Runtime;
use scalelab_kernels::lightning::{reference, LightningBackend};

type Bf = Cuda<bf16>;
type F32 = Cuda<f32>;

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("device sync");
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn pool_reset(device: &CudaDevice) {
    CudaRuntime::client(device).memory_cleanup();
}

fn pool_reserved(device: &CudaDevice) -> f64 {
    let usage = CudaRuntime::client(device)
        .memory_usage()
        .expect("memory usage");
    usage.bytes_reserved as f64
}

/// Median milliseconds of `f` over `reps` synced runs after two warm-ups, and reserved bytes.
fn time<B: Backend>(
    device: &B::Device,
    cuda: &CudaDevice,
    reps: usize,
    mut f: impl FnMut(),
) -> (f64, f64) {
    f();
    sync::<B>(device);
    f();
    sync::<B>(device);
    pool_reset(cuda);
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        sync::<B>(device);
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (median(ts), pool_reserved(cuda))
}

struct Row {
    what: String,
    t: usize,
    impl_: &'static str,
    ms: f64,
    flop: f64,
    bytes: f64,
    peak: f64,
}

impl Row {
    fn print(&self, json: &mut Option<std::fs::File>) {
        let tflops = self.flop / (self.ms * 1e-3) / 1e12;
        let gbs = self.bytes / (self.ms * 1e-3) / 1e9;
        println!(
            "{:<10} {:>6} {:<9} {:>10.3} ms {:>8.1} TFLOP/s {:>8.0} GB/s {:>8.2} GiB",
            self.what,
            self.t,
            self.impl_,
            self.ms,
            tflops,
            gbs,
            self.peak / (1u64 << 30) as f64
        );
        if let Some(f) = json {
            writeln!(
                f,
                "{{\"what\":\"{}\",\"t\":{},\"impl\":\"{}\",\"ms\":{},\"tflops\":{},\"gbs\":{},\"peak_gib\":{}}}",
                self.what,
                self.t,
                self.impl_,
                self.ms,
                tflops,
                gbs,
                self.peak / (1u64 << 30) as f64
            )
            .unwrap();
        }
    }
}

fn rel_err<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    let num = (a - b.clone()).powi_scalar(2).sum().into_scalar();
    let den = b.powi_scalar(2).sum().into_scalar();
    use burn::tensor::ElementConversion;
    (num.elem::<f64>() / den.elem::<f64>()).sqrt()
}

/// Kernel vs reference on the device at the MiniMax head shape, f32 and bf16: outputs, states,
/// gradients. Prints one line per quantity.
fn check(device: &CudaDevice) {
    fn one<B: LightningBackend>(name: &str, device: &B::Device, n: usize) {
        type A<B> = Autodiff<B>;
        let (b, h, d) = (2, 64, 128);
        let rnd = |shape: [usize; 4]| {
            Tensor::<A<B>, 4>::random(shape, Distribution::Normal(0.0, 0.3), device)
        };
        let q = rnd([b, h, n, d]).require_grad();
        let k = rnd([b, h, n, d]).require_grad();
        let v = rnd([b, h, n, d]).require_grad();
        let st = rnd([b, h, d, d]).require_grad();
        let slopes: Vec<f32> = (0..h)
            .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
            .collect();
        let s = Tensor::<A<B>, 1>::from_floats(slopes.as_slice(), device).require_grad();
        let ro = rnd([b, h, n, d]);
        let run = |kernel: bool| {
            let (o, last) = if kernel {
                A::<B>::lightning_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    s.clone(),
                    Some(st.clone()),
                    64,
                )
            } else {
                reference::chunked(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    s.clone(),
                    Some(st.clone()),
                    64,
                )
            };
            let loss = (o.clone() * ro.clone()).sum() + last.clone().sum();
            let g = loss.backward();
            (
                o.inner(),
                last.inner(),
                q.grad(&g).unwrap(),
                k.grad(&g).unwrap(),
                v.grad(&g).unwrap(),
                st.grad(&g).unwrap(),
                s.grad(&g).unwrap(),
            )
        };
        let a = run(true);
        let r = run(false);
        println!(
            "check {name} n={n}: o {:.1e} state {:.1e} dq {:.1e} dk {:.1e} dv {:.1e} dstate0 {:.1e} ds {:.1e}",
            rel_err(a.0, r.0),
            rel_err(a.1, r.1),
            rel_err(a.2, r.2),
            rel_err(a.3, r.3),
            rel_err(a.4, r.4),
            rel_err(a.5, r.5),
            rel_err(a.6, r.6)
        );
    }
    one::<F32>("f32", device, 1000);
    one::<Bf>("bf16", device, 1000);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .map(|i| args[i + 1].clone());
    let mut json = json_path.map(|p| std::fs::File::create(p).expect("json file"));
    let device = CudaDevice::default();
    if args.iter().any(|a| a == "--check") {
        check(&device);
    }

    let (b, h, d) = (4usize, 32usize, 128usize);
    let ts_arg = args.iter().position(|a| a == "--ts").map(|i| {
        args[i + 1]
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect::<Vec<usize>>()
    });
    let ts: Vec<usize> = if let Some(ts) = ts_arg {
        ts
    } else if quick {
        vec![2048, 8192]
    } else {
        vec![2048, 4096, 8192, 16384, 32768, 65536]
    };
    let reps = if quick { 3 } else { 7 };
    let chunk = 64.0;
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    println!(
        "{:<10} {:>6} {:<9} {:>13} {:>16} {:>13} {:>12}",
        "what", "T", "impl", "time", "rate", "bytes", "pool"
    );
    for &t in &ts {
        let tokens = (b * h * t) as f64;
        let flop_fwd = 2.0 * tokens * (chunk * 2.0 * d as f64 + 2.0 * (d * d) as f64);
        let bytes_fwd = tokens * 4.0 * d as f64 * 2.0;
        let bytes_bwd = bytes_fwd + tokens * 7.0 * d as f64 * 2.0;
        let rnd = |shape: [usize; 4]| {
            Tensor::<Bf, 4>::random(shape, Distribution::Normal(0.0, 0.3), &device)
        };
        let (q, k, v) = (rnd([b, h, t, d]), rnd([b, h, t, d]), rnd([b, h, t, d]));
        let s = Tensor::<Bf, 1>::from_floats(slopes.as_slice(), &device);
        for kernel in [true, false] {
            let impl_ = if kernel { "kernel" } else { "reference" };
            if !kernel && t > 16384 {
                continue;
            }
            let (ms, peak) = time::<Bf>(&device, &device, reps, || {
                let (o, st) = if kernel {
                    Bf::lightning_attention(q.clone(), k.clone(), v.clone(), s.clone(), None, 64)
                } else {
                    reference::chunked(q.clone(), k.clone(), v.clone(), s.clone(), None, 64)
                };
                drop((o, st));
            });
            Row {
                what: "forward".into(),
                t,
                impl_,
                ms,
                flop: flop_fwd,
                bytes: bytes_fwd,
                peak,
            }
            .print(&mut json);
            if !kernel && t > 4096 {
                continue;
            }
            let ad =
                |x: &Tensor<Bf, 4>| Tensor::<Autodiff<Bf>, 4>::from_inner(x.clone()).require_grad();
            let (aq, ak, av) = (ad(&q), ad(&k), ad(&v));
            let as_ = Tensor::<Autodiff<Bf>, 1>::from_inner(s.clone()).require_grad();
            let (ms, peak) = time::<Bf>(&device, &device, reps, || {
                let (o, _) = if kernel {
                    Autodiff::<Bf>::lightning_attention(
                        aq.clone(),
                        ak.clone(),
                        av.clone(),
                        as_.clone(),
                        None,
                        64,
                    )
                } else {
                    reference::chunked(aq.clone(), ak.clone(), av.clone(), as_.clone(), None, 64)
                };
                let g = o.sum().backward();
                let _ = (aq.grad(&g), ak.grad(&g), av.grad(&g), as_.grad(&g));
            });
            Row {
                what: "fwd+bwd".into(),
                t,
                impl_,
                ms,
                flop: 4.0 * flop_fwd,
                bytes: bytes_bwd,
                peak,
            }
            .print(&mut json);
        }
    }

    // Decode: H=64, D=128, f32 state; one step reads and writes the whole state.
    let (h, d) = (64usize, 128usize);
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    for batch in [1usize, 256] {
        let rnd = |shape: [usize; 4]| {
            Tensor::<F32, 4>::random(shape, Distribution::Normal(0.0, 0.3), &device)
        };
        let (q, k, v) = (
            rnd([batch, h, 1, d]),
            rnd([batch, h, 1, d]),
            rnd([batch, h, 1, d]),
        );
        let s = Tensor::<F32, 1>::from_floats(slopes.as_slice(), &device);
        let state0 = rnd([batch, h, d, d]);
        let bytes = (batch * h) as f64 * (2.0 * (d * d) as f64 + 4.0 * d as f64) * 4.0;
        let flop = (batch * h) as f64 * 4.0 * (d * d) as f64;
        for kernel in [true, false] {
            let impl_ = if kernel { "kernel" } else { "reference" };
            // 50 steps per timed run, the state fed forward; ms per step.
            let steps = 50;
            let (ms, peak) = time::<F32>(&device, &device, reps, || {
                let mut st = state0.clone();
                for _ in 0..steps {
                    let (_, next) = if kernel {
                        F32::lightning_decode(q.clone(), k.clone(), v.clone(), s.clone(), st)
                    } else {
                        reference::recurrent(q.clone(), k.clone(), v.clone(), s.clone(), Some(st))
                    };
                    st = next;
                }
            });
            Row {
                what: format!("decode{batch}"),
                t: 1,
                impl_,
                ms: ms / steps as f64,
                flop,
                bytes,
                peak,
            }
            .print(&mut json);
        }
    }
}
