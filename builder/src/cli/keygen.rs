//! `kiln keygen PREFIX`: an ECDSA P-256 key pair for `kiln sign` / `kiln verify` (and cosign).

use crate::signature::keys::{self, KeyPaths};
use miette::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Environment variable holding the password of private keys.
pub const PASSWORD_ENV: &str = "KILN_PASSWORD";

/// Arguments of `kiln keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Writes PREFIX.key (private, mode 0600; encrypted as cosign does when KILN_PASSWORD is
    /// set and not empty) and PREFIX.pub (public). Existing files are not overwritten.
    pub prefix: PathBuf,
}

/// Runs `kiln keygen`.
pub fn run(args: Args) -> Result<ExitCode> {
    let paths = KeyPaths::of(&args.prefix);
    let password = std::env::var(PASSWORD_ENV).ok();
    keys::generate(&paths, password.as_deref())?;
    eprintln!("Private key written to {}", paths.private.display());
    eprintln!("Public key written to {}", paths.public.display());
    Ok(ExitCode::SUCCESS)
}

/// The password for an encrypted private key, from the environment.
pub fn password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}
