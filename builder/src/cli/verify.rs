//! `kiln verify --key KEY.pub REF`: checks an image's cosign signatures.

use crate::registry_opts::{registry_failure, runtime, RegistryArgs};
use crate::signature::{keys, store, verify, SignError};
use kiln_oci::Reference;
use miette::{miette, IntoDiagnostic, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Public key (PEM, from `kiln keygen` or `cosign public-key`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Image in a registry (tag or digest).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `kiln verify`: prints each verified payload as a JSON line on stdout.
pub fn run(args: Args) -> Result<ExitCode> {
    let key = keys::load_public(&args.key)?;
    let r = Reference::parse(&args.reference).into_diagnostic()?;
    let client = args.registry.client();
    let rt = runtime()?;
    let subject = rt
        .block_on(store::resolve(&client, &r))
        .map_err(registry_failure)?
        .ok_or_else(|| miette!("{r}: manifest unknown to the registry"))?;
    let pinned = r.with_digest(subject.digest.clone());
    let found = rt
        .block_on(store::find(&client, &pinned, &subject.digest))
        .map_err(registry_failure)?;
    if found.is_empty() {
        return Err(SignError::NoSignatures {
            reference: pinned.to_string(),
        }
        .into());
    }
    let mut verified = Vec::new();
    let mut reasons = Vec::new();
    for f in &found {
        match verify::check(f, &key, &subject.digest) {
            Ok(claims) => verified.push(claims),
            Err(why) => reasons.push(why),
        }
    }
    if verified.is_empty() {
        return Err(SignError::NoneVerified {
            reference: pinned.to_string(),
            count: found.len(),
            reasons,
        }
        .into());
    }
    eprintln!("\nVerification for {pinned} --");
    eprintln!("The following checks were performed on each of these signatures:");
    eprintln!("  - The cosign claims were validated");
    eprintln!("  - The signatures were verified against the specified public key");
    for claims in verified {
        println!("{}", serde_json::to_string(&claims).into_diagnostic()?);
    }
    Ok(ExitCode::SUCCESS)
}
