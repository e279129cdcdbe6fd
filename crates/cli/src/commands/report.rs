//! `scalelab report SWEEP_DIR [--out DIR]`.

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `scalelab report`.
#[derive(clap::Args)]
pub struct Args {
    /// A sweep directory (with results.csv), as written by `scalelab sweep`.
    pub sweep_dir: PathBuf,
    /// Where to write report.md and the figures; defaults to SWEEP_DIR/report.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Fits, tables and figures of a sweep, as Markdown with SVG plots.
pub fn run(args: &Args) -> Result<()> {
    let paths = scalelab_report::write_report(&args.sweep_dir, args.out.as_deref())?;
    print!("{}", paths.to_text());
    Ok(())
}
