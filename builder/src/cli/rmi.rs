//! `kiln rmi`: untag local images and delete the blobs no other tag uses.

use crate::local_store::LocalStore;
use kiln_oci::walk::reachable;
use kiln_oci::Descriptor;
use kiln_oci::{Digest, Reference};
use kiln_solver::content::LockMode;
use miette::{IntoDiagnostic, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln rmi`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images (names or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every tag of an image given by ID.
    #[arg(short, long)]
    pub force: bool,
    /// Keep the blobs (untag only).
    #[arg(long)]
    pub no_prune: bool,
}

/// Runs `kiln rmi`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let mut failed = false;
    let mut removed_roots = Vec::new();
    for what in &args.images {
        let image = match store.find(what) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
                continue;
            }
        };
        let by_name = !image.name.is_empty()
            && Reference::parse(what)
                .map(|r| r.to_string() == image.name)
                .unwrap_or(false);
        // By ID: every image with that ID, tagged or not (one ID may have several roots,
        // e.g. the same image with OCI and Docker media types).
        let same_id = store.with_id(&image.id)?;
        let names: Vec<String> = if by_name {
            vec![image.name.clone()]
        } else {
            let all: Vec<String> = same_id
                .iter()
                .filter(|i| !i.name.is_empty())
                .map(|i| i.name.clone())
                .collect();
            if all.len() > 1 && !args.force {
                eprintln!(
                    "Error: image {what} is referenced by {} names ({}); use -f or remove by name",
                    all.len(),
                    all.join(", ")
                );
                failed = true;
                continue;
            }
            all
        };
        for n in names {
            store.content.remove_tag(&n).into_diagnostic()?;
            let familiar = Reference::parse(&n).map(|r| r.familiar()).unwrap_or(n);
            println!("Untagged: {familiar}");
        }
        if by_name {
            removed_roots.push(image.descriptor.digest.clone());
        } else {
            for i in &same_id {
                store
                    .content
                    .remove_untagged(&i.descriptor.digest)
                    .into_diagnostic()?;
                removed_roots.push(i.descriptor.digest.clone());
            }
        }
    }
    if !args.no_prune && !removed_roots.is_empty() {
        // Only when no build holds the store: its blobs may not be tagged yet.
        if let Some(_lock) = store
            .content
            .try_lock(LockMode::Exclusive)
            .into_diagnostic()?
        {
            let roots = |digests: Vec<Digest>| -> Result<BTreeSet<Digest>> {
                let roots = digests.into_iter().map(|d| Descriptor::new("", d, 0));
                Ok(reachable(&store.content, roots)
                    .into_diagnostic()?
                    .into_iter()
                    .collect())
            };
            let kept = store.images()?.into_iter().chain(store.untagged()?);
            let keep = roots(kept.map(|i| i.descriptor.digest).collect())?;
            let gone = roots(removed_roots)?;
            for d in gone.difference(&keep) {
                if store.content.delete(d).into_diagnostic()? {
                    println!("Deleted: {d}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
