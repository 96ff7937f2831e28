//! Snapshots: immutable chains of layers, and the conversion between directories and layer tars.
//! Layers are the unpacked directories of [`crate::worker::layers`], named by [`LayerId`]; a
//! layer a build made gets its diffID and blobs only when it is exported (see [`blobs`]).

pub mod blobs;
pub mod layer;
pub mod overlay;
pub mod topdir;

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

pub use crate::worker::layers::LayerId;
use layer::Compression;

/// A filesystem state: an ordered chain of layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Layers, bottom first.
    pub layers: Vec<LayerId>,
}

impl Snapshot {
    /// The empty filesystem (scratch).
    pub fn scratch() -> Self {
        Snapshot::default()
    }

    /// This snapshot with one more layer on top.
    pub fn with_layer(&self, id: LayerId) -> Self {
        let mut layers = self.layers.clone();
        layers.push(id);
        Snapshot { layers }
    }
}

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
