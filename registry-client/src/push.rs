//! Push: blobs in parallel (HEAD existence checks, cross-repo mounts, streamed uploads), each
//! manifest after its blobs, the index last.

use crate::client::{RegistryClient, UploadOutcome};
use crate::error::{Error, Result};
use crate::progress::{BlobStatus, Progress};
use crate::store::BlobStore;
use futures_util::TryStreamExt;
use kiln_oci::Digest;
use kiln_oci::Reference;
use kiln_oci::{Descriptor, ImageManifest, Manifest};
use std::collections::BTreeSet;

/// Push settings.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Parallel blob uploads.
    pub concurrency: usize,
    /// Repository on the same registry to mount blobs from (e.g. the source of a copy).
    pub mount_from: Option<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: 4,
            mount_from: None,
        }
    }
}

/// Pushes the image or index `root` from `store` to `target` (its tag, or by digest).
/// Returns the digest of the root manifest.
pub async fn push(
    client: &RegistryClient,
    target: &Reference,
    root: &Descriptor,
    store: &dyn BlobStore,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let what = target.to_string();
    let bytes = store.read_blob(&root.digest)?;
    let (manifest, media_type) = Manifest::parse(&what, &bytes, Some(&root.media_type))?;
    match manifest {
        Manifest::Image(m) => {
            push_image_blobs(client, target, store, &m, opts, progress).await?;
        }
        Manifest::Index(idx) => {
            for child in &idx.manifests {
                if !store.has_blob(&child.digest) {
                    return Err(Error::Oci(kiln_oci::Error::BadManifest {
                        reference: what.clone(),
                        reason: format!(
                            "index entry {} ({}) is not in the local store; pull with --all-platforms first",
                            child.digest,
                            child.platform.as_ref().map(|p| p.to_string()).unwrap_or_default()
                        ),
                    }));
                }
                let child_bytes = store.read_blob(&child.digest)?;
                let (cm, cmt) = Manifest::parse(
                    &format!("{}@{}", target.name(), child.digest),
                    &child_bytes,
                    Some(&child.media_type),
                )?;
                let Manifest::Image(cm) = cm else {
                    return Err(Error::Oci(kiln_oci::Error::BadManifest {
                        reference: what.clone(),
                        reason: "nested indexes are not supported".into(),
                    }));
                };
                push_image_blobs(client, target, store, &cm, opts, progress).await?;
                client
                    .put_manifest(
                        &target.with_digest(child.digest.clone()),
                        &child_bytes,
                        &cmt,
                    )
                    .await?;
            }
        }
    }
    let digest = client.put_manifest(target, &bytes, &media_type).await?;
    tracing::debug!(target = %target, digest = %digest, media_type = %media_type, "manifest pushed");
    Ok(digest)
}

/// Uploads the config and layers of one image.
pub async fn push_image_blobs(
    client: &RegistryClient,
    target: &Reference,
    store: &dyn BlobStore,
    m: &ImageManifest,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let blobs: Vec<&Descriptor> = m
        .layers
        .iter()
        .chain(std::iter::once(&m.config))
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    futures_util::stream::iter(blobs.into_iter().map(Ok::<_, Error>))
        .try_for_each_concurrent(opts.concurrency.max(1), |d| async move {
            push_blob(
                client,
                target,
                store,
                d,
                opts.mount_from.as_deref(),
                progress,
            )
            .await
        })
        .await
}

/// Uploads one blob from the store.
pub async fn push_blob(
    client: &RegistryClient,
    target: &Reference,
    store: &dyn BlobStore,
    d: &Descriptor,
    mount_from: Option<&str>,
    progress: &dyn Progress,
) -> Result<()> {
    progress.start(&d.digest, d.size);
    let digest = d.digest.clone();
    let open = || {
        store
            .open_blob(&digest)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let outcome = client
        .push_blob(target, d, &open, mount_from, &|n| {
            progress.advance(&digest, n)
        })
        .await?;
    tracing::debug!(target = %target, digest = %d.digest, size = d.size, outcome = ?outcome, "blob pushed");
    progress.done(
        &d.digest,
        match outcome {
            UploadOutcome::Exists => BlobStatus::Exists,
            UploadOutcome::Mounted => BlobStatus::Mounted,
            UploadOutcome::Pushed => BlobStatus::Pushed,
        },
    );
    Ok(())
}
