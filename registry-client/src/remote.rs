//! A repository of a registry as an image source and sink of the vocabulary (`kiln_oci`), so
//! pulls, copies and `imagetools create` find what to move with the one walk
//! (`kiln_oci::walk`) that every other store uses.
//!
//! The traits are synchronous (most stores are files) and the client is async: a [`Remote`]
//! holds a runtime handle and blocks on it, so its trait methods run on blocking threads
//! (`spawn_blocking`, or a thread outside the runtime), never on a runtime worker.
//! [`Remote::walk`] does that for async callers. Async twins of the traits would need a second
//! walk; the walk only reads manifests and asks which blobs exist (a few small requests, the
//! latter in parallel), while the blob transfers of pull, push and copy stay async and parallel.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use kiln_oci::store::{io_to_error, write_file_from, ImageSink, ImageSource, MAX_DOCUMENT_SIZE};
use kiln_oci::walk::{may_refer, Partial};
use kiln_oci::{Descriptor, Digest, Manifest, Reference};

use crate::client::{RegistryClient, Scope};
use crate::error::{Error, Result};

/// Manifests kept in memory per [`Remote`] (beyond this they are fetched again when needed).
const MAX_CACHED: usize = 64 * 1024 * 1024;

/// Blobs asked about at once (HEAD requests: a 50-layer image is asked about in 4 rounds).
const HEAD_CONCURRENCY: usize = 16;

/// One repository of a registry, read and written as an image store. Cheap to clone (clones
/// share the manifests fetched or written so far).
#[derive(Clone)]
pub struct Remote {
    client: RegistryClient,
    repo: Reference,
    handle: tokio::runtime::Handle,
    staging: PathBuf,
    manifests: Arc<Mutex<Manifests>>,
}

/// Manifests fetched or written, by digest, with their total size.
#[derive(Default)]
struct Manifests {
    bytes: HashMap<Digest, Arc<[u8]>>,
    total: usize,
}

impl Remote {
    /// The repository of `repo` (its tag or digest is not used) through `client`, blocking on
    /// `handle` in the trait methods. Blobs read through [`ImageSource::open_blob`] are
    /// downloaded to the system's temporary directory first.
    pub fn new(client: RegistryClient, repo: &Reference, handle: tokio::runtime::Handle) -> Self {
        Remote {
            client,
            repo: repo.clone(),
            handle,
            staging: std::env::temp_dir(),
            manifests: Arc::default(),
        }
    }

    /// Downloads blobs read through [`ImageSource::open_blob`], and stages blobs written, in
    /// `dir` instead.
    pub fn staging_in(mut self, dir: &Path) -> Self {
        self.staging = dir.to_path_buf();
        self
    }

    /// The repository.
    pub fn reference(&self) -> &Reference {
        &self.repo
    }

    /// The client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// GETs the manifest or index `r` names (a tag or digest of this repository) and keeps
    /// it: its descriptor, with the media type the document or the registry gives.
    pub async fn fetch_root(&self, r: &Reference) -> Result<Descriptor> {
        let fetched = self.client.get_manifest(r).await?;
        let (_, media_type) = Manifest::parse(
            &r.to_string(),
            &fetched.bytes,
            fetched.content_type.as_deref(),
        )?;
        let desc = Descriptor::new(&media_type, fetched.digest, fetched.bytes.len() as u64);
        self.keep(&desc.digest, fetched.bytes.into());
        Ok(desc)
    }

    /// Keeps `bytes` as the manifest `digest` (already fetched elsewhere), so it is not
    /// fetched again; refused when they are not that digest's.
    pub fn remember(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(Error::Oci(kiln_oci::Error::Verification {
                what: format!("manifest {}@{digest}", self.repo.name()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            }));
        }
        self.keep(digest, bytes.into());
        Ok(())
    }

    fn keep(&self, digest: &Digest, bytes: Arc<[u8]>) {
        let Ok(mut m) = self.manifests.lock() else {
            return;
        };
        if m.total + bytes.len() <= MAX_CACHED && !m.bytes.contains_key(digest) {
            m.total += bytes.len();
            m.bytes.insert(digest.clone(), bytes);
        }
    }

    fn kept(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        self.manifests.lock().ok()?.bytes.get(digest).cloned()
    }

    /// The bytes of the manifest or index `desc`: kept, or fetched by digest (which the
    /// client verifies).
    pub async fn manifest(&self, desc: &Descriptor) -> Result<Arc<[u8]>> {
        if let Some(b) = self.kept(&desc.digest) {
            return Ok(b);
        }
        let fetched = self
            .client
            .get_manifest_as(&self.repo, desc.digest.as_ref())
            .await?;
        let bytes: Arc<[u8]> = fetched.bytes.into();
        self.keep(&desc.digest, bytes.clone());
        Ok(bytes)
    }

    /// Whether the repository holds `digest`, as a blob or as a manifest (HEAD requests).
    pub async fn contains(&self, digest: &Digest, scope: &Scope) -> Result<bool> {
        if self.kept(digest).is_some() || self.client.blob_exists(&self.repo, digest, scope).await?
        {
            return Ok(true);
        }
        Ok(self
            .client
            .head_manifest(&self.repo.with_digest(digest.clone()))
            .await?
            .is_some())
    }

    /// Every blob reachable from `root` (`kiln_oci::walk::walk`, children before parents,
    /// manifests read and verified), for async callers: the walk runs on a blocking thread.
    /// A blob the repository lacks is reported as the registry answered: 404 for it.
    pub async fn walk(&self, root: &Descriptor, partial: Partial) -> Result<Vec<Descriptor>> {
        let (me, root) = (self.clone(), root.clone());
        let walked = tokio::task::spawn_blocking(move || kiln_oci::walk::walk(&me, &root, partial))
            .await
            .map_err(|e| Error::io("walking the image", std::io::Error::other(e)))?;
        walked.map_err(|e| match e {
            kiln_oci::Error::Missing { digest, .. } => Error::Registry {
                reference: format!("{}@{digest}", self.repo.name()),
                registry: self.repo.registry().to_string(),
                status: 404,
                errors: Vec::new(),
            },
            other => from_oci(other),
        })
    }

    /// The reference `name` gives in this repository: a digest, a tag, or a full reference
    /// of this repository.
    fn named(&self, name: &str) -> Result<Reference> {
        if let Ok(d) = Digest::parse(name) {
            return Ok(self.repo.with_digest(d));
        }
        let full = if name.contains('/') {
            Reference::parse(name)?
        } else {
            Reference::parse(&format!("{}:{name}", self.repo.name()))?
        };
        if full.registry() != self.repo.registry() || full.repository() != self.repo.repository() {
            return Err(Error::Oci(kiln_oci::Error::InvalidReference {
                input: name.to_string(),
                reason: format!("not of repository {}", self.repo.name()),
            }));
        }
        Ok(full)
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> kiln_oci::Result<T> {
        self.handle.block_on(f).map_err(to_oci)
    }

    /// Downloads a blob to an anonymous file in the staging directory (the download resumes
    /// and verifies; the file goes away when the reader is dropped).
    async fn download(&self, desc: &Descriptor) -> Result<std::fs::File> {
        let tmp = tempfile::NamedTempFile::new_in(&self.staging)
            .map_err(|e| Error::io(format!("staging in {}", self.staging.display()), e))?;
        self.client
            .fetch_blob(&self.repo, desc, tmp.path(), &|_| {})
            .await?;
        std::fs::File::open(tmp.path())
            .map_err(|e| Error::io(format!("opening {}", tmp.path().display()), e))
    }

    /// PUTs the manifest `bytes` by its digest, and keeps it.
    async fn put_document(&self, desc: &Descriptor, bytes: Vec<u8>) -> Result<()> {
        let (_, media_type) =
            Manifest::parse(desc.digest.as_ref(), &bytes, Some(&desc.media_type))?;
        self.client
            .put_manifest(
                &self.repo.with_digest(desc.digest.clone()),
                &bytes,
                &media_type,
            )
            .await?;
        self.keep(&desc.digest, bytes.into());
        Ok(())
    }

    /// Stages a blob from `data` (verified at its end) and uploads it.
    fn upload(&self, desc: &Descriptor, data: &mut dyn Read) -> kiln_oci::Result<()> {
        let context = format!("staging blob {}", desc.digest);
        let tmp = tempfile::NamedTempFile::new_in(&self.staging)
            .map_err(|e| kiln_oci::Error::store(context.clone(), e))?;
        write_file_from(tmp.path(), data, &context)?;
        let open = || std::fs::File::open(tmp.path());
        self.block_on(
            self.client
                .push_blob(&self.repo, desc, &open, None, &|_| {}),
        )?;
        Ok(())
    }
}

impl ImageSource for Remote {
    fn resolve(&self, name: &str) -> kiln_oci::Result<Descriptor> {
        let r = self.named(name).map_err(to_oci)?;
        self.block_on(self.fetch_root(&r))
    }

    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        self.block_on(self.contains(digest, &Scope::pull(self.repo.repository())))
    }

    fn has_blobs(&self, digests: &[Digest]) -> kiln_oci::Result<Vec<bool>> {
        let scope = Scope::pull(self.repo.repository());
        self.block_on(
            futures_util::stream::iter(digests)
                .map(|d| self.contains(d, &scope))
                .buffered(HEAD_CONCURRENCY)
                .try_collect(),
        )
    }

    fn open_blob(&self, desc: &Descriptor) -> kiln_oci::Result<Box<dyn Read + '_>> {
        if may_refer(desc) || self.kept(&desc.digest).is_some() {
            let bytes = self.block_on(self.manifest(desc))?;
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        Ok(Box::new(self.block_on(self.download(desc))?))
    }
}

impl ImageSink for Remote {
    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        self.block_on(self.contains(digest, &Scope::push(self.repo.repository(), &[])))
    }

    fn write_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> kiln_oci::Result<()> {
        if !may_refer(desc) {
            return self.upload(desc, data);
        }
        // Manifests go to the manifest endpoint, by digest.
        let mut bytes = Vec::new();
        data.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_to_error(e, &format!("reading manifest {}", desc.digest)))?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(kiln_oci::Error::TooLarge {
                what: "manifest".into(),
                digest: desc.digest.clone(),
                size: bytes.len() as u64,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(kiln_oci::Error::Verification {
                what: format!("manifest {}", desc.digest),
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.block_on(self.put_document(desc, bytes))
    }

    fn tag(&self, name: &str, root: &Descriptor) -> kiln_oci::Result<()> {
        let r = self.named(name).map_err(to_oci)?;
        self.block_on(async {
            let bytes = self.manifest(root).await?;
            let (_, media_type) = Manifest::parse(&r.to_string(), &bytes, Some(&root.media_type))?;
            self.client.put_manifest(&r, &bytes, &media_type).await
        })?;
        Ok(())
    }
}

/// A registry error as a store error of the vocabulary (its own errors pass as they are).
fn to_oci(e: Error) -> kiln_oci::Error {
    match e {
        Error::Oci(inner) => inner,
        other => kiln_oci::Error::store("registry request failed", other),
    }
}

/// Back from [`to_oci`]: the registry error a store error carries, so callers see its kind
/// (an authentication failure, a status) and the CLI its hint.
pub fn from_oci(e: kiln_oci::Error) -> Error {
    match e {
        kiln_oci::Error::Store { context, source } => match source.downcast::<Error>() {
            Ok(inner) => *inner,
            Err(source) => Error::Oci(kiln_oci::Error::Store { context, source }),
        },
        other => Error::Oci(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_keep_their_kind_through_the_vocabulary() {
        let denied = Error::Auth {
            reference: "r".into(),
            registry: "example.com".into(),
            code: "UNAUTHORIZED".into(),
            message: "m".into(),
            scope: "repository:r:pull".into(),
            anonymous: true,
        };
        assert!(matches!(
            from_oci(to_oci(denied)),
            Error::Auth {
                anonymous: true,
                ..
            }
        ));
        let missing = kiln_oci::Error::Missing {
            digest: Digest::of(b"x"),
            what: "layer".into(),
        };
        assert!(matches!(
            from_oci(to_oci(Error::Oci(missing))),
            Error::Oci(kiln_oci::Error::Missing { .. })
        ));
    }
}
