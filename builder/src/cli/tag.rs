//! `kiln tag SOURCE TARGET`: another name for a local image.

use crate::local_store::LocalStore;
use kiln_oci::Reference;
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln tag`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Existing image (name or ID).
    pub source: String,
    /// New name.
    pub target: String,
}

/// Runs `kiln tag`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let target = Reference::parse(&args.target).into_diagnostic()?;
    if target.digest().is_some() {
        return Err(miette!(
            "invalid tag {}: a tag cannot contain a digest",
            args.target
        ));
    }
    let store = LocalStore::open(root)?;
    let image = store.find(&args.source)?;
    store.tag(&target, &image.descriptor)?;
    Ok(ExitCode::SUCCESS)
}
