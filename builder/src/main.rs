//! kiln: container image builder and registry toolkit.

mod build;
mod cli;
mod context;
mod export;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
