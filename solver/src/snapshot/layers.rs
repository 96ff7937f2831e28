//! The unpacked layers under the state directory's `layers/`: each is one
//! directory usable as an overlayfs lower dir (whiteouts in overlay form).
//! Image layers are named by their diffID (`sha256-<hex>`), layers a build
//! made by a random id (`b-<hex>`); a name only ever appears complete,
//! because every layer is made in a temporary directory and renamed.

use crate::content::{ContentError, ContentStore};
use crate::snapshot::layer::{apply_layer, ApplyOptions, LayerError, WhiteoutMode};
use kiln_oci::Digest;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a layer could not be unpacked or stored.
#[derive(Debug, thiserror::Error)]
pub enum LayerStoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Unpacking failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// An image layer unpacks to more than the layer size limit.
    #[error("layer {blob} unpacks to more than {limit} bytes, the layer size limit")]
    TooLarge {
        /// The layer blob's digest.
        blob: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A step made a layer larger than the layer size limit.
    #[error(
        "the step's layer holds {size} bytes, more than the layer size limit of {limit} bytes"
    )]
    BuiltTooLarge {
        /// The layer's size (bytes of its files).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The blob's uncompressed content does not hash to the diffID its
    /// image config lists.
    #[error("layer {blob} unpacks to diffID {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The blob.
        blob: String,
        /// The config's diffID.
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> LayerStoreError + 'a {
    move |source| LayerStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of the notes of streamed layers not unpacked yet (see
/// [`LayerStore::commit_streamed`]).
const STREAMED_DIR: &str = ".streamed";

/// What a streamed layer is made from.
#[derive(serde::Serialize, serde::Deserialize)]
struct StreamedMarker {
    /// The blob file in the content store: relative to the state directory (the layer
    /// store's parent), so a moved state directory still finds it; absolute when the blob
    /// lies elsewhere.
    blob: PathBuf,
    /// The diffID its uncompressed tar must hash to.
    diff_id: String,
    /// Bytes of its uncompressed tar: what its directory would take, for `du` and prune.
    #[serde(default)]
    size: u64,
}

/// The name of an unpacked layer directory. Shared, not copied, when cloned: every step's
/// snapshot lists all the layers below it, so a chain of N steps holds N²/2 of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(std::sync::Arc<str>);

impl serde::Serialize for LayerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for LayerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| LayerId(s.into()))
    }
}

impl LayerId {
    /// The id of an image layer with this diffID.
    pub fn for_diff_id(diff_id: &Digest) -> LayerId {
        LayerId(format!("{}-{}", diff_id.algorithm(), diff_id.hex()).into())
    }

    /// A fresh id for a layer a build makes.
    fn fresh() -> LayerId {
        use std::io::Read;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut bytes = [0u8; 12];
        let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if random.is_err() {
            // No /dev/urandom: time, pid and a counter are still unique here.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            bytes[..8].copy_from_slice(&nanos.to_le_bytes());
            bytes[8..].copy_from_slice(&std::process::id().to_le_bytes());
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        LayerId(format!("b-{}{:04x}", hex::encode(bytes), n & 0xffff).into())
    }

    /// The directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a stored name; None when it is not a layer name.
    pub fn parse(s: &str) -> Option<LayerId> {
        let ok = (s.starts_with("sha256-") || s.starts_with("b-"))
            && s.len() > 2
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| LayerId(s.into()))
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A layer being made: an overlay upper dir and its work dir, in a
/// temporary directory on the same filesystem as the layers.
#[derive(Debug)]
pub struct PendingLayer {
    tmp: tempfile::TempDir,
}

impl PendingLayer {
    /// The directory that receives the changes (overlay upperdir).
    pub fn upper(&self) -> PathBuf {
        self.tmp.path().join("upper")
    }

    /// overlayfs' work dir.
    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    /// A scratch directory (mount point, throwaway files), removed with the layer.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The `layers/` directory.
#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
    max_size: Option<u64>,
    /// The streamed layers as last read, by the mtime of their directory then: checking
    /// a snapshot's layers costs one stat, not one per layer.
    streamed: std::sync::Arc<std::sync::Mutex<StreamedIds>>,
}

/// The streamed layers' ids, as read when `STREAMED_DIR` had mtime `seen`.
#[derive(Debug, Default)]
struct StreamedIds {
    seen: Option<std::time::SystemTime>,
    ids: std::collections::HashSet<LayerId>,
}

impl LayerStore {
    /// Opens (creating) the layer directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<LayerStore, LayerStoreError> {
        let dir = dir.into();
        let tmp = dir.join(".tmp");
        std::fs::create_dir_all(&tmp).map_err(io_err("create", &dir))?;
        // Each pending layer in a block group of its own (see `topdir`); a placement hint,
        // so a filesystem without inode flags just does without.
        let _ = crate::snapshot::topdir::mark_topdir(&tmp);
        Ok(LayerStore {
            dir,
            max_size: None,
            streamed: Default::default(),
        })
    }

    /// Refuses layers larger than `max` bytes unpacked (image layers as they are
    /// unpacked, a step's layer when it is kept); `None`: no limit, as Docker.
    pub fn with_max_size(mut self, max: Option<u64>) -> LayerStore {
        self.max_size = max;
        self
    }

    /// The `layers/` directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of a layer.
    pub fn path(&self, id: &LayerId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Whether the layer is present: unpacked, or streamed (see [`Self::commit_streamed`]).
    pub fn exists(&self, id: &LayerId) -> bool {
        self.path(id).is_dir() || self.streamed_marker(id).is_file()
    }

    /// Where a streamed layer's blob is noted until it is unpacked.
    fn streamed_marker(&self, id: &LayerId) -> PathBuf {
        self.dir.join(STREAMED_DIR).join(id.as_str())
    }

    /// Keeps a layer made as a blob only (a streamed copy): `blob` (a file of the content
    /// store whose uncompressed tar of `size` bytes hashes to `diff_id`) stands for its
    /// directory until a step needs the files ([`Self::materialize`]). The pending layer is
    /// dropped. The size limit applies to the tar as it does to a directory.
    pub fn commit_streamed(
        &self,
        pending: PendingLayer,
        blob: &Path,
        diff_id: &Digest,
        size: u64,
    ) -> Result<LayerId, LayerStoreError> {
        if let Some(limit) = self.max_size.filter(|limit| size > *limit) {
            return Err(LayerStoreError::BuiltTooLarge { size, limit });
        }
        let id = LayerId::fresh();
        let dir = self.dir.join(STREAMED_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let blob = self
            .dir
            .parent()
            .and_then(|root| blob.strip_prefix(root).ok())
            .unwrap_or(blob);
        let marker = StreamedMarker {
            blob: blob.to_path_buf(),
            diff_id: diff_id.to_string(),
            size,
        };
        let path = self.streamed_marker(&id);
        serde_json::to_vec(&marker)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::atomic_file::write_unsynced(&path, &bytes))
            .map_err(io_err("write", &path))?;
        drop(pending);
        Ok(id)
    }

    /// Bytes a layer takes: its directory's, or for a streamed layer not unpacked yet, its
    /// uncompressed tar's (what `du` and `prune --keep-storage` weigh).
    pub fn size(&self, id: &LayerId) -> u64 {
        let dir = self.path(id);
        if dir.is_dir() {
            return dir_size(&dir);
        }
        self.read_marker(id).ok().flatten().map_or(0, |m| m.size)
    }

    /// The marker of a streamed layer not unpacked yet, its blob path made absolute.
    fn read_marker(&self, id: &LayerId) -> Result<Option<StreamedMarker>, LayerStoreError> {
        let path = self.streamed_marker(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let marker: StreamedMarker = serde_json::from_slice(&bytes)
            .map_err(|e| io_err("read", &path)(std::io::Error::other(e)))?;
        Ok(Some(StreamedMarker {
            blob: match self.dir.parent() {
                Some(root) if marker.blob.is_relative() => root.join(&marker.blob),
                _ => marker.blob,
            },
            ..marker
        }))
    }

    /// Unpacks the streamed layers among `ids` (see [`Self::materialize`]).
    pub fn materialize_all(&self, ids: &[LayerId]) -> Result<(), LayerStoreError> {
        let dir = self.dir.join(STREAMED_DIR);
        let Ok(mtime) = std::fs::metadata(&dir).and_then(|m| m.modified()) else {
            return Ok(()); // nothing was ever streamed here
        };
        let wanted: Vec<LayerId> = {
            let mut known = self
                .streamed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.seen != Some(mtime) {
                known.ids = std::fs::read_dir(&dir)
                    .map_err(io_err("list", &dir))?
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(LayerId::parse))
                    .collect();
                known.seen = Some(mtime);
            }
            ids.iter()
                .filter(|id| known.ids.contains(id))
                .cloned()
                .collect()
        };
        for id in &wanted {
            self.materialize(id)?;
        }
        Ok(())
    }

    /// Unpacks a streamed layer from its blob, once; nothing for a layer that has its
    /// directory (or is unknown).
    pub fn materialize(&self, id: &LayerId) -> Result<(), LayerStoreError> {
        let marker_path = self.streamed_marker(id);
        let dest = self.path(id);
        if dest.is_dir() {
            return Ok(());
        }
        let Some(marker) = self.read_marker(id)? else {
            return Ok(());
        };
        let pending = self.begin()?;
        let file = std::fs::File::open(&marker.blob).map_err(io_err("open", &marker.blob))?;
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            ..ApplyOptions::default()
        };
        let applied = apply_layer(
            std::io::BufReader::with_capacity(256 * 1024, file),
            &pending.upper(),
            &opts,
        )?;
        if applied.diff_id.to_string() != marker.diff_id {
            return Err(LayerStoreError::DiffIdMismatch {
                blob: marker.blob.display().to_string(),
                expected: marker.diff_id,
                actual: applied.diff_id.to_string(),
            });
        }
        match std::fs::rename(pending.upper(), &dest) {
            Ok(()) => {}
            // Another step unpacked it meanwhile: theirs is as good.
            Err(_) if dest.is_dir() => {}
            Err(e) => return Err(io_err("rename a layer into", &dest)(e)),
        }
        drop(pending);
        // From now on an ordinary layer (its record keeps the blob for exports).
        let _ = std::fs::remove_file(&marker_path);
        Ok(())
    }

    /// Unpacks an image layer blob from the content store, verifying that it
    /// hashes to `diff_id`; a layer already present is not unpacked again.
    pub fn unpack(
        &self,
        content: &ContentStore,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<LayerId, LayerStoreError> {
        let id = LayerId::for_diff_id(diff_id);
        if self.exists(&id) {
            return Ok(id);
        }
        let pending = self.begin()?;
        let file = content.open_blob(blob)?;
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            max_size: self.max_size,
            ..ApplyOptions::default()
        };
        let applied = apply_layer(
            std::io::BufReader::with_capacity(256 * 1024, file),
            &pending.upper(),
            &opts,
        )
        .map_err(|e| match e {
            LayerError::TooLarge { limit } => LayerStoreError::TooLarge {
                blob: blob.to_string(),
                limit,
            },
            e => e.into(),
        })?;
        if &applied.diff_id != diff_id {
            return Err(LayerStoreError::DiffIdMismatch {
                blob: blob.to_string(),
                expected: diff_id.to_string(),
                actual: applied.diff_id.to_string(),
            });
        }
        self.commit_as(pending, id)
    }

    /// Starts a new layer.
    pub fn begin(&self) -> Result<PendingLayer, LayerStoreError> {
        let tmp_root = self.dir.join(".tmp");
        let tmp = tempfile::Builder::new()
            .prefix("pending-")
            .tempdir_in(&tmp_root)
            .map_err(io_err("create a temporary layer in", &tmp_root))?;
        let pending = PendingLayer { tmp };
        for d in [pending.upper(), pending.work()] {
            std::fs::create_dir(&d).map_err(io_err("create", &d))?;
        }
        Ok(pending)
    }

    /// Keeps the pending layer's upper dir under a fresh id.
    pub fn commit(&self, pending: PendingLayer) -> Result<LayerId, LayerStoreError> {
        if let Some(limit) = self.max_size {
            let size = dir_size(&pending.upper());
            if size > limit {
                return Err(LayerStoreError::BuiltTooLarge { size, limit });
            }
        }
        self.commit_as(pending, LayerId::fresh())
    }

    fn commit_as(&self, pending: PendingLayer, id: LayerId) -> Result<LayerId, LayerStoreError> {
        let dest = self.path(&id);
        let upper = pending.upper();
        match std::fs::rename(&upper, &dest) {
            Ok(()) => {}
            // Another build unpacked the same layer meanwhile: theirs is as good.
            Err(_) if dest.is_dir() && id.as_str().starts_with("sha256-") => {}
            Err(e) => return Err(io_err("rename a layer into", &dest)(e)),
        }
        // The work dir may hold a root-owned `work/work` with mode 000; the
        // TempDir drop removes it.
        drop(pending);
        Ok(id)
    }

    /// Removes a layer (garbage collection): its name goes at once (see [`crate::trash`]),
    /// so a kill midway never leaves a half-deleted layer that `unpack` would reuse.
    pub fn remove(&self, id: &LayerId) -> Result<(), LayerStoreError> {
        let marker = self.streamed_marker(id);
        let streamed = match std::fs::remove_file(&marker) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("remove", &marker)(e)),
        };
        let path = self.path(id);
        if streamed && !path.exists() {
            return Ok(());
        }
        crate::trash::discard(&path).map_err(io_err("remove", &path))
    }

    /// Every layer present.
    pub fn list(&self) -> Result<Vec<LayerId>, LayerStoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(LayerId::parse) {
                out.push(id);
            }
        }
        let streamed = self.dir.join(STREAMED_DIR);
        if let Ok(entries) = std::fs::read_dir(&streamed) {
            for entry in entries.flatten() {
                if let Some(id) = entry.file_name().to_str().and_then(LayerId::parse) {
                    out.push(id);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Bytes of the files under `dir` (not following symlinks).
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::layer::{write_layer, DiffOptions};

    #[test]
    fn unpack_verifies_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path().join("content")).unwrap();
        let layers = LayerStore::open(dir.path().join("layers")).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/motd"), "hello").unwrap();
        let blob = write_layer(&tree, &content, &DiffOptions::default()).unwrap();

        let id = layers
            .unpack(&content, &blob.blob.digest, &blob.diff_id)
            .unwrap();
        assert_eq!(
            std::fs::read(layers.path(&id).join("etc/motd")).unwrap(),
            b"hello"
        );
        assert_eq!(
            layers
                .unpack(&content, &blob.blob.digest, &blob.diff_id)
                .unwrap(),
            id
        );
        assert_eq!(layers.list().unwrap(), vec![id.clone()]);

        let wrong: Digest = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let err = layers
            .unpack(&content, &blob.blob.digest, &wrong)
            .unwrap_err();
        assert!(
            matches!(err, LayerStoreError::DiffIdMismatch { .. }),
            "{err}"
        );
        assert!(
            !layers.exists(&LayerId::for_diff_id(&wrong)),
            "a failed unpack leaves no layer"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers/.tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_streamed_layer_unpacks_after_its_state_directory_moved() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let content = ContentStore::open(state.join("content")).unwrap();
        let layers = LayerStore::open(state.join("layers")).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/motd"), "streamed").unwrap();
        let blob = write_layer(&tree, &content, &DiffOptions::default()).unwrap();
        let pending = layers.begin().unwrap();
        let id = layers
            .commit_streamed(
                pending,
                &content.blob_path(&blob.blob.digest).unwrap(),
                &blob.diff_id,
                blob.uncompressed_size,
            )
            .unwrap();
        drop(layers);

        let moved = dir.path().join("moved");
        std::fs::rename(&state, &moved).unwrap();
        let layers = LayerStore::open(moved.join("layers")).unwrap();
        assert!(layers.exists(&id));
        assert_eq!(
            layers.size(&id),
            blob.uncompressed_size,
            "weighed by its tar"
        );
        layers.materialize(&id).unwrap();
        assert_eq!(
            std::fs::read(layers.path(&id).join("etc/motd")).unwrap(),
            b"streamed"
        );
    }

    #[test]
    fn layers_over_the_size_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path().join("content")).unwrap();
        let layers = LayerStore::open(dir.path().join("layers"))
            .unwrap()
            .with_max_size(Some(100 * 1024));
        // A bomb: 10 MiB of zeros compress to a few kilobytes.
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("zeros"), vec![0u8; 10 << 20]).unwrap();
        let blob = write_layer(&tree, &content, &DiffOptions::default()).unwrap();
        assert!(blob.blob.size < 100 * 1024);
        let err = layers
            .unpack(&content, &blob.blob.digest, &blob.diff_id)
            .unwrap_err();
        assert!(
            matches!(&err, LayerStoreError::TooLarge { blob: b, limit: 102400 } if *b == blob.blob.digest.to_string()),
            "{err}"
        );
        assert!(err.to_string().contains(blob.blob.digest.as_ref()), "{err}");
        assert!(!layers.exists(&LayerId::for_diff_id(&blob.diff_id)));
        assert_eq!(layers.list().unwrap(), vec![]);

        // A step's layer: measured when kept.
        let p = layers.begin().unwrap();
        std::fs::write(p.upper().join("big"), vec![1u8; 200 * 1024]).unwrap();
        let err = layers.commit(p).unwrap_err();
        assert!(
            matches!(
                err,
                LayerStoreError::BuiltTooLarge {
                    size: 204800,
                    limit: 102400
                }
            ),
            "{err}"
        );
        let p = layers.begin().unwrap();
        std::fs::write(p.upper().join("small"), vec![1u8; 1024]).unwrap();
        layers.commit(p).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers/.tmp"))
                .unwrap()
                .count(),
            0,
            "refused layers leave nothing behind"
        );
        // Without a limit the bomb unpacks.
        let unlimited = LayerStore::open(dir.path().join("layers")).unwrap();
        unlimited
            .unpack(&content, &blob.blob.digest, &blob.diff_id)
            .unwrap();
    }

    #[test]
    fn pending_layers_commit_under_fresh_ids() {
        let dir = tempfile::tempdir().unwrap();
        let layers = LayerStore::open(dir.path()).unwrap();
        let a = layers.begin().unwrap();
        std::fs::write(a.upper().join("f"), "1").unwrap();
        let a = layers.commit(a).unwrap();
        let b = layers.commit(layers.begin().unwrap()).unwrap();
        assert_ne!(a, b);
        assert!(LayerId::parse(a.as_str()).is_some());
        assert_eq!(std::fs::read(layers.path(&a).join("f")).unwrap(), b"1");
        layers.remove(&a).unwrap();
        assert!(!layers.exists(&a));
        assert_eq!(LayerId::parse("../x"), None);
    }

    #[test]
    fn pending_layers_are_made_under_a_topdir_where_supported() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::create_dir(&probe).unwrap();
        let supported = crate::snapshot::topdir::mark_topdir(&probe).is_ok();
        LayerStore::open(dir.path().join("layers")).unwrap();
        let flagged = crate::snapshot::topdir::is_topdir(&dir.path().join("layers/.tmp"));
        assert_eq!(flagged.unwrap_or(false), supported);
    }
}
