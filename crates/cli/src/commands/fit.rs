//! `scalelab fit RESULTS.csv [--law LAW] [--json]`.

use std::path::PathBuf;

use anyhow::Result;
use scalelab_scaling::report::{self, Law};

/// Arguments of `scalelab fit`.
#[derive(clap::Args)]
pub struct Args {
    /// A results table: columns name, arch, params, activated_params, tokens, flops, loss.
    pub results: PathBuf,
    /// Which law to fit: power, power-irreducible, isoflop, parametric, moe, or all.
    #[arg(long, default_value = "all")]
    pub law: Law,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Fits scaling laws per architecture and prints them in the paper's Table 2 form.
pub fn run(args: &Args) -> Result<()> {
    let fits = report::fit_from_csv(&args.results, args.law)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fits)?);
    } else {
        print!("{}", fits.to_text());
    }
    Ok(())
}
