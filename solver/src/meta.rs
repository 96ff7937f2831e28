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

/// The open metadata database.
pub struct MetaDb {
    db: redb::Database,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaDb")
    }
}

impl MetaDb {
    /// Opens or creates the database; several kiln processes may have it open at once.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
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
        Ok(MetaDb { db })
    }

    fn has_tables(db: &redb::Database) -> Result<bool, MetaError> {
        use redb::ReadableDatabase;
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

    /// A read transaction: a consistent view of every table.
    pub(crate) fn read(&self) -> Result<redb::ReadTransaction, MetaError> {
        use redb::ReadableDatabase;
        self.db.begin_read().map_err(dberr)
    }

    /// Starts an atomic batch of changes; nothing is visible until [`MetaWriter::commit`].
    pub fn writer(&self) -> Result<MetaWriter, MetaError> {
        Ok(MetaWriter {
            txn: self.db.begin_write().map_err(dberr)?,
        })
    }
}

/// An open write transaction over every table; the modules owning the tables add the
/// methods that change them. Dropping it without [`MetaWriter::commit`] discards every
/// change.
pub struct MetaWriter {
    pub(crate) txn: redb::WriteTransaction,
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
