//! Import: cache configs read from `--cache-from` sources, indexed by cache key, so the
//! worker answers lookups from them. Nothing is downloaded here: a record's layers are
//! fetched through a [`BlobFetcher`] when a step or an exporter needs their bytes.
//!
//! SKELETON (lead): the API is fixed; the bodies are being written (issue 14).

use std::collections::HashMap;

use kiln_oci::{Descriptor, Digest};

use super::format::{CacheConfig, SelectionChecksum};
use crate::cache::{CacheKey, KeyParts};

/// Brings an imported blob into the content store, verified against its descriptor
/// (the builder implements it over the registry client or a layout). Blocking.
pub trait BlobFetcher: Send + Sync {
    /// Fetches `desc` from import source `source` (its position in the `--cache-from` list).
    fn fetch(
        &self,
        source: usize,
        desc: &Descriptor,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// One imported record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRecord {
    /// The source it came from.
    pub source: usize,
    /// Its layers, bottom first: the blob and its diffID.
    pub layers: Vec<(Descriptor, Digest)>,
    /// The vertex description.
    pub description: String,
    /// Checksums of selected paths of the result.
    pub checksums: Vec<SelectionChecksum>,
    /// What its key was made of.
    pub parts: Option<KeyParts>,
}

/// Every imported record, by key; with several sources the first source holding a key wins.
#[derive(Debug, Clone, Default)]
pub struct ImportedCache {
    records: HashMap<CacheKey, ImportedRecord>,
}

impl ImportedCache {
    /// Adds the records of source `source`.
    pub fn add(&mut self, source: usize, config: &CacheConfig) {
        let _ = (source, config);
    }

    /// The record under `key`.
    pub fn lookup(&self, key: &CacheKey) -> Option<&ImportedRecord> {
        self.records.get(key)
    }

    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
