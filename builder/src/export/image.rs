//! `type=image` (and `registry`): the image is named in the local store and, with
//! `push=true`, pushed to each name's registry.

use super::{names, BuildResult, Exporter};
use crate::attest::referrers::Artifact;
use crate::driver::export_steps::{ExportStep, PushProgress};
use crate::export::spec::OutputSpec;
use kiln_registry::progress::{NoProgress, Progress};
use kiln_registry::push::{push, PushOptions};
use miette::{miette, IntoDiagnostic, Result, WrapErr};

/// The image exporter.
pub struct ImageExporter;

impl Exporter for ImageExporter {
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()> {
        let (root, artifacts) = result.root_for(out)?;
        let names = names(out)?;
        let by_digest = out.flag("push-by-digest", false);
        if out.flag("store", true) && !by_digest {
            name_in_store(result, &root, &names, step)?;
        }
        if out.push() {
            if names.is_empty() {
                return Err(miette!(
                    "push=true needs an image name: add -t NAME or name= to the output"
                ));
            }
            for n in &names {
                push_one(result, &root, n, by_digest, step)?;
                push_referrers(result, artifacts, n, step)?;
            }
        }
        Ok(())
    }
}

/// Tags the image with each name; untagged, it stays reachable by the ID the build prints
/// (docker's `<none>`).
fn name_in_store(
    result: &BuildResult<'_>,
    root: &kiln_oci::Descriptor,
    names: &[kiln_oci::Reference],
    step: Option<&ExportStep>,
) -> Result<()> {
    for n in names {
        result.store.tag(n, root)?;
        if let Some(step) = step {
            step.done_item(format!("naming to {n}"));
        }
    }
    if names.is_empty() {
        result.store.keep_untagged(root)?;
    }
    Ok(())
}

/// Pushes the attestation artifacts of a `referrers=true` output to `name`'s repository, after
/// the images they are about: through the referrers API, or the fallback tag.
fn push_referrers(
    result: &BuildResult<'_>,
    artifacts: &[Artifact],
    name: &kiln_oci::Reference,
    step: Option<&ExportStep>,
) -> Result<()> {
    if artifacts.is_empty() {
        return Ok(());
    }
    let client = result.req.registry.client();
    let pairs: Vec<_> = artifacts
        .iter()
        .map(|a| (a.manifest.clone(), a.subject.digest.clone()))
        .collect();
    result
        .runtime
        .block_on(client.push_referrers(name, result.store, &pairs))
        .into_diagnostic()
        .wrap_err_with(|| format!("pushing the attestations of {name} as referrers"))?;
    if let Some(step) = step {
        for a in artifacts {
            step.done_item(format!(
                "pushing attestation artifact {} for {}",
                a.manifest.digest, a.subject.digest
            ));
        }
    }
    Ok(())
}

/// Pushes the image to `name` (by digest only with `push-by-digest`, for `imagetools create`
/// to merge later). The manifest goes up last, inside the same call: the layers' phase ends
/// when the call returns, the manifest's is named then.
fn push_one(
    result: &BuildResult<'_>,
    root: &kiln_oci::Descriptor,
    name: &kiln_oci::Reference,
    by_digest: bool,
    step: Option<&ExportStep>,
) -> Result<()> {
    let target = if by_digest {
        name.with_digest(root.digest.clone())
    } else {
        name.clone()
    };
    tracing::debug!(target = %target, root = %root.digest, "pushing");
    let client = result.req.registry.client();
    let progress = step.map(|s| PushProgress::new(s.item("pushing layers")));
    // Layers that came from an imported cache on this registry are mounted from it.
    let mount_from = result
        .mount_from
        .iter()
        .find(|r| r.registry() == name.registry() && r.repository() != name.repository())
        .map(|r| r.repository().to_string());
    let none = std::collections::BTreeSet::new();
    let store = crate::remote_cache::export::KnownBlobs {
        inner: result.store,
        known: result.remote_blobs.unwrap_or(&none),
    };
    let pushed = result.runtime.block_on(push(
        &client,
        &target,
        root,
        &store,
        &PushOptions {
            concurrency: result.req.registry.concurrency(),
            mount_from,
        },
        match &progress {
            Some(p) => p as &dyn Progress,
            None => &NoProgress,
        },
    ));
    // A failed push leaves its phase unfinished; the step reports the error.
    if let (Some(p), true) = (progress, pushed.is_ok()) {
        p.finish();
    }
    let digest = pushed
        .into_diagnostic()
        .wrap_err_with(|| format!("pushing {target}"))?;
    if let Some(step) = step {
        step.done_item(format!("pushing manifest for {name}@{digest}"));
    }
    Ok(())
}
