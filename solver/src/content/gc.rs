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

impl ContentStore {
    /// Every blob reachable from the tags of `index.json` (entries without a name count too).
    pub fn reachable(&self) -> Result<HashSet<Digest>> {
        let index = self.index()?;
        kiln_oci::walk::reachable(self, index.manifests).map_err(|e| ContentError::Walk {
            root: self.root().to_path_buf(),
            source: Box::new(e),
        })
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
        self.prune_blob_keys();
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
