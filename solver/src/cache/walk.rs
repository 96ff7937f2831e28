//! The tree walks of a content checksum, over directories read through descriptors
//! (`dirfd.rs`). The checksum walk: a regular file the stat cache vouches for is not
//! opened; the others are read through the directory's fd while it is open. Directories
//! are walked in parallel (rayon) and each yields its records in path order, so the
//! checksum's final sort only checks them. It also makes the tree's fingerprint
//! (`fingerprint.rs`). The fingerprint walk makes only that: the same entries, stat'ed and
//! printed, nothing read.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::ffi::{CStr, OsStr};
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rayon::prelude::*;
use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use super::dirfd::{io_err, open_dir, open_dir_path, path_cstr, stat_at, too_deep};
use super::dirfd::{Names, Stat, WalkError, MAX_DEPTH, PARALLEL_STAT};
use super::dirfd::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG};
use super::fingerprint::{self, Fingerprint};
use super::statcache::{DirStats, StatCache};
use crate::pattern::PatternMatcher;

/// One entry of the hashed set: its header (relative path, NUL, type, mode, owner, ...) and
/// a regular file's content digest.
pub(super) struct Record {
    pub(super) header: Vec<u8>,
    pub(super) digest: Option<[u8; 32]>,
}

/// A missing (or hidden) selected path.
pub(super) fn missing(rel: &str) -> Record {
    Record {
        header: format!("{rel}\0missing\0").into_bytes(),
        digest: None,
    }
}

impl Stat {
    /// The header up to what only reading tells (a link's target, a capability).
    fn header(&self, rel: &str) -> Vec<u8> {
        let mut h = Vec::with_capacity(rel.len() + 40);
        h.extend_from_slice(rel.as_bytes());
        self.push_fields(&mut h);
        h
    }

    /// Appends what follows the relative path in the header: type, mode, owner, size, device.
    fn push_fields(&self, h: &mut Vec<u8>) {
        let kind = self.kind();
        let letter = match kind {
            S_IFDIR => 'd',
            S_IFLNK => 'l',
            S_IFREG => 'f',
            S_IFCHR => 'c',
            S_IFBLK => 'b',
            S_IFIFO => 'p',
            _ => 's',
        };
        // Writing into a Vec cannot fail.
        let _ = write!(
            h,
            "\0{letter}\0{:o}\0{}\0{}\0",
            self.mode & 0o7777,
            self.uid,
            self.gid
        );
        if kind == S_IFREG {
            let _ = write!(h, "{}\0", self.file.size);
        }
        if kind == S_IFCHR || kind == S_IFBLK {
            let _ = write!(h, "{}\0", self.rdev);
        }
    }
}

/// Appends a capability (file capabilities change what a binary can do, so they are
/// content; other xattrs are not).
fn push_cap(header: &mut Vec<u8>, cap: Option<&[u8]>) {
    if let Some(cap) = cap {
        header.extend_from_slice(b"cap\0");
        header.extend_from_slice(cap);
    }
}

const CAPABILITY: &str = "security.capability";

/// The capability of an open file or directory (none where the filesystem has no xattrs).
fn fd_capability(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    // A capability is 20 or 24 bytes: a stack buffer, and a big one only if that is short.
    let mut small = [0u8; 64];
    match rustix::fs::fgetxattr(fd, CAPABILITY, &mut small[..]) {
        Ok(n) => small.get(..n).map(<[u8]>::to_vec),
        Err(rustix::io::Errno::RANGE) => {
            let mut big = vec![0u8; 64 * 1024];
            let n = rustix::fs::fgetxattr(fd, CAPABILITY, &mut big[..]).ok()?;
            big.truncate(n);
            Some(big)
        }
        Err(_) => None,
    }
}

/// `O_NOATIME` is refused (EPERM) for files the process does not own without CAP_FOWNER:
/// once refused, files are opened without it.
static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);

/// Opens the regular file `name` of `dir` for reading: never through a symlink (a file
/// swapped for a link since its stat is an error, not a read outside the tree), without
/// blocking (a FIFO swapped in), without taking a terminal.
fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let flags = flags | OFlags::NONBLOCK;
    if !NOATIME_REFUSED.load(AtomicOrdering::Relaxed) {
        match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => NOATIME_REFUSED.store(true, AtomicOrdering::Relaxed),
            other => return other,
        }
    }
    rustix::fs::openat(dir, name, flags, Mode::empty())
}

thread_local! {
    /// The read buffer of this thread: a small file is one `read` into it.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
const READ_BUF_LEN: usize = 256 * 1024;

/// sha256 of what the open file holds, read to its end.
fn digest_fd(fd: &OwnedFd) -> rustix::io::Result<[u8; 32]> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < READ_BUF_LEN {
            buf.resize(READ_BUF_LEN, 0);
        }
        let mut h = Sha256::new();
        loop {
            match rustix::io::read(fd, &mut buf[..]) {
                Ok(0) => break,
                Ok(n) => h.update(buf.get(..n).unwrap_or_default()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(h.finalize().into())
    })
}

/// One entry of a directory being walked.
struct Child {
    /// Its index in the directory's [`Names`].
    index: usize,
    stat: Stat,
    hidden: bool,
    /// A regular file the stat cache did not vouch for.
    to_read: bool,
    /// Its header, which starts with its relative path (`rel_len` bytes); unused when hidden.
    header: Vec<u8>,
    rel_len: usize,
    /// A regular file's digest, once known.
    digest: Option<[u8; 32]>,
}

impl Child {
    /// The relative path.
    fn rel(&self) -> &str {
        // Built from a str: always UTF-8 up to rel_len.
        std::str::from_utf8(self.header.get(..self.rel_len).unwrap_or_default()).unwrap_or_default()
    }
}

/// Compares path-order keys: a name, or a name and `/` (where a directory's subtree goes).
fn key_cmp(a: &[u8], a_slash: bool, b: &[u8], b_slash: bool) -> Ordering {
    let tail = |slash: bool| -> &'static [u8] {
        if slash {
            b"/"
        } else {
            b""
        }
    };
    a.iter()
        .chain(tail(a_slash))
        .cmp(b.iter().chain(tail(b_slash)))
}

/// A walk of selected paths (see the module doc).
pub(super) struct Walk<'a> {
    pub(super) ignore: Option<&'a PatternMatcher>,
    /// A hidden directory's contents may be re-included by a `!` pattern, so whole
    /// subtrees are pruned only when there is none.
    pub(super) prune: bool,
    pub(super) stats: Option<&'a StatCache<'a>>,
}

impl Walk<'_> {
    pub(super) fn hides(&self, rel: &str) -> bool {
        self.ignore.is_some_and(|m| m.excludes(rel))
    }

    /// Records of the selected path `start` (the host path of `rel`, inside the root; the
    /// target of a followed final symlink when `followed`) and everything under it; returns
    /// the fingerprint of what it walked (the one [`Walk::fingerprint`] makes).
    pub(super) fn collect(
        &self,
        start: &Path,
        meta: &fs::Metadata,
        rel: &str,
        followed: bool,
        out: &mut Vec<Record>,
    ) -> Result<Fingerprint, WalkError> {
        let stat = Stat::of_metadata(meta);
        let hidden = !rel.is_empty() && self.hides(rel);
        let print = |subtree: Option<&Fingerprint>| {
            fingerprint::of_target(rel, start, &stat, followed, subtree)
        };
        if hidden {
            out.push(missing(rel));
            if self.prune || !stat.is_dir() {
                return Ok(print(None));
            }
        }
        if stat.is_dir() {
            let fd = open_dir_path(start).map_err(|e| io_err(start, e))?;
            if !hidden {
                let mut header = stat.header(rel);
                let cap = fd_capability(fd.as_fd());
                push_cap(&mut header, cap.as_deref());
                if followed {
                    header.extend_from_slice(b"followed\0");
                }
                out.push(Record {
                    header,
                    digest: None,
                });
            }
            let (records, subtree) = self.children(&fd, start, rel, 0)?;
            out.extend(records);
            return Ok(print(Some(&subtree)));
        }
        // A file, link or special file: read through its directory, as in a walk.
        let (Some(parent), Some(name)) = (start.parent(), start.file_name()) else {
            return Err(io_err(start, std::io::Error::other("not a file name")));
        };
        let dir = open_dir_path(parent).map_err(|e| io_err(parent, e))?;
        let name = path_cstr(name.as_bytes()).map_err(|e| io_err(start, e))?;
        let (dir_rel, cache_name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let cached = self.stats.map(|s| s.dir(dir_rel)).unwrap_or_default();
        let mut record = Record {
            header: stat.header(rel),
            digest: None,
        };
        if stat.is_file() {
            match self.known(&cached, cache_name.as_bytes(), &stat) {
                Some((digest, cap)) => {
                    push_cap(&mut record.header, cap.as_deref());
                    record.digest = Some(digest);
                }
                None => {
                    let digest =
                        self.read(dir.as_fd(), parent, &name, rel, &stat, &mut record.header)?;
                    record.digest = Some(digest);
                }
            }
        } else {
            self.finish_other(dir.as_fd(), parent, &name, &stat, &mut record.header)?;
        }
        if followed {
            record.header.extend_from_slice(b"followed\0");
        }
        out.push(record);
        Ok(print(None))
    }

    /// The digest and capability the stat cache vouches for.
    fn known(
        &self,
        cached: &DirStats,
        name: &[u8],
        stat: &Stat,
    ) -> Option<([u8; 32], Option<Vec<u8>>)> {
        let stats = self.stats?;
        cached
            .entry(name)
            .filter(|e| e.vouches_for(&stat.file, stats.slack_ns()))
            .map(|e| (e.digest, e.cap))
    }

    /// Reads the regular file `name` of `dir`: its capability goes into the header, its
    /// digest into the record and the stat cache.
    fn read(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &CStr,
        rel: &str,
        stat: &Stat,
        header: &mut Vec<u8>,
    ) -> Result<[u8; 32], WalkError> {
        let path = || dir_path.join(OsStr::from_bytes(name.to_bytes()));
        let fd = open_file(dir, name).map_err(|e| io_err(&path(), e))?;
        let cap = fd_capability(fd.as_fd());
        let digest = digest_fd(&fd).map_err(|e| io_err(&path(), e))?;
        push_cap(header, cap.as_deref());
        if let Some(s) = self.stats {
            s.record(rel, stat.file, digest, cap);
        }
        Ok(digest)
    }

    /// Completes the header of an entry that is neither a directory nor a regular file: a
    /// link's target, a capability.
    fn finish_other(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        name: &CStr,
        stat: &Stat,
        header: &mut Vec<u8>,
    ) -> Result<(), WalkError> {
        let path = dir_path.join(OsStr::from_bytes(name.to_bytes()));
        if stat.kind() == S_IFLNK {
            let target =
                rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| io_err(&path, e))?;
            header.extend_from_slice(target.as_bytes());
            header.push(0);
        }
        // By path, as there is no fd to ask: lgetxattr does not follow the final link.
        let cap = xattr::get(&path, CAPABILITY).ok().flatten();
        push_cap(header, cap.as_deref());
        Ok(())
    }

    /// Stats the entry `index` of `dir` and makes its record (a regular file's digest when
    /// the stat cache vouches for it).
    fn child(
        &self,
        dir: BorrowedFd<'_>,
        dir_path: &Path,
        rel: &str,
        names: &Names,
        cached: &DirStats,
        index: usize,
    ) -> Result<Child, WalkError> {
        let name = names.name(index);
        let cname = names.cstr(index);
        let lossy = String::from_utf8_lossy(name);
        let mut header = Vec::with_capacity(rel.len() + 1 + lossy.len() + 40);
        if !rel.is_empty() {
            header.extend_from_slice(rel.as_bytes());
            header.push(b'/');
        }
        header.extend_from_slice(lossy.as_bytes());
        let stat =
            stat_at(dir, cname).map_err(|e| io_err(&dir_path.join(OsStr::from_bytes(name)), e))?;
        let mut child = Child {
            index,
            stat,
            hidden: false,
            to_read: false,
            rel_len: header.len(),
            header,
            digest: None,
        };
        child.hidden = self.hides(child.rel());
        if child.hidden {
            return Ok(child);
        }
        stat.push_fields(&mut child.header);
        if stat.is_file() {
            // The stat cache knows files by their (lossy) name in the directory.
            let cache_name = lossy.as_bytes();
            match self.known(cached, cache_name, &stat) {
                Some((digest, cap)) => {
                    push_cap(&mut child.header, cap.as_deref());
                    child.digest = Some(digest);
                }
                None => child.to_read = true,
            }
        } else if !stat.is_dir() {
            self.finish_other(dir, dir_path, cname, &stat, &mut child.header)?;
        }
        Ok(child)
    }

    /// Records of everything under the open directory `dir` (host path `dir_path`, relative
    /// path `rel`, `depth` levels below the selected path), in path order, and the
    /// directory's fingerprint.
    fn children(
        &self,
        dir: &OwnedFd,
        dir_path: &Path,
        rel: &str,
        depth: usize,
    ) -> Result<(Vec<Record>, Fingerprint), WalkError> {
        if depth >= MAX_DEPTH {
            return Err(too_deep(dir_path));
        }
        let names = Names::list(dir).map_err(|e| io_err(dir_path, e))?;
        let cached = self.stats.map(|s| s.dir(rel)).unwrap_or_default();
        let fd = dir.as_fd();
        let one = |i: usize| self.child(fd, dir_path, rel, &names, &cached, i);
        let mut kids: Vec<Child> = each_entry(names.len(), one)?;

        // Files to read, and directories to walk: in parallel, each.
        let read = |c: &mut Child| -> Result<(), WalkError> {
            let rel = c.rel().to_string();
            let digest = self.read(
                fd,
                dir_path,
                names.cstr(c.index),
                &rel,
                &c.stat,
                &mut c.header,
            )?;
            c.digest = Some(digest);
            Ok(())
        };
        let walk = |c: &Child| -> Result<Walked, WalkError> {
            let sub = open_dir(fd, names.cstr(c.index))
                .map_err(|e| io_err(&dir_path.join(OsStr::from_bytes(names.name(c.index))), e))?;
            let cap = if c.hidden {
                None
            } else {
                fd_capability(sub.as_fd())
            };
            let path = dir_path.join(OsStr::from_bytes(names.name(c.index)));
            let (records, print) = self.children(&sub, &path, c.rel(), depth + 1)?;
            Ok((cap, records, print))
        };
        let mut to_read: Vec<&mut Child> = Vec::new();
        let mut subdirs: Vec<&Child> = Vec::new();
        // Split borrows: files to read are mutated, directories only read.
        let (files, dirs): (Vec<&mut Child>, Vec<&mut Child>) = kids
            .iter_mut()
            .filter(|c| c.to_read || (c.stat.is_dir() && !(c.hidden && self.prune)))
            .partition(|c| c.to_read);
        to_read.extend(files);
        subdirs.extend(dirs.into_iter().map(|c| &*c));
        let sequential = to_read.is_empty() || subdirs.is_empty();
        let read_all = || -> Result<(), WalkError> {
            if to_read.len() > 1 {
                to_read.into_par_iter().try_for_each(read)
            } else {
                to_read.into_iter().try_for_each(&read)
            }
        };
        let walk_all = || -> Result<Vec<_>, WalkError> {
            if subdirs.len() > 1 {
                subdirs.par_iter().map(|c| walk(c)).collect()
            } else {
                subdirs.iter().map(|c| walk(c)).collect()
            }
        };
        // Handing work to the pool costs thread wake-ups: only when both sides have some.
        let (read_done, walked) = if sequential {
            (read_all(), walk_all())
        } else {
            rayon::join(read_all, walk_all)
        };
        read_done?;
        let walked = walked?;
        let print = fingerprint::of_dir(
            &names,
            kids.iter().filter_map(|c| {
                let (counted, walked) = fingerprint::counts(&c.stat, c.hidden, self.prune);
                counted.then_some((c.index, &c.stat, walked))
            }),
            walked.iter().map(|w| &w.2),
        );
        Ok((assemble(&names, kids, walked, self.prune), print))
    }
}

/// `one` of each of a directory's `n` entries, in order: spread over the pool above
/// [`PARALLEL_STAT`] entries (a stat each is too little work to hand out below that).
fn each_entry<T: Send>(
    n: usize,
    one: impl Fn(usize) -> Result<T, WalkError> + Sync + Send,
) -> Result<Vec<T>, WalkError> {
    if n > PARALLEL_STAT {
        (0..n)
            .into_par_iter()
            .with_min_len(PARALLEL_STAT / 4)
            .map(one)
            .collect()
    } else {
        (0..n).map(one).collect()
    }
}

/// A walked subdirectory: its capability, its records, its fingerprint.
type Walked = (Option<Vec<u8>>, Vec<Record>, Fingerprint);

/// A directory's records in path order: each entry's record at its name, each walked
/// subdirectory's records at its name and `/` (a sibling `a.b` sorts between the directory
/// `a` and `a/x`, as `.` is below `/`).
fn assemble(names: &Names, kids: Vec<Child>, walked: Vec<Walked>, prune: bool) -> Vec<Record> {
    // The walked directories, in the order `children` walked them, with their subtrees.
    let mut walked = walked.into_iter();
    let mut blocks: Vec<(usize, Vec<Record>)> = Vec::new();
    let mut records: Vec<(usize, Record)> = Vec::with_capacity(kids.len());
    let total: usize = kids.len();
    for mut c in kids {
        let is_walked = !c.to_read && c.stat.is_dir() && !(c.hidden && prune);
        if is_walked {
            if let Some((cap, sub, _)) = walked.next() {
                push_cap(&mut c.header, cap.as_deref());
                blocks.push((c.index, sub));
            }
        }
        if !c.hidden {
            let record = Record {
                header: c.header,
                digest: c.digest,
            };
            records.push((c.index, record));
        }
    }
    blocks.sort_by(|a, b| key_cmp(names.name(a.0), true, names.name(b.0), true));
    let mut out = Vec::with_capacity(total + blocks.iter().map(|b| b.1.len()).sum::<usize>());
    let mut blocks = blocks.into_iter().peekable();
    for (index, record) in records {
        while let Some((_, sub)) =
            blocks.next_if(|(b, _)| key_cmp(names.name(*b), true, names.name(index), false).is_lt())
        {
            out.extend(sub);
        }
        out.push(record);
    }
    for (_, sub) in blocks {
        out.extend(sub);
    }
    out
}

impl Walk<'_> {
    /// The fingerprint of the selected path `start` (host path of `rel`, inside the root;
    /// `followed` when a final link was followed to it): what [`Walk::collect`] would
    /// fingerprint, without reading a file or making a record.
    pub(super) fn fingerprint(
        &self,
        start: &Path,
        meta: &fs::Metadata,
        rel: &str,
        followed: bool,
    ) -> Result<Fingerprint, WalkError> {
        let stat = Stat::of_metadata(meta);
        let hidden = !rel.is_empty() && self.hides(rel);
        let subtree = if stat.is_dir() && !(hidden && self.prune) {
            let fd = open_dir_path(start).map_err(|e| io_err(start, e))?;
            Some(self.print_children(&fd, start, rel, 0)?)
        } else {
            None
        };
        Ok(fingerprint::of_target(
            rel,
            start,
            &stat,
            followed,
            subtree.as_ref(),
        ))
    }

    /// The print of everything under the open directory `dir` (see [`Walk::children`],
    /// which walks the same entries).
    fn print_children(
        &self,
        dir: &OwnedFd,
        dir_path: &Path,
        rel: &str,
        depth: usize,
    ) -> Result<Fingerprint, WalkError> {
        if depth >= MAX_DEPTH {
            return Err(too_deep(dir_path));
        }
        let names = Names::list(dir).map_err(|e| io_err(dir_path, e))?;
        let fd = dir.as_fd();
        // (index, stat, walked) of each counted entry.
        let one = |i: usize| -> Result<Option<(usize, Stat, bool)>, WalkError> {
            let stat = stat_at(fd, names.cstr(i))
                .map_err(|e| io_err(&dir_path.join(names.os_name(i)), e))?;
            let hidden = self.ignore.is_some() && self.hides(&child_rel(rel, names.name(i)));
            let (counted, walked) = fingerprint::counts(&stat, hidden, self.prune);
            Ok(counted.then_some((i, stat, walked)))
        };
        let entries: Vec<(usize, Stat, bool)> = each_entry(names.len(), one)?
            .into_iter()
            .flatten()
            .collect();
        let sub = |&(i, _, _): &(usize, Stat, bool)| -> Result<Fingerprint, WalkError> {
            let path = dir_path.join(names.os_name(i));
            let sub = open_dir(fd, names.cstr(i)).map_err(|e| io_err(&path, e))?;
            self.print_children(&sub, &path, &child_rel(rel, names.name(i)), depth + 1)
        };
        let dirs: Vec<&(usize, Stat, bool)> = entries.iter().filter(|e| e.2).collect();
        let subs: Vec<Fingerprint> = if dirs.len() > 1 {
            dirs.par_iter().map(|e| sub(e)).collect::<Result<_, _>>()?
        } else {
            dirs.iter().map(|e| sub(e)).collect::<Result<_, _>>()?
        };
        Ok(fingerprint::of_dir(
            &names,
            entries.iter().map(|(i, s, w)| (*i, s, *w)),
            &subs,
        ))
    }
}

/// The relative path of the entry `name` of the directory `rel`, as the checksum walk
/// names it (a name that is not UTF-8 lossily).
fn child_rel(rel: &str, name: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(name);
    if rel.is_empty() {
        lossy.into_owned()
    } else {
        format!("{rel}/{lossy}")
    }
}
