//! A stat cache for content checksums: per directory tree (a build context), each file's
//! `(size, mtime, ctime, inode, device, mode)` beside the sha256 of its content, so an
//! unchanged file is never read again. The checksum itself stays content-based: a file whose
//! stat changed (touched, rewritten) is re-hashed, and its new digest is what counts.
//!
//! An entry is trusted only when the file's timestamps are older than the moment its digest
//! was read minus [`RACY_SLACK_NS`] (git's "racily clean" rule): a file written again within
//! the same timestamp tick as the recorded read would otherwise keep an identical stat with
//! different bytes. Such files are simply re-read until they are old enough.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, ReadableTableMetadata};

use crate::meta::{dberr, MetaDb, MetaError, STAT_DIGESTS};

/// How much older than the recorded read a file's timestamps must be for its entry to be
/// trusted. Linux stamps files from a coarse clock (a few ms behind the precise one), and
/// some filesystems keep 1-2 s resolution (FAT, some network filesystems): 2 s covers both.
pub const RACY_SLACK_NS: i64 = 2_000_000_000;

/// What `lstat` says about a regular file, as far as its content is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch (set by the kernel on every write; cannot be
    /// set back by `touch -d`).
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// Mode bits including the file type.
    pub mode: u32,
}

impl FileStat {
    /// The stat of `meta`.
    pub fn of(meta: &fs::Metadata) -> FileStat {
        FileStat {
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            mode: meta.mode(),
        }
    }
}

/// A remembered file digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    /// The file's stat, taken before its content was read.
    pub stat: FileStat,
    /// When the read started (precise clock, ns since the epoch).
    pub recorded_ns: i64,
    /// sha256 of the content.
    pub digest: [u8; 32],
    /// The file's `security.capability` xattr (setting it changes the ctime, so an entry
    /// that vouches for the stat vouches for this too).
    pub cap: Option<Vec<u8>>,
}

const ENTRY_VERSION: u8 = 2;
/// Version, six 64-bit fields, mode, digest, capability flag.
const ENTRY_FIXED: usize = 1 + 8 * 6 + 4 + 32 + 1;

impl StatEntry {
    /// Whether this entry vouches for a file whose stat is now `stat`: same stat, and the
    /// file's timestamps older than the recorded read by more than `slack_ns`.
    pub fn vouches_for(&self, stat: &FileStat, slack_ns: i64) -> bool {
        self.stat == *stat
            && stat.mtime_ns.max(stat.ctime_ns) < self.recorded_ns.saturating_sub(slack_ns)
    }

    fn encode(&self) -> Vec<u8> {
        let s = &self.stat;
        let cap = self.cap.as_deref().unwrap_or_default();
        let mut out: Vec<u8> = Vec::with_capacity(ENTRY_FIXED + cap.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&self.recorded_ns.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        out.extend_from_slice(&self.digest);
        out.push(u8::from(self.cap.is_some()));
        out.extend_from_slice(cap);
        out
    }

    /// The entry stored for `prefix` + `rel` in `table`.
    fn decode_from(
        table: Option<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
        prefix: &[u8],
        rel: &str,
    ) -> Option<StatEntry> {
        let mut key = Vec::with_capacity(prefix.len() + rel.len());
        key.extend_from_slice(prefix);
        key.extend_from_slice(rel.as_bytes());
        let found = table?.get(key.as_slice()).ok()??;
        StatEntry::decode(found.value())
    }

    fn decode(bytes: &[u8]) -> Option<StatEntry> {
        if bytes.len() < ENTRY_FIXED || bytes.first() != Some(&ENTRY_VERSION) {
            return None;
        }
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let i64_at = |i: usize| -> Option<i64> {
            Some(i64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let cap = match bytes.get(ENTRY_FIXED - 1)? {
            0 if bytes.len() == ENTRY_FIXED => None,
            1 => Some(bytes.get(ENTRY_FIXED..)?.to_vec()),
            _ => return None,
        };
        Some(StatEntry {
            stat: FileStat {
                size: u64_at(1)?,
                mtime_ns: i64_at(9)?,
                ctime_ns: i64_at(17)?,
                ino: u64_at(25)?,
                dev: u64_at(33)?,
                mode: u32::from_le_bytes(bytes.get(49..53)?.try_into().ok()?),
            },
            recorded_ns: i64_at(41)?,
            digest: bytes.get(53..85)?.try_into().ok()?,
            cap,
        })
    }
}

/// The precise wall clock, ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The remembered digests of one directory tree for one checksum pass: lookups read a
/// snapshot of the store taken when the pass began, new digests are collected and written
/// by [`StatCache::persist`] in one transaction (none when nothing changed).
pub struct StatCache<'a> {
    store: &'a MetaDb,
    table: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    prefix: Vec<u8>,
    started_ns: i64,
    slack_ns: i64,
    /// Digests read in this pass (a list: a cold pass over a big context records one per
    /// file, and nothing looks them up).
    fresh: Mutex<Vec<(String, StatEntry)>>,
}

impl std::fmt::Debug for StatCache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("root", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

impl<'a> StatCache<'a> {
    /// Begins a pass over the tree at `root` (absolute; made so when it is not).
    pub fn begin(store: &'a MetaDb, root: &Path) -> Result<StatCache<'a>, MetaError> {
        // Taken before any file is stat'ed: a file changed after this instant gets a
        // timestamp no older than this minus the clock's coarseness.
        let started_ns = now_ns();
        let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut prefix = root.as_os_str().as_bytes().to_vec();
        prefix.push(0);
        let txn = store.read()?;
        let table = match txn.open_table(STAT_DIGESTS) {
            Ok(t) => Some(t),
            // A store made before this table existed: everything is a miss.
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(dberr(e)),
        };
        Ok(StatCache {
            store,
            table,
            prefix,
            started_ns,
            slack_ns: RACY_SLACK_NS,
            fresh: Mutex::new(Vec::new()),
        })
    }

    /// Uses `slack_ns` instead of [`RACY_SLACK_NS`] (tests).
    pub fn with_slack(mut self, slack_ns: i64) -> Self {
        self.slack_ns = slack_ns;
        self
    }

    /// The stored entry for `rel`, trusted or not.
    pub fn entry(&self, rel: &str) -> Option<StatEntry> {
        StatEntry::decode_from(self.table.as_ref(), &self.prefix, rel)
    }

    /// The digest and capability of `rel` if its entry vouches for `stat`.
    pub fn lookup(&self, rel: &str, stat: &FileStat) -> Option<([u8; 32], Option<Vec<u8>>)> {
        self.entry(rel)
            .filter(|e| e.vouches_for(stat, self.slack_ns))
            .map(|e| (e.digest, e.cap))
    }

    /// Remembers the digest (and capability) read for `rel` whose stat, taken before the
    /// read, was `stat`.
    pub fn record(&self, rel: &str, stat: FileStat, digest: [u8; 32], cap: Option<Vec<u8>>) {
        let entry = StatEntry {
            stat,
            recorded_ns: self.started_ns,
            digest,
            cap,
        };
        // An entry that would not be trusted next time either (the file is younger than
        // the slack) is still worth keeping: by the next pass it may be old enough.
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.push((rel.to_string(), entry));
        }
    }

    /// How many digests this pass read from files (misses).
    pub fn recorded(&self) -> usize {
        self.fresh.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Writes the digests read in this pass. Nothing is written (no transaction, no fsync)
    /// when every file was a hit.
    pub fn persist(self) -> Result<(), MetaError> {
        let mut fresh = self
            .fresh
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A re-read of a file still too young to be trusted that found what is stored
        // would only move the read time without making the entry usable: no write.
        fresh.retain(|(rel, new)| {
            let same =
                StatEntry::decode_from(self.table.as_ref(), &self.prefix, rel).is_some_and(|old| {
                    old.stat == new.stat && old.digest == new.digest && old.cap == new.cap
                });
            !same || new.vouches_for(&new.stat, self.slack_ns)
        });
        if fresh.is_empty() {
            return Ok(());
        }
        drop(self.table);
        let txn = self.store.writer()?.txn;
        {
            let mut table = txn.open_table(STAT_DIGESTS).map_err(dberr)?;
            for (rel, entry) in &fresh {
                let mut k = self.prefix.clone();
                k.extend_from_slice(rel.as_bytes());
                table
                    .insert(k.as_slice(), entry.encode().as_slice())
                    .map_err(dberr)?;
            }
        }
        txn.commit().map_err(dberr)
    }
}

/// Drops the entries of files that no longer exist (prune calls it: entries are only
/// written, never removed, by builds). Returns how many went.
pub fn forget_missing(store: &MetaDb) -> Result<usize, MetaError> {
    let gone: Vec<Vec<u8>> = {
        let txn = store.read()?;
        let table = match txn.open_table(STAT_DIGESTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(dberr(e)),
        };
        let mut gone = Vec::new();
        for row in table.iter().map_err(dberr)? {
            let (k, _) = row.map_err(dberr)?;
            let key = k.value();
            let Some(split) = key.iter().position(|b| *b == 0) else {
                gone.push(key.to_vec());
                continue;
            };
            let root = key.get(..split).unwrap_or_default();
            let rel = key.get(split + 1..).unwrap_or_default();
            let path =
                Path::new(std::ffi::OsStr::from_bytes(root)).join(std::ffi::OsStr::from_bytes(rel));
            if matches!(fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            {
                gone.push(key.to_vec());
            }
        }
        gone
    };
    if gone.is_empty() {
        return Ok(0);
    }
    let txn = store.writer()?.txn;
    {
        let mut table = txn.open_table(STAT_DIGESTS).map_err(dberr)?;
        for k in &gone {
            table.remove(k.as_slice()).map_err(dberr)?;
        }
    }
    txn.commit().map_err(dberr)?;
    Ok(gone.len())
}

/// Drops every remembered digest (they are only a shortcut; `prune --all` clears them).
pub fn clear(store: &MetaDb) -> Result<usize, MetaError> {
    let txn = store.writer()?.txn;
    let removed = {
        let mut table = txn.open_table(STAT_DIGESTS).map_err(dberr)?;
        let n = table.len().map_err(dberr)?;
        table.retain(|_, _| false).map_err(dberr)?;
        n
    };
    txn.commit().map_err(dberr)?;
    Ok(usize::try_from(removed).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> FileStat {
        FileStat {
            size: 5,
            mtime_ns: 1_000_000_000_000,
            ctime_ns: 1_000_000_000_000,
            ino: 42,
            dev: 7,
            mode: 0o100644,
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = StatEntry {
            stat: stat(),
            recorded_ns: 1_000_000_000_000 + 5_000_000_000,
            digest: [9; 32],
            cap: None,
        };
        assert_eq!(StatEntry::decode(&e.encode()), Some(e.clone()));
        assert_eq!(StatEntry::decode(&e.encode()[1..]), None);
        let mut longer = e.encode();
        longer.push(0);
        assert_eq!(
            StatEntry::decode(&longer),
            None,
            "trailing bytes without a cap"
        );
        let mut other = e.encode();
        other[0] = 99;
        assert_eq!(StatEntry::decode(&other), None, "unknown version");
        let with_cap = StatEntry {
            cap: Some(vec![1, 0, 0, 2, 0x20]),
            ..e
        };
        assert_eq!(StatEntry::decode(&with_cap.encode()), Some(with_cap));
    }

    #[test]
    fn any_stat_change_is_a_miss() {
        let e = StatEntry {
            stat: stat(),
            recorded_ns: stat().ctime_ns + 10 * RACY_SLACK_NS,
            digest: [1; 32],
            cap: None,
        };
        assert!(e.vouches_for(&stat(), RACY_SLACK_NS));
        let changes: [fn(&mut FileStat); 6] = [
            |s| s.size += 1,
            |s| s.mtime_ns += 1,
            |s| s.ctime_ns += 1,
            |s| s.ino += 1,
            |s| s.dev += 1,
            |s| s.mode |= 0o111,
        ];
        for change in changes {
            let mut s = stat();
            change(&mut s);
            assert!(!e.vouches_for(&s, RACY_SLACK_NS), "{s:?}");
        }
    }

    #[test]
    fn racy_entries_are_not_trusted() {
        // Read within the slack after the file's last change: the file could have been
        // written again in the same timestamp tick, so the entry proves nothing.
        let racy = StatEntry {
            stat: stat(),
            recorded_ns: stat().ctime_ns + RACY_SLACK_NS,
            digest: [1; 32],
            cap: None,
        };
        assert!(!racy.vouches_for(&stat(), RACY_SLACK_NS));
        // An mtime set into the future (touch -d) keeps the entry untrusted as well.
        let mut future = stat();
        future.mtime_ns = i64::MAX / 2;
        let e = StatEntry {
            stat: future,
            recorded_ns: stat().ctime_ns + 10 * RACY_SLACK_NS,
            digest: [1; 32],
            cap: None,
        };
        assert!(!e.vouches_for(&future, RACY_SLACK_NS));
    }
}
