//! Which softmax-attention kernel runs: one typed setting, `SCALELAB_ATTENTION`, read once per
//! process, and the device's facts. Pure: the launchers ask, the tests check the answers.

use std::cell::Cell;
use std::sync::OnceLock;

use burn::tensor::DType;

use crate::lightning::dispatch::DeviceFacts;
use crate::overrides::{parse_setting, setting_from_env, UnknownSetting};

/// The variable that sets [`AttentionMode`].
pub const ATTENTION_VAR: &str = "SCALELAB_ATTENTION";

/// What `SCALELAB_ATTENTION` asks for; nothing needs it set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionMode {
    /// `auto` (unset): on CUDA the tensor-op reference, whose products run on cuBLASLt (the
    /// flash kernels have not yet run on a CUDA device; `flash` opts in), elsewhere the
    /// portable kernels.
    #[default]
    Auto,
    /// `flash`: the tensor-core kernels where they apply, else the portable ones.
    Flash,
    /// `portable`: the portable flash kernels on every device (an A/B check).
    Portable,
    /// `reference`: the tensor-op reference (scores of `[rows, keys]` in memory).
    Reference,
}

impl AttentionMode {
    /// The accepted spellings, the default first.
    pub const SPELLINGS: [(&'static str, AttentionMode); 4] = [
        ("auto", AttentionMode::Auto),
        ("flash", AttentionMode::Flash),
        ("portable", AttentionMode::Portable),
        ("reference", AttentionMode::Reference),
    ];

    /// The mode `value` spells, or an error naming the variable and the accepted values.
    pub fn parse(value: &str) -> Result<Self, UnknownSetting> {
        parse_setting(ATTENTION_VAR, &Self::SPELLINGS, value)
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<AttentionMode>> = const { Cell::new(None) };
}

/// The mode in force: `SCALELAB_ATTENTION`, read once per process (a wrong value stops the
/// process naming the accepted ones), or [`with_mode`]'s on this thread.
pub fn mode() -> AttentionMode {
    if let Some(mode) = OVERRIDE.with(Cell::get) {
        return mode;
    }
    static FROM_ENV: OnceLock<AttentionMode> = OnceLock::new();
    *FROM_ENV.get_or_init(|| setting_from_env(ATTENTION_VAR, &AttentionMode::SPELLINGS))
}

/// Runs `f` with `mode` in force on this thread (tests and A/B benchmarks).
pub fn with_mode<T>(mode: AttentionMode, f: impl FnOnce() -> T) -> T {
    crate::overrides::with_override(&OVERRIDE, mode, f)
}

/// The kernel that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The tensor-op reference.
    Reference,
    /// The portable flash kernels (f32 FMAs, any device and dtype).
    Portable,
    /// The tensor-core flash kernels (CUDA, f16/bf16).
    TensorCores,
}

/// Whether the tensor-core kernels take heads of `d` (queries and keys) and `dv` (values)
/// columns: equal, a multiple of 16 up to 128, and of 32 past 64 (the `dk`/`dv` kernel streams
/// 32 queries of wide heads in whole 16-byte copies per unit).
pub fn tensor_cores_take(d: usize, dv: usize) -> bool {
    d == dv && d % 16 == 0 && d <= 128 && (d <= 64 || d % 32 == 0)
}

/// The kernel for `mode` on `dev`, inputs of `dtype`, head dims `d` and `dv`, over `t` queries.
pub fn choose(
    mode: AttentionMode,
    dev: &DeviceFacts,
    dtype: DType,
    [d, dv, t]: [usize; 3],
) -> AttentionKernel {
    let mma = match dtype {
        DType::F16 => dev.mma_f16,
        DType::BF16 => dev.mma_bf16,
        _ => false,
    };
    match mode {
        _ if t == 0 => AttentionKernel::Reference,
        AttentionMode::Reference => AttentionKernel::Reference,
        AttentionMode::Portable => AttentionKernel::Portable,
        AttentionMode::Auto if dev.cuda => AttentionKernel::Reference,
        AttentionMode::Flash if dev.cuda && mma && dev.copy_async && tensor_cores_take(d, dv) => {
            AttentionKernel::TensorCores
        }
        AttentionMode::Auto | AttentionMode::Flash => AttentionKernel::Portable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(cuda: bool) -> DeviceFacts {
        DeviceFacts {
            cuda,
            cmma_f16: cuda,
            cmma_bf16: cuda,
            mma_f16: cuda,
            mma_bf16: cuda,
            copy_async: cuda,
            tma: cuda,
            max_shared_memory: 228 * 1024,
            sms: 132,
        }
    }

    #[test]
    fn tensor_cores_where_they_apply_portable_elsewhere() {
        use AttentionKernel::*;
        let (h100, other) = (device(true), device(false));
        let flash = AttentionMode::Flash;
        let bf16 = |mode, dev: &DeviceFacts, dims| choose(mode, dev, DType::BF16, dims);
        assert_eq!(bf16(flash, &h100, [64, 64, 2048]), TensorCores);
        assert_eq!(choose(flash, &h100, DType::F16, [128, 128, 7]), TensorCores);
        assert_eq!(choose(flash, &h100, DType::F32, [64, 64, 2048]), Portable);
        assert_eq!(bf16(flash, &h100, [80, 80, 2048]), Portable);
        assert_eq!(bf16(flash, &h100, [64, 32, 2048]), Portable);
        assert_eq!(bf16(flash, &other, [64, 64, 2048]), Portable);
        assert_eq!(bf16(flash, &h100, [64, 64, 0]), Reference);
        let auto = AttentionMode::Auto;
        assert_eq!(bf16(auto, &h100, [64, 64, 2048]), Reference);
        assert_eq!(bf16(auto, &other, [64, 64, 2048]), Portable);
        let portable = AttentionMode::Portable;
        assert_eq!(choose(portable, &h100, DType::BF16, [64, 64, 9]), Portable);
        let reference = AttentionMode::Reference;
        assert_eq!(
            choose(reference, &h100, DType::BF16, [64, 64, 9]),
            Reference
        );
    }

    #[test]
    fn the_setting_names_its_values() {
        assert_eq!(AttentionMode::parse("auto"), Ok(AttentionMode::Auto));
        assert_eq!(
            AttentionMode::parse("portable"),
            Ok(AttentionMode::Portable)
        );
        let err = AttentionMode::parse("cudnn").unwrap_err().to_string();
        assert!(err.contains("SCALELAB_ATTENTION=\"cudnn\""), "{err}");
        assert!(err.contains("auto, flash, portable, reference"), "{err}");
    }
}
