//! Lazy layers: an imported layer's blob fetched (once, under a per-blob lock) and
//! verified when an exporter needs it, unpacked when a step runs on it or a checksum needs
//! its files (unless the import recorded that checksum).

use std::sync::{Arc, Mutex};

use kiln_oci::{Descriptor, Digest};

use super::{lock, LazyLayer};
use crate::cache::{ContentChecksum, Selector};
use crate::llb::Vertex;
use crate::remote_cache::format::selectors_digest;
use crate::scheduler::WorkerError;
use crate::snapshot::blobs::import_layer;
use crate::snapshot::layer::Compression;
use crate::snapshot::Snapshot;
use crate::worker::{LocalWorker, Output};

impl LocalWorker {
    /// Brings the blob of every layer of `snapshot` that came lazily from an imported
    /// cache into the content store, verified by digest and by the diffID it decompresses
    /// to (not unpacked: an exporter needs the blob, not the files; a step on the layer
    /// unpacks it later). Called before exporting an image or a cache. Blocking.
    pub fn fetch_lazy_blobs(&self, snapshot: &Snapshot) -> Result<(), WorkerError> {
        for id in &snapshot.layers {
            let pending = |l: &LazyLayer| !l.verified;
            let Some(layer) = lock(&self.remote.lazy)
                .get(id)
                .filter(|l| pending(l))
                .cloned()
            else {
                continue;
            };
            self.check_canceled()?;
            let held = self.blob_lock(&layer.blob.digest);
            let _guard = lock(&held);
            if !lock(&self.remote.lazy).get(id).is_some_and(pending) {
                continue; // verified or unpacked meanwhile
            }
            self.fetch_blob_locked(layer.source, &layer.blob)?;
            self.verify_lazy_blob(&layer)
                .map_err(|error| WorkerError::CacheBlob {
                    digest: layer.blob.digest.to_string(),
                    source_index: layer.source,
                    error,
                })?;
            if let Some(l) = lock(&self.remote.lazy).get_mut(id) {
                l.verified = true;
            }
        }
        Ok(())
    }

    /// Checks that a fetched lazy layer's blob is compressed as its media type says and
    /// decompresses to its diffID, reading at most the layer size limit (64 GiB without).
    fn verify_lazy_blob(&self, layer: &LazyLayer) -> Result<(), crate::scheduler::BoxError> {
        use std::io::Read as _;
        let file = self.content.open_blob(&layer.blob.digest)?;
        let (found, reader) = crate::snapshot::layer::decompress(file)?;
        if Compression::from_media_type(&layer.blob.media_type) != Some(found) {
            return Err(format!(
                "the blob is {} but listed as {}",
                found.oci_media_type(),
                layer.blob.media_type
            )
            .into());
        }
        let limit = self.remote.restore_limit.unwrap_or(64 << 30);
        let mut hashing = kiln_oci::HashingWriter::new(std::io::sink());
        let copied = std::io::copy(&mut reader.take(limit.saturating_add(1)), &mut hashing)?;
        if copied > limit {
            return Err(format!("the layer unpacks to more than {limit} bytes").into());
        }
        let (_, diff_id, _) = hashing.finish();
        if diff_id != layer.diff_id {
            return Err(crate::snapshot::layers::LayerStoreError::DiffIdMismatch {
                blob: layer.blob.digest.to_string(),
                expected: layer.diff_id.to_string(),
                actual: diff_id.to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// Makes the lazy layers of every snapshot input present (before `vertex` runs on
    /// them), each fetch shown on the vertex's progress.
    pub(crate) fn materialize_inputs(
        &self,
        vertex: &Vertex,
        inputs: &[Output],
    ) -> Result<(), WorkerError> {
        let progress = self.progress.handle(vertex.digest());
        for i in inputs {
            if let Output::Snapshot(s) = i {
                self.materialize(s, Some(&progress))?;
            }
        }
        Ok(())
    }

    /// Fetches and unpacks the lazy layers of `snapshot`, each a status item of
    /// `progress` when given.
    fn materialize(
        &self,
        snapshot: &Snapshot,
        progress: Option<&crate::progress::VertexProgress>,
    ) -> Result<(), WorkerError> {
        // A streamed copy's layers: unpacked from their blob on first use.
        self.layers.materialize_all(&snapshot.layers)?;
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
            let size = layer.blob.size;
            let status = progress.map(|p| p.status(layer.blob.digest.to_string()));
            if let Some(s) = &status {
                s.update(0, Some(size));
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
            if let Some(s) = status {
                s.complete(size, Some(size));
            }
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
    pub(super) fn fetch_blob(&self, source: usize, blob: &Descriptor) -> Result<(), WorkerError> {
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
                self.materialize(snapshot, None)?;
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
