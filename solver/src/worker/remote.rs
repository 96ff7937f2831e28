//! The worker's side of the remote build cache: lookups that miss here are answered from
//! the imported caches, lazily (a hit records its layers by blob and diffID; [`fetch`]
//! brings their bytes when a step, a checksum or an exporter needs them), and what this
//! build learnt about its keys (their parts, the checksums it took) is kept for the export.

mod fetch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_oci::{Descriptor, Digest};

use super::LocalWorker;
use crate::cache::{CacheKey, CacheResult, ContentChecksum, KeyParts};
use crate::llb::Vertex;
use crate::mounts::cache::CacheMounts;
use crate::remote_cache::import::blob_descriptor;
use crate::remote_cache::{BlobFetcher, ExportRecord, ImportedCache, SelectionChecksum};
use crate::scheduler::WorkerError;
use crate::snapshot::layer::Compression;
use crate::snapshot::{BlobRecord, LayerId, LayerRecord, Snapshot};

/// The imported caches and how to fetch their blobs.
struct Imported {
    cache: Arc<ImportedCache>,
    fetcher: Arc<dyn BlobFetcher>,
}

/// A layer known by its blob in an imported cache, not unpacked yet.
#[derive(Debug, Clone)]
struct LazyLayer {
    source: usize,
    blob: Descriptor,
    diff_id: Digest,
    /// Its blob is in the content store and decompresses to `diff_id` (checked for an
    /// exporter, which needs the blob but not the files).
    verified: bool,
}

/// The remote-cache state of one build.
pub(crate) struct RemoteState {
    imported: Option<Imported>,
    /// Layers recorded from an imported cache without a directory.
    lazy: Mutex<HashMap<LayerId, LazyLayer>>,
    /// One lock per blob being fetched: concurrent needs of a blob fetch it once.
    fetching: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    /// What each key computed in this build was made of.
    parts: Mutex<HashMap<CacheKey, KeyParts>>,
    /// Checksums taken in this build, by (snapshot layers, selectors digest).
    checksums: Mutex<HashMap<(Vec<LayerId>, String), ContentChecksum>>,
    /// The cache-mount store (restored from an import).
    cache_mounts_dir: PathBuf,
    /// The most bytes a restored cache mount may unpack to (the layer size limit).
    pub(crate) restore_limit: Option<u64>,
}

impl RemoteState {
    /// No imported cache yet; cache mounts live in `cache_mounts_dir`.
    pub(crate) fn new(cache_mounts_dir: PathBuf) -> Self {
        RemoteState {
            imported: None,
            lazy: Mutex::default(),
            fetching: Mutex::default(),
            parts: Mutex::default(),
            checksums: Mutex::default(),
            cache_mounts_dir,
            restore_limit: None,
        }
    }
}

/// A lock's guard, whether or not a holder panicked (the maps stay consistent: every
/// change is one insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalWorker {
    /// Answers lookups that miss locally from `imported`, fetching blobs through `fetcher`
    /// only when their bytes are needed.
    pub fn set_imported_cache(
        &mut self,
        imported: Arc<ImportedCache>,
        fetcher: Arc<dyn BlobFetcher>,
    ) {
        self.remote.imported = Some(Imported {
            cache: imported,
            fetcher,
        });
    }

    /// Every blob digest the imported caches list (an exporter need not check them again
    /// at the registry they came from).
    pub fn imported_blobs(&self) -> HashSet<Digest> {
        self.remote
            .imported
            .as_ref()
            .map(|i| i.cache.blobs().clone())
            .unwrap_or_default()
    }

    /// Fills the build's cache mounts `ids` from the imported caches; returns the ids
    /// restored (a cache mount that has content here keeps it). Blocking.
    pub fn restore_cache_mounts(&self, ids: &[String]) -> Result<Vec<String>, WorkerError> {
        let Some(imported) = &self.remote.imported else {
            return Ok(Vec::new());
        };
        let mounts = CacheMounts::new(&self.remote.cache_mounts_dir)?
            .with_restore_limit(self.remote.restore_limit);
        let mut restored = Vec::new();
        for id in ids {
            let Some((source, blob)) = imported.cache.mount(id) else {
                continue;
            };
            // A mount with content here is newer than any import: not even downloaded
            // (`restore_mount` checks again under the mount's lock).
            let dir = mounts.root().join(CacheMounts::key(id));
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                continue;
            }
            self.fetch_blob(source, &blob_descriptor(blob))?;
            let done = crate::remote_cache::mounts::restore_mount(&mounts, id, &self.content, blob)
                .map_err(|e| WorkerError::CacheBlob {
                    digest: blob.digest.to_string(),
                    source_index: source,
                    error: e.into(),
                })?;
            if done {
                restored.push(id.clone());
            }
        }
        Ok(restored)
    }

    /// The export records of `solved` (key, result, description): with the key parts and
    /// the selection checksums this build computed (or that the imported record had).
    pub fn export_records(&self, solved: &[(CacheKey, Snapshot, String)]) -> Vec<ExportRecord> {
        let parts = lock(&self.remote.parts);
        let checksums = lock(&self.remote.checksums);
        let imported = self.remote.imported.as_ref();
        solved
            .iter()
            .map(|(key, snapshot, description)| {
                let from_import = imported.and_then(|i| i.cache.lookup(key));
                let mut sums: Vec<SelectionChecksum> = checksums
                    .iter()
                    .filter(|((layers, _), _)| *layers == snapshot.layers)
                    .map(|((_, selectors), checksum)| SelectionChecksum {
                        selectors: selectors.clone(),
                        checksum: *checksum,
                    })
                    .collect();
                for c in from_import
                    .map(|r| r.checksums.as_slice())
                    .unwrap_or_default()
                {
                    if !sums.iter().any(|s| s.selectors == c.selectors) {
                        sums.push(c.clone());
                    }
                }
                sums.sort_by(|a, b| a.selectors.cmp(&b.selectors));
                ExportRecord {
                    key: *key,
                    snapshot: snapshot.clone(),
                    description: description.clone(),
                    parts: parts
                        .get(key)
                        .cloned()
                        .or_else(|| from_import.and_then(|r| r.parts.clone())),
                    checksums: sums,
                }
            })
            .collect()
    }

    /// Remembers what `key` was made of (for the export and for explanations).
    pub(crate) fn remember_parts(&self, key: &CacheKey, parts: &KeyParts) {
        lock(&self.remote.parts).insert(*key, parts.clone());
    }

    /// Why `vertex`, whose key is made of `parts`, missed the imported caches; `None`
    /// when nothing was imported. `inputs` describe its inputs, in order.
    pub(crate) fn explain_imported_miss(
        &self,
        vertex: &Vertex,
        parts: &KeyParts,
        inputs: &[String],
    ) -> Option<String> {
        let imported = self.remote.imported.as_ref()?;
        if imported.cache.is_empty() {
            return None;
        }
        let description = vertex.summary();
        let step = crate::remote_cache::explain::Step {
            description: &description,
            op: vertex.op(),
            parts,
            inputs,
        };
        Some(crate::remote_cache::explain::explain_miss(
            &step,
            &imported.cache,
        ))
    }

    /// Whether an imported cache with records is set.
    pub(crate) fn has_imported_cache(&self) -> bool {
        self.remote
            .imported
            .as_ref()
            .is_some_and(|i| !i.cache.is_empty())
    }

    /// Whether [`Self::load_imported`] would find `key`.
    pub(crate) fn can_load_imported(&self, key: &CacheKey) -> bool {
        let Some(imported) = &self.remote.imported else {
            return false;
        };
        imported.cache.lookup(key).is_some_and(|r| {
            r.layers
                .iter()
                .all(|(blob, _)| Compression::from_media_type(&blob.media_type).is_some())
        })
    }

    /// Whether `id` is known by its imported blob only.
    pub(crate) fn is_lazy(&self, id: &LayerId) -> bool {
        lock(&self.remote.lazy).contains_key(id)
    }

    /// The result of `key` from the imported caches: its layers recorded by blob and
    /// diffID (unpacked only when needed), stored as a local cache record too.
    pub(crate) fn load_imported(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
    ) -> Result<Option<Snapshot>, WorkerError> {
        let Some(imported) = &self.remote.imported else {
            return Ok(None);
        };
        let Some(record) = imported.cache.lookup(key) else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(record.layers.len());
        for (blob, diff_id) in &record.layers {
            let Some(compression) = Compression::from_media_type(&blob.media_type) else {
                // Not a layer kiln can unpack: a miss, never a guess.
                tracing::warn!(blob = %blob.digest, media_type = %blob.media_type, "imported cache record has a blob that is no layer; ignored");
                return Ok(None);
            };
            layers.push((blob, diff_id, compression));
        }
        let now = crate::meta::now_secs();
        let mut snapshot = Snapshot::scratch();
        let mut lazy = Vec::new();
        let mut w = self.cache.writer()?;
        for (blob, diff_id, compression) in layers {
            let id = LayerId::for_diff_id(diff_id);
            let mut rec = LayerRecord::new(id.clone());
            rec.diff_id = Some(diff_id.clone());
            // The blob is paired with the layer only while it is unverified and needed:
            // a layer present here keeps its own (verified) blobs.
            if !self.layers.exists(&id) {
                rec.blobs.push(BlobRecord {
                    digest: blob.digest.clone(),
                    size: blob.size,
                    compression,
                });
                lazy.push((
                    id.clone(),
                    LazyLayer {
                        source: record.source,
                        blob: blob.clone(),
                        diff_id: diff_id.clone(),
                        verified: false,
                    },
                ));
            }
            w.put_layer(&rec, now)?;
            snapshot.layers.push(id);
        }
        let result = CacheResult {
            snapshot: snapshot.clone(),
            config: None,
            created_at: record.created_at,
            description: vertex.summary(),
        };
        w.put_result(key, &result, now)?;
        w.commit()?;
        lock(&self.remote.lazy).extend(lazy);
        Ok(Some(snapshot))
    }
}
