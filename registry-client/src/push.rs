//! Push: blobs in parallel (HEAD existence checks, cross-repo mounts, streamed uploads), each
//! manifest after its blobs, the index last.

use crate::client::{RegistryClient, UploadOutcome};
use crate::error::{Error, Result};
use crate::progress::{BlobStatus, Progress};
use crate::store::{BlobStore, Blobs};
use futures_util::TryStreamExt;
use kiln_oci::store::read_verified;
use kiln_oci::walk::{may_refer, walk, Partial};
use kiln_oci::Digest;
use kiln_oci::Reference;
use kiln_oci::{Descriptor, Manifest};
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

/// Pushes the image or index `root` from `store` to `target` (its tag, or by digest): every
/// blob reachable from it (the one walk of `kiln_oci::walk`, which reads and verifies each
/// manifest) in parallel, then each manifest after its blobs, children by digest, the root
/// last. Returns the digest of the root manifest.
pub async fn push(
    client: &RegistryClient,
    target: &Reference,
    root: &Descriptor,
    store: &dyn BlobStore,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    push_skipping(
        client,
        target,
        root,
        store,
        opts,
        &BTreeSet::new(),
        progress,
    )
    .await
}

/// [`push`], except for the blobs in `known`: listed by a manifest read from the target
/// repository, they are neither checked nor uploaded (nor read: `store` may lack them, as
/// long as its `has_blob` says it has them).
pub async fn push_skipping(
    client: &RegistryClient,
    target: &Reference,
    root: &Descriptor,
    store: &dyn BlobStore,
    opts: &PushOptions,
    known: &BTreeSet<Digest>,
    progress: &dyn Progress,
) -> Result<Digest> {
    let source = Blobs(store);
    let all = walk(&source, root, Partial::Refuse)?;
    let (manifests, blobs): (Vec<&Descriptor>, Vec<&Descriptor>) =
        all.iter().partition(|d| may_refer(d));
    let blobs: Vec<&Descriptor> = blobs
        .into_iter()
        .filter(|d| !known.contains(&d.digest))
        .collect();
    push_blobs(client, target, store, &blobs, opts, progress).await?;
    let docs = manifests
        .into_iter()
        .map(|m| Ok((m, read_verified(&source, m, "manifest")?)))
        .collect::<Result<Vec<_>>>()?;
    put_manifests(client, target, root, docs).await
}

/// PUTs the manifests of a walk in its order (each after its blobs): the root under `target`
/// (its tag or digest), the others by digest. Returns the root's digest.
pub(crate) async fn put_manifests<B: AsRef<[u8]>>(
    client: &RegistryClient,
    target: &Reference,
    root: &Descriptor,
    docs: Vec<(&Descriptor, B)>,
) -> Result<Digest> {
    for (m, bytes) in docs {
        let bytes = bytes.as_ref();
        let (_, media_type) = Manifest::parse(m.digest.as_ref(), bytes, Some(&m.media_type))?;
        let to = if m.digest == root.digest {
            target.clone()
        } else {
            target.with_digest(m.digest.clone())
        };
        let digest = client.put_manifest(&to, bytes, &media_type).await?;
        tracing::debug!(target = %to, digest = %digest, media_type = %media_type, "manifest pushed");
        if m.digest == root.digest {
            return Ok(digest);
        }
    }
    // The walk ends with the root.
    Err(Error::Oci(kiln_oci::Error::Missing {
        digest: root.digest.clone(),
        what: "root manifest".into(),
    }))
}

/// Uploads blobs (each once) in parallel.
async fn push_blobs(
    client: &RegistryClient,
    target: &Reference,
    store: &dyn BlobStore,
    blobs: &[&Descriptor],
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let blobs: Vec<&Descriptor> = blobs
        .iter()
        .copied()
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
