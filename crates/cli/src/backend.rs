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
    /// The default device.
    pub fn device() -> burn::backend::cuda::CudaDevice {
        Default::default()
    }
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod chosen {
    /// The training backend.
    pub type Train = burn::backend::Autodiff<burn::backend::Wgpu>;
    /// A one-line description for logs.
    pub const NAME: &str = "wgpu";
    /// The default device.
    pub fn device() -> burn::backend::wgpu::WgpuDevice {
        Default::default()
    }
}

#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
mod chosen {
    /// The training backend.
    pub type Train = burn::backend::Autodiff<burn::backend::NdArray>;
    /// A one-line description for logs.
    pub const NAME: &str = "cpu (ndarray)";
    /// The default device.
    pub fn device() -> burn::backend::ndarray::NdArrayDevice {
        Default::default()
    }
}

#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
mod chosen {
    /// The training backend.
    pub type Train = burn::backend::Autodiff<burn::backend::Flex>;
    /// A one-line description for logs.
    pub const NAME: &str = "cpu (flex)";
    /// The default device.
    pub fn device() -> burn::backend::flex::FlexDevice {
        Default::default()
    }
}

#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!("enable one backend feature: ndarray (default), flex, wgpu or cuda");

pub use chosen::*;
