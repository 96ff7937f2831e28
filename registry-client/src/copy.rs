//! Registry-to-registry copy of a whole image or index (all platforms), staged on disk so memory
//! stays bounded, mounting blobs when source and destination share a registry.

use crate::client::RegistryClient;
use crate::error::Result;
use crate::progress::Progress;
use crate::pull::{self, PlatformSelection, PullOptions};
use crate::push::{self, PushOptions};
use crate::store::BlobDir;
use kiln_oci::Digest;
use kiln_oci::Reference;

/// Copies `src` to `dst` with every platform; returns the pushed root digest.
pub async fn copy(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    staging: &std::path::Path,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<Digest> {
    let store = BlobDir::new(staging)?;
    let same_registry = src.registry() == dst.registry();
    let pulled = if same_registry {
        // Only manifests and configs are needed locally; layers get mounted.
        pull_manifests_only(client, src, &store).await?
    } else {
        pull::pull(
            client,
            src,
            &store,
            &PullOptions {
                platforms: PlatformSelection::All,
                concurrency,
            },
            progress,
        )
        .await?
        .root
    };
    let opts = PushOptions {
        concurrency,
        mount_from: same_registry.then(|| src.repository().to_string()),
    };
    if same_registry {
        push_mounting(client, src, dst, &pulled, &store, &opts, progress).await
    } else {
        push::push(client, dst, &pulled, &store, &opts, progress).await
    }
}

async fn pull_manifests_only(
    client: &RegistryClient,
    src: &Reference,
    store: &BlobDir,
) -> Result<kiln_oci::Descriptor> {
    use crate::store::BlobStore;
    use kiln_oci::{Descriptor, Manifest};
    let what = src.to_string();
    let f = client.get_manifest(src).await?;
    let (m, mt) = Manifest::parse(&what, &f.bytes, f.content_type.as_deref())?;
    store.write_blob(&f.digest, &f.bytes)?;
    if let Manifest::Index(idx) = m {
        for d in &idx.manifests {
            let c = client.get_manifest_as(src, d.digest.as_ref()).await?;
            store.write_blob(&c.digest, &c.bytes)?;
        }
    }
    Ok(Descriptor {
        media_type: mt,
        digest: f.digest,
        size: f.bytes.len() as u64,
        platform: None,
        annotations: None,
        urls: None,
        artifact_type: None,
    })
}

/// Pushes manifests from `store` while every blob is mounted from `opts.mount_from`.
async fn push_mounting(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    root: &kiln_oci::Descriptor,
    store: &BlobDir,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    use crate::store::BlobStore;
    use kiln_oci::Manifest;
    let what = dst.to_string();
    let bytes = store.read_blob(&root.digest)?;
    let (m, mt) = Manifest::parse(&what, &bytes, Some(&root.media_type))?;
    let mut images = Vec::new();
    match m {
        Manifest::Image(im) => images.push((None, im)),
        Manifest::Index(idx) => {
            for d in idx.manifests {
                let b = store.read_blob(&d.digest)?;
                if let (Manifest::Image(im), cmt) = Manifest::parse(&what, &b, Some(&d.media_type))?
                {
                    images.push((Some((d.digest.clone(), b, cmt)), im));
                }
            }
        }
    }
    for (child, im) in images {
        for d in im.layers.iter().chain(std::iter::once(&im.config)) {
            progress.start(&d.digest, d.size);
            let staged = |digest: &Digest| {
                let path = store.blob_path(digest);
                move || std::fs::File::open(&path)
            };
            let mounted = client
                .push_blob(
                    dst,
                    d,
                    &staged(&d.digest),
                    opts.mount_from.as_deref(),
                    &|_| {},
                )
                .await;
            let outcome = match mounted {
                Ok(o) => o,
                // The registry refused the mount and the blob was not staged: fetch it, upload it.
                Err(crate::error::Error::Io { .. }) => {
                    crate::pull::pull_blob(client, src, store, d, &crate::progress::NoProgress)
                        .await?;
                    client
                        .push_blob(dst, d, &staged(&d.digest), None, &|_| {})
                        .await?
                }
                Err(e) => return Err(e),
            };
            progress.done(
                &d.digest,
                match outcome {
                    crate::client::UploadOutcome::Exists => crate::progress::BlobStatus::Exists,
                    crate::client::UploadOutcome::Mounted => crate::progress::BlobStatus::Mounted,
                    crate::client::UploadOutcome::Pushed => crate::progress::BlobStatus::Pushed,
                },
            );
        }
        if let Some((digest, b, cmt)) = child {
            client
                .put_manifest(&dst.with_digest(digest), &b, &cmt)
                .await?;
        }
    }
    client.put_manifest(dst, &bytes, &mt).await
}
