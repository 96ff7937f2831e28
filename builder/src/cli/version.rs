//! `kiln version`.

use std::process::ExitCode;

/// Arguments of `kiln version`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints the version and the git commit the binary was built from.
pub fn run(_args: Args) -> miette::Result<ExitCode> {
    println!(
        "kiln {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("KILN_GIT_COMMIT")
    );
    Ok(ExitCode::SUCCESS)
}
