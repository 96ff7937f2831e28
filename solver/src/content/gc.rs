//! Garbage collection of the content store: blobs not reachable from a tag (through indexes
//! and manifests) and not kept by the caller are removed, with leftover ingest files.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, SystemTime};

use kiln_oci::Digest;

use super::error::{ContentError, Result};
use super::lock::{LockMode, StoreLock};
use super::{BlobInfo, ContentStore};

/// Age after which an ingest temporary file counts as abandoned.
pub const STALE_INGEST: Duration = Duration::from_secs(3600);

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Removed blobs.
    pub removed: Vec<BlobInfo>,
    /// Bytes freed (blobs and ingest leftovers).
    pub reclaimed: u64,
}

/// The digests a JSON manifest or index refers to (config, layers, manifests, subject).
fn children(bytes: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |d: &serde_json::Value| {
        if let Some(s) = d.get("digest").and_then(|x| x.as_str()) {
            if let Ok(d) = Digest::try_from(s) {
                out.push(d);
            }
        }
    };
    for key in ["manifests", "layers", "blobs"] {
        if let Some(arr) = v.get(key).and_then(|x| x.as_array()) {
            arr.iter().for_each(&mut push);
        }
    }
    for key in ["config", "subject"] {
        if let Some(d) = v.get(key) {
            push(d);
        }
    }
    out
}

/// Whether a descriptor's blob may refer to other blobs (manifests, indexes, artifacts).
fn may_refer(media_type: &str) -> bool {
    media_type.contains("manifest") || media_type.contains("index") || media_type.is_empty()
}

impl ContentStore {
    /// Every blob reachable from the tags of `index.json` (entries without a name count too).
    pub fn reachable(&self) -> Result<HashSet<Digest>> {
        let index = self.index()?;
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut stack: Vec<(Digest, bool)> = index
            .manifests
            .iter()
            .map(|d| (d.digest.clone(), may_refer(&d.media_type)))
            .collect();
        while let Some((digest, follow)) = stack.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            // Layers are never parsed: only small JSON documents can refer to blobs.
            if !follow || !self.exists(&digest)? {
                continue;
            }
            if self.size(&digest)?.unwrap_or(0) > 4 * 1024 * 1024 {
                continue;
            }
            let bytes = self.read_blob(&digest)?;
            let v: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            let layer_digests: HashSet<String> = v
                .as_ref()
                .and_then(|v| v.get("layers"))
                .and_then(|l| l.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| {
                            d.get("digest").and_then(|x| x.as_str()).map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            for child in children(&bytes) {
                let is_layer = layer_digests.contains(child.as_ref());
                stack.push((child, !is_layer));
            }
        }
        Ok(seen)
    }

    /// Removes every blob that is neither reachable from a tag nor in `keep`, and leftover
    /// ingest files. The caller must hold the store lock exclusively (no build is writing).
    pub fn collect_garbage(&self, lock: &StoreLock, keep: &HashSet<Digest>) -> Result<GcReport> {
        if lock.mode() != LockMode::Exclusive {
            return Err(ContentError::InvalidLayout {
                path: self.root().to_path_buf(),
                reason: "garbage collection needs the store lock held exclusively".into(),
            });
        }
        let reachable = self.reachable()?;
        let mut report = GcReport::default();
        for blob in self.list_blobs()? {
            if reachable.contains(&blob.digest) || keep.contains(&blob.digest) {
                continue;
            }
            if self.delete(&blob.digest)? {
                report.reclaimed += blob.size;
                report.removed.push(blob);
            }
        }
        // Temporary files untouched for a while are leftovers of killed processes; younger ones
        // may belong to a pull that does not take the store lock, so they stay.
        let tmp = self.tmp_dir();
        let now = SystemTime::now();
        let entries =
            fs::read_dir(&tmp).map_err(|e| ContentError::io("read directory", &tmp, e))?;
        for e in entries {
            let e = e.map_err(|e| ContentError::io("read directory", &tmp, e))?;
            let Ok(meta) = e.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age >= STALE_INGEST && fs::remove_file(e.path()).is_ok() {
                report.reclaimed += meta.len();
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use kiln_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
    use serde_json::json;

    use super::*;
    use crate::content::LockMode;

    #[test]
    fn only_unreachable_blobs_are_collected() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path().join("content")).unwrap();
        let layer = s.put_bytes(b"layer bytes").unwrap();
        let config = s.put_bytes(br#"{"architecture":"amd64"}"#).unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest.to_string(), "size": layer.size}]
        });
        let m = s.put_json(OCI_MANIFEST, &manifest).unwrap();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.digest.to_string(), "size": m.size}]
        });
        let i = s.put_json(OCI_INDEX, &index).unwrap();
        s.set_tag("docker.io/library/app:1", &i).unwrap();
        let orphan = s.put_bytes(b"orphan").unwrap();
        let kept = s.put_bytes(b"a cached layer blob").unwrap();
        let mut left = s.ingest(Default::default()).unwrap();
        std::io::Write::write_all(&mut left, b"half").unwrap();
        std::mem::forget(left); // a crashed process leaves its temp file behind, long ago
        for e in fs::read_dir(s.tmp_dir()).unwrap() {
            let f = fs::File::options()
                .write(true)
                .open(e.unwrap().path())
                .unwrap();
            f.set_modified(SystemTime::now() - STALE_INGEST - Duration::from_secs(1))
                .unwrap();
        }
        let mut fresh = s.ingest(Default::default()).unwrap(); // a pull in progress
        std::io::Write::write_all(&mut fresh, b"in flight").unwrap();

        let shared = s.lock(LockMode::Shared).unwrap();
        assert!(s.collect_garbage(&shared, &HashSet::new()).is_err());
        drop(shared);
        let lock = s.lock(LockMode::Exclusive).unwrap();
        let keep: HashSet<Digest> = [kept.digest.clone()].into_iter().collect();
        let report = s.collect_garbage(&lock, &keep).unwrap();
        assert_eq!(
            report
                .removed
                .iter()
                .map(|b| b.digest.clone())
                .collect::<Vec<_>>(),
            vec![orphan.digest]
        );
        for live in [
            &layer.digest,
            &config.digest,
            &m.digest,
            &i.digest,
            &kept.digest,
        ] {
            assert!(s.exists(live).unwrap(), "{live} must stay");
        }
        assert_eq!(
            fs::read_dir(s.tmp_dir()).unwrap().count(),
            1,
            "only the fresh ingest stays"
        );
        let fresh = fresh.commit().unwrap();
        assert!(s.exists(&fresh.digest).unwrap());

        // Untagging makes the whole image garbage.
        s.remove_tag("docker.io/library/app:1").unwrap();
        let report = s.collect_garbage(&lock, &HashSet::new()).unwrap();
        assert_eq!(report.removed.len(), 6);
        assert!(s.list_blobs().unwrap().is_empty());
    }
}
