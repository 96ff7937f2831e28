//! Pull: tag -> manifest or index -> platform -> the blobs the one walk reaches, downloaded in
//! parallel and verified while streaming; blobs already in the store are skipped.

use crate::client::RegistryClient;
use crate::error::{Error, Result};
use crate::progress::{BlobStatus, Progress};
use crate::remote::Remote;
use crate::store::BlobStore;
use futures_util::TryStreamExt;
use kiln_oci::media_type::is_index;
use kiln_oci::walk::{may_refer, Partial};
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

/// Pulls `r` into `store`: the manifest or index `r` names, the image the platform selection
/// picks from an index (or all of them), then every blob the one walk (`kiln_oci::walk`)
/// reaches from there, downloaded in parallel; each manifest is stored after its blobs.
pub async fn pull(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PulledImage> {
    let source = Remote::new(client.clone(), r, tokio::runtime::Handle::current());
    let top = source.fetch_root(r).await?;
    tracing::debug!(reference = %r, digest = %top.digest, "manifest fetched");
    let root = select(&source, r, &top, &opts.platforms).await?;
    let walked = source.walk(&root, Partial::Refuse).await?;
    let (manifests, blobs): (Vec<&Descriptor>, Vec<&Descriptor>) =
        walked.iter().partition(|d| may_refer(d));
    pull_blobs(client, r, store, &blobs, opts.concurrency, progress).await?;
    let mut images = Vec::new();
    for m in manifests {
        let bytes = source.manifest(m).await?;
        let what = format!("{}@{}", r.name(), m.digest);
        if let (Manifest::Image(image), _) = Manifest::parse(&what, &bytes, Some(&m.media_type))? {
            images.push((m.clone(), *image));
        }
        store.write_blob(&m.digest, &bytes)?;
    }
    Ok(PulledImage {
        root,
        repo_digest: top.digest,
        images,
    })
}

/// What a pull stores and tags: `top` itself (an image, or an index with `All`), or the
/// image of the index `top` that matches the platform asked for.
async fn select(
    source: &Remote,
    r: &Reference,
    top: &Descriptor,
    platforms: &PlatformSelection,
) -> Result<Descriptor> {
    if !is_index(&top.media_type) || *platforms == PlatformSelection::All {
        return Ok(top.clone());
    }
    let what = r.to_string();
    let bytes = source.manifest(top).await?;
    let Manifest::Index(idx) = Manifest::parse(&what, &bytes, Some(&top.media_type))?.0 else {
        return Ok(top.clone());
    };
    let want = match platforms {
        PlatformSelection::One(p) => p.clone(),
        _ => Platform::host(),
    };
    let mut chosen = idx
        .select(&want)
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: what.clone(),
            platform: want.to_string(),
            available: idx.platforms(),
        })?
        .clone();
    if is_index(&chosen.media_type) {
        return Err(Error::Oci(kiln_oci::Error::BadManifest {
            reference: what,
            reason: "nested indexes are not supported".into(),
        }));
    }
    chosen.annotations = None;
    Ok(chosen)
}

/// Downloads what refers to `root` in `r`'s repository ([`RegistryClient::referrer_tree`]:
/// attestations, signatures) into `store`, each artifact's blobs before its manifest. Returns
/// each artifact's descriptor (as its referrers index lists it) with its subject, subjects
/// first; artifacts that are not image manifests are left out.
pub async fn pull_referrers(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    root: &Digest,
    progress: &dyn Progress,
) -> Result<Vec<(Descriptor, Digest)>> {
    let mut out = Vec::new();
    for (desc, subject) in client.referrer_tree(r, root).await? {
        let m = client
            .get_manifest(&r.with_digest(desc.digest.clone()))
            .await?;
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&m.bytes) else {
            tracing::debug!(referrer = %desc.digest, "not an image manifest: not pulled");
            continue;
        };
        pull_image(client, r, store, &manifest, 4, progress).await?;
        store.write_blob(&desc.digest, &m.bytes)?;
        out.push((desc, subject));
    }
    Ok(out)
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
    let blobs: Vec<&Descriptor> = std::iter::once(&m.config).chain(m.layers.iter()).collect();
    pull_blobs(client, r, store, &blobs, concurrency, progress).await
}

/// Downloads blobs (each once) in parallel.
async fn pull_blobs(
    client: &RegistryClient,
    r: &Reference,
    store: &dyn BlobStore,
    blobs: &[&Descriptor],
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let blobs = blobs
        .iter()
        .copied()
        .filter(|d| seen.insert(d.digest.clone()));
    futures_util::stream::iter(blobs.map(Ok::<_, Error>))
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
