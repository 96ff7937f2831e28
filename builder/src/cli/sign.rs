//! `kiln sign --key KEY REF`: signs an image in a registry as cosign does (key-based, no
//! transparency log), storing the signature under `sha256-<hex>.sig` and as a referrer.

use crate::registry_opts::{registry_failure, runtime, RegistryArgs};
use crate::signature::payload::SimpleSigning;
use crate::signature::{keys, store, verify, SignError};
use kiln_oci::Reference;
use miette::{miette, IntoDiagnostic, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Private key (from `kiln keygen` or `cosign generate-key-pair`; the password of an
    /// encrypted one comes from KILN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Image in a registry (tag or digest); an index is signed as a whole.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `kiln sign`.
pub fn run(args: Args) -> Result<ExitCode> {
    let key = keys::load_private(&args.key, super::keygen::password().as_deref())
        .map_err(with_password_help)?;
    let r = Reference::parse(&args.reference).into_diagnostic()?;
    let client = args.registry.client();
    let rt = runtime()?;
    let subject = rt
        .block_on(store::resolve(&client, &r))
        .map_err(registry_failure)?
        .ok_or_else(|| miette!("{r}: manifest unknown to the registry: nothing to sign"))?;
    let pinned = r.with_digest(subject.digest.clone());
    let payload = serde_json::to_vec(&SimpleSigning::new(&r, &subject.digest)).into_diagnostic()?;
    let signature = verify::sign(&key, &payload);
    eprintln!("Pushing signature to: {}", pinned.name());
    let attached = rt
        .block_on(store::attach(
            &client, &pinned, &subject, &payload, &signature,
        ))
        .map_err(registry_failure)?;
    eprintln!("Signed {pinned}");
    eprintln!("  signature tag: {}", attached.tag);
    match attached.referrer {
        Ok(d) => eprintln!("  referrer: {}@{d}", r.name()),
        Err(e) => eprintln!(
            "warning: the registry did not take the signature as an OCI referrer (the .sig tag holds it): {e}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A key error, with how to give the password when that is what is missing or wrong.
pub fn with_password_help(e: SignError) -> miette::Report {
    match e {
        SignError::PasswordNeeded { .. } | SignError::WrongPassword { .. } => miette!(
            help = format!("set {} to the key's password", super::keygen::PASSWORD_ENV),
            "{e}"
        ),
        e => e.into(),
    }
}
