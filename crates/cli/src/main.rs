//! `scalelab`: the command-line face of the library.

mod backend;
mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Compare how language-model architectures scale: softmax, lightning and hybrid attention,
/// dense and mixture-of-experts FFNs (MiniMax-01).
#[derive(Parser)]
#[command(name = "scalelab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Total and activated parameters of a model config, by component (no tensors allocated).
    Params(commands::params::Args),
    /// Train one model (CPU by default; GPU with the cuda or wgpu feature).
    Train(commands::train::Args),
    /// Run an experiment sweep (resumable): every run of a YAML sweep file, into one directory.
    Sweep(commands::sweep::Args),
    /// Write a sweep's report: fitted laws against the paper's, tables and figures.
    Report(commands::report::Args),
    /// Forward and training FLOPs per token by component, under three conventions.
    Flops(commands::flops::Args),
    /// The runs a sweep file or IsoFLOP plan spec makes (what `sweep --dry-run` lists).
    Plan(commands::plan::Args),
    /// Fit scaling laws to a results table, per architecture, in the paper's Table 2 form.
    Fit(commands::fit::Args),
    /// Benchmarks: `bench train` measures training throughput, MFU, memory and start-up.
    Bench(commands::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let needs_device = matches!(cli.command, Command::Train(_) | Command::Sweep(_));
    if needs_device {
        if let Err(e) = backend::ready() {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Params(args) => commands::params::run(&args),
        Command::Train(args) => commands::train::run(&args),
        Command::Sweep(args) => commands::sweep::run(&args),
        Command::Report(args) => commands::report::run(&args),
        Command::Flops(args) => commands::flops::run(&args),
        Command::Plan(args) => commands::plan::run(&args),
        Command::Fit(args) => commands::fit::run(&args),
        Command::Bench(args) => commands::bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
