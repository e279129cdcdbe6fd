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
            eprintln!("error: {}", message(&e));
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
            eprintln!("error: {}", message(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: a cause whose text the message already holds (an
/// I/O error its wrapper quotes) is left out.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quoted_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(scalelab_config::ConfigError::Io {
            path: "a.yaml".into(),
            source: io,
        })
        .context("loading the sweep");
        assert_eq!(
            super::message(&e),
            "loading the sweep: cannot read config file a.yaml: No such file"
        );
    }
}
