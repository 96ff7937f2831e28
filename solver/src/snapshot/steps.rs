//! The last result of each copy step, so that the next run of the same step (its sources
//! changed) can take its unchanged files over instead of copying them again (see
//! [`crate::ops::file::Reuse`]). One small file per step under `layers/.steps/`, named by
//! the step's identity: a hint, never needed for correctness — a missing, stale or torn
//! record only means a full copy.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LayerId;

/// What identifies a copied source file's content and metadata without reading it: a file
/// rewritten or whose mode, owner or xattrs changed gets a new ctime, which no tool can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp(u64, u64, u64, i64, i64, i64, i64, u32, u32, u32);

impl SourceStamp {
    /// The stamp of a source file as stat'ed.
    pub fn of(md: &Metadata) -> SourceStamp {
        SourceStamp(
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec(),
            md.mode(),
            md.uid(),
            md.gid(),
        )
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.2
    }

    /// The file's mtime (seconds, nanoseconds), which its copy keeps.
    pub fn mtime(&self) -> (i64, i64) {
        (self.3, self.4)
    }
}

/// The result of one run of a copy step: its layer and, for each regular file it copied,
/// the stamp of the source it was copied from (by path below the layer root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The layer the step made.
    pub layer: Option<LayerId>,
    /// Copied files: path below the layer root → source stamp.
    pub files: BTreeMap<String, SourceStamp>,
}

/// The records under `layers/.steps/`.
#[derive(Debug, Clone)]
pub struct StepStore {
    dir: PathBuf,
}

impl StepStore {
    /// The records kept beside the layers in `layers_dir`.
    pub fn new(layers_dir: &Path) -> StepStore {
        StepStore {
            dir: layers_dir.join(".steps"),
        }
    }

    fn path(&self, step: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(step))
    }

    /// The last record of `step`, if one was kept and reads back whole.
    pub fn load(&self, step: &[u8; 32]) -> Option<StepRecord> {
        let bytes = std::fs::read(self.path(step)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps `record` as the last result of `step` (written aside and renamed, so a reader
    /// sees the old record or the new one; not fsynced: a hint may be lost).
    pub fn save(&self, step: &[u8; 32], record: &StepRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        tmp.write_all(&bytes)?;
        tmp.persist(self.path(step)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Forgets the record of `step`.
    pub fn remove(&self, step: &[u8; 32]) {
        let _ = std::fs::remove_file(self.path(step));
    }

    /// Forgets every record whose layer is gone (prune removed it) or that does not read
    /// back; returns how many. Such a record would only ever mean a full copy.
    pub fn prune(&self, layer_exists: impl Fn(&LayerId) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let kept = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<StepRecord>(&b).ok())
                .and_then(|r| r.layer)
                .is_some_and(|l| layer_exists(&l));
            if !kept && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_reads_as_none() {
        let d = tempfile::tempdir().unwrap();
        let store = StepStore::new(d.path());
        let step = [7u8; 32];
        assert_eq!(store.load(&step), None);
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let mut record = StepRecord {
            layer: LayerId::parse("b-0011"),
            files: BTreeMap::new(),
        };
        record.files.insert(
            "app/f".into(),
            SourceStamp::of(&std::fs::metadata(&f).unwrap()),
        );
        store.save(&step, &record).unwrap();
        assert_eq!(store.load(&step), Some(record));
        std::fs::write(store.path(&step), "{torn").unwrap();
        assert_eq!(store.load(&step), None);
        store.remove(&step);
        assert!(!store.path(&step).exists());
    }

    #[test]
    fn prune_forgets_records_of_removed_layers_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let store = StepStore::new(d.path());
        let record = |id: &str| StepRecord {
            layer: LayerId::parse(id),
            files: BTreeMap::new(),
        };
        store.save(&[1; 32], &record("b-0001")).unwrap();
        store.save(&[2; 32], &record("b-0002")).unwrap();
        std::fs::write(store.path(&[3; 32]), "{torn").unwrap();
        let kept = LayerId::parse("b-0001");
        assert_eq!(store.prune(|l| Some(l) == kept.as_ref()), 2);
        assert_eq!(store.load(&[1; 32]), Some(record("b-0001")));
        assert_eq!(store.load(&[2; 32]), None);
        assert!(!store.path(&[3; 32]).exists());
    }
}
