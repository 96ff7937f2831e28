//! `kiln load`: read a docker-archive or OCI tar (gzip-compressed too) into the local store.

use crate::archive::{docker, oci};
use crate::local_store::LocalStore;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive to read (default: stdin).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print less.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kiln load`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    // Held while blobs land before their tag, so a concurrent prune cannot collect them.
    let _lock = store
        .content
        .lock(kiln_solver::content::LockMode::Shared)
        .into_diagnostic()?;
    let reader: Box<dyn std::io::Read> = match &args.input {
        Some(p) => Box::new(
            std::fs::File::open(p)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", p.display()))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    // Unpack next to the store so verified blobs are moved, not copied.
    let staging = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(store.content.ingest_dir())
        .into_diagnostic()
        .wrap_err("creating staging directory")?;
    oci::unpack(oci::open_maybe_gzip(reader)?, staging.path())?;
    let images = docker::import(staging.path(), &store.content)?;
    if images.is_empty() {
        return Err(miette!("the archive contains no images"));
    }
    for img in &images {
        if img.names.is_empty() {
            // Kept untagged (docker's `<none>`), reachable by its ID.
            store.keep_untagged(&img.root)?;
            println!("Loaded image ID: {}", store.image_id(&img.root));
            continue;
        }
        for n in &img.names {
            store.tag(n, &img.root)?;
            if !args.quiet {
                println!("Loaded image: {}", n.familiar());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
