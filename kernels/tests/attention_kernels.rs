//! The softmax-attention kernels against the f64 reference (output and `dq, dk, dv`): tails
//! shorter than a block, GQA ratios 1, 4 and 8, head dims 16, 64 and 128, and queries after a
//! cache (`t < s`).
//!
//! - `wgpu` feature (CI: lavapipe): the portable kernels in f32, with and without fusion.
//! - `cuda` feature (the GPU machine): the tensor-core kernels in bf16 and f16, and the
//!   portable ones in f32; skipped with a message without a CUDA device.
//!
//! ```sh
//! cargo test --release -p scalelab-kernels --features cuda --test attention_kernels
//! ```
#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

/// `[b, h, kv_heads, t, s, d]`: shapes every backend runs. Lavapipe returns NaN or wrong
/// values once one cube's loop passes about 15 blocks (at any head shape; the same kernels are
/// right at those lengths on CUDA, see `LARGE`), so the shapes here stay short.
const SHAPES: [[usize; 6]; 7] = [
    [2, 4, 4, 45, 45, 64],  // MHA, a tail
    [1, 8, 2, 70, 70, 64],  // GQA 4
    [1, 8, 1, 33, 33, 64],  // GQA 8
    [1, 4, 2, 33, 33, 128], // wide heads
    [1, 8, 1, 16, 16, 128], // GQA 8, wide heads
    [1, 4, 4, 5, 37, 64],   // 5 queries after a cache of 32
    [2, 2, 1, 40, 40, 16],  // narrow heads
];

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::common::{softmax_attention_matches, TOL};
    use super::SHAPES;
    use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
    use burn::backend::{Autodiff, Wgpu};
    use burn::tensor::FloatDType;

    fn run<B>()
    where
        B: burn::tensor::backend::AutodiffBackend + scalelab_kernels::AttentionBackend,
    {
        for (i, shape) in SHAPES.into_iter().enumerate() {
            let ran = softmax_attention_matches::<B>(
                &Default::default(),
                10 + i as u64,
                shape,
                FloatDType::F32,
                TOL,
            );
            assert!(
                ran.iter().any(|k| k.contains("portable")),
                "the portable kernels did not run: {ran:?}"
            );
        }
    }

    #[test]
    fn portable_kernels_match_the_reference() {
        run::<Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>>();
    }

    #[test]
    fn portable_kernels_match_the_reference_under_fusion() {
        run::<Autodiff<Wgpu>>();
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::common::{softmax_attention_matches, TOL};
    use super::SHAPES;
    use burn::backend::cuda::CudaDevice;
    use burn::backend::{Autodiff, Cuda};
    use burn::tensor::FloatDType;
    use burn_cubecl::CubeBackend;
    use cubecl::cuda::CudaRuntime;
    use scalelab_kernels::attention::dispatch::{with_mode, AttentionMode};

    type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;

    /// Whether a CUDA device is present (else the test says so and passes).
    fn device() -> Option<CudaDevice> {
        let present = std::panic::catch_unwind(|| {
            let d = CudaDevice::default();
            let _ = burn::tensor::Tensor::<Cube, 1>::zeros([1], &d).into_data();
        })
        .is_ok();
        if !present {
            eprintln!("skipped: no CUDA device");
        }
        present.then(CudaDevice::default)
    }

    /// Larger shapes for the tensor-core tiles: several 64-row blocks with tails.
    const LARGE: [[usize; 6]; 4] = [
        [2, 4, 4, 200, 200, 64],
        [1, 8, 2, 130, 130, 128],
        [1, 4, 1, 3, 131, 128],
        [1, 8, 1, 700, 700, 128],
    ];

    fn run<B>(dtype: FloatDType, tol: f64, want: &str)
    where
        B: burn::tensor::backend::AutodiffBackend<Device = CudaDevice>
            + scalelab_kernels::AttentionBackend,
    {
        let Some(device) = device() else { return };
        for (i, shape) in SHAPES.into_iter().chain(LARGE).enumerate() {
            // CUDA's default is still the reference; `flash` runs the kernels.
            let ran = with_mode(AttentionMode::Flash, || {
                softmax_attention_matches::<B>(&device, 20 + i as u64, shape, dtype, tol)
            });
            // Heads of 16 columns take the tensor cores too; all shapes here do.
            assert!(
                ran.iter().any(|k| k.contains(want)),
                "{want} did not run for {shape:?}: {ran:?}"
            );
        }
    }

    #[test]
    fn tensor_core_kernels_match_the_reference_in_bf16() {
        run::<Autodiff<Cube>>(FloatDType::BF16, 2e-2, "tensor cores");
    }

    #[test]
    fn tensor_core_kernels_match_the_reference_in_f16_under_fusion() {
        run::<Autodiff<Cuda>>(FloatDType::F16, 1e-2, "tensor cores");
    }

    #[test]
    fn portable_kernels_match_the_reference_in_f32() {
        run::<Autodiff<Cube>>(FloatDType::F32, TOL, "portable");
    }
}
