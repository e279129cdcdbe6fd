//! Lightning-attention speed on CUDA: the kernels against the plain tensor-op reference on the
//! same device. Forward and forward+backward over T (B=4, H=32, D=128, bf16), and decode steps
//! (H=64, D=128, f32) at batch 1 and 256. Prints a table; with `--json PATH` also writes one JSON
//! object per measurement, which `kernels/bench/compare_fla.py` reads.
//!
//! `cargo bench -p scalelab-kernels --features cuda --bench lightning -- [--quick] [--json PATH]
//! [--check | --check-kernels [--check-ts T,..]] [--probe] [--ts T,..] [--reference-max T]
//! [--decode B,..] [--ds]`; `--ds` adds forward+backward rows with trained decays (`ds` too);
//! `--decode` checks the decode kernel, then times decode steps alone, at these batch sizes;
//! `--check` first compares kernels and reference at H=64, D=128 (bf16 inputs, and f16 ones with
//! f32 decay rates), then the bf16 kernels with the f32 kernel at head dims of 64 and the
//! benchmark shape; `--check-kernels` does the same with the f32 kernel in the reference's place;
//! `--probe` runs the quick correctness-and-speed probe only; `--overhead T` times forwards with
//! and without the fusion layer over runs of 5 to 1000 calls.
//!
//! Timing: two warm-up runs (the first compiles and autotunes), then runs issued back to back
//! for about 200 ms with one sync (the reported ms: device time per call, as fla's CUDA-event
//! timing measures it) and `reps` runs each ending in a sync (the last column: adds the host's
//! launch cost and the sync round trip). Peak memory: the pool's reserved bytes after the run,
//! the pool cleaned before it.

use std::io::Write;
use std::time::Instant;

use burn::backend::cuda::CudaDevice;
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, Cuda, NdArray};
use burn::tensor::{backend::Backend, bf16, f16, DType, Distribution, Element, Tensor, TensorData};
use cubecl::cuda::CudaRuntime;
use cubecl::Runtime;
use scalelab_kernels::lightning::reference::relative_error as rel_err;
use scalelab_kernels::lightning::{dispatch, launch, reference, LightningBackend};

type Bf = Cuda<bf16>;
type Hf = Cuda<f16>;
type F32 = Cuda<f32>;
/// f32 CUDA without Burn's fusion layer: the decode kernel's own launch cost.
type F32Direct = burn_cubecl::CubeBackend<CudaRuntime, f32, i32, u8>;
/// bf16 CUDA without the fusion layer: the forward's cost outside the kernels.
type BfDirect = burn_cubecl::CubeBackend<CudaRuntime, bf16, i32, u8>;

/// Creation options in backend `B`'s own float dtype. Burn 0.21 fixes a device's default float
/// dtype at the first tensor any backend type creates on it, and converts later creations to
/// it: without these, `Cuda<f32>` tensors made after `Cuda<bf16>` ones are bf16, and the
/// reverse.
fn own<B: Backend>(device: &B::Device) -> (&B::Device, DType) {
    (device, <B::FloatElem as Element>::dtype())
}

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

/// One workload's times: `stream` is the mean over calls issued back to back for about
/// [`STREAM_MS`] (at least `reps`) with one sync at the end (the device's time per call, the
/// host's launch cost hidden behind the queue, as fla's `triton.testing.do_bench` events
/// measure), `synced` the median of `reps` calls each followed by a sync (adds the host's launch
/// cost and the sync round trip), `peak` the pool's reserved bytes.
struct Timing {
    stream: f64,
    synced: f64,
    peak: f64,
}

/// How long the back-to-back run lasts, as `triton.testing.do_bench(rep=200)`: the queue's
/// start-up and the final sync are a few hundred microseconds, which a run of a handful of calls
/// would spread over each call (seen as 50 us per forward through the fusion layer's two
/// batching threads).
const STREAM_MS: f64 = 200.0;

/// [`Timing`] of `f` after two warm-ups (the first compiles), and two more back to back before
/// the timed back-to-back run.
fn time<B: Backend>(
    device: &B::Device,
    cuda: &CudaDevice,
    reps: usize,
    mut f: impl FnMut(),
) -> Timing {
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
    // Back to back, once untimed: the fusion layer meets new operation sequences across the
    // calls' boundaries and compiles for them (seen as a 10 ms first round).
    for _ in 0..2 {
        f();
    }
    sync::<B>(device);
    let synced = median(ts);
    let calls = ((STREAM_MS / synced).ceil() as usize).clamp(reps, 4000);
    let t = Instant::now();
    for _ in 0..calls {
        f();
    }
    sync::<B>(device);
    Timing {
        stream: t.elapsed().as_secs_f64() * 1e3 / calls as f64,
        synced,
        peak: pool_reserved(cuda),
    }
}

struct Row {
    what: String,
    t: usize,
    impl_: &'static str,
    time: Timing,
    flop: f64,
    bytes: f64,
}

impl Row {
    fn print(&self, json: &mut Option<std::fs::File>) {
        let Timing {
            stream: ms,
            synced,
            peak,
        } = self.time;
        let tflops = self.flop / (ms * 1e-3) / 1e12;
        let gbs = self.bytes / (ms * 1e-3) / 1e9;
        let gib = peak / (1u64 << 30) as f64;
        println!(
            "{:<10} {:>6} {:<9} {:>10.3} ms {:>8.1} TFLOP/s {:>8.0} GB/s {:>8.2} GiB {:>10.3} ms",
            self.what, self.t, self.impl_, ms, tflops, gbs, gib, synced
        );
        if let Some(f) = json {
            writeln!(
                f,
                "{{\"what\":\"{}\",\"t\":{},\"impl\":\"{}\",\"ms\":{ms},\"ms_synced\":{synced},\"tflops\":{tflops},\"gbs\":{gbs},\"peak_gib\":{gib}}}",
                self.what, self.t, self.impl_
            )
            .unwrap();
        }
    }
}

/// Outputs, final state and the gradients of q, k, v, the initial state and s, as host data.
type Quantities = [TensorData; 7];

/// `lightning_attention` (kernel) or `reference::naive` on backend `B` from host inputs, with
/// the loss `sum(o * ro) + sum(state)`.
fn attention_and_grads<B: LightningBackend>(
    device: &B::Device,
    inputs: &[TensorData; 6],
    kernel: bool,
) -> Quantities {
    let own_dtype = <B::FloatElem as Element>::dtype();
    attention_and_grads_with::<B>(device, inputs, kernel, own_dtype)
}

/// [`attention_and_grads`] with the decay rates in `rates` (f32 under f16 inputs keeps `ds` in
/// range).
fn attention_and_grads_with<B: LightningBackend>(
    device: &B::Device,
    inputs: &[TensorData; 6],
    kernel: bool,
    rates: DType,
) -> Quantities {
    type A<B> = Autodiff<B>;
    let t4 = |x: &TensorData| Tensor::<A<B>, 4>::from_data(x.clone(), own::<B>(device));
    let [q, k, v, st, s, ro] = inputs;
    let (q, k, v, st) = (
        t4(q).require_grad(),
        t4(k).require_grad(),
        t4(v).require_grad(),
        t4(st).require_grad(),
    );
    let s = Tensor::<A<B>, 1>::from_data(s.clone(), (device, rates)).require_grad();
    assert_eq!(
        q.dtype(),
        <B::FloatElem as Element>::dtype(),
        "check inputs in the backend's own dtype"
    );
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
        // The quadratic form: a handful of matmuls, independent of the chunked algorithm.
        reference::naive(q.clone(), k.clone(), v.clone(), s.clone(), Some(st.clone()))
    };
    let loss = (o.clone() * t4(ro)).sum() + last.clone().sum();
    let g = loss.backward();
    [
        o.inner().into_data(),
        last.inner().into_data(),
        q.grad(&g).unwrap().into_data(),
        k.grad(&g).unwrap().into_data(),
        v.grad(&g).unwrap().into_data(),
        st.grad(&g).unwrap().into_data(),
        s.grad(&g).unwrap().into_data(),
    ]
}

/// Random inputs for [`attention_and_grads`] (`q, k, v, S0, s, ro`), rounded to bf16 so that
/// f32 and bf16 runs see the same values; MiniMax's slopes for `h` heads.
fn check_data(device: &CudaDevice, b: usize, h: usize, n: usize, d: usize) -> [TensorData; 6] {
    check_data_with(device, [b, h, n, d, d], minimax_slope(h))
}

/// MiniMax's decay rate of head `i` of `h`.
fn minimax_slope(h: usize) -> impl Fn(usize) -> f32 {
    move |i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32)
}

/// [`check_data`] with key and value head dims `dk` and `dv`, and head `i`'s decay rate
/// `slope(i)`.
fn check_data_with(
    device: &CudaDevice,
    [b, h, n, dk, dv]: [usize; 5],
    slope: impl Fn(usize) -> f32,
) -> [TensorData; 6] {
    let rnd = |shape: [usize; 4]| {
        Tensor::<F32, 4>::random(shape, Distribution::Normal(0.0, 0.3), own::<F32>(device))
            .into_data()
            .convert::<bf16>()
            .convert::<f32>()
    };
    let slopes: Vec<f32> = (0..h).map(slope).collect();
    [
        rnd([b, h, n, dk]),
        rnd([b, h, n, dk]),
        rnd([b, h, n, dv]),
        rnd([b, h, dk, dv]),
        // Rounded too: a bf16 kernel reads its decay rates in bf16, up to 2e-3 away from f32's.
        TensorData::from(slopes.as_slice())
            .convert::<bf16>()
            .convert::<f32>(),
        rnd([b, h, n, dv]),
    ]
}

/// Prints one check row: the relative error of each quantity against `want`.
fn check_row(what: &str, got: Quantities, want: &Quantities) {
    let e: Vec<String> = got
        .into_iter()
        .zip(want.iter().cloned())
        .map(|(g, w)| format!("{:.1e}", rel_err(g, w)))
        .collect();
    println!(
        "check {what}: o {} state {} dq {} dk {} dv {} dstate0 {} ds {}",
        e[0], e[1], e[2], e[3], e[4], e[5], e[6]
    );
}

/// Kernels against the f32 tensor-op reference (on the host's CPUs, `NdArray`: compiling and
/// autotuning it on the device took minutes) at the MiniMax head shape (B=2, H=64, D=128,
/// T=1000: 15 chunks and a tail, MiniMax's slopes, an initial state): outputs, final states and
/// every gradient. The bf16 kernels get bf16-rounded inputs and are compared with the
/// f32 reference on the same rounded inputs, so the figure is the kernel's own error.
///
/// Then head dims of 64 (T=1000, an initial state; dk = dv = 64 and dk = 64, dv = 128) at
/// B x H = 256 and 32, where the one-launch kernel and the split pair run, and the benchmark
/// shape (B=4, H=32, D=128) at each length of `ts`, where the quadratic reference would not
/// fit: the bf16 tensor-core kernels against the f32 plain kernel (f32 inputs always run it; the
/// first check and the lavapipe tests verify it against references).
///
/// With `reference: false` (`--check-kernels`) the first shape too compares the bf16 kernels with
/// the f32 kernel, without the reference's minutes of compiling and autotuning: the quick check
/// after a kernel change.
fn check(device: &CudaDevice, ts: &[usize], reference: bool) {
    let (b, h, n, d) = (2, 64, 1000, 128);
    let inputs = check_data(device, b, h, n, d);
    let want = if reference {
        attention_and_grads::<NdArray<f32>>(&NdArrayDevice::Cpu, &inputs, false)
    } else {
        attention_and_grads::<F32>(device, &inputs, true)
    };
    eprintln!(
        "check: {} done; settings {:?}",
        if reference { "reference" } else { "f32 kernel" },
        dispatch::settings()
    );
    let shape = format!("B={b} H={h} T={n} D={d}");
    if reference {
        let got = attention_and_grads::<F32>(device, &inputs, true);
        check_row(&format!("f32 {shape}"), got, &want);
    }
    let bf_inputs = inputs.clone().map(|x| x.convert::<bf16>());
    let got = attention_and_grads::<Bf>(device, &bf_inputs, true);
    let against = if reference { "" } else { " vs f32 kernel" };
    check_row(&format!("bf16{against} {shape}"), got, &want);
    // The same inputs in f16 (exact: bf16's 8-bit mantissa fits f16's 10 in this range): the
    // tensor-core kernels' f16 form, the one-launch kernel at this B x H. The decay rates in
    // f32: here `ds` reaches 1e5-2e5 in the slowest heads (`--example ds_range`), past f16's
    // 65504 (with f16 rates the row's `ds` is inf).
    let got = attention_and_grads_with::<Hf>(device, &inputs, true, DType::F32);
    check_row(&format!("f16 (f32 rates){against} {shape}"), got, &want);

    // Steep decays (the probe's `0.1 (i + 1)`, up to lambda^64 = e^-205): the chunk state barely
    // reaches the next chunk, so a wrong decay power shows here where MiniMax's slopes hide it.
    let steep = check_data_with(device, [4, 32, 2048, d, d], |i| 0.1 * (i + 1) as f32);
    let want = attention_and_grads::<F32>(device, &steep, true);
    let got = attention_and_grads::<Bf>(device, &steep.map(|x| x.convert::<bf16>()), true);
    check_row(
        "bf16 vs f32 kernel, steep decays, B=4 H=32 T=2048 D=128",
        got,
        &want,
    );

    // Head dims of 64, with a tail and an initial state: at B x H = 256 the one-launch kernel
    // (its 64-column tile, two score tiles for some warps; with dk 64 and dv 128 its 128-column
    // tile over a 64-wide contraction, and the 64-column tile over a 128-wide one in the dk
    // scan), at 32 the split pair.
    for (b, h, dk, dv) in [(4, 64, 64, 64), (4, 64, 64, 128), (2, 16, 64, 64)] {
        let inputs = check_data_with(device, [b, h, 1000, dk, dv], minimax_slope(h));
        let want = attention_and_grads::<F32>(device, &inputs, true);
        let got = attention_and_grads::<Bf>(device, &inputs.map(|x| x.convert::<bf16>()), true);
        check_row(
            &format!("bf16 vs f32 kernel B={b} H={h} T=1000 dk={dk} dv={dv}"),
            got,
            &want,
        );
    }

    let (b, h) = (4, 32);
    for &n in ts {
        let inputs = check_data(device, b, h, n, d);
        let want = attention_and_grads::<F32>(device, &inputs, true);
        let bf_inputs = inputs.map(|x| x.convert::<bf16>());
        let got = attention_and_grads::<Bf>(device, &bf_inputs, true);
        check_row(
            &format!("bf16 vs f32 kernel B={b} H={h} T={n} D={d}"),
            got,
            &want,
        );
    }
}

/// The decode kernel against the recurrent reference on the device, f32, at the MiniMax head
/// shape (H=64, D=128) for a batch of 4 and of 256, three steps with each state fed forward:
/// the largest relative error of `o` and of the state over the steps.
fn check_decode(device: &CudaDevice) {
    // The reference runs on the host in f64: on the device, Burn's f32 matmul may be autotuned
    // to a TF32 kernel (1e-4 to 1e-3 off), which would be measured instead of the decode kernel.
    type Host = NdArray<f64>;
    let cpu = NdArrayDevice::Cpu;
    let host =
        |t: &Tensor<F32, 4>| Tensor::<Host, 4>::from_data(t.to_data().convert::<f64>(), &cpu);
    let (h, d) = (64, 128);
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    let s = Tensor::<F32, 1>::from_data(TensorData::from(slopes.as_slice()), own::<F32>(device));
    let s_host = Tensor::<Host, 1>::from_data(s.to_data().convert::<f64>(), &cpu);
    for batch in [4, 256] {
        let rnd = |shape: [usize; 4]| {
            Tensor::<F32, 4>::random(shape, Distribution::Normal(0.0, 0.3), own::<F32>(device))
        };
        let mut kernel_state = rnd([batch, h, d, d]);
        let mut reference_state = host(&kernel_state);
        let (mut e_o, mut e_state) = (0f64, 0f64);
        for _ in 0..3 {
            let (q, k, v) = (
                rnd([batch, h, 1, d]),
                rnd([batch, h, 1, d]),
                rnd([batch, h, 1, d]),
            );
            let (want_o, want_next) = reference::recurrent(
                host(&q),
                host(&k),
                host(&v),
                s_host.clone(),
                Some(reference_state),
            );
            let (o, next) = F32::lightning_decode(q, k, v, s.clone(), kernel_state);
            e_o = e_o.max(rel_err(o.into_data(), want_o.into_data()));
            e_state = e_state.max(rel_err(
                next.clone().into_data(),
                want_next.clone().into_data(),
            ));
            (kernel_state, reference_state) = (next, want_next);
        }
        println!(
            "check decode f32 vs f64 host reference B={batch} H={h} D={d}, 3 steps: o {e_o:.1e} state {e_state:.1e}"
        );
    }
}

/// One forward scan at a time, bf16, small to large, each compared with the reference, then
/// forward and forward+backward timings at B=4, H=32, D=128 (progress on stderr): the first thing
/// to run on a new device or after a kernel change.
fn probe(device: &CudaDevice, ts: &[usize]) {
    let d = 128;
    for (b, h, t) in [(1, 1, 64), (1, 2, 200), (4, 32, 2048)] {
        let rnd = |shape: [usize; 4]| {
            Tensor::<Bf, 4>::random(shape, Distribution::Normal(0.0, 0.3), own::<Bf>(device))
        };
        let (q, k, v) = (rnd([b, h, t, d]), rnd([b, h, t, d]), rnd([b, h, t, d]));
        let slopes: Vec<f32> = (0..h).map(|i| 0.1 * (i + 1) as f32).collect();
        let s = Tensor::<Bf, 1>::from_data(TensorData::from(slopes.as_slice()), own::<Bf>(device));
        let start = Instant::now();
        let (o, _) = Bf::lightning_attention(q.clone(), k.clone(), v.clone(), s.clone(), None, 64);
        sync::<Bf>(device);
        let first = start.elapsed().as_secs_f64();
        let (want, _) = reference::chunked(q, k, v, s, None, 64);
        eprintln!(
            "probe B={b} H={h} T={t}: first call {first:.2} s, relative error {:.2e}",
            rel_err(o.into_data(), want.into_data())
        );
    }
    let (b, h) = (4, 32);
    for &t in ts {
        let (q, k, v, s) = bench_inputs(device, [b, h, t, d]);
        let fwd = time::<Bf>(device, device, 5, || {
            drop(Bf::lightning_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                s.clone(),
                None,
                64,
            ));
        });
        eprintln!(
            "probe T={t}: forward {:.3} ms ({:.3} synced)",
            fwd.stream, fwd.synced
        );
        let ad =
            |x: &Tensor<Bf, 4>| Tensor::<Autodiff<Bf>, 4>::from_inner(x.clone()).require_grad();
        let (aq, ak, av) = (ad(&q), ad(&k), ad(&v));
        // MiniMax's decays are fixed: no gradient for `s` (the check covers `ds`).
        let as_ = Tensor::<Autodiff<Bf>, 1>::from_inner(s.clone());
        let both = time::<Bf>(device, device, 5, || {
            forward_backward(&aq, &ak, &av, &as_, true)
        });
        eprintln!(
            "probe T={t}: forward+backward {:.3} ms ({:.3} synced)",
            both.stream, both.synced
        );
    }
}

/// `q`, `k`, `v` (normal, std 0.3) and MiniMax's decay rates at a bf16 benchmark shape.
fn bench_inputs(
    device: &CudaDevice,
    [b, h, t, d]: [usize; 4],
) -> (Tensor<Bf, 4>, Tensor<Bf, 4>, Tensor<Bf, 4>, Tensor<Bf, 1>) {
    let rnd = || {
        Tensor::<Bf, 4>::random(
            [b, h, t, d],
            Distribution::Normal(0.0, 0.3),
            own::<Bf>(device),
        )
    };
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    let s = Tensor::<Bf, 1>::from_data(TensorData::from(slopes.as_slice()), own::<Bf>(device));
    (rnd(), rnd(), rnd(), s)
}

/// The fusion layer's cost per forward call against the number of calls issued back to back
/// (B=4, H=32, D=128, bf16, at T): a cost that shrinks as the run grows is the queue's start-up
/// spread over few calls, not a cost each call pays.
fn overhead(device: &CudaDevice, t: usize) {
    let (b, h, d) = (4, 32, 128);
    let (q, k, v, s) = bench_inputs(device, [b, h, t, d]);
    let direct =
        |x: &Tensor<Bf, 4>| Tensor::<BfDirect, 4>::from_data(x.to_data(), own::<BfDirect>(device));
    let (dq, dk, dv) = (direct(&q), direct(&k), direct(&v));
    let ds = Tensor::<BfDirect, 1>::from_data(s.to_data(), own::<BfDirect>(device));
    let fused = || {
        let (q, k, v, s) = (q.clone(), k.clone(), v.clone(), s.clone());
        drop(Bf::lightning_attention(q, k, v, s, None, 64))
    };
    let plain = || {
        let (q, k, v, s) = (dq.clone(), dk.clone(), dv.clone(), ds.clone());
        drop(BfDirect::lightning_attention(q, k, v, s, None, 64))
    };
    let per_call = |f: &dyn Fn(), sync: &dyn Fn(), calls: usize| {
        for _ in 0..3 {
            f();
        }
        sync();
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        sync();
        start.elapsed().as_secs_f64() * 1e3 / calls as f64
    };
    for calls in [5, 20, 100, 1000] {
        let with = per_call(&fused, &|| sync::<Bf>(device), calls);
        let without = per_call(&plain, &|| sync::<BfDirect>(device), calls);
        eprintln!(
            "overhead T={t}, {calls} calls back to back: {with:.3} ms per call through fusion, \
             {without:.3} without, difference {:.1} us",
            (with - without) * 1e3
        );
    }
}

/// The sequence lengths given as `NAME 2048,8192`, if given.
fn list_arg(args: &[String], name: &str) -> Option<Vec<usize>> {
    args.iter().position(|a| a == name).map(|i| {
        args.get(i + 1)
            .unwrap_or_else(|| panic!("{name}: comma-separated lengths"))
            .split(',')
            .map(|x| {
                x.parse()
                    .unwrap_or_else(|_| panic!("{name}: comma-separated lengths, got {x:?}"))
            })
            .collect()
    })
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
    {
        let client = CudaRuntime::client(&device);
        let facts = launch::device_facts(&client);
        let choice = dispatch::choose_scan(
            &facts,
            &dispatch::settings(),
            DType::BF16,
            [4, 32, 8192, 128],
            128,
        );
        println!("device: {facts:?}\nbf16 scan at B=4 H=32 T=8192 D=128: {choice:?}");
    }
    if args.iter().any(|a| a == "--probe") {
        let ts = list_arg(&args, "--ts").unwrap_or_else(|| vec![2048, 8192, 32768]);
        probe(&device, &ts);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--overhead") {
        let t = args
            .get(i + 1)
            .and_then(|x| x.parse().ok())
            .expect("--overhead: a sequence length, such as 4096");
        overhead(&device, t);
        return;
    }
    let reference = args.iter().any(|a| a == "--check");
    let checked = reference || args.iter().any(|a| a == "--check-kernels");
    if checked {
        let ts = list_arg(&args, "--check-ts").unwrap_or_else(|| vec![2048, 8192]);
        check(&device, &ts, reference);
        check_decode(&device);
    }

    let (b, h, d) = (4usize, 32usize, 128usize);
    // `--decode 1,256`: only the decode rows, at these batches, after the decode check.
    let decode_batches = list_arg(&args, "--decode");
    if decode_batches.is_some() && !checked {
        check_decode(&device);
    }
    let ts: Vec<usize> = if let Some(ts) = list_arg(&args, "--ts") {
        ts
    } else if decode_batches.is_some() {
        vec![]
    } else if quick {
        vec![2048, 8192]
    } else {
        vec![2048, 4096, 8192, 16384, 32768, 65536]
    };
    let reps = if quick { 3 } else { 7 };
    // `--reference-max T`: the tensor-op reference only up to T tokens (it is slow to compile
    // and run; forward+backward stops at 4096 regardless).
    let ref_max: usize = args
        .iter()
        .position(|a| a == "--reference-max")
        .map_or(16384, |i| {
            args[i + 1].parse().expect("--reference-max: a length")
        });
    let chunk = 64.0;
    println!(
        "{:<10} {:>6} {:<9} {:>13} {:>16} {:>13} {:>12} {:>13}",
        "what", "T", "impl", "time", "rate", "bytes", "pool", "synced"
    );
    for &t in &ts {
        let tokens = (b * h * t) as f64;
        let flop_fwd = 2.0 * tokens * (chunk * 2.0 * d as f64 + 2.0 * (d * d) as f64);
        let bytes_fwd = tokens * 4.0 * d as f64 * 2.0;
        let bytes_bwd = bytes_fwd + tokens * 7.0 * d as f64 * 2.0;
        let (q, k, v, s) = bench_inputs(&device, [b, h, t, d]);
        for kernel in [true, false] {
            let impl_ = if kernel { "kernel" } else { "reference" };
            if !kernel && t > ref_max {
                continue;
            }
            let timing = time::<Bf>(&device, &device, reps, || {
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
                time: timing,
                flop: flop_fwd,
                bytes: bytes_fwd,
            }
            .print(&mut json);
            if kernel {
                let direct = |x: &Tensor<Bf, 4>| {
                    Tensor::<BfDirect, 4>::from_data(x.to_data(), own::<BfDirect>(&device))
                };
                let (dq, dk, dv) = (direct(&q), direct(&k), direct(&v));
                let ds = Tensor::<BfDirect, 1>::from_data(s.to_data(), own::<BfDirect>(&device));
                let timing = time::<BfDirect>(&device, &device, reps, || {
                    drop(BfDirect::lightning_attention(
                        dq.clone(),
                        dk.clone(),
                        dv.clone(),
                        ds.clone(),
                        None,
                        64,
                    ));
                });
                Row {
                    what: "forward".into(),
                    t,
                    impl_: "no-fusion",
                    time: timing,
                    flop: flop_fwd,
                    bytes: bytes_fwd,
                }
                .print(&mut json);
            }
            if !kernel && t > ref_max.min(4096) {
                continue;
            }
            let ad =
                |x: &Tensor<Bf, 4>| Tensor::<Autodiff<Bf>, 4>::from_inner(x.clone()).require_grad();
            let (aq, ak, av) = (ad(&q), ad(&k), ad(&v));
            // MiniMax's decays are fixed: no gradient for `s` (the check covers `ds`), unless
            // `--ds` asks for the kernel's rows with trained decays too.
            let with_ds = kernel && args.iter().any(|a| a == "--ds");
            let runs: &[bool] = if with_ds { &[false, true] } else { &[false] };
            for &train_s in runs {
                let mut as_ = Tensor::<Autodiff<Bf>, 1>::from_inner(s.clone());
                if train_s {
                    as_ = as_.require_grad();
                }
                let timing = time::<Bf>(&device, &device, reps, || {
                    forward_backward(&aq, &ak, &av, &as_, kernel)
                });
                // With trained decays, two more scans (`ds`'s f32 `dq` and `dk`): each a
                // forward's arithmetic, reading three f32 inputs and writing one.
                let (flop, bytes) = if train_s {
                    (6.0 * flop_fwd, bytes_bwd + 2.0 * 2.0 * bytes_fwd)
                } else {
                    (4.0 * flop_fwd, bytes_bwd)
                };
                Row {
                    what: if train_s { "fwd+bwd+ds" } else { "fwd+bwd" }.into(),
                    t,
                    impl_,
                    time: timing,
                    flop,
                    bytes,
                }
                .print(&mut json);
            }
        }
    }

    // The copy rate through CubeCL's own buffers, the decode step's bandwidth limit: one
    // element-wise pass (read and write) over as many f32 bytes as the batch-256 state.
    let x = Tensor::<F32Direct, 1>::random(
        [1usize << 28],
        Distribution::Normal(0.0, 1.0),
        own::<F32Direct>(&device),
    );
    let timing = time::<F32Direct>(&device, &device, reps, || drop(x.clone().neg()));
    Row {
        what: "copy".into(),
        t: 1,
        impl_: "cubecl",
        time: timing,
        flop: 0.0,
        bytes: 2.0 * 4.0 * (1u64 << 28) as f64,
    }
    .print(&mut json);
    drop(x);

    // Decode: H=64, D=128, f32 state; one step reads and writes the whole state.
    let (h, d) = (64usize, 128usize);
    let slopes: Vec<f32> = (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect();
    for batch in decode_batches.unwrap_or_else(|| vec![1, 256]) {
        let bytes = (batch * h) as f64 * (2.0 * (d * d) as f64 + 4.0 * d as f64) * 4.0;
        let flop = (batch * h) as f64 * 4.0 * (d * d) as f64;
        let runs: [(&'static str, DecodeStep); 3] = [
            ("kernel", decode_ms::<F32>),
            ("no-fusion", decode_ms::<F32Direct>),
            ("reference", decode_ms::<F32>),
        ];
        for (impl_, run) in runs {
            let timing = run(&device, batch, &slopes, d, impl_ != "reference", reps);
            Row {
                what: format!("decode{batch}"),
                t: 1,
                impl_,
                time: timing,
                flop,
                bytes,
            }
            .print(&mut json);
        }
    }
}

/// One forward+backward through `Autodiff<Bf>`, the kernel or the chunked reference, reading
/// the gradient of every tracked input. `backward` on `o` seeds d_o = ones: the cotangent of
/// fla's `o.sum().backward()`, without Burn's sum and its broadcast backward (0.9 ms at 8K on
/// the H200: the loss's cost, not attention's).
fn forward_backward(
    q: &Tensor<Autodiff<Bf>, 4>,
    k: &Tensor<Autodiff<Bf>, 4>,
    v: &Tensor<Autodiff<Bf>, 4>,
    s: &Tensor<Autodiff<Bf>, 1>,
    kernel: bool,
) {
    let (o, _) = if kernel {
        Autodiff::<Bf>::lightning_attention(q.clone(), k.clone(), v.clone(), s.clone(), None, 64)
    } else {
        reference::chunked(q.clone(), k.clone(), v.clone(), s.clone(), None, 64)
    };
    let g = o.backward();
    let _ = (q.grad(&g), k.grad(&g), v.grad(&g), s.grad(&g));
}

/// The [`Timing`] of one decode step.
type DecodeStep = fn(&CudaDevice, usize, &[f32], usize, bool, usize) -> Timing;

/// Decode steps on backend `B` (kernel or reference), 50 per timed run with the state fed
/// forward: the [`Timing`] per step.
fn decode_ms<B: LightningBackend<Device = CudaDevice>>(
    device: &CudaDevice,
    batch: usize,
    slopes: &[f32],
    d: usize,
    kernel: bool,
    reps: usize,
) -> Timing {
    let h = slopes.len();
    let rnd = |shape: [usize; 4]| {
        Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 0.3), own::<B>(device))
    };
    let (q, k, v) = (
        rnd([batch, h, 1, d]),
        rnd([batch, h, 1, d]),
        rnd([batch, h, 1, d]),
    );
    let s = Tensor::<B, 1>::from_data(TensorData::from(slopes), own::<B>(device));
    let state0 = rnd([batch, h, d, d]);
    let steps = 50;
    let per_run = time::<B>(device, device, reps, || {
        let mut st = state0.clone();
        for _ in 0..steps {
            let (_, next) = if kernel {
                B::lightning_decode(q.clone(), k.clone(), v.clone(), s.clone(), st)
            } else {
                reference::recurrent(q.clone(), k.clone(), v.clone(), s.clone(), Some(st))
            };
            st = next;
        }
    });
    Timing {
        stream: per_run.stream / steps as f64,
        synced: per_run.synced / steps as f64,
        peak: per_run.peak,
    }
}
