//! The flags `scalelab bench gemm` and `scalelab bench attention` share.

use anyhow::{bail, Result};

/// The kernel benches' common flags: `--dtype` as a float dtype and a positive `--seconds`, or
/// an error naming the flag.
pub fn dtype_and_seconds(dtype: &str, seconds: f64) -> Result<burn::tensor::FloatDType> {
    use burn::tensor::FloatDType;
    if seconds.is_nan() || seconds <= 0.0 {
        bail!("--seconds must be positive, got {seconds}");
    }
    Ok(match dtype {
        "bf16" => FloatDType::BF16,
        "f16" => FloatDType::F16,
        "f32" => FloatDType::F32,
        other => bail!("--dtype {other:?}: accepted are bf16, f16 and f32"),
    })
}
