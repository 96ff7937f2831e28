//! `kiln pull`: fetch an image (host platform, `--platform`, or `--all-platforms`) into the local store.

use crate::local_store::LocalStore;
use crate::registry_opts::{registry_failure, runtime, RegistryArgs};
use crate::transfer_progress::{Direction, TransferProgress};
use kiln_oci::{Platform, Reference};
use kiln_registry::progress::Progress;
use kiln_registry::pull::{pull, PlatformSelection, PullOptions};
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `kiln pull`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image reference (`busybox`, `127.0.0.1:5000/app:1`, `repo@sha256:...`).
    pub reference: String,
    /// Platform to pull from a multi-platform image (default: this machine's).
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    pub platform: Option<String>,
    /// Pull every platform and keep the index.
    #[arg(short = 'a', long)]
    pub all_platforms: bool,
    /// Print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `kiln pull`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let r = Reference::parse(&args.reference).into_diagnostic()?;
    let wanted = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .into_diagnostic()?;
    let platforms = if args.all_platforms {
        PlatformSelection::All
    } else if let Some(p) = &wanted {
        PlatformSelection::One(p.clone())
    } else {
        PlatformSelection::Host
    };
    let store = LocalStore::open(root)?;
    // Held while blobs land before their tag, so a concurrent prune cannot collect them.
    let _lock = store
        .content
        .lock(kiln_solver::content::LockMode::Shared)
        .into_diagnostic()?;
    let progress = Arc::new(TransferProgress::new(Direction::Pull, args.quiet));
    let client = args.registry.client_with_notices(progress.notices());
    progress.message(&format!(
        "{}: Pulling from {}",
        r.tag()
            .map(str::to_string)
            .unwrap_or_else(|| r.manifest_ref()),
        r.repository()
    ));
    let before = store.find(&r.to_string()).ok().map(|i| i.descriptor.digest);
    let opts = PullOptions {
        platforms,
        concurrency: args.registry.concurrency(),
    };
    let pulled = runtime()?
        .block_on(pull(&client, &r, &store, &opts, &*progress))
        .map_err(registry_failure)?;
    // A single image (no index) says its platform only in its config: as docker does,
    // refuse one that is not the platform asked for instead of tagging it.
    if let (Some(want), false) = (&wanted, args.all_platforms) {
        let have = store.platform_manifests(&pulled.root)?;
        if !have
            .iter()
            .any(|(d, _)| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        {
            return Err(miette!(
                "{r} was found but does not match the platform asked for: wanted {want}, it is {}",
                crate::local_store::platforms_of(&have)
            ));
        }
    }
    store.tag(&r, &pulled.root)?;
    progress.message(&format!("Digest: {}", pulled.repo_digest));
    let status = if before.as_ref() == Some(&pulled.root.digest) {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    progress.message(&format!("Status: {status} {}", r.familiar()));
    println!("{r}");
    Ok(ExitCode::SUCCESS)
}
