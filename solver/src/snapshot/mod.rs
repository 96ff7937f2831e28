//! Snapshots: immutable chains of layers, and the conversion between directories and layer tars.

pub mod layer;
