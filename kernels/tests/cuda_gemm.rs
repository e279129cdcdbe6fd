//! The CUDA matrix products (`scalelab_kernels::gemm`, cuBLASLt) against Burn's own matmul on the
//! same device: every product shape of the 125M anchor models' linear layers, MoE experts and
//! attention (forward and both backward products, transposed operands as the backward passes
//! them) in bf16, the anchors' forward in f32 (TF32), then odd and unit sizes, sliced rows,
//! 4-D and broadcast batches in bf16, f16 and f32; then the gradients under `Autodiff` through
//! Burn's fusion backend, as training runs. Each comparison prints its error and seconds.
//!
//! ```sh
//! cargo test --release -p scalelab-kernels --features cuda --test cuda_gemm
//! ```
//!
//! Without a CUDA device every test prints that it was skipped and passes. Errors are
//! `max |ours - burn| / max |burn|`, computed on the device.
#![cfg(feature = "cuda")]

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::backend::cuda::CudaDevice;
use burn::backend::{Autodiff, Cuda};
use burn::tensor::{backend::Backend, Distribution, FloatDType, Tensor};
use burn_cubecl::CubeBackend;
use cubecl::cuda::CudaRuntime;
use scalelab_kernels::gemm::{cublaslt, matmul, with_mode, GemmMode};

/// The backend without fusion: products run when called, under the thread's mode.
type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The device, or `None` (with the reason printed) where there is none; one test at a time.
fn start(test: &str) -> Option<(MutexGuard<'static, ()>, CudaDevice)> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let present = *PRESENT.get_or_init(|| {
        // SAFETY: loading the driver library runs its initializers, as CubeCL's own load does.
        if let Err(err) = unsafe { libloading::Library::new("libcuda.so.1") } {
            say(&format!("cuda_gemm: skipped, no CUDA driver ({err})"));
            return false;
        }
        quick_autotune();
        std::panic::catch_unwind(|| {
            let x = Tensor::<Cube, 1>::from_floats([1.0, 2.0], &CudaDevice::default());
            assert_eq!(x.sum().into_scalar(), 3.0);
        })
        .map_err(|_| say("cuda_gemm: skipped, no CUDA device (its initialization failed)"))
        .is_ok()
    });
    if !present {
        say(&format!("{test}: skipped"));
        return None;
    }
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Some((guard, CudaDevice::default()))
}

/// Burn's matmul and reductions (the reference and the error) autotune each new shape: at the
/// lowest level, with the results and compiled kernels kept in a folder (`CUDA_GEMM_CACHE`,
/// default the system's temporary folder), so that a second run starts warm.
fn quick_autotune() {
    use cubecl::config::{
        autotune::AutotuneLevel, cache::CacheConfig, CubeClRuntimeConfig, RuntimeConfig,
    };
    let dir = std::env::var_os("CUDA_GEMM_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("scalelab-cuda-gemm-cache"));
    let mut config = CubeClRuntimeConfig::default().override_from_env();
    config.autotune.level = AutotuneLevel::Minimal;
    config.autotune.cache = CacheConfig::File(dir.clone());
    config.compilation.cache = Some(CacheConfig::File(dir));
    CubeClRuntimeConfig::set(config);
}

fn tol(dtype: FloatDType) -> f64 {
    match dtype {
        FloatDType::BF16 => 1.2e-2,
        FloatDType::F16 => 3e-3,
        _ => 5e-3, // TF32 against Burn's f32
    }
}

/// `max |a - b| / max |b|` on the device, in f32.
fn rel<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    let (a, b) = (a.cast(FloatDType::F32), b.cast(FloatDType::F32));
    let diff = (a - b.clone()).abs().max().into_scalar();
    let scale = b.abs().max().into_scalar();
    let (diff, scale): (f64, f64) = (
        burn::tensor::ElementConversion::elem(diff),
        burn::tensor::ElementConversion::elem(scale),
    );
    assert!(diff.is_finite(), "non-finite difference");
    diff / scale.max(1e-30)
}

fn random<const D: usize>(
    dims: [usize; D],
    dtype: FloatDType,
    device: &CudaDevice,
) -> Tensor<Cube, D> {
    Tensor::<Cube, D>::random(dims, Distribution::Normal(0.0, 1.0), device).cast(dtype)
}

/// `lhs @ rhs` on cuBLASLt (checked to have launched) against Burn's matmul.
fn compare<const D: usize>(
    what: &str,
    lhs: Tensor<Cube, D>,
    rhs: Tensor<Cube, D>,
    dtype: FloatDType,
) {
    let started = std::time::Instant::now();
    let before = cublaslt::launches();
    let ours = with_mode(GemmMode::Auto, || matmul(lhs.clone(), rhs.clone()));
    assert_eq!(
        cublaslt::launches(),
        before + 1,
        "{what}: cuBLASLt did not run"
    );
    let burn = with_mode(GemmMode::Burn, || matmul(lhs, rhs));
    assert_eq!(ours.dims(), burn.dims(), "{what}: shape");
    assert_eq!(ours.dtype(), burn.dtype(), "{what}: dtype");
    let e = rel(ours, burn);
    let secs = started.elapsed().as_secs_f64();
    say(&format!("{what} {dtype:?}: {e:.2e} ({secs:.1} s)"));
    assert!(
        e < tol(dtype),
        "{what} {dtype:?}: relative error {e:e} over {:e}",
        tol(dtype)
    );
}

/// [`compare`] on fresh random `[m, k] x [k, n]` operands.
fn compare_fresh(what: &str, [m, k, n]: [usize; 3], dtype: FloatDType, device: &CudaDevice) {
    compare(
        what,
        random([m, k], dtype, device),
        random([k, n], dtype, device),
        dtype,
    );
}

/// The linear layers of the 125M anchors at 16 x 2048 tokens (`MxKxN`): qkv, FFN in, FFN out
/// and the head, each as its forward, input-gradient and weight-gradient product.
const ANCHOR: [[usize; 3]; 4] = [
    [32768, 768, 2304],
    [32768, 768, 2048],
    [32768, 2048, 768],
    [32768, 768, 32000],
];

#[test]
fn anchor_linear_products_match_burn() {
    let Some((_guard, device)) = start("anchor_linear_products_match_burn") else {
        return;
    };
    // Training's dtype on all three products; f32 (TF32) on the forward (the odd shapes below
    // take f16 and the transposed f32 forms).
    for dtype in [FloatDType::BF16, FloatDType::F32] {
        for [m, k, n] in ANCHOR {
            let x = random([m, k], dtype, &device);
            let w = random([k, n], dtype, &device);
            compare(&format!("{m}x{k}x{n} x W"), x.clone(), w.clone(), dtype);
            if dtype == FloatDType::BF16 {
                let dy = random([m, n], dtype, &device);
                compare(
                    &format!("{m}x{k}x{n} dy W^T"),
                    dy.clone(),
                    w.transpose(),
                    dtype,
                );
                compare(&format!("{m}x{k}x{n} x^T dy"), x.transpose(), dy, dtype);
            }
        }
    }
}

#[test]
fn batched_products_of_experts_and_attention_match_burn() {
    let Some((_guard, device)) = start("batched_products_of_experts_and_attention_match_burn")
    else {
        return;
    };
    let dtype = FloatDType::BF16;
    // MoE: 8 experts, capacity 4096 tokens, width 1024.
    let buf = random([8, 4096, 768], dtype, &device);
    let w1 = random([8, 768, 1024], dtype, &device);
    let h = random([8, 4096, 1024], dtype, &device);
    compare("experts x W1", buf.clone(), w1.clone(), dtype);
    compare("experts h W1^T", h.clone(), w1.swap_dims(1, 2), dtype);
    compare("experts x^T h", buf.swap_dims(1, 2), h, dtype);
    // Attention: [batch, kv heads, rows, d] x k^T, 4-D batch.
    let q = random([4, 3, 256, 64], dtype, &device);
    let k = random([4, 3, 200, 64], dtype, &device);
    compare(
        "attention q k^T",
        q.clone(),
        k.clone().swap_dims(2, 3),
        dtype,
    );
    let p = random([4, 3, 256, 200], dtype, &device);
    compare("attention p v", p.clone(), k.clone(), dtype);
    compare("attention p^T q", p.swap_dims(2, 3), q, dtype);
}

#[test]
fn odd_sliced_and_broadcast_products_match_burn() {
    let Some((_guard, device)) = start("odd_sliced_and_broadcast_products_match_burn") else {
        return;
    };
    for dtype in [FloatDType::BF16, FloatDType::F16, FloatDType::F32] {
        let a = random([37, 53], dtype, &device);
        let b = random([53, 71], dtype, &device);
        compare("37x53x71", a.clone(), b.clone(), dtype);
        compare_fresh("unit rows", [1, 129, 3], dtype, &device);
        compare_fresh("unit inner", [130, 1, 7], dtype, &device);
        compare_fresh("unit cols", [65, 33, 1], dtype, &device);
        // Rows of a wider matrix: leading dimension 53 for 40 columns.
        compare(
            "sliced lhs",
            a.clone().slice([0..37, 0..40]),
            random([40, 71], dtype, &device),
            dtype,
        );
        compare(
            "both transposed",
            b.clone().transpose(),
            a.clone().transpose(),
            dtype,
        );
        // A broadcast operand on either side, and a batch broadcast in the middle of 4-D.
        let batch = random([5, 37, 53], dtype, &device);
        compare(
            "broadcast rhs",
            batch.clone(),
            b.clone().unsqueeze::<3>(),
            dtype,
        );
        compare(
            "broadcast lhs",
            a.clone().unsqueeze::<3>(),
            random([5, 53, 71], dtype, &device),
            dtype,
        );
        compare(
            "4-D batch",
            random([2, 3, 37, 53], dtype, &device),
            random([2, 3, 53, 71], dtype, &device),
            dtype,
        );
        // A permuted batch has no single batch stride: copied, then one product.
        compare(
            "permuted batch",
            random([3, 2, 37, 53], dtype, &device).swap_dims(0, 1),
            random([2, 3, 53, 71], dtype, &device),
            dtype,
        );
    }
}

/// The gradients of `sum(c * (x @ w))` under `Autodiff` on Burn's fusion backend.
fn linear_grads(
    mode: GemmMode,
    x: &Tensor<Cuda, 3>,
    w: &Tensor<Cuda, 3>,
    c: &Tensor<Cuda, 3>,
) -> [Tensor<Cuda, 3>; 3] {
    with_mode(mode, || {
        let x = Tensor::<Autodiff<Cuda>, 3>::from_inner(x.clone()).require_grad();
        let w = Tensor::<Autodiff<Cuda>, 3>::from_inner(w.clone()).require_grad();
        let y = matmul(x.clone(), w.clone());
        let loss = (y.clone() * Tensor::from_inner(c.clone())).sum();
        let grads = loss.backward();
        let out = [y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap()];
        // Read under this mode: fusion runs the queued products at the read.
        for t in &out {
            let _ = t.clone().sum().into_scalar();
        }
        out
    })
}

#[test]
fn gradients_under_autodiff_and_fusion_match_burn() {
    let Some((_guard, device)) = start("gradients_under_autodiff_and_fusion_match_burn") else {
        return;
    };
    let r = |dims: [usize; 3], dtype| {
        Tensor::<Cuda, 3>::random(dims, Distribution::Normal(0.0, 1.0), &device).cast(dtype)
    };
    for dtype in [FloatDType::BF16, FloatDType::F32] {
        // A batched weight, and one broadcast over the batch (its gradient sums over it).
        for (what, w_dims) in [("batched", [4, 48, 40]), ("broadcast", [1, 48, 40])] {
            let (x, w, c) = (
                r([4, 33, 48], dtype),
                r(w_dims, dtype),
                r([4, 33, 40], dtype),
            );
            let before = cublaslt::launches();
            let ours = linear_grads(GemmMode::Auto, &x, &w, &c);
            assert_eq!(
                cublaslt::launches(),
                before + 3,
                "{what}: forward + two gradients"
            );
            let burn = linear_grads(GemmMode::Burn, &x, &w, &c);
            for (name, (o, b)) in ["y", "dx", "dw"].iter().zip(ours.into_iter().zip(burn)) {
                assert_eq!(o.dims(), b.dims(), "{what} {name}: shape");
                let e = rel(o, b);
                say(&format!("{what} {name} {dtype:?}: {e:.2e}"));
                assert!(
                    e < tol(dtype),
                    "{what} {name} {dtype:?}: relative error {e:e}"
                );
            }
        }
    }
}
