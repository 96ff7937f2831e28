//! Command-line interface: one module per verb.

pub mod build;
pub mod dockerfile;
mod version;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// kiln builds container images from Dockerfiles and moves them between registries.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (content store, layers, cache). Default: $XDG_DATA_HOME/kiln, /var/lib/kiln for root.
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and git commit.
    Version(version::Args),
    /// Build an image from a Dockerfile.
    Build(build::Args),
    /// Inspect Dockerfiles (`kiln dockerfile parse FILE|-`).
    Dockerfile(dockerfile::Args),
}

/// Parses the command line, runs the verb and renders any error.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version(args) => version::run(args),
        Command::Build(args) => build::run(args, cli.root),
        Command::Dockerfile(args) => dockerfile::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{:?}", err);
            ExitCode::FAILURE
        }
    }
}
