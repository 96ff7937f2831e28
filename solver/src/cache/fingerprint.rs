//! The fingerprint of a selection's tree: every entry a checksum walk looks at, by name and
//! full stat (type, mode, owner, size, device, mtime, ctime, inode, device number), hashed
//! per directory. Equal fingerprints mean the same entries with the same stats, and Linux
//! moves a file's ctime on every change of its content, mode, owner or xattrs (no call sets
//! it back) and gives a replaced file a new inode: so a checksum recorded beside a
//! fingerprint still holds while the fingerprint does, unless an entry changed within the
//! timestamp tick of the recording walk. [`Fingerprint::youngest_ns`] tells that case apart,
//! by the stat cache's racily-clean rule.
//!
//! The fingerprint walk (`Walk::fingerprint`) is the no-op rebuild's whole check: one
//! `getdents` per directory and one `statx` per entry, in parallel, and no file read,
//! header, sort or store lookup.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::dirfd::{Names, Stat};

/// What a walk saw of a tree (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// sha256 over the entries' names and stats.
    pub(crate) digest: [u8; 32],
    /// The latest mtime or ctime of any entry (ns since the epoch).
    pub(crate) youngest_ns: i64,
}

/// A fingerprint being made: entries and sub-fingerprints in walk order.
pub(super) struct Print {
    hash: Sha256,
    youngest_ns: i64,
}

impl Print {
    /// An empty print; `tag` tells apart what is printed (a directory, a selection).
    pub(super) fn new(tag: &[u8]) -> Print {
        let mut hash = Sha256::new();
        hash.update(tag);
        hash.update([0]);
        Print {
            hash,
            youngest_ns: i64::MIN,
        }
    }

    /// Adds bytes that are part of what was printed but not an entry (a selector).
    pub(super) fn label(&mut self, bytes: &[u8]) {
        self.hash.update(b"L");
        self.hash.update((bytes.len() as u64).to_le_bytes());
        self.hash.update(bytes);
    }

    /// Adds the entry `name` with its stat.
    pub(super) fn entry(&mut self, name: &[u8], stat: &Stat) {
        let f = &stat.file;
        self.hash.update(b"E");
        self.hash.update((name.len() as u64).to_le_bytes());
        self.hash.update(name);
        let mut fields = [0u8; 4 * 3 + 8 * 7];
        let words = [stat.mode, stat.uid, stat.gid];
        let longs = [
            stat.rdev,
            f.size,
            f.mtime_ns as u64,
            f.ctime_ns as u64,
            f.ino,
            f.dev,
            u64::from(f.mode),
        ];
        let (w, l) = fields.split_at_mut(12);
        for (chunk, v) in w.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        for (chunk, v) in l.chunks_exact_mut(8).zip(longs) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        self.hash.update(fields);
        self.youngest_ns = self.youngest_ns.max(f.mtime_ns).max(f.ctime_ns);
    }

    /// Adds the fingerprint of the subtree under the entry added last (or of a target).
    pub(super) fn subtree(&mut self, sub: &Fingerprint) {
        self.hash.update(b"T");
        self.hash.update(sub.digest);
        self.youngest_ns = self.youngest_ns.max(sub.youngest_ns);
    }

    pub(super) fn finish(self) -> Fingerprint {
        Fingerprint {
            digest: self.hash.finalize().into(),
            youngest_ns: self.youngest_ns,
        }
    }
}

/// The fingerprint of a selected path: its relative path, where it resolved on the host,
/// whether a final link was followed, its stat, and its subtree's print when it is a walked
/// directory. The checksum walk and the fingerprint walk both end a target with this.
pub(super) fn of_target(
    rel: &str,
    host: &Path,
    stat: &Stat,
    followed: bool,
    subtree: Option<&Fingerprint>,
) -> Fingerprint {
    use std::os::unix::ffi::OsStrExt;
    let mut print = Print::new(b"target");
    print.label(host.as_os_str().as_bytes());
    print.label(&[u8::from(followed)]);
    print.entry(rel.as_bytes(), stat);
    if let Some(sub) = subtree {
        print.subtree(sub);
    }
    print.finish()
}

/// Whether a directory entry counts (hidden files and pruned hidden directories do not:
/// nothing of them reaches the checksum), and whether it is a directory to walk.
pub(super) fn counts(stat: &Stat, hidden: bool, prune: bool) -> (bool, bool) {
    let walked = stat.is_dir() && !(hidden && prune);
    (!hidden || walked, walked)
}

/// The print of one directory: its counted entries (name index in `names`, stat) in name
/// order, each walked directory followed by its subtree's fingerprint from `subs` (in the
/// same order).
pub(super) fn of_dir<'s>(
    names: &Names,
    counted: impl Iterator<Item = (usize, &'s Stat, bool)>,
    subs: impl IntoIterator<Item = &'s Fingerprint>,
) -> Fingerprint {
    let mut subs = subs.into_iter();
    let mut print = Print::new(b"dir");
    for (index, stat, walked) in counted {
        print.entry(names.name(index), stat);
        if walked {
            if let Some(sub) = subs.next() {
                print.subtree(sub);
            }
        }
    }
    print.finish()
}
