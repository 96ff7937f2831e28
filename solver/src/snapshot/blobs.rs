//! Layer blobs: a pulled blob is unpacked once, a layer is compressed once per compression.
//! The pairs (layer, diffID, blob, compression) are remembered in the layer records, so an
//! export reuses a blob made by an earlier build or pulled from a registry.

use std::io::Read;

use kiln_oci::Digest;

use super::layer::{
    compression_name, write_layer, write_layer_indexed, Compression, DiffOptions, LayerError,
};
use super::layers::{LayerStore, LayerStoreError};
use super::{BlobRecord, LayerId, LayerRecord};
use crate::content::{ContentError, ContentStore};
use crate::meta::{now_secs, MetaDb, MetaError};

/// Errors while importing or exporting layer blobs.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Writing a layer tar failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The layer store failed (unpack, verification).
    #[error(transparent)]
    LayerStore(#[from] LayerStoreError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The layer directory is missing.
    #[error("layer {0} is not in the layer store")]
    UnknownLayer(LayerId),
}

/// An exported layer: what an image config and manifest need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLayer {
    /// sha256 of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The blob (manifest `layers[]`).
    pub blob: BlobRecord,
}

fn detect_compression(content: &ContentStore, blob: &Digest) -> Result<Compression, BlobError> {
    // A whole tar header: a plain tar is told apart from a compressed stream by it.
    let mut head = [0u8; 512];
    let mut f = content.open_blob(blob)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(head.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                return Err(ContentError::Io {
                    op: "read",
                    path: content.blob_path(blob)?,
                    source: e,
                }
                .into())
            }
        }
    }
    Compression::detect(head.get(..n).unwrap_or_default()).map_err(|kind| {
        LayerError::UnsupportedCompression {
            blob: blob.to_string(),
            kind: compression_name(kind),
        }
        .into()
    })
}

/// Unpacks an image layer blob (already in the content store) into the layer store, checking
/// it against `diff_id`, and records the pair. A layer already present is not unpacked again.
pub fn import_layer(
    layers: &LayerStore,
    content: &ContentStore,
    meta: &MetaDb,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<LayerRecord, BlobError> {
    let id = layers.unpack(content, blob, diff_id)?;
    let size = content
        .size(blob)?
        .ok_or_else(|| ContentError::NotFound(blob.clone()))?;
    let record = LayerRecord {
        id: id.clone(),
        diff_id: Some(diff_id.clone()),
        size: None,
        blobs: vec![BlobRecord {
            digest: blob.clone(),
            size,
            compression: detect_compression(content, blob)?,
        }],
    };
    let mut w = meta.writer()?;
    w.put_layer(&record, now_secs())?;
    w.commit()?;
    Ok(meta.layer(&id)?.unwrap_or(record))
}

/// The blob of a layer in the requested compression: a remembered one whose blob is still
/// in the content store, or one made now from the layer directory (and remembered).
/// Clamped timestamps (`source_date_epoch`) change the tar, so they always make a new blob.
pub fn export_layer(
    layers: &LayerStore,
    content: &ContentStore,
    meta: &MetaDb,
    id: &LayerId,
    opts: &DiffOptions,
) -> Result<ExportedLayer, BlobError> {
    let known = meta.layer(id)?;
    if let (Some(rec), None) = (&known, opts.source_date_epoch) {
        if let Some(diff_id) = &rec.diff_id {
            for b in rec
                .blobs
                .iter()
                .filter(|b| b.compression == opts.compression)
            {
                if content.exists(&b.digest)? {
                    return Ok(ExportedLayer {
                        diff_id: diff_id.clone(),
                        blob: b.clone(),
                    });
                }
            }
        }
    }
    if !layers.exists(id) {
        return Err(BlobError::UnknownLayer(id.clone()));
    }
    // gzip layers keep a resume index, so the next layer made like this one (an incremental
    // copy's) writes only what changed.
    let made = match opts.compression {
        Compression::Gzip => write_layer_indexed(&layers.path(id), content, opts)?,
        _ => write_layer(&layers.path(id), content, opts)?,
    };
    let blob = BlobRecord {
        digest: made.blob.digest,
        size: made.blob.size,
        compression: made.compression,
    };
    // A pulled layer tarred again from its directory is not byte for byte the tar it came
    // as: its diffID differs, and the record (keyed by the first diffID) must not pair that
    // diffID with this blob, or a later export lists a blob its config's diffID does not match.
    let same_tar = known
        .as_ref()
        .and_then(|r| r.diff_id.as_ref())
        .is_none_or(|d| *d == made.diff_id);
    if opts.source_date_epoch.is_none() && same_tar {
        let mut record = known.unwrap_or_else(|| LayerRecord::new(id.clone()));
        record.merge(&LayerRecord {
            id: id.clone(),
            diff_id: Some(made.diff_id.clone()),
            size: Some(made.uncompressed_size),
            blobs: vec![blob.clone()],
        });
        let mut w = meta.writer()?;
        w.put_layer(&record, now_secs())?;
        w.commit()?;
    }
    Ok(ExportedLayer {
        diff_id: made.diff_id,
        blob,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_layer_is_compressed_once_per_compression_and_imported_once() {
        let d = tempfile::tempdir().unwrap();
        let content = ContentStore::open(d.path().join("content")).unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let meta = MetaDb::open(&d.path().join("meta.redb")).unwrap();

        let pending = layers.begin().unwrap();
        fs::create_dir(pending.upper().join("etc")).unwrap();
        fs::write(pending.upper().join("etc/hostname"), b"kiln\n").unwrap();
        let id = layers.commit(pending).unwrap();
        let mut w = meta.writer().unwrap();
        w.put_layer(&LayerRecord::new(id.clone()), 1).unwrap();
        w.commit().unwrap();

        let gz = export_layer(&layers, &content, &meta, &id, &DiffOptions::default()).unwrap();
        let rec = meta.layer(&id).unwrap().unwrap();
        assert_eq!(rec.diff_id.as_ref(), Some(&gz.diff_id));
        assert_eq!(rec.blob(Compression::Gzip), Some(&gz.blob));
        // Deleting the directory proves the second export does not tar it again.
        let dir = layers.path(&id);
        let saved = d.path().join("saved");
        fs::rename(&dir, &saved).unwrap();
        assert_eq!(
            export_layer(&layers, &content, &meta, &id, &DiffOptions::default()).unwrap(),
            gz
        );
        let zopts = DiffOptions {
            compression: Compression::Zstd,
            ..Default::default()
        };
        assert!(matches!(
            export_layer(&layers, &content, &meta, &id, &zopts),
            Err(BlobError::UnknownLayer(_))
        ));
        fs::rename(&saved, &dir).unwrap();
        let z = export_layer(&layers, &content, &meta, &id, &zopts).unwrap();
        assert_eq!(z.diff_id, gz.diff_id, "same tar, other compression");
        assert_eq!(meta.layer(&id).unwrap().unwrap().blobs.len(), 2);
        assert_eq!(
            meta.layer_of_blob(&z.blob.digest).unwrap(),
            Some(id.clone())
        );

        // Importing the zstd blob into a fresh state unpacks it and records the pair.
        let d2 = tempfile::tempdir().unwrap();
        let content2 = ContentStore::open(d2.path().join("content")).unwrap();
        let layers2 = LayerStore::open(d2.path().join("layers")).unwrap();
        let meta2 = MetaDb::open(&d2.path().join("meta.redb")).unwrap();
        content2
            .put_bytes(&content.read_blob(&z.blob.digest).unwrap())
            .unwrap();
        let imported =
            import_layer(&layers2, &content2, &meta2, &z.blob.digest, &z.diff_id).unwrap();
        assert_eq!(imported.diff_id.as_ref(), Some(&z.diff_id));
        assert_eq!(imported.blobs, vec![z.blob.clone()]);
        assert_eq!(
            fs::read(layers2.path(&imported.id).join("etc/hostname")).unwrap(),
            b"kiln\n"
        );
        // Exporting it as zstd reuses the pulled blob.
        let again = export_layer(&layers2, &content2, &meta2, &imported.id, &zopts).unwrap();
        assert_eq!(again.blob, z.blob);
    }

    #[test]
    fn a_blob_of_another_tar_is_not_paired_with_the_recorded_diff_id() {
        // A pulled layer's record holds the registry tar's diffID; tarring its directory
        // again (force-compression) gives another tar, whose blob must not join the record.
        let d = tempfile::tempdir().unwrap();
        let content = ContentStore::open(d.path().join("content")).unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let meta = MetaDb::open(&d.path().join("meta.redb")).unwrap();
        let pending = layers.begin().unwrap();
        fs::write(pending.upper().join("f"), b"x").unwrap();
        let id = layers.commit(pending).unwrap();
        let pulled = Digest::of(b"the registry's tar");
        let mut record = LayerRecord::new(id.clone());
        record.diff_id = Some(pulled.clone());
        let mut w = meta.writer().unwrap();
        w.put_layer(&record, 1).unwrap();
        w.commit().unwrap();
        let zopts = DiffOptions {
            compression: Compression::Zstd,
            ..Default::default()
        };
        let first = export_layer(&layers, &content, &meta, &id, &zopts).unwrap();
        assert_ne!(first.diff_id, pulled);
        let rec = meta.layer(&id).unwrap().unwrap();
        assert_eq!((rec.diff_id, rec.blobs), (Some(pulled), vec![]));
        // The next export pairs the blob with its own diffID again.
        assert_eq!(
            export_layer(&layers, &content, &meta, &id, &zopts).unwrap(),
            first
        );
    }

    #[test]
    fn clamped_timestamps_make_a_new_blob_and_are_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let content = ContentStore::open(d.path().join("content")).unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let meta = MetaDb::open(&d.path().join("meta.redb")).unwrap();
        let pending = layers.begin().unwrap();
        fs::write(pending.upper().join("f"), b"x").unwrap();
        let id = layers.commit(pending).unwrap();
        let plain = export_layer(&layers, &content, &meta, &id, &DiffOptions::default()).unwrap();
        let clamped = DiffOptions {
            source_date_epoch: Some(0),
            ..Default::default()
        };
        let c = export_layer(&layers, &content, &meta, &id, &clamped).unwrap();
        assert_ne!(c.diff_id, plain.diff_id);
        let rec = meta.layer(&id).unwrap().unwrap();
        assert_eq!(rec.blobs, vec![plain.blob]);
    }
}
