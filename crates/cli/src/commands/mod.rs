//! One module per subcommand: argument struct and `run`.

pub mod bench;
pub mod bench_attention;
pub mod bench_flags;
pub mod bench_gemm;
pub mod calibrate;
pub mod fit;
pub mod flops;
pub mod params;
pub mod plan;
pub mod report;
pub mod sweep;
pub mod train;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// `gib` GiB in bytes.
pub fn gib(gib: f64) -> u64 {
    (gib.max(0.0) * (1u64 << 30) as f64) as u64
}

/// The bytes a run may use: `--max-memory` GiB if given, else the backend's default limit.
pub fn max_memory(max_memory_gib: Option<f64>) -> Option<u64> {
    max_memory_gib
        .map(gib)
        .or_else(crate::backend::memory_limit)
}

/// A flag that the first Ctrl-C sets, after printing `stopping` (what the run does now) on
/// stderr; a second Ctrl-C exits at once with status 130.
pub fn stop_on_ctrl_c(stopping: &'static str) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\n{stopping}");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// The model of a model config or of a run file (`model:`, `train:`, `data:`), as `train`
/// reads them.
pub fn model_config(path: &std::path::Path) -> anyhow::Result<scalelab_config::ModelConfig> {
    Ok(scalelab_train::RunConfig::from_yaml_file(path)?.model)
}
