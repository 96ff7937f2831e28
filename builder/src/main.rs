//! kiln: container image builder and registry toolkit.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
