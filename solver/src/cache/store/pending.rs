//! Results saved but not committed yet. A write transaction of `meta.redb` costs two
//! fdatasyncs and a header write: one per RUN step was a good part of a step's time. A
//! build's results are therefore committed together, in batches (at most [`MAX_ENTRIES`]
//! results or [`MAX_AGE`] old) and when the solve ends. Until then this process finds them
//! here. Their layers are durable before they are saved (the executor syncs each step's
//! layer), so a batch never commits a record of torn data; a kill loses the batch, which
//! costs only cache misses (its layers are orphans for `prune`).

use std::time::{Duration, Instant};

use crate::cache::key::CacheKey;
use crate::cache::store::CacheResult;
use crate::snapshot::LayerId;

/// A batch this long is committed at the next save.
pub(super) const MAX_ENTRIES: usize = 128;
/// A batch this old is committed at the next save.
pub(super) const MAX_AGE: Duration = Duration::from_secs(2);

/// Blocks until the layers a result needs are durable (see [`CacheStore::save`]).
///
/// [`CacheStore::save`]: super::CacheStore::save
pub type DurableWait = std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// One saved result.
pub(super) struct Entry {
    pub(super) key: CacheKey,
    pub(super) result: CacheResult,
    /// Layers that get a record with it (new layers).
    pub(super) new_layers: Vec<LayerId>,
    pub(super) now: u64,
    /// Waits until its layers are durable; called before the commit.
    pub(super) durable: Option<DurableWait>,
}

/// The batch not committed yet.
#[derive(Default)]
pub(super) struct Pending {
    entries: Vec<Entry>,
    since: Option<Instant>,
}

impl Pending {
    /// Adds a result; returns whether the batch is due for a commit.
    pub(super) fn push(&mut self, entry: Entry) -> bool {
        self.since.get_or_insert_with(Instant::now);
        self.entries.push(entry);
        self.entries.len() >= MAX_ENTRIES || self.since.is_some_and(|t| t.elapsed() >= MAX_AGE)
    }

    /// The latest result saved under `key`.
    pub(super) fn get(&self, key: &CacheKey) -> Option<&CacheResult> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == *key)
            .map(|e| &e.result)
    }

    /// Whether an entry records `id`.
    pub(super) fn records_layer(&self, id: &LayerId) -> bool {
        self.entries.iter().any(|e| e.new_layers.contains(id))
    }

    /// The first `n` entries (to commit).
    pub(super) fn first(&self, n: usize) -> &[Entry] {
        &self.entries[..n.min(self.entries.len())]
    }

    /// How many entries wait.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets the first `n` entries (committed).
    pub(super) fn drop_first(&mut self, n: usize) {
        self.entries.drain(..n.min(self.entries.len()));
        self.since = (!self.entries.is_empty()).then(Instant::now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn entry(k: u8, layer: &str) -> Entry {
        let id = LayerId::parse(layer).unwrap();
        Entry {
            key: CacheKey([k; 32]),
            result: CacheResult {
                snapshot: Snapshot {
                    layers: vec![id.clone()],
                },
                config: None,
                created_at: 1,
                description: format!("step {k}"),
            },
            new_layers: vec![id],
            now: 1,
            durable: None,
        }
    }

    #[test]
    fn a_batch_is_due_when_long_and_keeps_what_came_after_a_commit() {
        let mut p = Pending::default();
        for k in 0..(MAX_ENTRIES - 1) as u8 {
            assert!(!p.push(entry(k, "b-aa")), "not due at {k}");
        }
        assert!(p.push(entry(200, "b-bb")), "due at MAX_ENTRIES");
        assert_eq!(p.get(&CacheKey([200; 32])).unwrap().description, "step 200");
        assert!(p.records_layer(&LayerId::parse("b-bb").unwrap()));
        p.drop_first(MAX_ENTRIES - 1);
        assert_eq!(p.len(), 1);
        assert!(p.get(&CacheKey([0; 32])).is_none());
        assert_eq!(p.first(5).len(), 1);
        p.drop_first(1);
        assert_eq!(p.len(), 0);
        assert!(!p.push(entry(1, "b-cc")), "a fresh batch is not due");
    }
}
