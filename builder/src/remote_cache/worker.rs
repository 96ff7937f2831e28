//! The worker calls of the remote cache, named as the solver's worker names them.
//!
//! TEMPORARY (issue 14): until helper csolver's worker API is merged, these stand in for
//! it (nothing is imported, records carry no key parts); once it is, the inherent methods
//! of `LocalWorker` take precedence and this file goes.

use std::collections::HashSet;
use std::sync::Arc;

use kiln_oci::Digest;
use kiln_solver::cache::CacheKey;
use kiln_solver::remote_cache::{BlobFetcher, ExportRecord, ImportedCache};
use kiln_solver::scheduler::WorkerError;
use kiln_solver::snapshot::Snapshot;
use kiln_solver::worker::LocalWorker;

/// The remote-cache part of the worker's API.
pub trait CacheWorker {
    /// Answers cache lookups that miss locally from `imported`.
    fn set_imported_cache(&mut self, imported: Arc<ImportedCache>, fetcher: Arc<dyn BlobFetcher>);
    /// Fills the build's cache mounts from the imported cache; the ids restored.
    fn restore_cache_mounts(&self, ids: &[String]) -> Result<Vec<String>, WorkerError>;
    /// The solved results as export records.
    fn export_records(&self, solved: &[(CacheKey, Snapshot, String)]) -> Vec<ExportRecord>;
    /// Brings every lazily imported layer of `snapshot` into the content store.
    fn fetch_lazy_blobs(&self, snapshot: &Snapshot) -> Result<(), WorkerError>;
    /// The digests the imported caches list.
    fn imported_blobs(&self) -> HashSet<Digest>;
}

impl CacheWorker for LocalWorker {
    fn set_imported_cache(&mut self, imported: Arc<ImportedCache>, fetcher: Arc<dyn BlobFetcher>) {
        let _ = (imported, fetcher);
    }

    fn restore_cache_mounts(&self, ids: &[String]) -> Result<Vec<String>, WorkerError> {
        let _ = ids;
        Ok(Vec::new())
    }

    fn export_records(&self, solved: &[(CacheKey, Snapshot, String)]) -> Vec<ExportRecord> {
        solved
            .iter()
            .map(|(key, snapshot, description)| ExportRecord {
                key: *key,
                snapshot: snapshot.clone(),
                description: description.clone(),
                parts: None,
                checksums: Vec::new(),
            })
            .collect()
    }

    fn fetch_lazy_blobs(&self, snapshot: &Snapshot) -> Result<(), WorkerError> {
        let _ = snapshot;
        Ok(())
    }

    fn imported_blobs(&self) -> HashSet<Digest> {
        HashSet::new()
    }
}
