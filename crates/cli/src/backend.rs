//! The backend the binary was built for, chosen by cargo features: `cuda`, else `wgpu`, else
//! the CPU (`ndarray` by default, `flex` on request).

#[cfg(feature = "cuda")]
mod chosen {
    /// The training backend.
    pub type Train = burn::backend::Autodiff<burn::backend::Cuda>;
    /// Pure bf16 training (weights, activations and optimizer state in bf16; Burn 0.21 has no
    /// mixed-precision autocast).
    pub type TrainBf16 = burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::bf16>>;
    /// A one-line description for logs.
    pub const NAME: &str = "cuda";
    /// The precision of runs that name none: bf16-mixed, whose matrix products and lightning
    /// scans reach the tensor cores (f32 runs the scalar scan kernel).
    pub const DEFAULT_PRECISION: Option<scalelab_train::Precision> =
        Some(scalelab_train::Precision::Bf16Mixed);
    /// Precisions this build can train in.
    pub const PRECISIONS: &[scalelab_train::Precision] = &[
        scalelab_train::Precision::F32,
        scalelab_train::Precision::Bf16Mixed,
        scalelab_train::Precision::Bf16,
    ];

    /// The default memory limit of a run: none (device memory is not queried; give
    /// --max-memory).
    pub fn memory_limit() -> Option<u64> {
        None
    }

    /// Keeps CubeCL's compiled kernels and autotune results under `dir`, in a folder named by a
    /// hash of the kernel sources this binary was built from (unless a `cubecl.toml`
    /// in the working directory or above says otherwise), so a second run of a model skips
    /// NVRTC and autotuning; with `profile`, also times every kernel launch into that file.
    /// Call before the first device use.
    pub fn kernel_cache(dir: &std::path::Path, profile: Option<&std::path::Path>) {
        use cubecl::config::{
            cache::CacheConfig, profiling::ProfilingLogLevel, CubeClRuntimeConfig, RuntimeConfig,
        };
        let has_file = std::env::current_dir().is_ok_and(|d| {
            d.ancestors()
                .any(|a| a.join("cubecl.toml").exists() || a.join("burn.toml").exists())
        });
        if has_file {
            if profile.is_some() {
                eprintln!("--profile-kernels is ignored: a cubecl.toml or burn.toml configures CubeCL here");
            }
            return;
        }
        // One folder per build's kernel sources: CubeCL finds cached PTX by kernel name and
        // settings, so a changed kernel would otherwise load an older build's code.
        let dir = std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(env!("SCALELAB_KERNEL_SOURCES"));
        // CUBECL_DEBUG_OPTION=profile and the other environment switches still apply.
        let mut config = CubeClRuntimeConfig::default().override_from_env();
        config.autotune.cache = CacheConfig::File(dir.clone());
        config.compilation.cache = Some(CacheConfig::File(dir));
        if let Some(file) = profile {
            config.profiling.logger.level = ProfilingLogLevel::Basic;
            config.profiling.logger.file = Some(file.to_path_buf());
        }
        CubeClRuntimeConfig::set(config);
    }
    /// The default device.
    pub fn device() -> burn::backend::cuda::CudaDevice {
        Default::default()
    }

    /// Fails with the fix when the CUDA driver library cannot be loaded (Burn would panic).
    pub fn ready() -> anyhow::Result<()> {
        // SAFETY: loading the driver library runs its initialisers, as cudarc does later anyway.
        let found = ["libcuda.so.1", "libcuda.so"]
            .iter()
            .any(|name| unsafe { libloading::Library::new(*name) }.is_ok());
        anyhow::ensure!(
            found,
            "this scalelab was built with --features cuda, but the CUDA driver (libcuda.so.1) \
             is not on this machine's library path: run it on a machine with an NVIDIA driver \
             (and LD_LIBRARY_PATH=/usr/local/cuda/lib64 if needed), or build the CPU binary \
             with `cargo build --release -p scalelab-cli`"
        );
        Ok(())
    }
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod chosen {
    /// The training backend.
    pub type Train = burn::backend::Autodiff<burn::backend::Wgpu>;
    /// A one-line description for logs.
    pub const NAME: &str = "wgpu";
    /// The precision of runs that name none (f32).
    pub const DEFAULT_PRECISION: Option<scalelab_train::Precision> = None;
    /// Precisions this build can train in.
    pub const PRECISIONS: &[scalelab_train::Precision] = &[scalelab_train::Precision::F32];
    /// CubeCL's caches keep their defaults (CPU builds compile no kernels at run time).
    pub fn kernel_cache(_dir: &std::path::Path, _profile: Option<&std::path::Path>) {}
    /// The default memory limit of a run: none known (device memory is not queried).
    pub fn memory_limit() -> Option<u64> {
        None
    }
    /// The default device.
    pub fn device() -> burn::backend::wgpu::WgpuDevice {
        Default::default()
    }
    /// Always ready (wgpu reports a missing adapter itself).
    pub fn ready() -> anyhow::Result<()> {
        Ok(())
    }
}

/// The `chosen` module of a CPU backend: f32 only, no run-time kernels, the RAM available as
/// the default memory limit; the CPU backends differ only in their type, name and device.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
macro_rules! cpu_backend {
    ($backend:ty, $name:literal, $device:ty) => {
        mod chosen {
            /// The training backend.
            pub type Train = burn::backend::Autodiff<$backend>;
            /// A one-line description for logs.
            pub const NAME: &str = $name;
            /// The precision of runs that name none (f32).
            pub const DEFAULT_PRECISION: Option<scalelab_train::Precision> = None;
            /// Precisions this build can train in.
            pub const PRECISIONS: &[scalelab_train::Precision] = &[scalelab_train::Precision::F32];
            /// CubeCL's caches keep their defaults (CPU builds compile no kernels at run time).
            pub fn kernel_cache(_dir: &std::path::Path, _profile: Option<&std::path::Path>) {}
            /// The default memory limit of a run: the RAM available now.
            pub fn memory_limit() -> Option<u64> {
                scalelab_train::memory::available_ram()
            }
            /// The default device.
            pub fn device() -> $device {
                Default::default()
            }
            /// The CPU is always ready.
            pub fn ready() -> anyhow::Result<()> {
                Ok(())
            }
        }
    };
}

#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
cpu_backend!(
    burn::backend::NdArray,
    "cpu (ndarray)",
    burn::backend::ndarray::NdArrayDevice
);

#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
cpu_backend!(
    burn::backend::Flex,
    "cpu (flex)",
    burn::backend::flex::FlexDevice
);

#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!("enable one backend feature: ndarray (default), flex, wgpu or cuda");

pub use chosen::*;
