//! The worker's side of the remote build cache: lookups that miss here are answered from
//! the imported caches, lazily (a hit records its layers by blob and diffID; a layer is
//! fetched and unpacked only when a step runs on it, a checksum needs its files or an
//! exporter needs its blob), and what this build learnt about its keys (their parts, the
//! checksums it took) is kept for the export.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_oci::{Descriptor, Digest};

use super::{LocalWorker, Output};
use crate::cache::{CacheKey, CacheResult, ContentChecksum, KeyParts, Selector};
use crate::llb::Vertex;
use crate::mounts::cache::CacheMounts;
use crate::remote_cache::format::selectors_digest;
use crate::remote_cache::import::blob_descriptor;
use crate::remote_cache::{BlobFetcher, ExportRecord, ImportedCache, SelectionChecksum};
use crate::scheduler::WorkerError;
use crate::snapshot::blobs::import_layer;
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

    /// Makes every layer of `snapshot` that came lazily from an imported cache present:
    /// its blob in the content store (verified by digest) and unpacked (verified against
    /// its diffID). Called before exporting an image or a cache. Blocking.
    pub fn fetch_lazy_blobs(&self, snapshot: &Snapshot) -> Result<(), WorkerError> {
        self.materialize(snapshot)
    }

    /// Fills the build's cache mounts `ids` from the imported caches; returns the ids
    /// restored (a cache mount that has content here keeps it). Blocking.
    pub fn restore_cache_mounts(&self, ids: &[String]) -> Result<Vec<String>, WorkerError> {
        let Some(imported) = &self.remote.imported else {
            return Ok(Vec::new());
        };
        let mut restored = Vec::new();
        let mut mounts = None;
        for id in ids {
            let Some((source, blob)) = imported.cache.mount(id) else {
                continue;
            };
            self.fetch_blob(source, &blob_descriptor(blob))?;
            let mounts = match &mut mounts {
                Some(m) => m,
                None => mounts.insert(CacheMounts::new(&self.remote.cache_mounts_dir)?),
            };
            let done = crate::remote_cache::mounts::restore_mount(mounts, id, &self.content, blob)
                .map_err(WorkerError::other)?;
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

    /// Makes the lazy layers of every snapshot input present (before a step runs on them).
    pub(crate) fn materialize_inputs(&self, inputs: &[Output]) -> Result<(), WorkerError> {
        for i in inputs {
            if let Output::Snapshot(s) = i {
                self.materialize(s)?;
            }
        }
        Ok(())
    }

    /// Fetches and unpacks the lazy layers of `snapshot`.
    fn materialize(&self, snapshot: &Snapshot) -> Result<(), WorkerError> {
        for id in &snapshot.layers {
            let Some(layer) = lock(&self.remote.lazy).get(id).cloned() else {
                continue;
            };
            self.check_canceled()?;
            let held = self.blob_lock(&layer.blob.digest);
            let _guard = lock(&held);
            if !self.is_lazy(id) {
                continue; // another step made it present meanwhile
            }
            self.fetch_blob_locked(layer.source, &layer.blob)?;
            import_layer(
                &self.layers,
                &self.content,
                self.cache.meta(),
                &layer.blob.digest,
                &layer.diff_id,
            )
            .map_err(|e| WorkerError::CacheBlob {
                digest: layer.blob.digest.to_string(),
                source_index: layer.source,
                error: e.into(),
            })?;
            lock(&self.remote.lazy).remove(id);
        }
        Ok(())
    }

    /// The lock of blob `digest`'s fetch.
    fn blob_lock(&self, digest: &Digest) -> Arc<Mutex<()>> {
        Arc::clone(
            lock(&self.remote.fetching)
                .entry(digest.clone())
                .or_default(),
        )
    }

    /// Brings `blob` of import source `source` into the content store, once.
    fn fetch_blob(&self, source: usize, blob: &Descriptor) -> Result<(), WorkerError> {
        let held = self.blob_lock(&blob.digest);
        let _guard = lock(&held);
        self.fetch_blob_locked(source, blob)
    }

    /// [`Self::fetch_blob`] under the blob's lock.
    fn fetch_blob_locked(&self, source: usize, blob: &Descriptor) -> Result<(), WorkerError> {
        if self.content.exists(&blob.digest)? {
            return Ok(());
        }
        let fail = |error| WorkerError::CacheBlob {
            digest: blob.digest.to_string(),
            source_index: source,
            error,
        };
        let Some(imported) = &self.remote.imported else {
            return Err(fail("no imported cache to fetch it from".into()));
        };
        tracing::debug!(blob = %blob.digest, size = blob.size, source, "fetching imported cache blob");
        imported.fetcher.fetch(source, blob).map_err(fail)?;
        // The fetcher promises a verified blob; one that is not there is its failure.
        if !self.content.exists(&blob.digest)? {
            return Err(fail("the fetcher did not store it".into()));
        }
        Ok(())
    }

    /// The checksum of `selectors` in `snapshot`: taken before in this build, recorded by
    /// an imported cache (when the snapshot is not all here), or computed from its files
    /// (fetching its lazy layers first). Blocking.
    pub(crate) fn snapshot_checksum(
        &self,
        snapshot: &Snapshot,
        selectors: &[Selector],
    ) -> Result<ContentChecksum, WorkerError> {
        let memo = (snapshot.layers.clone(), selectors_digest(selectors));
        if let Some(c) = lock(&self.remote.checksums).get(&memo) {
            return Ok(*c);
        }
        let known = match snapshot.layers.iter().any(|l| self.is_lazy(l)) {
            true => self.imported_checksum(snapshot, &memo.1)?,
            false => None,
        };
        let sum = match known {
            Some(c) => c,
            None => {
                self.materialize(snapshot)?;
                let view = crate::snapshot::view::SnapshotView::mount(&self.layers, snapshot)?;
                crate::cache::checksum_paths_filtered(view.path(), selectors, None)?
            }
        };
        lock(&self.remote.checksums).insert(memo, sum);
        Ok(sum)
    }

    /// The checksum an imported cache recorded for `selectors` in `snapshot`.
    fn imported_checksum(
        &self,
        snapshot: &Snapshot,
        selectors: &str,
    ) -> Result<Option<ContentChecksum>, WorkerError> {
        let Some(imported) = &self.remote.imported else {
            return Ok(None);
        };
        let mut diff_ids = Vec::with_capacity(snapshot.layers.len());
        for id in &snapshot.layers {
            let lazy = lock(&self.remote.lazy).get(id).map(|l| l.diff_id.clone());
            let diff_id = match lazy {
                Some(d) => Some(d),
                None => self.cache.meta().layer(id)?.and_then(|r| r.diff_id),
            };
            match diff_id {
                Some(d) => diff_ids.push(d),
                None => return Ok(None),
            }
        }
        Ok(imported.cache.checksum(&diff_ids, selectors))
    }
}
