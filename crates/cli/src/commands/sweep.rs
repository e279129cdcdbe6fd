//! `scalelab sweep FILE [--out DIR] [--dry-run] [--jobs N]`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use scalelab_sweep::{finished, run_sweep, RunOutcome, SweepOptions, SweepSpec};

use crate::backend;

/// Arguments of `scalelab sweep`.
#[derive(clap::Args)]
pub struct Args {
    /// A sweep file, e.g. experiments/attention-scaling-quick.yaml.
    pub file: PathBuf,
    /// Sweep directory; defaults to runs/NAME, NAME the sweep's name.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the plan (runs, parameters, tokens, FLOPs, estimated time) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Runs trained at once (CPU cores; keep 1 on a GPU).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Where tokenized text corpora are cached.
    #[arg(long, default_value = ".scalelab-cache")]
    pub cache_dir: PathBuf,
    /// GiB each run may use: a run that cannot fit is refused before anything is allocated
    /// (default: the RAM available, on CPU builds).
    #[arg(long)]
    pub max_memory: Option<f64>,
    /// Write the report (fitted laws, tables, figures) when the sweep ends.
    #[arg(long)]
    pub report: bool,
}

/// Plans, then runs a sweep; prints each run as it finishes.
pub fn run(args: &Args) -> Result<()> {
    let spec = SweepSpec::from_yaml_file(&args.file)?;
    let runs = spec.plan(&args.file)?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    let smallest = runs
        .iter()
        .min_by_key(|r| r.config.model.param_count().total)
        .expect("a plan has at least one run");
    let rate = crate::commands::calibrate::flops_per_second(&smallest.config)?;
    println!(
        "{} runs in {} (this machine trains {} at about {:.2e} FLOP/s)",
        runs.len(),
        dir.display(),
        backend::NAME,
        rate
    );
    let rows = super::plan::rows(&runs)?;
    let done: Vec<bool> = runs.iter().map(|r| finished(&dir, r).is_some()).collect();
    let secs: Vec<f64> = rows.iter().map(|r| r.flops / rate).collect();
    let left: Vec<f64> = secs
        .iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(s, _)| *s)
        .collect();
    print!(
        "{}",
        super::plan::table(
            &rows,
            &[
                ("est. time", secs.iter().map(|s| duration(*s)).collect()),
                (
                    "done",
                    done.iter()
                        .map(|d| if *d { "yes" } else { "" }.into())
                        .collect()
                ),
            ]
        )
    );
    println!(
        "estimated time for the runs left: {} with 1 job",
        duration(left.iter().sum())
    );
    if args.jobs > 1 {
        println!(
            "with {} jobs: about {} if they do not slow each other (longest run first; jobs \
             sharing the cores take longer)",
            args.jobs,
            duration(makespan(&left, args.jobs))
        );
    }
    if args.dry_run {
        return Ok(());
    }

    let stop = super::stop_on_ctrl_c(
        "stopping: checkpointing the runs in flight (Ctrl-C again to abort)",
    )?;
    let mut runs = runs;
    for run in &mut runs {
        let t = &mut run.config.train;
        t.precision = t.precision.or(backend::DEFAULT_PRECISION);
        let p = t.precision.unwrap_or(scalelab_train::Precision::F32);
        anyhow::ensure!(
            p != scalelab_train::Precision::Bf16 && backend::PRECISIONS.contains(&p),
            "run {}: train.precision `{p}` cannot run in a sweep of this build ({}): use {}",
            run.name,
            backend::NAME,
            if backend::PRECISIONS.len() > 1 {
                "f32 or bf16-mixed"
            } else {
                "f32"
            }
        );
    }
    backend::kernel_cache(&args.cache_dir.join("cubecl"), None);
    let started = Instant::now();
    let opts = SweepOptions {
        jobs: args.jobs,
        progress: args.jobs <= 1,
        stop: Some(stop.clone()),
        cache_dir: args.cache_dir.clone(),
        max_memory: super::max_memory(args.max_memory),
    };
    let outcomes = run_sweep::<backend::Train>(
        &spec,
        &runs,
        &dir,
        &backend::device(),
        &opts,
        |run, outcome| match outcome {
            RunOutcome::Done(s) => println!(
                "finished {}: val loss {:.4} in {:.0}s",
                run.name, s.val_loss, s.wall_secs
            ),
            RunOutcome::Failed(e) => println!("FAILED {}: {e}", run.name),
            RunOutcome::Pending => {
                println!("stopped {} (resume by running the sweep again)", run.name)
            }
        },
    )?;
    let count = |f: fn(&RunOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    println!(
        "{} finished, {} failed, {} not run, in {}",
        count(|o| matches!(o, RunOutcome::Done(_))),
        count(|o| matches!(o, RunOutcome::Failed(_))),
        count(|o| matches!(o, RunOutcome::Pending)),
        duration(started.elapsed().as_secs_f64())
    );
    println!("results: {}", dir.join("results.csv").display());
    if args.report {
        match scalelab_report::write_report(&dir, None) {
            Ok(paths) => print!("{}", paths.to_text()),
            Err(e) => eprintln!("no report: {e}"),
        }
    } else {
        println!("report:  scalelab report {}", dir.display());
    }
    println!(
        "TensorBoard: tensorboard --logdir {}",
        dir.join("runs").display()
    );
    if stop.load(Ordering::SeqCst) {
        // Interrupted by Ctrl-C, after checkpointing: the shell's convention for SIGINT.
        std::process::exit(130);
    }
    Ok(())
}

/// The wall time of `jobs` workers taking the runs longest first, each as soon as it is free.
fn makespan(secs: &[f64], jobs: usize) -> f64 {
    let mut order = secs.to_vec();
    order.sort_by(|a, b| b.total_cmp(a));
    let mut free_at = vec![0.0f64; jobs.max(1)];
    for s in order {
        let next = free_at
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one worker");
        *next += s;
    }
    free_at.into_iter().fold(0.0, f64::max)
}

fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0}s")
    } else if secs < 5400.0 {
        format!("{:.1}min", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::makespan;

    #[test]
    fn makespan_packs_runs_longest_first() {
        assert_eq!(makespan(&[], 4), 0.0);
        assert_eq!(makespan(&[3.0, 1.0, 2.0], 1), 6.0);
        // Two workers: 5 and 4 start, 3 follows the 4 (7), 1 follows the 5 (6).
        assert_eq!(makespan(&[5.0, 4.0, 3.0, 1.0], 2), 7.0);
        // One run longer than all the others together bounds the time.
        assert_eq!(makespan(&[10.0, 1.0, 1.0, 1.0], 3), 10.0);
        // More workers than runs: the longest run.
        assert_eq!(makespan(&[2.0, 3.0], 8), 3.0);
    }
}
