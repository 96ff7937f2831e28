//! The content store: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) that skopeo and umoci read as is. Tagged images are entries of
//! `index.json` annotated with `org.opencontainers.image.ref.name` = the full normalised
//! reference (`docker.io/library/busybox:latest`).
//!
//! kiln's own bookkeeping lives in the hidden `.kiln/` directory of the layout: temporary
//! ingest files (same filesystem, so renames are atomic) and the lock files.

mod error;
mod gc;
mod image_store;
mod ingest;
mod lock;
mod prefix;
mod threaded;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_oci::media_type::{ANNOTATION_REF_NAME, OCI_INDEX};
use kiln_oci::{Descriptor, Digest, ImageIndex};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::{ContentError, Result};
pub use gc::GcReport;
pub use ingest::{finish_hash, restore_hash, save_hash, BlobInfo, Expected, HashState, Ingest};
pub use lock::{LockMode, StoreLock};
pub use threaded::ThreadedWriter;

use crate::atomic_file::write_atomic;

/// The image-layout version we write.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// A tag of the store: a reference name and the descriptor it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedImage {
    /// The full normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest or index descriptor the tag resolves to (annotations included).
    pub descriptor: Descriptor,
}

/// An OCI image layout directory used as a content-addressed blob store with tags.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens the layout at `root`, creating `oci-layout`, `index.json` and `blobs/sha256/`
    /// if they are missing. An existing layout of another version is refused.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = ContentStore { root: root.into() };
        for dir in [store.blobs_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(|e| ContentError::io("create directory", &dir, e))?;
        }
        let layout_path = store.root.join("oci-layout");
        if layout_path.exists() {
            let version = read_layout_version(&layout_path)?;
            if !version.starts_with("1.") {
                return Err(ContentError::InvalidLayout {
                    path: store.root.clone(),
                    reason: format!("unsupported imageLayoutVersion {version}"),
                });
            }
        } else {
            let body = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
            write_atomic(&layout_path, &store.tmp_dir(), body.as_bytes())
                .map_err(|e| ContentError::io("write", &layout_path, e))?;
        }
        let index_path = store.index_path();
        if !index_path.exists() {
            let _guard = store.lock_index()?;
            if !index_path.exists() {
                store.write_index(&empty_index())?;
            }
        }
        Ok(store)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".kiln").join("ingest")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(digest.hex()))
    }

    /// Whether the blob is present.
    pub fn exists(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// The size of the blob, or `None` when absent.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io("stat", path, e)),
        }
    }

    /// Opens the blob for streaming reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                ContentError::io("open", path, e)
            }
        })
    }

    /// Reads a whole blob into memory (manifests, configs; stream layers with [`Self::open_blob`]).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| ContentError::io("read", self.blob_path(digest).unwrap_or_default(), e))?;
        Ok(buf)
    }

    /// Reads and parses a JSON blob (manifest, index, config).
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| ContentError::Json {
            path: self.blob_path(digest).unwrap_or_default(),
            message: e.to_string(),
        })
    }

    /// Starts a streaming write; see [`Ingest`].
    pub fn ingest(&self, expected: Expected) -> Result<Ingest> {
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| ContentError::io("create temporary file in", &tmp_dir, e))?;
        Ingest::new(tmp, self.blobs_dir(), expected)
    }

    /// Starts a write whose first `len` bytes are those of the stored blob `prefix`, copied in
    /// the kernel (`copy_file_range`), its hasher restored from `state` (the
    /// [`Ingest::hash_state`] saved when that blob was written and had `len` bytes).
    /// `None` when the blob is gone, shorter than `len`, or `state` is no hasher state.
    pub fn ingest_resumed(
        &self,
        prefix: &Digest,
        len: u64,
        state: &[u8],
    ) -> Result<Option<Ingest>> {
        let Some(hasher) = restore_hash(state) else {
            return Ok(None);
        };
        let src = match self.open_blob(prefix) {
            Ok(f) => f,
            Err(ContentError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let have = src
            .metadata()
            .map_err(|e| ContentError::io("stat", self.blob_path(prefix).unwrap_or_default(), e))?
            .len();
        if have < len {
            return Ok(None);
        }
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| ContentError::io("create temporary file in", &tmp_dir, e))?;
        let io = |e| ContentError::io("copy into", &tmp_dir, e);
        let dest = tmp.as_file().try_clone().map_err(io)?;
        // What the caller writes goes after the prefix, which a thread copies meanwhile.
        std::io::Seek::seek(tmp.as_file_mut(), std::io::SeekFrom::Start(len)).map_err(io)?;
        let copy = std::thread::Builder::new()
            .name("kiln-prefix".into())
            .spawn(move || prefix::copy_prefix(&src, &dest, len))
            .map_err(io)?;
        Ok(Some(Ingest::resumed(
            tmp,
            self.blobs_dir(),
            hasher,
            len,
            copy,
        )))
    }

    /// Where the resume index of `digest` is kept (see [`Self::put_blob_index`]).
    fn blob_index_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(".kiln").join("blobindex").join(digest.hex())
    }

    /// Keeps `bytes` beside the blob `digest`: a hint about how it was made (the layer
    /// writer's resume points), removed with the blob. Not durable: a lost or torn index only
    /// means the next blob is made from scratch.
    pub fn put_blob_index(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.blob_index_path(digest);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| ContentError::io("create directory", dir, e))?;
        }
        crate::atomic_file::write_unsynced(&path, bytes)
            .map_err(|e| ContentError::io("write", &path, e))
    }

    /// The index kept beside the blob `digest`, if there is one and the blob is still here.
    pub fn blob_index(&self, digest: &Digest) -> Option<Vec<u8>> {
        if !self.exists(digest).ok()? {
            return None;
        }
        fs::read(self.blob_index_path(digest)).ok()
    }

    /// A small named pointer under `.kiln/blobindex/by-key/` (to a blob, say); `None` removes it.
    pub fn set_blob_key(&self, key: &str, value: Option<&str>) -> Result<()> {
        let path = self.blob_key_path(key);
        match value {
            Some(v) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| ContentError::io("create directory", dir, e))?;
                }
                crate::atomic_file::write_unsynced(&path, v.as_bytes())
                    .map_err(|e| ContentError::io("write", &path, e))
            }
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ContentError::io("remove", path, e))
                }
                _ => Ok(()),
            },
        }
    }

    /// Removes the pointers of [`Self::set_blob_key`] whose blob index is gone (its blob was).
    pub(crate) fn prune_blob_keys(&self) {
        let dir = self.root.join(".kiln").join("blobindex");
        let Ok(entries) = fs::read_dir(dir.join("by-key")) else {
            return;
        };
        for e in entries.flatten() {
            let gone = fs::read_to_string(e.path())
                .ok()
                .and_then(|hex| Digest::from_hex(hex.trim()))
                .is_none_or(|d| !self.blob_index_path(&d).is_file());
            if gone {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The value of a pointer set with [`Self::set_blob_key`].
    pub fn blob_key(&self, key: &str) -> Option<String> {
        fs::read_to_string(self.blob_key_path(key)).ok()
    }

    fn blob_key_path(&self, key: &str) -> PathBuf {
        self.root
            .join(".kiln")
            .join("blobindex")
            .join("by-key")
            .join(key)
    }

    /// Stores `bytes` and returns their digest and size.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of(bytes);
        if self.exists(&digest)? {
            return Ok(BlobInfo {
                digest,
                size: bytes.len() as u64,
            });
        }
        let mut ingest = self.ingest(Expected::exact(digest, bytes.len() as u64))?;
        ingest
            .write_all(bytes)
            .map_err(|e| ContentError::io("write", self.tmp_dir(), e))?;
        ingest.commit()
    }

    /// Serialises `value` as JSON, stores it and returns a descriptor with `media_type`.
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value).map_err(|e| ContentError::Json {
            path: self.root.clone(),
            message: e.to_string(),
        })?;
        let info = self.put_bytes(&bytes)?;
        Ok(Descriptor::new(media_type, info.digest, info.size))
    }

    /// A directory on the store's filesystem for callers that download into a file of their
    /// own (the registry client streams and verifies there) and then call [`Self::commit_file`].
    pub fn ingest_dir(&self) -> PathBuf {
        self.tmp_dir()
    }

    /// Moves an already verified, fsynced file from [`Self::ingest_dir`] under `digest`
    /// (atomic rename, then the directory is fsynced). An existing blob is kept.
    pub fn commit_file(&self, digest: &Digest, tmp: &Path) -> Result<()> {
        let target = self.blob_path(digest)?;
        if target.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        fs::rename(tmp, &target).map_err(|e| ContentError::io("rename into", &target, e))?;
        crate::atomic_file::sync_parent(&target)
            .map_err(|e| ContentError::io("fsync", self.blobs_dir(), e))
    }

    /// Removes a blob; returns whether it was there. Tags are not touched.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest)?;
        // The index first: it must never outlive its blob.
        match fs::remove_file(self.blob_index_path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                let index = self.blob_index_path(digest);
                return Err(ContentError::io("remove", index, e));
            }
            _ => {}
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ContentError::io("remove", path, e)),
        }
    }

    /// Every blob in the store (files under `blobs/sha256/` named by a valid digest).
    pub fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        let dir = self.blobs_dir();
        let entries =
            fs::read_dir(&dir).map_err(|e| ContentError::io("read directory", &dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ContentError::io("read directory", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(digest) = Digest::try_from(format!("sha256:{name}")) else {
                continue;
            };
            let meta = entry
                .metadata()
                .map_err(|e| ContentError::io("stat", entry.path(), e))?;
            if meta.is_file() {
                out.push(BlobInfo {
                    digest,
                    size: meta.len(),
                });
            }
        }
        out.sort_by(|a, b| a.digest.as_ref().cmp(b.digest.as_ref()));
        Ok(out)
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(|e| ContentError::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ContentError::Json {
            path,
            message: e.to_string(),
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| ContentError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &self.tmp_dir(), &bytes)
            .map_err(|e| ContentError::io("write", &path, e))
    }

    fn lock_index(&self) -> Result<StoreLock> {
        lock::lock_file(
            &self.root.join(".kiln").join("index.lock"),
            LockMode::Exclusive,
        )
    }

    /// Read-modify-write of `index.json` under the index lock; the file is replaced atomically
    /// and only if `f` succeeds and changed it (re-tagging an unchanged rebuild writes nothing).
    pub fn update_index<R>(&self, f: impl FnOnce(&mut ImageIndex) -> Result<R>) -> Result<R> {
        let _guard = self.lock_index()?;
        let mut index = self.index()?;
        let before = index.clone();
        let r = f(&mut index)?;
        if index != before {
            self.write_index(&index)?;
        }
        Ok(r)
    }

    /// Takes the store-wide lock: builds hold it shared, garbage collection exclusive.
    /// Independent of the index lock, so tag updates work while it is held.
    pub fn lock(&self, mode: LockMode) -> Result<StoreLock> {
        lock::lock_file(&self.root.join(".kiln").join("store.lock"), mode)
    }

    /// Like [`Self::lock`] but returns `None` instead of waiting when the lock is taken.
    pub fn try_lock(&self, mode: LockMode) -> Result<Option<StoreLock>> {
        lock::try_lock_file(&self.root.join(".kiln").join("store.lock"), mode)
    }

    /// All tagged images, sorted by name.
    pub fn tags(&self) -> Result<Vec<TaggedImage>> {
        let index = self.index()?;
        let mut out: Vec<TaggedImage> = index
            .manifests
            .iter()
            .filter_map(|d| {
                ref_name(d).map(|name| TaggedImage {
                    name: name.to_string(),
                    descriptor: d.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The descriptor tagged `name`, if any.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>> {
        let index = self.index()?;
        Ok(index
            .manifests
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned())
    }

    /// Points tag `name` at `descriptor` (replacing any previous target). The descriptor's
    /// blob must already be in the store.
    pub fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        if !self.exists(&descriptor.digest)? {
            return Err(ContentError::NotFound(descriptor.digest.clone()));
        }
        let entry = descriptor
            .clone()
            .with_annotation(ANNOTATION_REF_NAME, name);
        self.update_index(|index| {
            let manifests = &mut index.manifests;
            // A re-pointed tag keeps its place, so setting it to what it was changes nothing.
            match manifests.iter().position(|d| ref_name(d) == Some(name)) {
                Some(at) => {
                    manifests.retain(|d| ref_name(d) != Some(name) || *d == entry);
                    if !manifests.contains(&entry) {
                        manifests.insert(at.min(manifests.len()), entry);
                    }
                }
                None => manifests.push(entry),
            }
            Ok(())
        })
    }

    /// Removes tag `name`; returns whether it existed. Blobs are not touched.
    pub fn remove_tag(&self, name: &str) -> Result<bool> {
        self.update_index(|index| {
            let manifests = &mut index.manifests;
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            let removed = manifests.len() != before;
            Ok(removed)
        })
    }
}

impl ContentStore {
    /// The unnamed entries of `index.json`: images kept without a tag (an untagged build,
    /// an archive image without a name), reachable by ID and kept by garbage collection.
    pub fn untagged(&self) -> Result<Vec<Descriptor>> {
        Ok(self
            .index()?
            .manifests
            .iter()
            .filter(|d| ref_name(d).is_none())
            .cloned()
            .collect())
    }

    /// Keeps `descriptor` as an unnamed entry (once). The blob must already be in the store.
    pub fn add_untagged(&self, descriptor: &Descriptor) -> Result<()> {
        if !self.exists(&descriptor.digest)? {
            return Err(ContentError::NotFound(descriptor.digest.clone()));
        }
        self.update_index(|index| {
            let manifests = &mut index.manifests;
            if !manifests
                .iter()
                .any(|d| ref_name(d).is_none() && d.digest == descriptor.digest)
            {
                manifests.push(descriptor.clone());
            }
            Ok(())
        })
    }

    /// Drops the unnamed entries for `digest`; returns whether there were any. Blobs are not touched.
    pub fn remove_untagged(&self, digest: &Digest) -> Result<bool> {
        self.update_index(|index| {
            let manifests = &mut index.manifests;
            let before = manifests.len();
            manifests.retain(|d| ref_name(d).is_some() || &d.digest != digest);
            let removed = manifests.len() != before;
            Ok(removed)
        })
    }
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotation(ANNOTATION_REF_NAME)
}

fn empty_index() -> ImageIndex {
    ImageIndex::new(OCI_INDEX, Vec::new())
}

/// The `imageLayoutVersion` of an `oci-layout` file.
fn read_layout_version(path: &Path) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        image_layout_version: String,
    }
    let bytes = fs::read(path).map_err(|e| ContentError::io("read", path, e))?;
    let layout: Layout = serde_json::from_slice(&bytes).map_err(|e| ContentError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(layout.image_layout_version)
}

#[cfg(test)]
mod tests;
