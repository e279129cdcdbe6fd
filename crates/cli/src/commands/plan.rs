//! `scalelab plan SPEC.yaml [--json]`.

use std::path::PathBuf;

use anyhow::Result;
use scalelab_scaling::report;

/// Arguments of `scalelab plan`.
#[derive(clap::Args)]
pub struct Args {
    /// An IsoFLOP plan spec (YAML), e.g. experiments/plans/attention-isoflop-quick.yaml.
    pub spec: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the runs an IsoFLOP plan would execute.
pub fn run(args: &Args) -> Result<()> {
    let plan = report::plan_from_file(&args.spec)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.to_text());
    }
    Ok(())
}
