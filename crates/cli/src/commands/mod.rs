//! One module per subcommand: argument struct and `run`.

pub mod bench;
pub mod bench_gemm;
pub mod calibrate;
pub mod fit;
pub mod flops;
pub mod params;
pub mod plan;
pub mod report;
pub mod sweep;
pub mod train;

/// `gib` GiB in bytes.
pub fn gib(gib: f64) -> u64 {
    (gib.max(0.0) * (1u64 << 30) as f64) as u64
}

/// The model of a model config or of a run file (`model:`, `train:`, `data:`), as `train`
/// reads them.
pub fn model_config(path: &std::path::Path) -> anyhow::Result<scalelab_config::ModelConfig> {
    Ok(scalelab_train::RunConfig::from_yaml_file(path)?.model)
}
