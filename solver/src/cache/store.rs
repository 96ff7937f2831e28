//! The persistent cache store in `meta.redb`: cache key → result, and the last use of each
//! result for prune and du. Layer records live beside it in the same database
//! ([`crate::snapshot::records`]), so one [`MetaWriter`] changes a result and the layers it
//! needs at once.

use std::path::Path;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::key::CacheKey;
use crate::meta::{dberr, decode, encode, MetaDb, MetaError, MetaWriter, RESULTS, RESULT_USED};
use crate::snapshot::{LayerId, LayerRecord, Snapshot};

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheResult {
    /// The resulting filesystem.
    pub snapshot: Snapshot,
    /// The image-config bits the step changes (for sources: the image config), opaque here.
    pub config: Option<serde_json::Value>,
    /// When the result was made (seconds since the epoch).
    pub created_at: u64,
    /// What made it (a vertex description), for `du`.
    pub description: String,
}

/// One row of `du`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The key.
    pub key: CacheKey,
    /// The result.
    pub result: CacheResult,
    /// Last use (seconds since the epoch).
    pub last_used: u64,
}

/// The cache store.
pub struct CacheStore {
    meta: MetaDb,
    /// Uses seen by [`CacheStore::lookup`] and not yet written: a build that writes records
    /// them in one of its transactions, one that does not in the use journal.
    uses: std::sync::Mutex<Vec<(CacheKey, CacheResult, u64)>>,
    journal: uses::UseJournal,
    /// Results saved by [`CacheStore::save`] and not committed yet.
    pending: std::sync::Mutex<pending::Pending>,
}

impl Drop for CacheStore {
    fn drop(&mut self) {
        // A batch lost here costs cache misses only; last-use times only order prune's
        // choices: neither error is worth more than trying.
        let _ = self.commit_pending();
        let _ = self.flush_uses();
    }
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheStore")
    }
}

impl CacheStore {
    /// Opens or creates the database; several kiln processes may have it open at once.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Ok(CacheStore {
            meta: MetaDb::open(path)?,
            uses: std::sync::Mutex::new(Vec::new()),
            journal: uses::UseJournal::beside(path),
            pending: std::sync::Mutex::default(),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, pending::Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Saves `result` under `key`, with a record for each of `new_layers` (every other
    /// layer of its snapshot has one already, or gets one from an earlier save). It is
    /// committed with the batch it joins (see [`pending`]); until then this store finds it.
    /// Its layers must be durable when `durable` returns (it is called before the commit),
    /// or already when there is none.
    pub fn save(
        &self,
        key: &CacheKey,
        result: CacheResult,
        new_layers: Vec<LayerId>,
        now: u64,
        durable: Option<DurableWait>,
    ) -> Result<(), MetaError> {
        let due = self.pending().push(pending::Entry {
            key: *key,
            result,
            new_layers,
            now,
            durable,
        });
        if due {
            self.commit_pending()?;
        }
        Ok(())
    }

    /// Commits the results saved so far in one write transaction (with the uses seen).
    pub fn commit_pending(&self) -> Result<(), MetaError> {
        // Held throughout: two commits of the same batch would only repeat each other.
        let mut pending = self.pending();
        let n = pending.len();
        if n == 0 {
            return Ok(());
        }
        // Records only of layers on disk: a crash after the commit finds them whole.
        for e in pending.first(n) {
            if let Some(wait) = &e.durable {
                wait().map_err(io_err)?;
            }
        }
        let mut w = self.writer()?;
        for e in pending.first(n) {
            for id in &e.new_layers {
                if !w.has_layer(id)? {
                    w.put_layer(&LayerRecord::new(id.clone()), e.now)?;
                }
            }
            w.put_result(&e.key, &e.result, e.now)?;
        }
        w.commit()?;
        pending.drop_first(n);
        Ok(())
    }

    /// Whether `id` has a layer record, committed or waiting in the batch.
    pub fn has_layer_record(&self, id: &LayerId) -> Result<bool, MetaError> {
        if self.pending().records_layer(id) {
            return Ok(true);
        }
        Ok(self.meta.layer(id)?.is_some())
    }

    /// The whole metadata database, for the other tables of `meta.redb` (layer records,
    /// the stat cache).
    pub fn meta(&self) -> &MetaDb {
        &self.meta
    }

    fn take_uses(&self) -> Vec<(CacheKey, CacheResult, u64)> {
        match self.uses.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Starts an atomic batch of changes; nothing is visible until [`MetaWriter::commit`].
    /// Uses recorded by [`CacheStore::lookup`] so far ride along.
    pub fn writer(&self) -> Result<MetaWriter, MetaError> {
        let mut w = self.meta.writer()?;
        for (key, result, now) in self.take_uses() {
            w.touch_result(&key, &result, now)?;
        }
        Ok(w)
    }

    /// Writes the uses recorded by [`CacheStore::lookup`]: into the database when this
    /// process writes it anyway (with the journal's), else into the use journal, which is
    /// folded into the database once it grew past [`uses::FOLD_BYTES`]. A build that
    /// changed nothing thus never opens the database for writing.
    pub fn flush_uses(&self) -> Result<(), MetaError> {
        let uses = self.take_uses();
        if !self.meta.opened_writable() {
            if uses.is_empty() {
                return Ok(());
            }
            let lines: Vec<(CacheKey, u64)> = uses.iter().map(|(k, _, now)| (*k, *now)).collect();
            if self.journal.append(&lines).map_err(io_err)? < uses::FOLD_BYTES {
                return Ok(());
            }
        }
        let taken = self.journal.take().map_err(io_err)?;
        if uses.is_empty() && taken.is_none() {
            return Ok(());
        }
        let mut w = self.meta.writer()?;
        for (key, result, now) in &uses {
            w.touch_result(key, result, *now)?;
        }
        if let Some(taken) = &taken {
            for (key, now) in &taken.uses {
                w.touch_if_later(key, *now)?;
            }
        }
        w.commit()?;
        if let Some(taken) = taken {
            taken.done();
        }
        Ok(())
    }

    /// The result stored under `key`, without touching its last-use time.
    pub fn get(&self, key: &CacheKey) -> Result<Option<CacheResult>, MetaError> {
        if let Some(r) = self.pending().get(key) {
            return Ok(Some(r.clone()));
        }
        self.meta.cache_result(key)
    }

    /// Looks `key` up and, on a hit, records the use at `now` (for prune's LRU order). The
    /// use is written with the next write transaction, by [`CacheStore::flush_uses`], or
    /// when the store is dropped.
    pub fn lookup(&self, key: &CacheKey, now: u64) -> Result<Option<CacheResult>, MetaError> {
        let Some(result) = self.get(key)? else {
            return Ok(None);
        };
        match self.uses.lock() {
            Ok(mut u) => u.push((*key, result.clone(), now)),
            Err(poisoned) => poisoned.into_inner().push((*key, result.clone(), now)),
        }
        Ok(Some(result))
    }

    /// Every cache entry with its last use, oldest use first (for `du` and `prune`).
    pub fn entries(&self) -> Result<Vec<CacheEntry>, MetaError> {
        self.commit_pending()?;
        self.flush_uses()?;
        let journal = self.journal.read().map_err(io_err)?;
        let txn = self.meta.read()?;
        let results = txn.open_table(RESULTS).map_err(dberr)?;
        let used = txn.open_table(RESULT_USED).map_err(dberr)?;
        let mut out = Vec::new();
        for row in results.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            let key = CacheKey(k.value().try_into().map_err(|_| MetaError::Corrupt {
                table: "cache_results",
                key: hex::encode(k.value()),
                message: "key is not 32 bytes".into(),
            })?);
            let result: CacheResult = decode("cache_results", &key.to_string(), v.value())?;
            let last_used = used
                .get(k.value())
                .map_err(dberr)?
                .map(|g| g.value())
                .unwrap_or(result.created_at)
                .max(journal.get(&key).copied().unwrap_or(0));
            out.push(CacheEntry {
                key,
                result,
                last_used,
            });
        }
        out.sort_by_key(|e| (e.last_used, e.key));
        Ok(out)
    }

    /// Layers no cache result refers to (candidates for garbage collection).
    pub fn unreferenced_layers(&self) -> Result<Vec<LayerRecord>, MetaError> {
        let mut referenced = std::collections::HashSet::new();
        for e in self.entries()? {
            referenced.extend(e.result.snapshot.layers);
        }
        Ok(self
            .meta
            .layers()?
            .into_iter()
            .filter(|l| !referenced.contains(&l.id))
            .collect())
    }
}

impl MetaDb {
    /// The cache result stored under `key` (for readers holding the database only, such as
    /// the remote-cache export).
    pub fn cache_result(&self, key: &CacheKey) -> Result<Option<CacheResult>, MetaError> {
        let txn = self.read()?;
        let table = txn.open_table(RESULTS).map_err(dberr)?;
        match table.get(&key.0[..]).map_err(dberr)? {
            Some(v) => Ok(Some(decode("cache_results", &key.to_string(), v.value())?)),
            None => Ok(None),
        }
    }
}

impl MetaWriter {
    /// Stores `result` under `key`. Every layer of its snapshot must have a record (written
    /// before, or earlier in this transaction).
    pub fn put_result(
        &mut self,
        key: &CacheKey,
        result: &CacheResult,
        now: u64,
    ) -> Result<(), MetaError> {
        for l in &result.snapshot.layers {
            if !self.has_layer(l)? {
                return Err(MetaError::MissingLayer(l.to_string()));
            }
        }
        let mut results = self.txn.open_table(RESULTS).map_err(dberr)?;
        results
            .insert(&key.0[..], encode(result).as_slice())
            .map_err(dberr)?;
        drop(results);
        self.touch_result(key, result, now)
    }

    /// Records a use of `key` (and its layers) at `now`.
    pub fn touch_result(
        &mut self,
        key: &CacheKey,
        result: &CacheResult,
        now: u64,
    ) -> Result<(), MetaError> {
        let mut used = self.txn.open_table(RESULT_USED).map_err(dberr)?;
        used.insert(&key.0[..], now).map_err(dberr)?;
        drop(used);
        self.touch_layers(&result.snapshot.layers, now)
    }

    /// Records a use of `key` at `now` unless a later one is recorded; a key that has no
    /// result (pruned since) is left alone.
    fn touch_if_later(&mut self, key: &CacheKey, now: u64) -> Result<(), MetaError> {
        let result = {
            let results = self.txn.open_table(RESULTS).map_err(dberr)?;
            let found = results.get(&key.0[..]).map_err(dberr)?;
            match found {
                Some(v) => decode::<CacheResult>("cache_results", &key.to_string(), v.value())?,
                None => return Ok(()),
            }
        };
        let recorded = {
            let used = self.txn.open_table(RESULT_USED).map_err(dberr)?;
            let got = used.get(&key.0[..]).map_err(dberr)?.map(|g| g.value());
            got
        };
        if recorded.is_some_and(|r| r >= now) {
            return Ok(());
        }
        self.touch_result(key, &result, now)
    }

    /// Removes a cache result; returns whether it existed.
    pub fn remove_result(&mut self, key: &CacheKey) -> Result<bool, MetaError> {
        let mut results = self.txn.open_table(RESULTS).map_err(dberr)?;
        let existed = results.remove(&key.0[..]).map_err(dberr)?.is_some();
        drop(results);
        let mut used = self.txn.open_table(RESULT_USED).map_err(dberr)?;
        used.remove(&key.0[..]).map_err(dberr)?;
        Ok(existed)
    }

    /// Removes a layer record and its blob mappings; refused (`None`) while a result refers
    /// to it.
    pub fn remove_layer(&mut self, id: &LayerId) -> Result<Option<LayerRecord>, MetaError> {
        {
            let results = self.txn.open_table(RESULTS).map_err(dberr)?;
            for row in results.iter().map_err(dberr)? {
                let (k, v) = row.map_err(dberr)?;
                let r: CacheResult = decode("cache_results", &hex::encode(k.value()), v.value())?;
                if r.snapshot.layers.contains(id) {
                    return Ok(None);
                }
            }
        }
        self.remove_layer_record(id)
    }
}

fn io_err(e: std::io::Error) -> MetaError {
    dberr(redb::StorageError::Io(e))
}

mod pending;
pub use pending::DurableWait;
#[cfg(test)]
mod tests;
mod uses;
