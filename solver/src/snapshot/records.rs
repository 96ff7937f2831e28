//! Layer records in `meta.redb`: what is known about each unpacked layer (its diffID, size
//! and the compressed blobs made of it) and which layer a blob we pulled or made belongs to,
//! with the last use of each layer for `prune`. The tables are declared in [`crate::meta`];
//! only this module reads or writes them.

use kiln_oci::Digest;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::layer::Compression;
use super::LayerId;
use crate::meta::{
    dberr, decode, encode, MetaDb, MetaError, MetaWriter, BLOBS, LAYERS, LAYER_USED,
};

/// A compressed form of a layer in the content store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Its compression.
    pub compression: Compression,
}

/// What is known about one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Its directory under `layers/`.
    pub id: LayerId,
    /// sha256 of its uncompressed tar, once known (image layers; built layers once exported).
    pub diff_id: Option<Digest>,
    /// Size of the uncompressed tar, once known.
    pub size: Option<u64>,
    /// Compressed forms already made: a layer is compressed once per compression.
    pub blobs: Vec<BlobRecord>,
}

impl LayerRecord {
    /// A record of a layer with nothing known but its directory.
    pub fn new(id: LayerId) -> Self {
        LayerRecord {
            id,
            diff_id: None,
            size: None,
            blobs: Vec::new(),
        }
    }

    /// The blob of this layer with `compression`, if one was made.
    pub fn blob(&self, compression: Compression) -> Option<&BlobRecord> {
        self.blobs.iter().find(|b| b.compression == compression)
    }

    /// Folds what `other` knows about the same layer into this record.
    pub fn merge(&mut self, other: &LayerRecord) {
        if self.diff_id.is_none() {
            self.diff_id = other.diff_id.clone();
        }
        if self.size.is_none() {
            self.size = other.size;
        }
        // Several blobs may share a compression (ours and a registry's gzip).
        for b in &other.blobs {
            if !self.blobs.iter().any(|x| x.digest == b.digest) {
                self.blobs.push(b.clone());
            }
        }
    }
}

impl MetaDb {
    /// The record of a layer.
    pub fn layer(&self, id: &LayerId) -> Result<Option<LayerRecord>, MetaError> {
        let txn = self.read()?;
        let table = txn.open_table(LAYERS).map_err(dberr)?;
        match table.get(id.as_str()).map_err(dberr)? {
            Some(v) => Ok(Some(decode("layers", id.as_str(), v.value())?)),
            None => Ok(None),
        }
    }

    /// The layer a blob we have seen (pulled or made) belongs to.
    pub fn layer_of_blob(&self, blob: &Digest) -> Result<Option<LayerId>, MetaError> {
        let txn = self.read()?;
        let table = txn.open_table(BLOBS).map_err(dberr)?;
        match table.get(blob.as_ref()).map_err(dberr)? {
            Some(v) => LayerId::parse(v.value())
                .map(Some)
                .ok_or_else(|| MetaError::Corrupt {
                    table: "blob_layers",
                    key: blob.to_string(),
                    message: format!("{:?} is not a layer id", v.value()),
                }),
            None => Ok(None),
        }
    }

    /// Every layer record.
    pub fn layers(&self) -> Result<Vec<LayerRecord>, MetaError> {
        let txn = self.read()?;
        let table = txn.open_table(LAYERS).map_err(dberr)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            out.push(decode("layers", k.value(), v.value())?);
        }
        Ok(out)
    }
}

impl MetaWriter {
    /// Whether the layer has a record (written before, or earlier in this transaction).
    pub fn has_layer(&mut self, id: &LayerId) -> Result<bool, MetaError> {
        if self.seen.recorded.contains(id.as_str()) {
            return Ok(true);
        }
        let layers = self.txn.open_table(LAYERS).map_err(dberr)?;
        let found = layers.get(id.as_str()).map_err(dberr)?.is_some();
        if found {
            self.seen.recorded.insert(id.as_str().to_string());
        }
        Ok(found)
    }

    /// Adds or updates a layer record: what `record` knows is merged into what is stored
    /// (a diffID once known stays, blobs accumulate).
    pub fn put_layer(&mut self, record: &LayerRecord, now: u64) -> Result<(), MetaError> {
        let key = record.id.as_str();
        let mut layers = self.txn.open_table(LAYERS).map_err(dberr)?;
        let merged = match layers.get(key).map_err(dberr)? {
            Some(old) => {
                let mut old: LayerRecord = decode("layers", key, old.value())?;
                old.merge(record);
                old
            }
            None => record.clone(),
        };
        layers
            .insert(key, encode(&merged).as_slice())
            .map_err(dberr)?;
        drop(layers);
        self.seen.recorded.insert(key.to_string());
        let mut blobs = self.txn.open_table(BLOBS).map_err(dberr)?;
        for b in &merged.blobs {
            blobs.insert(b.digest.as_ref(), key).map_err(dberr)?;
        }
        drop(blobs);
        self.touch_layers([&record.id], now)
    }

    /// Records a use of these layers at `now`.
    pub fn touch_layers<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a LayerId>,
        now: u64,
    ) -> Result<(), MetaError> {
        let mut used = self.txn.open_table(LAYER_USED).map_err(dberr)?;
        for id in ids {
            // Already written at this time or later in this transaction.
            if self
                .seen
                .touched
                .get(id.as_str())
                .is_some_and(|t| *t >= now)
            {
                continue;
            }
            used.insert(id.as_str(), now).map_err(dberr)?;
            self.seen.touched.insert(id.as_str().to_string(), now);
        }
        Ok(())
    }

    /// Remembers the diffID and a compressed form of a recorded layer.
    pub fn add_blob(
        &mut self,
        id: &LayerId,
        diff_id: &Digest,
        blob: &BlobRecord,
        now: u64,
    ) -> Result<(), MetaError> {
        if !self.has_layer(id)? {
            return Err(MetaError::MissingLayer(id.to_string()));
        }
        let mut record = LayerRecord::new(id.clone());
        record.diff_id = Some(diff_id.clone());
        record.blobs.push(blob.clone());
        self.put_layer(&record, now)
    }

    /// Removes a layer record, its blob mappings and its last use, whether or not a cache
    /// result still refers to it (the cache store checks that first).
    pub(crate) fn remove_layer_record(
        &mut self,
        id: &LayerId,
    ) -> Result<Option<LayerRecord>, MetaError> {
        self.seen.recorded.remove(id.as_str());
        self.seen.touched.remove(id.as_str());
        let mut layers = self.txn.open_table(LAYERS).map_err(dberr)?;
        let removed = match layers.remove(id.as_str()).map_err(dberr)? {
            Some(v) => Some(decode::<LayerRecord>("layers", id.as_str(), v.value())?),
            None => None,
        };
        drop(layers);
        if let Some(r) = &removed {
            let mut blobs = self.txn.open_table(BLOBS).map_err(dberr)?;
            for b in &r.blobs {
                blobs.remove(b.digest.as_ref()).map_err(dberr)?;
            }
            drop(blobs);
            let mut used = self.txn.open_table(LAYER_USED).map_err(dberr)?;
            used.remove(id.as_str()).map_err(dberr)?;
        }
        Ok(removed)
    }
}

/// Records numbered `n` for the tests of this module and of the cache store.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A digest made of the byte `n`.
    pub fn digest(n: u8) -> Digest {
        Digest::try_from(format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    /// The id of layer `n`.
    pub fn lid(n: u8) -> LayerId {
        LayerId::for_diff_id(&digest(n))
    }

    /// Layer `n` with one gzip blob.
    pub fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            id: lid(n),
            diff_id: Some(digest(n)),
            size: Some(1000 + u64::from(n)),
            blobs: vec![BlobRecord {
                digest: digest(100 + n),
                size: 500,
                compression: Compression::Gzip,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{digest, layer, lid};
    use super::*;

    fn open() -> (tempfile::TempDir, MetaDb) {
        let d = tempfile::tempdir().unwrap();
        let s = MetaDb::open(&d.path().join("meta.redb")).unwrap();
        (d, s)
    }

    #[test]
    fn a_layer_is_compressed_once_per_compression() {
        let (_d, s) = open();
        let mut w = s.writer().unwrap();
        w.put_layer(&layer(1), 1).unwrap();
        let zstd = BlobRecord {
            digest: digest(201),
            size: 400,
            compression: Compression::Zstd,
        };
        w.add_blob(&lid(1), &digest(1), &zstd, 2).unwrap();
        // Adding the same blob again changes nothing.
        w.add_blob(&lid(1), &digest(1), &zstd, 3).unwrap();
        w.commit().unwrap();
        let rec = s.layer(&lid(1)).unwrap().unwrap();
        assert_eq!(rec.blobs.len(), 2);
        assert_eq!(rec.blob(Compression::Zstd), Some(&zstd));
        assert_eq!(rec.blob(Compression::Gzip).unwrap().digest, digest(101));
        assert_eq!(s.layer_of_blob(&digest(201)).unwrap(), Some(lid(1)));
        let mut w = s.writer().unwrap();
        assert!(matches!(
            w.add_blob(&lid(7), &digest(7), &zstd, 1),
            Err(MetaError::MissingLayer(_))
        ));
    }

    #[test]
    fn a_removed_record_takes_its_blob_mappings_along() {
        let (_d, s) = open();
        let mut w = s.writer().unwrap();
        w.put_layer(&layer(1), 1).unwrap();
        w.put_layer(&layer(2), 1).unwrap();
        w.commit().unwrap();
        let mut w = s.writer().unwrap();
        assert_eq!(w.remove_layer_record(&lid(1)).unwrap(), Some(layer(1)));
        assert_eq!(w.remove_layer_record(&lid(1)).unwrap(), None);
        w.commit().unwrap();
        assert_eq!(s.layer(&lid(1)).unwrap(), None);
        assert_eq!(s.layer_of_blob(&digest(101)).unwrap(), None);
        assert_eq!(s.layer_of_blob(&digest(102)).unwrap(), Some(lid(2)));
        assert_eq!(s.layers().unwrap(), vec![layer(2)]);
    }
}
