//! Snapshots: immutable chains of layers, and the conversion between directories and layer tars.

pub mod layer;
pub mod store;

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use layer::Compression;

/// A filesystem state: an ordered chain of layers, bottom first, named by diffID.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Layer diffIDs, bottom first.
    pub layers: Vec<Digest>,
}

impl Snapshot {
    /// The empty filesystem (scratch).
    pub fn scratch() -> Self {
        Snapshot::default()
    }

    /// This snapshot with one more layer on top.
    pub fn with_layer(&self, diff_id: Digest) -> Self {
        let mut layers = self.layers.clone();
        layers.push(diff_id);
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
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Whether `layers/<diffid hex>/` holds it unpacked (overlay whiteouts).
    pub unpacked: bool,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Compressed forms already made: a layer is compressed once per compression.
    pub blobs: Vec<BlobRecord>,
}

impl LayerRecord {
    /// The blob of this layer with `compression`, if one was made.
    pub fn blob(&self, compression: Compression) -> Option<&BlobRecord> {
        self.blobs.iter().find(|b| b.compression == compression)
    }
}
