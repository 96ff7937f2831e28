//! The persistent cache store in `meta.redb`: cache key → result, layer records
//! (layer id → diffID and blobs per compression), blob → layer id, and last-use times for
//! prune and du. Every change happens in one redb write transaction: a crash or a dropped
//! [`CacheWriter`] leaves the previous committed state.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::Digest;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use super::key::CacheKey;
use super::statcache::STAT_DIGESTS;
use crate::snapshot::{BlobRecord, LayerId, LayerRecord, Snapshot};

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cache_results");
const RESULT_USED: TableDefinition<&[u8], u64> = TableDefinition::new("cache_result_last_used");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const LAYER_USED: TableDefinition<&str, u64> = TableDefinition::new("layer_last_used");
const BLOBS: TableDefinition<&str, &str> = TableDefinition::new("blob_layers");

/// Errors of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum CacheStoreError {
    /// The database failed.
    #[error("cache database: {0}")]
    Db(#[from] redb::Error),
    /// A stored record does not decode.
    #[error("corrupt {table} record {key}: {message}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// A result refers to a layer that has no record.
    #[error("cache result refers to unknown layer {0}")]
    MissingLayer(LayerId),
}

fn dberr<E: Into<redb::Error>>(e: E) -> CacheStoreError {
    CacheStoreError::Db(e.into())
}

/// Makes a new database file under another name and links it into place whole: redb
/// sizes a new file before it writes the magic number, so a kill -9 in between would
/// leave a file no later open accepts ("Not a redb database"). A concurrent creator's
/// file wins (a link never replaces); what killed creators left is removed here.
fn create_whole(path: &Path) -> Result<(), CacheStoreError> {
    let io = |e: std::io::Error| dberr(redb::StorageError::Io(e));
    if path.exists() {
        return Ok(());
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let prefix = format!(".{}.new-", name.to_string_lossy());
    for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let file = e.file_name();
        let pid = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix)?.parse().ok());
        if pid.is_some_and(|pid| !crate::executor::sweep::alive(pid)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    drop(redb::Database::create(&tmp).map_err(dberr)?);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(e)),
        _ => Ok(()),
    }
}

/// Seconds since the epoch, for last-use times.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
    db: redb::Database,
    /// Uses seen by [`CacheStore::lookup`] and not yet written: a fully cached build records
    /// them in one transaction (one fsync) instead of one per step.
    uses: std::sync::Mutex<Vec<(CacheKey, CacheResult, u64)>>,
}

impl Drop for CacheStore {
    fn drop(&mut self) {
        // Last-use times only order prune's choices; losing them on an error is harmless.
        let _ = self.flush_uses();
    }
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheStore")
    }
}

fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, CacheStoreError> {
    serde_json::from_slice(bytes).map_err(|e| CacheStoreError::Corrupt {
        table,
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structures always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

impl CacheStore {
    /// Opens or creates the database; several kiln processes may have it open at once.
    pub fn open(path: &Path) -> Result<Self, CacheStoreError> {
        create_whole(path)?;
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(dberr)?;
        // Create the tables so readers never see "table does not exist" (a write and its
        // fsync only when one is missing: every build opens the store).
        if !Self::has_tables(&db)? {
            let txn = db.begin_write().map_err(dberr)?;
            {
                txn.open_table(RESULTS).map_err(dberr)?;
                txn.open_table(RESULT_USED).map_err(dberr)?;
                txn.open_table(LAYERS).map_err(dberr)?;
                txn.open_table(LAYER_USED).map_err(dberr)?;
                txn.open_table(BLOBS).map_err(dberr)?;
                txn.open_table(STAT_DIGESTS).map_err(dberr)?;
            }
            txn.commit().map_err(dberr)?;
        }
        Ok(CacheStore {
            db,
            uses: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn has_tables(db: &redb::Database) -> Result<bool, CacheStoreError> {
        let txn = db.begin_read().map_err(dberr)?;
        let names: std::collections::HashSet<String> = txn
            .list_tables()
            .map_err(dberr)?
            .map(|t| t.name().to_string())
            .collect();
        Ok([
            RESULTS.name(),
            RESULT_USED.name(),
            LAYERS.name(),
            LAYER_USED.name(),
            BLOBS.name(),
            STAT_DIGESTS.name(),
        ]
        .iter()
        .all(|n| names.contains(*n)))
    }

    /// The database, for the other tables of `meta.redb` (the stat cache).
    pub(crate) fn db(&self) -> &redb::Database {
        &self.db
    }

    fn take_uses(&self) -> Vec<(CacheKey, CacheResult, u64)> {
        match self.uses.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Starts an atomic batch of changes; nothing is visible until [`CacheWriter::commit`].
    /// Uses recorded by [`CacheStore::lookup`] so far ride along.
    pub fn writer(&self) -> Result<CacheWriter, CacheStoreError> {
        let mut w = CacheWriter {
            txn: self.db.begin_write().map_err(dberr)?,
        };
        for (key, result, now) in self.take_uses() {
            w.touch(&key, &result, now)?;
        }
        Ok(w)
    }

    /// Writes the uses recorded by [`CacheStore::lookup`] (nothing when there are none).
    pub fn flush_uses(&self) -> Result<(), CacheStoreError> {
        let uses = self.take_uses();
        if uses.is_empty() {
            return Ok(());
        }
        let mut w = CacheWriter {
            txn: self.db.begin_write().map_err(dberr)?,
        };
        for (key, result, now) in &uses {
            w.touch(key, result, *now)?;
        }
        w.commit()
    }

    /// The result stored under `key`, without touching its last-use time.
    pub fn get(&self, key: &CacheKey) -> Result<Option<CacheResult>, CacheStoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(RESULTS).map_err(dberr)?;
        match table.get(&key.0[..]).map_err(dberr)? {
            Some(v) => Ok(Some(decode("cache_results", &key.to_string(), v.value())?)),
            None => Ok(None),
        }
    }

    /// Looks `key` up and, on a hit, records the use at `now` (for prune's LRU order). The
    /// use is written with the next write transaction, by [`CacheStore::flush_uses`], or
    /// when the store is dropped.
    pub fn lookup(&self, key: &CacheKey, now: u64) -> Result<Option<CacheResult>, CacheStoreError> {
        let Some(result) = self.get(key)? else {
            return Ok(None);
        };
        match self.uses.lock() {
            Ok(mut u) => u.push((*key, result.clone(), now)),
            Err(poisoned) => poisoned.into_inner().push((*key, result.clone(), now)),
        }
        Ok(Some(result))
    }

    /// The record of a layer.
    pub fn layer(&self, id: &LayerId) -> Result<Option<LayerRecord>, CacheStoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(LAYERS).map_err(dberr)?;
        match table.get(id.as_str()).map_err(dberr)? {
            Some(v) => Ok(Some(decode("layers", id.as_str(), v.value())?)),
            None => Ok(None),
        }
    }

    /// The layer a blob we have seen (pulled or made) belongs to.
    pub fn layer_of_blob(&self, blob: &Digest) -> Result<Option<LayerId>, CacheStoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(BLOBS).map_err(dberr)?;
        match table.get(blob.as_ref()).map_err(dberr)? {
            Some(v) => {
                LayerId::parse(v.value())
                    .map(Some)
                    .ok_or_else(|| CacheStoreError::Corrupt {
                        table: "blob_layers",
                        key: blob.to_string(),
                        message: format!("{:?} is not a layer id", v.value()),
                    })
            }
            None => Ok(None),
        }
    }

    /// Every cache entry with its last use, oldest use first (for `du` and `prune`).
    pub fn entries(&self) -> Result<Vec<CacheEntry>, CacheStoreError> {
        self.flush_uses()?;
        let txn = self.db.begin_read().map_err(dberr)?;
        let results = txn.open_table(RESULTS).map_err(dberr)?;
        let used = txn.open_table(RESULT_USED).map_err(dberr)?;
        let mut out = Vec::new();
        for row in results.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            let key = CacheKey(k.value().try_into().map_err(|_| CacheStoreError::Corrupt {
                table: "cache_results",
                key: hex::encode(k.value()),
                message: "key is not 32 bytes".into(),
            })?);
            let result: CacheResult = decode("cache_results", &key.to_string(), v.value())?;
            let last_used = used
                .get(k.value())
                .map_err(dberr)?
                .map(|g| g.value())
                .unwrap_or(result.created_at);
            out.push(CacheEntry {
                key,
                result,
                last_used,
            });
        }
        out.sort_by_key(|e| (e.last_used, e.key));
        Ok(out)
    }

    /// Every layer record.
    pub fn layers(&self) -> Result<Vec<LayerRecord>, CacheStoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(LAYERS).map_err(dberr)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            out.push(decode("layers", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Layers no cache result refers to (candidates for garbage collection).
    pub fn unreferenced_layers(&self) -> Result<Vec<LayerRecord>, CacheStoreError> {
        let mut referenced = std::collections::HashSet::new();
        for e in self.entries()? {
            referenced.extend(e.result.snapshot.layers);
        }
        Ok(self
            .layers()?
            .into_iter()
            .filter(|l| !referenced.contains(&l.id))
            .collect())
    }
}

/// An open write transaction. Dropping it without [`CacheWriter::commit`] discards every change.
pub struct CacheWriter {
    txn: redb::WriteTransaction,
}

impl CacheWriter {
    /// Stores `result` under `key`. Every layer of its snapshot must have a record (written
    /// before, or earlier in this transaction).
    pub fn put_result(
        &mut self,
        key: &CacheKey,
        result: &CacheResult,
        now: u64,
    ) -> Result<(), CacheStoreError> {
        {
            let layers = self.txn.open_table(LAYERS).map_err(dberr)?;
            for l in &result.snapshot.layers {
                if layers.get(l.as_str()).map_err(dberr)?.is_none() {
                    return Err(CacheStoreError::MissingLayer(l.clone()));
                }
            }
        }
        let mut results = self.txn.open_table(RESULTS).map_err(dberr)?;
        results
            .insert(&key.0[..], encode(result).as_slice())
            .map_err(dberr)?;
        drop(results);
        self.touch(key, result, now)
    }

    /// Records a use of `key` (and its layers) at `now`.
    pub fn touch(
        &mut self,
        key: &CacheKey,
        result: &CacheResult,
        now: u64,
    ) -> Result<(), CacheStoreError> {
        let mut used = self.txn.open_table(RESULT_USED).map_err(dberr)?;
        used.insert(&key.0[..], now).map_err(dberr)?;
        let mut layer_used = self.txn.open_table(LAYER_USED).map_err(dberr)?;
        for l in &result.snapshot.layers {
            layer_used.insert(l.as_str(), now).map_err(dberr)?;
        }
        Ok(())
    }

    /// Adds or updates a layer record: what `record` knows is merged into what is stored
    /// (a diffID once known stays, blobs accumulate).
    pub fn put_layer(&mut self, record: &LayerRecord, now: u64) -> Result<(), CacheStoreError> {
        let key = record.id.as_str();
        let mut layers = self.txn.open_table(LAYERS).map_err(dberr)?;
        let merged = match layers.get(key).map_err(dberr)? {
            Some(old) => {
                let mut old: LayerRecord = decode("layers", key, old.value())?;
                old.merge(record);
                old
            }
            None => record.clone(),
        };
        layers
            .insert(key, encode(&merged).as_slice())
            .map_err(dberr)?;
        drop(layers);
        let mut blobs = self.txn.open_table(BLOBS).map_err(dberr)?;
        for b in &merged.blobs {
            blobs.insert(b.digest.as_ref(), key).map_err(dberr)?;
        }
        drop(blobs);
        let mut used = self.txn.open_table(LAYER_USED).map_err(dberr)?;
        used.insert(key, now).map_err(dberr)?;
        Ok(())
    }

    /// Remembers the diffID and a compressed form of a recorded layer.
    pub fn add_blob(
        &mut self,
        id: &LayerId,
        diff_id: &Digest,
        blob: &BlobRecord,
        now: u64,
    ) -> Result<(), CacheStoreError> {
        {
            let layers = self.txn.open_table(LAYERS).map_err(dberr)?;
            if layers.get(id.as_str()).map_err(dberr)?.is_none() {
                return Err(CacheStoreError::MissingLayer(id.clone()));
            }
        }
        let mut record = LayerRecord::new(id.clone());
        record.diff_id = Some(diff_id.clone());
        record.blobs.push(blob.clone());
        self.put_layer(&record, now)
    }

    /// Removes a cache result; returns whether it existed.
    pub fn remove_result(&mut self, key: &CacheKey) -> Result<bool, CacheStoreError> {
        let mut results = self.txn.open_table(RESULTS).map_err(dberr)?;
        let existed = results.remove(&key.0[..]).map_err(dberr)?.is_some();
        drop(results);
        let mut used = self.txn.open_table(RESULT_USED).map_err(dberr)?;
        used.remove(&key.0[..]).map_err(dberr)?;
        Ok(existed)
    }

    /// Removes a layer record and its blob mappings; refused (`None`) while a result refers
    /// to it.
    pub fn remove_layer(&mut self, id: &LayerId) -> Result<Option<LayerRecord>, CacheStoreError> {
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
        let mut layers = self.txn.open_table(LAYERS).map_err(dberr)?;
        let removed = match layers.remove(id.as_str()).map_err(dberr)? {
            Some(v) => Some(decode::<LayerRecord>("layers", id.as_str(), v.value())?),
            None => None,
        };
        drop(layers);
        if let Some(r) = &removed {
            let mut blobs = self.txn.open_table(BLOBS).map_err(dberr)?;
            for b in &r.blobs {
                blobs.remove(b.digest.as_ref()).map_err(dberr)?;
            }
            drop(blobs);
            let mut used = self.txn.open_table(LAYER_USED).map_err(dberr)?;
            used.remove(id.as_str()).map_err(dberr)?;
        }
        Ok(removed)
    }

    /// Makes every change durable and visible at once.
    pub fn commit(self) -> Result<(), CacheStoreError> {
        self.txn.commit().map_err(dberr)
    }
}

#[cfg(test)]
mod tests;
