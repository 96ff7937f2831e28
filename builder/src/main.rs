//! kiln: container image builder and registry toolkit.

mod build;
mod cli;
mod context;
mod export;
#[allow(dead_code)] // until `kiln build` drives the displays
mod progress;
mod local_store;
mod registry_opts;
mod transfer_progress;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
