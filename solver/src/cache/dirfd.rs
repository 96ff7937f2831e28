//! Directories read through descriptors, for the checksum and fingerprint walks: a
//! directory is opened relative to its parent (`openat`, `O_NOFOLLOW`: a symlink is never
//! followed), listed with `getdents` into one buffer, and each entry stat'ed relative to it
//! (`statx` on the directory's fd: no path resolution per file).

use std::ffi::{CStr, OsStr};
use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, StatxFlags};

use super::statcache::FileStat;

/// How deep directories may nest below a selected path. Each level is a frame of the
/// recursive walk on a 2 MiB thread stack; a hostile context nesting deeper gets an error
/// instead of a crash (`PATH_MAX` stopped the path-based walk at about 2000 levels).
pub const MAX_DEPTH: usize = 256;

/// Above this many entries a directory's `statx` calls are spread over the pool.
pub(super) const PARALLEL_STAT: usize = 1024;

/// What the checksum uses of an entry's stat.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stat {
    /// `st_mode`, type included.
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) rdev: u64,
    pub(super) file: FileStat,
}

pub(super) const S_IFMT: u32 = 0o170000;
pub(super) const S_IFDIR: u32 = 0o040000;
pub(super) const S_IFREG: u32 = 0o100000;
pub(super) const S_IFLNK: u32 = 0o120000;
pub(super) const S_IFCHR: u32 = 0o020000;
pub(super) const S_IFBLK: u32 = 0o060000;
pub(super) const S_IFIFO: u32 = 0o010000;

impl Stat {
    pub(super) fn of_statx(s: &rustix::fs::Statx) -> Stat {
        let ns = |t: &rustix::fs::StatxTimestamp| {
            t.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.tv_nsec))
        };
        Stat {
            mode: u32::from(s.stx_mode),
            uid: s.stx_uid,
            gid: s.stx_gid,
            rdev: rustix::fs::makedev(s.stx_rdev_major, s.stx_rdev_minor),
            file: FileStat {
                size: s.stx_size,
                mtime_ns: ns(&s.stx_mtime),
                ctime_ns: ns(&s.stx_ctime),
                ino: s.stx_ino,
                dev: rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor),
                mode: u32::from(s.stx_mode),
            },
        }
    }

    pub(super) fn of_metadata(m: &fs::Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev(),
            file: FileStat::of(m),
        }
    }

    pub(super) fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub(super) fn is_dir(&self) -> bool {
        self.kind() == S_IFDIR
    }

    pub(super) fn is_file(&self) -> bool {
        self.kind() == S_IFREG
    }
}

/// `statx` is refused by some seccomp profiles (older container runtimes' defaults):
/// once refused, entries are stat'ed with `fstatat`.
static STATX_REFUSED: AtomicBool = AtomicBool::new(false);

/// The stat of the entry `name` of `dir`, a symlink not followed.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<Stat> {
    if !STATX_REFUSED.load(AtomicOrdering::Relaxed) {
        match rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
            StatxFlags::BASIC_STATS,
        ) {
            Ok(sx) => return Ok(Stat::of_statx(&sx)),
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                STATX_REFUSED.store(true, AtomicOrdering::Relaxed)
            }
            Err(e) => return Err(e),
        }
    }
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    // The field types differ between architectures: widened to what FileStat holds.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(Stat {
        mode: st.st_mode as u32,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        rdev: st.st_rdev as u64,
        file: FileStat {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            mode: st.st_mode as u32,
        },
    })
}

/// A walk's failure: the path and what the system said.
#[derive(Debug)]
pub(super) struct WalkError {
    pub(super) path: PathBuf,
    pub(super) source: std::io::Error,
}

pub(super) fn io_err(path: &Path, source: impl Into<std::io::Error>) -> WalkError {
    WalkError {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// The error of a directory nesting deeper than [`MAX_DEPTH`] below a selected path.
pub(super) fn too_deep(dir_path: &Path) -> WalkError {
    io_err(
        dir_path,
        std::io::Error::other(format!(
            "directories nest more than {MAX_DEPTH} levels deep"
        )),
    )
}

/// Opens the directory `name` of `dir` for listing, never through a symlink.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a directory by its host path (a selected path, already resolved inside the root).
pub(super) fn open_dir_path(path: &Path) -> rustix::io::Result<OwnedFd> {
    open_dir(rustix::fs::CWD, &path_cstr(path.as_os_str().as_bytes())?)
}

pub(super) fn path_cstr(bytes: &[u8]) -> rustix::io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| rustix::io::Errno::INVAL)
}

/// A directory's entry names: one buffer of NUL-terminated names, sorted.
pub(super) struct Names {
    bytes: Vec<u8>,
    /// (start, end) of each name in `bytes`, the NUL excluded.
    spans: Vec<(u32, u32)>,
}

impl Names {
    /// Lists the open directory `dir` (`.` and `..` left out), names sorted bytewise.
    pub(super) fn list(dir: &OwnedFd) -> rustix::io::Result<Names> {
        let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(32 * 1024);
        buf.resize(32 * 1024, MaybeUninit::uninit());
        let mut names = Names {
            bytes: Vec::new(),
            spans: Vec::new(),
        };
        let mut raw = RawDir::new(dir, &mut buf);
        while let Some(entry) = raw.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            let start = names.bytes.len();
            names.bytes.extend_from_slice(name);
            let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + name.len() - 1))
            else {
                return Err(rustix::io::Errno::NAMETOOLONG);
            };
            names.spans.push((s, e));
        }
        let bytes = &names.bytes;
        names
            .spans
            .sort_unstable_by(|a, b| span(bytes, *a).cmp(span(bytes, *b)));
        Ok(names)
    }

    /// How many entries the directory has.
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The name of entry `i`.
    pub(super) fn name(&self, i: usize) -> &[u8] {
        self.spans
            .get(i)
            .map(|s| span(&self.bytes, *s))
            .unwrap_or_default()
    }

    /// The name of entry `i`, to join to a path.
    pub(super) fn os_name(&self, i: usize) -> &OsStr {
        OsStr::from_bytes(self.name(i))
    }

    /// The name with its NUL, for the `*at` calls.
    pub(super) fn cstr(&self, i: usize) -> &CStr {
        self.spans
            .get(i)
            .and_then(|(s, e)| self.bytes.get(*s as usize..=*e as usize))
            .and_then(|b| CStr::from_bytes_with_nul(b).ok())
            .unwrap_or_default()
    }
}

fn span(bytes: &[u8], (s, e): (u32, u32)) -> &[u8] {
    bytes.get(s as usize..e as usize).unwrap_or_default()
}
