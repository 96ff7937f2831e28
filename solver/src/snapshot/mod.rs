//! Snapshots: immutable chains of layers, and the conversion between directories and layer tars.
//! Layers are the unpacked directories of [`layers`], named by [`LayerId`]; a
//! layer a build made gets its diffID and blobs only when it is exported (see [`blobs`]).

pub mod blobs;
pub mod flatten;
pub mod layer;
pub mod layers;
pub mod overlay;
pub mod records;
pub mod topdir;
pub mod view;

use serde::{Deserialize, Serialize};

pub use layers::LayerId;
pub use records::{BlobRecord, LayerRecord};

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
