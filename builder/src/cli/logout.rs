//! `kiln logout`: remove stored credentials.

use kiln_registry::auth::config::DockerConfig;
use miette::{IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln logout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Registry host (default: Docker Hub).
    pub server: Option<String>,
}

/// Runs `kiln logout`.
pub fn run(args: Args, _root: Option<&Path>) -> Result<ExitCode> {
    let server = super::login::server_name(args.server.as_deref());
    let mut cfg = DockerConfig::load_default().into_diagnostic()?;
    if cfg.erase(&server).into_diagnostic()? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(ExitCode::SUCCESS)
}
