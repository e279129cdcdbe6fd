//! `scalelab plan FILE [--json]`: the runs of a sweep file or an IsoFLOP plan spec, as
//! `scalelab sweep FILE --dry-run` lists them (less its time estimate, which trains a few steps).

use std::path::PathBuf;

use anyhow::Result;
use scalelab_sweep::{PlannedRun, SweepSpec};
use scalelab_train::RunConfig;
use serde::Serialize;

/// Arguments of `scalelab plan`.
#[derive(clap::Args)]
pub struct Args {
    /// A sweep file (experiments/*.yaml) or an IsoFLOP plan spec (experiments/plans/*.yaml).
    pub file: PathBuf,
    /// Print JSON (every run with its full config) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One planned run as `plan` and `sweep --dry-run` list it.
#[derive(Serialize)]
pub struct PlanRow {
    /// Run name (its directory in the sweep).
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// All parameters.
    pub params: u64,
    /// Activated non-embedding parameters.
    pub activated: u64,
    /// Training FLOPs per token under the run's convention.
    pub flops_per_token: f64,
    /// Tokens the run trains on (whole steps).
    pub tokens: u64,
    /// Training FLOPs of the run.
    pub flops: f64,
    /// The budget it was planned for, if any.
    pub budget: Option<f64>,
    /// Everything the trainer gets.
    pub config: RunConfig,
}

/// The rows of `runs`.
pub fn rows(runs: &[PlannedRun]) -> Result<Vec<PlanRow>> {
    runs.iter()
        .map(|r| {
            let c = &r.config;
            let tokens = c.total_steps()? * c.tokens_per_step();
            let flops_per_token = c.flops_per_token()?;
            let p = c.model.param_count();
            Ok(PlanRow {
                name: r.name.clone(),
                arch: r.arch.clone(),
                params: p.total,
                activated: p.activated,
                flops_per_token,
                tokens,
                flops: tokens as f64 * flops_per_token,
                budget: r.budget,
                config: c.clone(),
            })
        })
        .collect()
}

/// The table of `rows`, with `extra` columns (header, one cell per row) at the right.
pub fn table(rows: &[PlanRow], extra: &[(&str, Vec<String>)]) -> String {
    let mut out = format!(
        "{:<40} {:<16} {:>10} {:>10} {:>11} {:>10} {:>10} {:>8}",
        "run", "arch", "params", "activated", "FLOPs/token", "tokens", "FLOPs", "budget"
    );
    for (h, _) in extra {
        out.push_str(&format!(" {h:>9}"));
    }
    out.push('\n');
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{:<40} {:<16} {:>10} {:>10} {:>11.3e} {:>10} {:>10.3e} {:>8}",
            r.name,
            r.arch,
            r.params,
            r.activated,
            r.flops_per_token,
            r.tokens,
            r.flops,
            r.budget.map_or("-".into(), |b| format!("{b:.1e}"))
        ));
        for (_, cells) in extra {
            out.push_str(&format!(" {:>9}", cells.get(i).map_or("", String::as_str)));
        }
        out.push('\n');
    }
    out
}

/// Prints the runs `scalelab sweep FILE` would train.
pub fn run(args: &Args) -> Result<()> {
    let spec = SweepSpec::from_yaml_file(&args.file)?;
    let runs = spec.plan(&args.file)?;
    let rows = rows(&runs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} ({}): {} runs, as `scalelab sweep {}` trains them",
        spec.name,
        args.file.display(),
        rows.len(),
        args.file.display()
    );
    print!("{}", table(&rows, &[]));
    if let Some(plan) = &spec.plan {
        let dir = args.file.parent().unwrap_or(std::path::Path::new("."));
        print!(
            "{}",
            scalelab_scaling::plan::plan_from_file(dir.join(plan))?.moe_text()
        );
    }
    Ok(())
}
