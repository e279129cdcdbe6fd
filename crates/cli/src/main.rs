//! `scalelab`: the command-line face of the library.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Params(args) => commands::params::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
