//! Pull: tag -> manifest or index -> platform -> blobs, downloaded in parallel and verified
//! while streaming; blobs already in the store are skipped.

use crate::client::RegistryClient;
use crate::error::{Error, Result};
use crate::progress::{BlobStatus, Progress};
use crate::store::BlobStore;
use futures_util::TryStreamExt;
use kiln_oci::Digest;
use kiln_oci::Reference;
use kiln_oci::{Descriptor, ImageManifest, Manifest, Platform};
use std::collections::BTreeSet;

/// Which images of an index to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// This machine's platform.
    Host,
    /// One given platform.
    One(Platform),
    /// Every manifest of the index (the index is kept).
    All,
}

/// Pull settings.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform choice.
    pub platforms: PlatformSelection,
    /// Parallel blob downloads.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platforms: PlatformSelection::Host,
            concurrency: 4,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The descriptor to tag locally: the platform's manifest, or the index with `All`.
    pub root: Descriptor,
    /// Digest of what the registry serves under the reference (the index when there is one).
    pub repo_digest: Digest,
    /// The image manifests stored.
    pub images: Vec<(Descriptor, ImageManifest)>,
}

/// Pulls `r` into `store`.
pub async fn pull(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PulledImage> {
    let what = r.to_string();
    let fetched = client.get_manifest(r).await?;
    tracing::debug!(reference = %r, digest = %fetched.digest, "manifest fetched");
    let (manifest, media_type) =
        Manifest::parse(&what, &fetched.bytes, fetched.content_type.as_deref())?;
    let root_desc = Descriptor {
        media_type: media_type.clone(),
        digest: fetched.digest.clone(),
        size: fetched.bytes.len() as u64,
        platform: None,
        annotations: None,
        urls: None,
        artifact_type: None,
    };
    match manifest {
        Manifest::Image(m) => {
            pull_image(client, r, store, &m, opts.concurrency, progress).await?;
            store.write_blob(&fetched.digest, &fetched.bytes)?;
            Ok(PulledImage {
                root: root_desc.clone(),
                repo_digest: fetched.digest,
                images: vec![(root_desc, *m)],
            })
        }
        Manifest::Index(idx) => {
            let chosen: Vec<Descriptor> = match &opts.platforms {
                PlatformSelection::All => idx.manifests.clone(),
                sel => {
                    let want = match sel {
                        PlatformSelection::One(p) => p.clone(),
                        _ => Platform::host(),
                    };
                    let d = idx.select(&want).ok_or_else(|| Error::NoMatchingPlatform {
                        reference: what.clone(),
                        platform: want.to_string(),
                        available: idx.platforms(),
                    })?;
                    vec![d.clone()]
                }
            };
            let mut images = Vec::new();
            for d in &chosen {
                let child = client.get_manifest_as(r, d.digest.as_ref()).await?;
                let (m, _) = Manifest::parse(
                    &format!("{}@{}", r.name(), d.digest),
                    &child.bytes,
                    Some(&d.media_type),
                )?;
                match m {
                    Manifest::Image(m) => {
                        pull_image(client, r, store, &m, opts.concurrency, progress).await?;
                        store.write_blob(&child.digest, &child.bytes)?;
                        images.push((d.clone(), *m));
                    }
                    Manifest::Index(_) => {
                        return Err(Error::Oci(kiln_oci::Error::BadManifest {
                            reference: what.clone(),
                            reason: "nested indexes are not supported".into(),
                        }))
                    }
                }
            }
            let root = if opts.platforms == PlatformSelection::All {
                store.write_blob(&fetched.digest, &fetched.bytes)?;
                root_desc
            } else {
                let mut d = chosen.into_iter().next().ok_or_else(|| {
                    Error::Oci(kiln_oci::Error::BadManifest {
                        reference: what.clone(),
                        reason: "empty index".into(),
                    })
                })?;
                d.annotations = None;
                d
            };
            Ok(PulledImage {
                root,
                repo_digest: fetched.digest,
                images,
            })
        }
    }
}

/// Downloads the config and layers of one image manifest.
pub async fn pull_image(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    m: &ImageManifest,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let blobs: Vec<&Descriptor> = std::iter::once(&m.config)
        .chain(m.layers.iter())
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    futures_util::stream::iter(blobs.into_iter().map(Ok::<_, Error>))
        .try_for_each_concurrent(concurrency.max(1), |d| async move {
            pull_blob(client, r, store, d, progress).await
        })
        .await
}

/// Downloads one blob unless the store has it.
pub async fn pull_blob(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    d: &Descriptor,
    progress: &dyn Progress,
) -> Result<()> {
    if store.has_blob(&d.digest) {
        progress.done(&d.digest, BlobStatus::Exists);
        return Ok(());
    }
    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) && d.media_type.contains("foreign") {
        // Foreign layers (Windows base images) are not distributable; skip like docker does.
        return Ok(());
    }
    progress.start(&d.digest, d.size);
    let tmp = store.temp_path()?;
    let digest = d.digest.clone();
    client
        .fetch_blob(r, d, &tmp, &|n| progress.advance(&digest, n))
        .await?;
    store.commit_blob(&d.digest, &tmp)?;
    progress.done(&d.digest, BlobStatus::Downloaded);
    Ok(())
}
