//! `kiln push`: upload a local image (or index) to its registry.

use crate::local_store::LocalStore;
use crate::registry_opts::{registry_failure, runtime, RegistryArgs};
use crate::transfer_progress::{Direction, TransferProgress};
use kiln_oci::Reference;
use kiln_registry::progress::Progress;
use kiln_registry::push::{push, PushOptions};
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `kiln push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Local image to push (name or image ID); its name says where unless TARGET is given.
    pub reference: String,
    /// Where to push it (as `podman push IMAGE DESTINATION`): needed for an image ID.
    pub target: Option<String>,
    /// Print only the digest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `kiln push`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let image = store.find(&args.reference)?;
    let target = match &args.target {
        Some(t) => t.as_str(),
        None if image.name.is_empty() || !is_name_of(&args.reference, &image.name) => {
            return Err(miette!(
                "{} is an image ID, which names no repository: give where to push it (`kiln push {} NAME`) or tag it first",
                args.reference,
                args.reference
            ))
        }
        None => args.reference.as_str(),
    };
    let r = Reference::parse(target).into_diagnostic()?;
    let progress = Arc::new(TransferProgress::new(Direction::Push, args.quiet));
    let client = args.registry.client_with_notices(progress.notices());
    progress.message(&format!("The push refers to repository [{}]", r.name()));
    // A blob of an image also known under another repository of the same registry (it was
    // pulled or pushed there) can be mounted instead of uploaded.
    let mount_from = store
        .images()?
        .into_iter()
        .filter(|i| i.descriptor.digest == image.descriptor.digest)
        .filter_map(|i| Reference::parse(&i.name).ok())
        .find(|o| o.registry() == r.registry() && o.repository() != r.repository())
        .map(|o| o.repository().to_string());
    let opts = PushOptions {
        concurrency: args.registry.concurrency(),
        mount_from,
    };
    let digest = runtime()?
        .block_on(push(
            &client,
            &r,
            &image.descriptor,
            &store,
            &opts,
            &*progress,
        ))
        .map_err(registry_failure)?;
    if args.quiet {
        println!("{digest}");
    } else {
        println!(
            "{}: digest: {digest} size: {}",
            r.tag().unwrap_or("latest"),
            image.descriptor.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `what` (as typed) is the reference `name` (full form).
fn is_name_of(what: &str, name: &str) -> bool {
    Reference::parse(what).is_ok_and(|r| r.to_string() == name)
}
