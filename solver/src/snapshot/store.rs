//! The layer store: unpacked layers under `layers/<diffid hex>/` (overlay lowerdirs, with
//! overlay whiteouts), their records in the cache store and their blobs in the content store.
//! A layer is unpacked once and compressed once per compression.
//!
//! New directories are built under a temporary name in `layers/`, synced and renamed into
//! place before their record is committed, so a crash leaves at most a `.tmp-*` directory
//! that garbage collection removes.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use super::layer::{
    apply_layer, write_layer, ApplyOptions, Compression, DiffOptions, LayerError, WhiteoutMode,
};
use super::{BlobRecord, LayerRecord};
use crate::cache::{now_secs, CacheStore, CacheStoreError};
use crate::content::{sha256_hex, ContentError, ContentStore};
use crate::state::StateDir;

/// Errors of the layer store.
#[derive(Debug, thiserror::Error)]
pub enum LayerStoreError {
    /// Writing or applying a layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The cache database failed.
    #[error(transparent)]
    Cache(#[from] CacheStoreError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A layer was asked for that is not known.
    #[error("layer {0} is not in the layer store")]
    UnknownLayer(Digest),
    /// A blob's content does not match the diffID it was announced with.
    #[error("layer blob {} unpacks to {}, expected diffID {}", .0.blob, .0.actual, .0.expected)]
    DiffIdMismatch(Box<DiffIdMismatch>),
}

/// The digests of a layer blob whose content is not what the image config says.
#[derive(Debug)]
pub struct DiffIdMismatch {
    /// The blob.
    pub blob: Digest,
    /// The announced diffID (image config).
    pub expected: Digest,
    /// What it unpacked to.
    pub actual: Digest,
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> LayerStoreError + 'p {
    move |source| LayerStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacked layers plus their records.
pub struct LayerStore<'a> {
    layers_dir: PathBuf,
    content: &'a ContentStore,
    cache: &'a CacheStore,
}

impl<'a> LayerStore<'a> {
    /// The layer store of a state directory.
    pub fn new(state: &'a StateDir, cache: &'a CacheStore) -> Self {
        LayerStore {
            layers_dir: state.layers_dir(),
            content: state.content(),
            cache,
        }
    }

    /// Where a layer lives unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> Result<PathBuf, LayerStoreError> {
        Ok(self.layers_dir.join(sha256_hex(diff_id)?))
    }

    fn temp_dir(&self) -> Result<tempfile::TempDir, LayerStoreError> {
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.layers_dir)
            .map_err(io("create temporary directory in", &self.layers_dir))
    }

    /// Moves a finished directory to `layers/<diffid>` (unless an equal layer is already
    /// there) after syncing it to disk.
    fn install(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf, LayerStoreError> {
        let target = self.layer_dir(diff_id)?;
        if target.exists() {
            fs::remove_dir_all(dir).map_err(io("remove", dir))?;
            return Ok(target);
        }
        let f = fs::File::open(dir).map_err(io("open", dir))?;
        nix::unistd::syncfs(&f).map_err(|e| LayerStoreError::Io {
            op: "syncfs",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        fs::rename(dir, &target).map_err(io("rename into", &target))?;
        crate::atomic_file::sync_parent(&target).map_err(io("fsync", &self.layers_dir))?;
        Ok(target)
    }

    /// Unpacks a layer blob from the content store (once: a known blob returns its record).
    /// With `expected_diff_id` (from the image config) the content is checked against it.
    pub fn import_blob(
        &self,
        blob: &Digest,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerRecord, LayerStoreError> {
        if let Some(diff_id) = self.cache.diff_id_of_blob(blob)? {
            if let Some(rec) = self.cache.layer(&diff_id)? {
                if rec.unpacked && self.layer_dir(&diff_id)?.is_dir() {
                    return Ok(rec);
                }
            }
        }
        let size = self
            .content
            .size(blob)?
            .ok_or_else(|| ContentError::NotFound(blob.clone()))?;
        let tmp = self.temp_dir()?;
        let reader = self.content.open_blob(blob)?;
        let applied = apply_layer(
            reader,
            tmp.path(),
            &ApplyOptions {
                whiteouts: WhiteoutMode::Overlay,
                same_owner: nix::unistd::geteuid().is_root(),
            },
        )?;
        if let Some(expected) = expected_diff_id {
            if *expected != applied.diff_id {
                return Err(LayerStoreError::DiffIdMismatch(Box::new(DiffIdMismatch {
                    blob: blob.clone(),
                    expected: expected.clone(),
                    actual: applied.diff_id,
                })));
            }
        }
        self.install(&tmp.keep(), &applied.diff_id)?;
        let record = LayerRecord {
            diff_id: applied.diff_id.clone(),
            unpacked: true,
            size: applied.uncompressed_size,
            blobs: vec![BlobRecord {
                digest: blob.clone(),
                size,
                compression: applied.compression,
            }],
        };
        let mut w = self.cache.writer()?;
        w.put_layer(&record, now_secs())?;
        w.commit()?;
        Ok(self.cache.layer(&applied.diff_id)?.unwrap_or(record))
    }

    /// Turns a finished upperdir into a layer: tars it into the content store (one pass for
    /// diffID and blob) and moves the directory itself to `layers/<diffid>` (so it must be on
    /// the state directory's filesystem, e.g. a work directory under `layers/`).
    pub fn commit_dir(
        &self,
        upperdir: &Path,
        opts: &DiffOptions,
    ) -> Result<LayerRecord, LayerStoreError> {
        let blob = write_layer(upperdir, self.content, opts)?;
        self.install(upperdir, &blob.diff_id)?;
        let record = LayerRecord {
            diff_id: blob.diff_id.clone(),
            unpacked: true,
            size: blob.uncompressed_size,
            blobs: vec![BlobRecord {
                digest: blob.blob.digest,
                size: blob.blob.size,
                compression: blob.compression,
            }],
        };
        let mut w = self.cache.writer()?;
        w.put_layer(&record, now_secs())?;
        w.commit()?;
        Ok(self.cache.layer(&blob.diff_id)?.unwrap_or(record))
    }

    /// A blob of the layer in `compression`: the remembered one if its blob is still in the
    /// content store, otherwise compressed now from the unpacked directory and remembered.
    pub fn blob_for(
        &self,
        diff_id: &Digest,
        opts: &DiffOptions,
    ) -> Result<BlobRecord, LayerStoreError> {
        let record = self
            .cache
            .layer(diff_id)?
            .ok_or_else(|| LayerStoreError::UnknownLayer(diff_id.clone()))?;
        // Reuse only when the caller does not ask for clamped timestamps (they change the tar).
        if opts.source_date_epoch.is_none() {
            for b in record
                .blobs
                .iter()
                .filter(|b| b.compression == opts.compression)
            {
                if self.content.exists(&b.digest)? {
                    return Ok(b.clone());
                }
            }
        }
        let dir = self.layer_dir(diff_id)?;
        if !record.unpacked || !dir.is_dir() {
            return Err(LayerStoreError::UnknownLayer(diff_id.clone()));
        }
        let blob = write_layer(&dir, self.content, opts)?;
        let rec = BlobRecord {
            digest: blob.blob.digest,
            size: blob.blob.size,
            compression: opts.compression,
        };
        if blob.diff_id == *diff_id {
            let mut w = self.cache.writer()?;
            w.add_blob(diff_id, &rec, now_secs())?;
            w.commit()?;
        }
        Ok(rec)
    }

    /// Removes leftovers of interrupted imports and commits (`layers/.tmp-*`).
    pub fn remove_temporaries(&self) -> Result<usize, LayerStoreError> {
        let mut n = 0;
        let entries =
            fs::read_dir(&self.layers_dir).map_err(io("read directory", &self.layers_dir))?;
        for e in entries {
            let e = e.map_err(io("read directory", &self.layers_dir))?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_dir_all(e.path()).map_err(io("remove", &e.path()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Compression helper for callers that only know a media type.
pub fn compression_of(media_type: &oci_spec::image::MediaType) -> Option<Compression> {
    Compression::from_media_type(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Expected;
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, StateDir, CacheStore) {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::open(d.path().join("state")).unwrap();
        let cache = CacheStore::open(&state.meta_db_path()).unwrap();
        (d, state, cache)
    }

    #[test]
    fn commit_then_reuse_blobs_and_import_them_once() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root for overlay whiteouts (CI runs as root)"
        );
        let (d, state, cache) = setup();
        let store = LayerStore::new(&state, &cache);
        let upper = d.path().join("state/layers/work-upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hostname"), b"kiln\n").unwrap();
        nix::sys::stat::mknod(
            &upper.join("removed"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let rec = store.commit_dir(&upper, &DiffOptions::default()).unwrap();
        assert!(!upper.exists(), "the upperdir became the layer");
        let dir = store.layer_dir(&rec.diff_id).unwrap();
        assert_eq!(fs::read(dir.join("etc/hostname")).unwrap(), b"kiln\n");
        let gz = rec.blob(Compression::Gzip).unwrap().clone();

        // Asking for gzip again reuses the blob; zstd is made once and remembered.
        assert_eq!(
            store
                .blob_for(&rec.diff_id, &DiffOptions::default())
                .unwrap(),
            gz
        );
        let zopts = DiffOptions {
            compression: Compression::Zstd,
            ..Default::default()
        };
        let z = store.blob_for(&rec.diff_id, &zopts).unwrap();
        assert_eq!(store.blob_for(&rec.diff_id, &zopts).unwrap(), z);
        assert_eq!(cache.layer(&rec.diff_id).unwrap().unwrap().blobs.len(), 2);
        assert_eq!(
            cache.diff_id_of_blob(&z.digest).unwrap(),
            Some(rec.diff_id.clone())
        );

        // Importing the zstd blob finds the known layer; a fresh state unpacks it.
        assert_eq!(
            store
                .import_blob(&z.digest, Some(&rec.diff_id))
                .unwrap()
                .diff_id,
            rec.diff_id
        );
        let (_d2, state2, cache2) = setup();
        let store2 = LayerStore::new(&state2, &cache2);
        let bytes = state.content().read_blob(&z.digest).unwrap();
        let mut ing = state2
            .content()
            .ingest(Expected::exact(z.digest.clone(), z.size))
            .unwrap();
        ing.write_all(&bytes).unwrap();
        ing.commit().unwrap();
        let imported = store2.import_blob(&z.digest, Some(&rec.diff_id)).unwrap();
        assert_eq!(imported.diff_id, rec.diff_id);
        let dir2 = store2.layer_dir(&rec.diff_id).unwrap();
        assert_eq!(fs::read(dir2.join("etc/hostname")).unwrap(), b"kiln\n");
        let wh = fs::symlink_metadata(dir2.join("removed")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &wh.file_type()
        ));
        assert_eq!(store2.remove_temporaries().unwrap(), 0);
    }

    #[test]
    fn a_wrong_diff_id_is_refused_and_leaves_no_layer() {
        let (d, state, cache) = setup();
        let store = LayerStore::new(&state, &cache);
        let src = d.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let blob = write_layer(&src, state.content(), &DiffOptions::default()).unwrap();
        let wrong = crate::content::sha256_digest(b"not it");
        let err = store
            .import_blob(&blob.blob.digest, Some(&wrong))
            .unwrap_err();
        assert!(matches!(err, LayerStoreError::DiffIdMismatch(_)), "{err}");
        assert!(!store.layer_dir(&blob.diff_id).unwrap().exists());
        assert!(cache.layer(&blob.diff_id).unwrap().is_none());
        assert_eq!(
            fs::read_dir(state.layers_dir()).unwrap().count(),
            0,
            "temporary removed"
        );
    }
}
