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

use redb::ReadableTable;

use crate::meta::{dberr, MetaDb, MetaError, CONTEXT_MEMOS, STAT_DIGESTS};

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

/// The version byte of a stored directory: its files' entries, sorted by name.
const DIR_VERSION: u8 = 3;
/// Per entry after its name: six 64-bit fields, mode, digest, capability flag and length.
const ENTRY_FIXED: usize = 8 * 6 + 4 + 32 + 1 + 4;

impl StatEntry {
    /// Whether this entry vouches for a file whose stat is now `stat`: same stat, and the
    /// file's timestamps older than the recorded read by more than `slack_ns`.
    pub fn vouches_for(&self, stat: &FileStat, slack_ns: i64) -> bool {
        self.stat == *stat
            && stat.mtime_ns.max(stat.ctime_ns) < self.recorded_ns.saturating_sub(slack_ns)
    }

    /// Appends the entry of the file `name` to a stored directory.
    fn encode_into(&self, name: &[u8], out: &mut Vec<u8>) {
        let s = &self.stat;
        let cap = self.cap.as_deref().unwrap_or_default();
        out.extend_from_slice(&len32(name.len()).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&self.recorded_ns.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        out.extend_from_slice(&self.digest);
        out.push(u8::from(self.cap.is_some()));
        out.extend_from_slice(&len32(cap.len()).to_le_bytes());
        out.extend_from_slice(cap);
    }

    /// The entry whose fixed fields start `bytes` (its capability follows them).
    fn decode(bytes: &[u8]) -> Option<StatEntry> {
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let i64_at = |i: usize| -> Option<i64> {
            Some(i64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let cap_len = u32::from_le_bytes(bytes.get(85..89)?.try_into().ok()?) as usize;
        let cap = match bytes.get(84)? {
            0 if cap_len == 0 => None,
            1 => Some(bytes.get(ENTRY_FIXED..ENTRY_FIXED + cap_len)?.to_vec()),
            _ => return None,
        };
        Some(StatEntry {
            stat: FileStat {
                size: u64_at(0)?,
                mtime_ns: i64_at(8)?,
                ctime_ns: i64_at(16)?,
                ino: u64_at(24)?,
                dev: u64_at(32)?,
                mode: u32::from_le_bytes(bytes.get(48..52)?.try_into().ok()?),
            },
            recorded_ns: i64_at(40)?,
            digest: bytes.get(52..84)?.try_into().ok()?,
            cap,
        })
    }
}

/// A length as stored (names and capabilities are far below 4 GiB).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The stored entries of one directory's files: the value read from the store once, and
/// where each name and entry starts in it (sorted by name, as stored), so a file's entry
/// is a binary search away and a directory costs one read however many files it holds.
#[derive(Debug, Default)]
pub struct DirStats {
    bytes: Vec<u8>,
    /// (name start, entry start) into `bytes`: the name ends where its entry starts.
    index: Vec<(u32, u32)>,
}

impl DirStats {
    /// Indexes a stored directory; a value that does not decode (another version, a
    /// truncated write) is an empty directory: every file is a miss.
    fn parse(bytes: Vec<u8>) -> DirStats {
        match Self::index_of(&bytes) {
            Some(index) => DirStats { bytes, index },
            None => DirStats::default(),
        }
    }

    fn index_of(bytes: &[u8]) -> Option<Vec<(u32, u32)>> {
        if bytes.first() != Some(&DIR_VERSION) {
            return None;
        }
        let mut index = Vec::new();
        let mut at = 1usize;
        let mut previous: Option<&[u8]> = None;
        while at < bytes.len() {
            let name_len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let name_start = at + 4;
            let entry = name_start.checked_add(name_len)?;
            let name = bytes.get(name_start..entry)?;
            let fixed = bytes.get(entry..entry.checked_add(ENTRY_FIXED)?)?;
            let cap_len = u32::from_le_bytes(fixed.get(85..89)?.try_into().ok()?) as usize;
            let next = entry.checked_add(ENTRY_FIXED)?.checked_add(cap_len)?;
            bytes.get(entry..next)?;
            // Sorted and unique, or the binary search would miss entries.
            if previous.is_some_and(|p| p >= name) {
                return None;
            }
            previous = Some(name);
            index.push((u32::try_from(name_start).ok()?, u32::try_from(entry).ok()?));
            at = next;
        }
        Some(index)
    }

    fn name(&self, i: &(u32, u32)) -> &[u8] {
        self.bytes
            .get(i.0 as usize..i.1 as usize)
            .unwrap_or_default()
    }

    /// The stored entry of the file `name`, trusted or not.
    pub fn entry(&self, name: &[u8]) -> Option<StatEntry> {
        let i = self
            .index
            .binary_search_by(|i| self.name(i).cmp(name))
            .ok()?;
        let at = self.index.get(i)?.1 as usize;
        StatEntry::decode(self.bytes.get(at..)?)
    }

    /// Every stored (name, entry), in name order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], StatEntry)> + '_ {
        self.index.iter().filter_map(|i| {
            let entry = StatEntry::decode(self.bytes.get(i.1 as usize..)?)?;
            Some((self.name(i), entry))
        })
    }

    /// How many files the directory has entries for.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Encodes a directory's entries; `entries` sorted by name, names unique.
fn encode_dir<'e>(entries: impl Iterator<Item = (&'e [u8], &'e StatEntry)>) -> Vec<u8> {
    let mut out = vec![DIR_VERSION];
    for (name, entry) in entries {
        entry.encode_into(name, &mut out);
    }
    out
}

/// `rel` as (its directory, its name): `src/a.txt` is (`src`, `a.txt`), `a.txt` is (``, `a.txt`).
fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// The precise wall clock, ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A selection's checksum remembered beside the fingerprint of the tree it was computed
/// from: while a walk finds the same fingerprint, the checksum holds (see
/// [`super::fingerprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memo {
    /// The fingerprint's digest.
    pub(crate) fingerprint: [u8; 32],
    /// The checksum.
    pub(crate) checksum: [u8; 32],
}

/// The version byte of a stored memo.
const MEMO_VERSION: u8 = 1;

impl Memo {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65);
        out.push(MEMO_VERSION);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.checksum);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Memo> {
        match bytes.split_first() {
            Some((&MEMO_VERSION, rest)) if rest.len() == 64 => Some(Memo {
                fingerprint: rest.get(..32)?.try_into().ok()?,
                checksum: rest.get(32..)?.try_into().ok()?,
            }),
            _ => None,
        }
    }
}

type Table = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The remembered digests of one directory tree for one checksum pass: lookups read a
/// snapshot of the store taken when the pass began (one stored value per directory), new
/// digests are collected and written by [`StatCache::persist`] in one transaction (none when
/// nothing changed).
pub struct StatCache<'a> {
    store: &'a MetaDb,
    table: Option<Table>,
    memos: Option<Table>,
    prefix: Vec<u8>,
    started_ns: i64,
    slack_ns: i64,
    /// Digests read in this pass (a list: a cold pass over a big context records one per
    /// file, and nothing looks them up).
    fresh: Mutex<Vec<(String, StatEntry)>>,
    /// Memos made in this pass, by selection digest.
    fresh_memos: Mutex<Vec<([u8; 32], Memo)>>,
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
        // A store made before a table existed: everything is a miss.
        let open = |def| match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(dberr(e)),
        };
        Ok(StatCache {
            store,
            table: open(STAT_DIGESTS)?,
            memos: open(CONTEXT_MEMOS)?,
            prefix,
            started_ns,
            slack_ns: RACY_SLACK_NS,
            fresh: Mutex::new(Vec::new()),
            fresh_memos: Mutex::new(Vec::new()),
        })
    }

    /// Uses `slack_ns` instead of [`RACY_SLACK_NS`] (tests).
    pub fn with_slack(mut self, slack_ns: i64) -> Self {
        self.slack_ns = slack_ns;
        self
    }

    /// How much older than the recorded read a file must be for its entry to be trusted.
    pub fn slack_ns(&self) -> i64 {
        self.slack_ns
    }

    /// The store key of `tail` (a relative directory, a selection digest) in this tree.
    fn key(&self, tail: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + tail.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(tail);
        key
    }

    /// The stored entries of the files of the directory `dir` (relative to the root, ``
    /// for the root itself): one read for all of them.
    pub fn dir(&self, dir: &str) -> DirStats {
        let Some(table) = self.table.as_ref() else {
            return DirStats::default();
        };
        match table.get(self.key(dir.as_bytes()).as_slice()) {
            Ok(Some(value)) => DirStats::parse(value.value().to_vec()),
            _ => DirStats::default(),
        }
    }

    /// The stored entry for `rel`, trusted or not.
    pub fn entry(&self, rel: &str) -> Option<StatEntry> {
        let (dir, name) = split_rel(rel);
        self.dir(dir).entry(name.as_bytes())
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

    /// The memo stored for the selection `selection` (a digest of selectors and ignore
    /// rules) of this tree.
    pub(crate) fn memo(&self, selection: &[u8; 32]) -> Option<Memo> {
        let table = self.memos.as_ref()?;
        let value = table.get(self.key(selection).as_slice()).ok()??;
        Memo::decode(value.value())
    }

    /// Remembers `memo` for `selection` (its fingerprint the one of the walk that computed
    /// the checksum; the caller skips one already stored), unless an entry changed too recently (`youngest_ns`, its latest mtime
    /// or ctime) to rule out a same-tick change after its stat (the racily-clean rule of
    /// file entries): such a memo could vouch for content the walk never saw.
    pub(crate) fn remember(&self, selection: [u8; 32], memo: Memo, youngest_ns: i64) {
        if youngest_ns >= self.started_ns.saturating_sub(self.slack_ns) {
            return;
        }
        if let Ok(mut fresh) = self.fresh_memos.lock() {
            fresh.push((selection, memo));
        }
    }

    /// How many digests this pass read from files (misses).
    pub fn recorded(&self) -> usize {
        self.fresh.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Writes the digests read in this pass: each directory that gained or changed an entry
    /// is stored again whole. Nothing is written (no transaction, no fsync) when every file
    /// was a hit.
    pub fn persist(self) -> Result<(), MetaError> {
        let mut fresh = std::mem::take(
            &mut *self
                .fresh
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // By directory, then name: one stored value per directory.
        fresh.sort_by(|a, b| split_rel(&a.0).cmp(&split_rel(&b.0)));
        let mut changed: Vec<(String, Vec<u8>)> = Vec::new();
        let mut rest = fresh.as_slice();
        while let Some((first, _)) = rest.first() {
            let dir = split_rel(first).0;
            let n = rest
                .iter()
                .position(|(rel, _)| split_rel(rel).0 != dir)
                .unwrap_or(rest.len());
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let old = self.dir(dir);
            // A re-read of a file still too young to be trusted that found what is stored
            // would only move the read time without making the entry usable: no write.
            let worth = group.iter().any(|(rel, new)| {
                let same = old.entry(split_rel(rel).1.as_bytes()).is_some_and(|old| {
                    old.stat == new.stat && old.digest == new.digest && old.cap == new.cap
                });
                !same || new.vouches_for(&new.stat, self.slack_ns)
            });
            if !worth {
                continue;
            }
            let mut merged: std::collections::BTreeMap<&[u8], StatEntry> = old.entries().collect();
            for (rel, new) in group {
                merged.insert(split_rel(rel).1.as_bytes(), new.clone());
            }
            changed.push((
                dir.to_string(),
                encode_dir(merged.iter().map(|(n, e)| (*n, e))),
            ));
        }
        let memos = std::mem::take(
            &mut *self
                .fresh_memos
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if changed.is_empty() && memos.is_empty() {
            return Ok(());
        }
        let memos: Vec<(Vec<u8>, Vec<u8>)> = memos
            .iter()
            .map(|(selection, memo)| (self.key(selection), memo.encode()))
            .collect();
        let changed: Vec<(Vec<u8>, Vec<u8>)> = changed
            .into_iter()
            .map(|(dir, value)| (self.key(dir.as_bytes()), value))
            .collect();
        drop(self.table);
        drop(self.memos);
        let txn = self.store.writer()?.txn;
        for (def, rows) in [(STAT_DIGESTS, &changed), (CONTEXT_MEMOS, &memos)] {
            let mut table = txn.open_table(def).map_err(dberr)?;
            for (k, value) in rows {
                table
                    .insert(k.as_slice(), value.as_slice())
                    .map_err(dberr)?;
            }
        }
        txn.commit().map_err(dberr)
    }
}

/// Drops the entries of files that no longer exist (prune calls it: entries are only
/// written, never removed, by builds), and values of an older format. Returns how many
/// file entries went.
pub fn forget_missing(store: &MetaDb) -> Result<usize, MetaError> {
    forget_stale_memos(store)?;
    let mut gone = 0usize;
    // Per stored directory: None to remove it, Some(value) to store it smaller.
    let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
        let txn = store.read()?;
        let table = match txn.open_table(STAT_DIGESTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(dberr(e)),
        };
        let mut changes = Vec::new();
        for row in table.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            let key = k.value();
            let stored = DirStats::parse(v.value().to_vec());
            let dir = key
                .iter()
                .position(|b| *b == 0)
                .map(|split| {
                    let root = key.get(..split).unwrap_or_default();
                    let rel = key.get(split + 1..).unwrap_or_default();
                    Path::new(std::ffi::OsStr::from_bytes(root))
                        .join(std::ffi::OsStr::from_bytes(rel))
                })
                .filter(|_| !stored.is_empty());
            let Some(dir) = dir else {
                changes.push((key.to_vec(), None));
                continue;
            };
            let kept: Vec<(&[u8], StatEntry)> = stored
                .entries()
                .filter(|(name, _)| {
                    let path = dir.join(std::ffi::OsStr::from_bytes(name));
                    !matches!(fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                })
                .collect();
            if kept.len() == stored.len() {
                continue;
            }
            gone += stored.len() - kept.len();
            let value = (!kept.is_empty()).then(|| encode_dir(kept.iter().map(|(n, e)| (*n, e))));
            changes.push((key.to_vec(), value));
        }
        changes
    };
    if changes.is_empty() {
        return Ok(0);
    }
    let txn = store.writer()?.txn;
    {
        let mut table = txn.open_table(STAT_DIGESTS).map_err(dberr)?;
        for (k, value) in &changes {
            match value {
                Some(v) => table.insert(k.as_slice(), v.as_slice()).map_err(dberr)?,
                None => table.remove(k.as_slice()).map_err(dberr)?,
            };
        }
    }
    txn.commit().map_err(dberr)?;
    Ok(gone)
}

/// Drops the memos of trees that no longer exist, and values of an older format.
fn forget_stale_memos(store: &MetaDb) -> Result<(), MetaError> {
    let stale: Vec<Vec<u8>> = {
        let txn = store.read()?;
        let table = match txn.open_table(CONTEXT_MEMOS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(dberr(e)),
        };
        let mut stale = Vec::new();
        for row in table.iter().map_err(dberr)? {
            let (k, v) = row.map_err(dberr)?;
            let key = k.value();
            let root = key.iter().position(|b| *b == 0).map(|end| {
                Path::new(std::ffi::OsStr::from_bytes(
                    key.get(..end).unwrap_or_default(),
                ))
            });
            let gone = root.is_none_or(|r| {
                matches!(fs::symlink_metadata(r), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            });
            if gone || Memo::decode(v.value()).is_none() {
                stale.push(key.to_vec());
            }
        }
        stale
    };
    if stale.is_empty() {
        return Ok(());
    }
    let txn = store.writer()?.txn;
    {
        let mut table = txn.open_table(CONTEXT_MEMOS).map_err(dberr)?;
        for k in &stale {
            table.remove(k.as_slice()).map_err(dberr)?;
        }
    }
    txn.commit().map_err(dberr)
}

/// Drops every remembered digest and memo (they are only a shortcut; `prune --all` clears
/// them).
/// Returns how many file entries went.
pub fn clear(store: &MetaDb) -> Result<usize, MetaError> {
    let txn = store.writer()?.txn;
    let mut removed = 0usize;
    {
        let mut table = txn.open_table(STAT_DIGESTS).map_err(dberr)?;
        table
            .retain(|_, v| {
                removed += DirStats::parse(v.to_vec()).len();
                false
            })
            .map_err(dberr)?;
        txn.open_table(CONTEXT_MEMOS)
            .map_err(dberr)?
            .retain(|_, _| false)
            .map_err(dberr)?;
    }
    txn.commit().map_err(dberr)?;
    Ok(removed)
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
    fn directories_round_trip() {
        let e = StatEntry {
            stat: stat(),
            recorded_ns: 1_000_000_000_000 + 5_000_000_000,
            digest: [9; 32],
            cap: None,
        };
        let with_cap = StatEntry {
            cap: Some(vec![1, 0, 0, 2, 0x20]),
            ..e.clone()
        };
        let value = encode_dir([(&b"a.txt"[..], &e), (b"b", &with_cap), (b"c", &e)].into_iter());
        let dir = DirStats::parse(value.clone());
        assert_eq!(dir.len(), 3);
        assert_eq!(dir.entry(b"a.txt"), Some(e.clone()));
        assert_eq!(dir.entry(b"b"), Some(with_cap.clone()));
        assert_eq!(dir.entry(b"c"), Some(e.clone()));
        assert_eq!(dir.entry(b"a"), None);
        assert_eq!(dir.entry(b"d"), None);
        // Whatever does not decode whole is an empty directory: every file a miss.
        assert!(
            DirStats::parse(value[..value.len() - 1].to_vec()).is_empty(),
            "truncated"
        );
        let mut other = value.clone();
        other[0] = 2;
        assert!(DirStats::parse(other).is_empty(), "another version");
        let unsorted = encode_dir([(&b"b"[..], &e), (b"a", &e)].into_iter());
        assert!(DirStats::parse(unsorted).is_empty(), "unsorted");
        assert!(DirStats::parse(Vec::new()).is_empty());
    }

    #[test]
    fn paths_split_into_directory_and_name() {
        assert_eq!(split_rel("src/pkg/a.go"), ("src/pkg", "a.go"));
        assert_eq!(split_rel("a.go"), ("", "a.go"));
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
