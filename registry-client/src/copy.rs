//! Registry-to-registry copy of a whole image or index (all platforms): the one walk of the
//! source repository, then every blob in parallel — mounted when source and destination share
//! a registry, else staged on disk one blob at a time so memory stays bounded — then each
//! manifest after its blobs, the root last.

use crate::client::{RegistryClient, Scope, UploadOutcome};
use crate::error::{Error, Result};
use crate::progress::{BlobStatus, NoProgress, Progress};
use crate::push::put_manifests;
use crate::remote::Remote;
use futures_util::TryStreamExt;
use kiln_oci::walk::{may_refer, Partial};
use kiln_oci::{Descriptor, Digest, ImageManifest, Reference};
use std::path::Path;

/// Copies `src` to `dst` with every platform; returns the pushed root digest.
pub async fn copy(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    staging: &Path,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<Digest> {
    let source = Remote::new(client.clone(), src, tokio::runtime::Handle::current());
    let root = source.fetch_root(src).await?;
    copy_root(&source, &root, dst, staging, concurrency, progress).await
}

/// Copies the image or index `root` of `source`, with everything it refers to, to `dst` (its
/// tag, or by digest); returns the pushed root digest. Blobs are staged in `staging`.
pub async fn copy_root(
    source: &Remote,
    root: &Descriptor,
    dst: &Reference,
    staging: &Path,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<Digest> {
    let walked = source.walk(root, Partial::Refuse).await?;
    let (manifests, blobs): (Vec<&Descriptor>, Vec<&Descriptor>) =
        walked.iter().partition(|d| may_refer(d));
    let src = source.reference();
    let mount_from = (src.registry() == dst.registry()).then(|| src.repository());
    std::fs::create_dir_all(staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let client = source.client();
    futures_util::stream::iter(blobs.into_iter().map(Ok::<_, Error>))
        .try_for_each_concurrent(concurrency.max(1), |d| async move {
            progress.start(&d.digest, d.size);
            let staged = staging.join(d.digest.hex());
            let outcome = copy_blob(client, src, d, dst, mount_from, &staged, progress).await;
            let _ = std::fs::remove_file(&staged);
            progress.done(
                &d.digest,
                match outcome? {
                    UploadOutcome::Exists => BlobStatus::Exists,
                    UploadOutcome::Mounted => BlobStatus::Mounted,
                    UploadOutcome::Pushed => BlobStatus::Pushed,
                },
            );
            Ok(())
        })
        .await?;
    let mut docs = Vec::with_capacity(manifests.len());
    for m in manifests {
        docs.push((m, source.manifest(m).await?));
    }
    put_manifests(client, dst, root, docs).await
}

/// Copies what refers to the image or index `root` of `src` (its referrers and those of its
/// manifests, and theirs: attestations, signatures, SBOMs; [`RegistryClient::referrer_tree`])
/// to `dst`'s repository: each artifact's blobs, then the artifact as a referrer (the
/// referrers API, else the fallback tag). Digests are kept, so the artifacts' subjects are
/// those `copy` pushed. Returns the number of artifacts copied.
pub async fn copy_referrers(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    root: &Digest,
    staging: &Path,
) -> Result<usize> {
    let tree = client.referrer_tree(src, root).await?;
    let mount_from = (src.registry() == dst.registry()).then(|| src.repository());
    std::fs::create_dir_all(staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let mut copied = 0;
    for (desc, subject) in &tree {
        let at = src.with_digest(desc.digest.clone());
        let m = client.get_manifest(&at).await?;
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&m.bytes) else {
            tracing::debug!(referrer = %at, "not an image manifest: not copied");
            continue;
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let staged = staging.join(blob.digest.hex());
            let outcome = copy_blob(client, src, blob, dst, mount_from, &staged, &NoProgress).await;
            let _ = std::fs::remove_file(&staged);
            outcome?;
        }
        client.push_referrer(dst, &m.bytes, desc, subject).await?;
        copied += 1;
    }
    Ok(copied)
}

/// Moves one blob from `src` to `dst`: a cross-repository mount on one registry, else (or
/// when the registry refuses the mount) downloaded to `staged` and uploaded.
async fn copy_blob(
    client: &RegistryClient,
    src: &Reference,
    d: &Descriptor,
    dst: &Reference,
    mount_from: Option<&str>,
    staged: &Path,
    progress: &dyn Progress,
) -> Result<UploadOutcome> {
    let open = || std::fs::File::open(staged);
    if mount_from.is_some() {
        match client.push_blob(dst, d, &open, mount_from, &|_| {}).await {
            // A registry that refuses the mount opens an upload instead, which finds nothing
            // staged: fetch the blob and upload it.
            Err(Error::Io { .. }) => {}
            other => return other,
        }
    } else if client
        .blob_exists(dst, &d.digest, &Scope::push(dst.repository(), &[]))
        .await?
    {
        return Ok(UploadOutcome::Exists);
    }
    client
        .fetch_blob(src, d, staged, &|n| progress.advance(&d.digest, n))
        .await?;
    client.push_blob(dst, d, &open, None, &|_| {}).await
}
