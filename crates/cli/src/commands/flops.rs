//! `scalelab flops CONFIG [--seq N] [--json]`.

use std::path::PathBuf;

use anyhow::Result;
use scalelab_scaling::report;

/// Arguments of `scalelab flops`.
#[derive(clap::Args)]
pub struct Args {
    /// A model config (YAML).
    pub config: PathBuf,
    /// Context length the attention core is counted at.
    #[arg(long, default_value_t = report::DEFAULT_SEQ)]
    pub seq: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints forward and training FLOPs per token by component, under each convention.
pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(args.seq > 0, "--seq must be at least 1");
    let cfg = super::model_config(&args.config)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::flops_json(&cfg, args.seq))?
        );
    } else {
        print!("{}", report::flops_text(&cfg, args.seq));
    }
    Ok(())
}
