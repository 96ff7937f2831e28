//! kiln: container image builder and registry toolkit.

mod cli;
mod context;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
