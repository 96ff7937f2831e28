//! `meta.redb`, the state directory's metadata database, shared by the stores built on it.
//! This module holds its schema, opening, transactions and errors. Each table belongs to one
//! module, the only one that reads or writes it: cache results and their last uses to
//! [`crate::cache::store`], layer records and blob → layer to [`crate::snapshot::records`],
//! the context stat cache to [`crate::cache::statcache`]. Keeping them in one database lets
//! one write transaction change a cache result and the layer records it refers to together:
//! a crash or a dropped [`MetaWriter`] leaves the previous committed state.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

/// Cache key → result (owned by [`crate::cache::store`]).
pub(crate) const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cache_results");
/// Cache key → last use (owned by [`crate::cache::store`]).
pub(crate) const RESULT_USED: TableDefinition<&[u8], u64> =
    TableDefinition::new("cache_result_last_used");
/// Layer id → layer record (owned by [`crate::snapshot::records`]).
pub(crate) const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
/// Layer id → last use (owned by [`crate::snapshot::records`]).
pub(crate) const LAYER_USED: TableDefinition<&str, u64> = TableDefinition::new("layer_last_used");
/// Blob digest → layer id (owned by [`crate::snapshot::records`]).
pub(crate) const BLOBS: TableDefinition<&str, &str> = TableDefinition::new("blob_layers");
/// Context stat cache: `root \0 relative path` → encoded stat entry (owned by
/// [`crate::cache::statcache`]).
pub(crate) const STAT_DIGESTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("contenthash_stat");
/// Context checksum memos: `root \0 selection digest` → fingerprint and checksum (owned by
/// [`crate::cache::statcache`]).
pub(crate) const CONTEXT_MEMOS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("contenthash_memo");

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
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
    /// A stored record is not the JSON of its type.
    #[error("corrupt {table} record {key}: {source}")]
    Undecodable {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A cache result or a blob refers to a layer that has no record.
    #[error("unknown layer {0}: it has no layer record")]
    MissingLayer(String),
}

/// Wraps any redb error.
pub(crate) fn dberr<E: Into<redb::Error>>(e: E) -> MetaError {
    MetaError::Db(e.into())
}

/// Decodes a stored record of `table`.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, MetaError> {
    serde_json::from_slice(bytes).map_err(|source| MetaError::Undecodable {
        table,
        key: key.to_string(),
        source,
    })
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structures always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Seconds since the epoch, for last-use times.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The open metadata database. It is opened read-only, and the writable handle only when a
/// first write needs it: in redb's multi-writer mode a writable handle costs a durable
/// header write when it opens and a commit when it closes, so a build that changes nothing
/// (a no-op rebuild) then leaves the file untouched, with no fsync.
pub struct MetaDb {
    path: std::path::PathBuf,
    /// The read-only handle of an existing database (None when it had to be made writable
    /// at once: a new file, missing tables, a repair).
    reader: Option<redb::ReadOnlyDatabase>,
    /// The writable handle, once a write needed it; reads go through it from then on.
    writable: std::sync::OnceLock<redb::Database>,
    /// Serialises the opening of `writable`: a handle opened twice would be closed again,
    /// at the cost of a commit.
    opening: std::sync::Mutex<()>,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaDb")
    }
}

fn builder() -> redb::Builder {
    let mut b = redb::Database::builder();
    b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    b
}

impl MetaDb {
    /// Opens or creates the database; several kiln processes may have it open at once.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        create_whole(path)?;
        let mut db = MetaDb {
            path: path.to_path_buf(),
            reader: None,
            writable: std::sync::OnceLock::new(),
            opening: std::sync::Mutex::new(()),
        };
        // A file that needs a repair, or that another redb cannot share read-only, is opened
        // writable, which repairs it.
        if let Ok(reader) = builder().open_read_only(path) {
            if Self::has_tables(&reader)? {
                db.reader = Some(reader);
                return Ok(db);
            }
        }
        // Create the tables so readers never see "table does not exist" (a write and its
        // fsync only when one is missing).
        let w = db.writable()?;
        if !Self::has_tables(w)? {
            let txn = w.begin_write().map_err(dberr)?;
            {
                txn.open_table(RESULTS).map_err(dberr)?;
                txn.open_table(RESULT_USED).map_err(dberr)?;
                txn.open_table(LAYERS).map_err(dberr)?;
                txn.open_table(LAYER_USED).map_err(dberr)?;
                txn.open_table(BLOBS).map_err(dberr)?;
                txn.open_table(STAT_DIGESTS).map_err(dberr)?;
                txn.open_table(CONTEXT_MEMOS).map_err(dberr)?;
            }
            txn.commit().map_err(dberr)?;
        }
        Ok(db)
    }

    /// The writable handle, opened on first use.
    fn writable(&self) -> Result<&redb::Database, MetaError> {
        if let Some(db) = self.writable.get() {
            return Ok(db);
        }
        let _opening = self
            .opening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(db) = self.writable.get() {
            return Ok(db);
        }
        let db = builder().create(&self.path).map_err(dberr)?;
        Ok(self.writable.get_or_init(|| db))
    }

    fn has_tables(db: &impl redb::ReadableDatabase) -> Result<bool, MetaError> {
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
            CONTEXT_MEMOS.name(),
        ]
        .iter()
        .all(|n| names.contains(*n)))
    }

    /// A read transaction: a consistent view of every table.
    pub(crate) fn read(&self) -> Result<redb::ReadTransaction, MetaError> {
        use redb::ReadableDatabase;
        match (self.writable.get(), &self.reader) {
            (Some(db), _) => db.begin_read().map_err(dberr),
            (None, Some(reader)) => reader.begin_read().map_err(dberr),
            (None, None) => self.writable()?.begin_read().map_err(dberr),
        }
    }

    /// Whether this handle has written, or opened the file for writing (tests).
    pub fn opened_writable(&self) -> bool {
        self.writable.get().is_some()
    }

    /// Starts an atomic batch of changes; nothing is visible until [`MetaWriter::commit`].
    pub fn writer(&self) -> Result<MetaWriter, MetaError> {
        Ok(MetaWriter {
            txn: self.writable()?.begin_write().map_err(dberr)?,
            seen: LayersSeen::default(),
        })
    }
}

/// An open write transaction over every table; the modules owning the tables add the
/// methods that change them. Dropping it without [`MetaWriter::commit`] discards every
/// change.
pub struct MetaWriter {
    pub(crate) txn: redb::WriteTransaction,
    /// What this transaction knows of layer records already (see [`LayersSeen`]).
    pub(crate) seen: LayersSeen,
}

/// The layers a write transaction found or wrote a record of, and the last use it wrote
/// of each: saving a batch of results of one chain asks about and touches the same layers
/// for every result, which the table lookups made quadratic in the chain's length.
#[derive(Debug, Default)]
pub(crate) struct LayersSeen {
    /// Layers known to have a record in this transaction.
    pub(crate) recorded: std::collections::HashSet<String>,
    /// The last use written of each layer in this transaction.
    pub(crate) touched: std::collections::HashMap<String, u64>,
}

impl MetaWriter {
    /// Makes every change durable and visible at once.
    pub fn commit(self) -> Result<(), MetaError> {
        self.txn.commit().map_err(dberr)
    }
}

/// Makes a new database file under another name and links it into place whole: redb
/// sizes a new file before it writes the magic number, so a kill -9 in between would
/// leave a file no later open accepts ("Not a redb database"). A concurrent creator's
/// file wins (a link never replaces); what killed creators left is removed here.
fn create_whole(path: &Path) -> Result<(), MetaError> {
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
        if pid.is_some_and(|pid| !crate::pid::alive(pid)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTable;

    fn stat_rows(db: &MetaDb) -> Vec<Vec<u8>> {
        let txn = db.read().unwrap();
        let t = txn.open_table(STAT_DIGESTS).unwrap();
        t.iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect()
    }

    fn put(db: &MetaDb, key: &[u8]) {
        let w = db.writer().unwrap();
        w.txn
            .open_table(STAT_DIGESTS)
            .unwrap()
            .insert(key, &b"v"[..])
            .unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn an_existing_database_opens_read_only_beside_a_writer_and_follows_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("meta.redb");
        let first = MetaDb::open(&path).unwrap();
        assert!(first.opened_writable(), "a new file is made writable");
        put(&first, b"a");
        // Another handle (as another process would) while the first is open.
        let second = MetaDb::open(&path).unwrap();
        assert!(!second.opened_writable());
        assert_eq!(stat_rows(&second), [b"a".to_vec()]);
        put(&first, b"b");
        assert_eq!(stat_rows(&second).len(), 2, "the reader follows commits");
        put(&second, b"c");
        assert!(second.opened_writable());
        assert_eq!(stat_rows(&first).len(), 3);
        drop(first);
        drop(second);
        // A read-only session leaves the file as it was.
        let bytes = std::fs::read(&path).unwrap();
        let third = MetaDb::open(&path).unwrap();
        assert_eq!(stat_rows(&third).len(), 3);
        drop(third);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
