//! Ownership, mode, times and xattrs of created paths, and `mkdir -p` whose
//! new directories get the COPY's owner and timestamp as BuildKit's do.

use std::ffi::CString;
use std::fs::{self, File, Metadata, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use xattr::FileExt as _;

use super::chown::Owner;
use super::error::FileOpError;

/// Sets the owner without following a symlink.
pub(crate) fn lchown(path: &Path, owner: Owner) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
}

/// Sets permission bits (never on a symlink: Linux has no lchmod).
pub(crate) fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode & 0o7777))
}

/// A point in time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    pub secs: i64,
    pub nsecs: i64,
}

impl Time {
    pub fn from_secs(secs: i64) -> Time {
        Time { secs, nsecs: 0 }
    }
}

/// Sets atime and mtime without following a symlink.
pub(crate) fn lutimes(path: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ts = |t: Time| libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nsecs as _,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: `c` is a valid NUL-terminated string and `times` has the two
    // entries utimensat reads.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies extended attributes, best effort: filesystems without xattrs and
/// namespaces we may not write (`trusted.*` when unprivileged) are skipped,
/// as BuildKit's copier does.
/// `futimens`: the times of an open file.
fn futimens(file: &File, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = |t: Time| libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nsecs as _,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: the fd is open for the call and `times` has the two entries futimens reads.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else {
        return;
    };
    for name in names {
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

/// How a copied or created path gets its metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetaPolicy {
    /// `--chown` (else the source's owner).
    pub owner: Option<Owner>,
    /// `--chmod` (else the source's mode).
    pub chmod: Option<super::chmod::Chmod>,
    /// Fixed mtime (else the source's times).
    pub timestamp: Option<i64>,
}

impl MetaPolicy {
    /// Applies owner, mode, xattrs and times of `src` (with `md` its lstat)
    /// to `dst`, in the order that keeps them all: chown clears setuid bits,
    /// so chmod comes after it, and times last.
    pub fn apply(
        &self,
        src: &Path,
        md: &Metadata,
        dst: &Path,
        shown: &str,
    ) -> Result<(), FileOpError> {
        let is_link = md.file_type().is_symlink();
        let owner = self.owner.unwrap_or(Owner {
            uid: md.uid(),
            gid: md.gid(),
        });
        if let Err(e) = lchown(dst, owner) {
            // Keeping the source's owner is best effort without root;
            // an explicit --chown is not.
            if self.owner.is_some() || e.raw_os_error() != Some(libc::EPERM) {
                return Err(FileOpError::io("chown", shown)(e));
            }
        }
        if !is_link {
            let mode = match &self.chmod {
                Some(c) => c.apply(md.mode(), md.is_dir()),
                None => md.mode() & 0o7777,
            };
            chmod(dst, mode).map_err(FileOpError::io("chmod", shown))?;
        }
        copy_xattrs(src, dst);
        self.apply_times(md, dst, shown)
    }

    /// Sets `dst`'s times to the source's (`md`), or to the fixed timestamp.
    /// [`Self::apply`] for a regular file both of whose ends are open: the same owner, mode,
    /// xattrs and times, set through the descriptors instead of four more path walks (which
    /// through an overlay mount cost more than the copy of a small file).
    pub fn apply_fd(
        &self,
        src: &File,
        md: &Metadata,
        dst: &File,
        shown: &str,
    ) -> Result<(), FileOpError> {
        let owner = self.owner.unwrap_or(Owner {
            uid: md.uid(),
            gid: md.gid(),
        });
        if let Err(e) = std::os::unix::fs::fchown(dst, Some(owner.uid), Some(owner.gid)) {
            if self.owner.is_some() || e.raw_os_error() != Some(libc::EPERM) {
                return Err(FileOpError::io("chown", shown)(e));
            }
        }
        let mode = match &self.chmod {
            Some(c) => c.apply(md.mode(), false),
            None => md.mode() & 0o7777,
        };
        dst.set_permissions(Permissions::from_mode(mode))
            .map_err(FileOpError::io("chmod", shown))?;
        if let Ok(names) = src.list_xattr() {
            for name in names {
                if let Ok(Some(value)) = src.get_xattr(&name) {
                    let _ = dst.set_xattr(&name, &value);
                }
            }
        }
        let (atime, mtime) = self.times(md);
        futimens(dst, atime, mtime).map_err(FileOpError::io("utimes", shown))
    }

    /// The (atime, mtime) a copy gets.
    fn times(&self, md: &Metadata) -> (Time, Time) {
        match self.timestamp {
            Some(t) => (Time::from_secs(t), Time::from_secs(t)),
            None => (
                Time {
                    secs: md.atime(),
                    nsecs: md.atime_nsec(),
                },
                Time {
                    secs: md.mtime(),
                    nsecs: md.mtime_nsec(),
                },
            ),
        }
    }

    pub fn apply_times(&self, md: &Metadata, dst: &Path, shown: &str) -> Result<(), FileOpError> {
        let (atime, mtime) = self.times(md);
        lutimes(dst, atime, mtime).map_err(FileOpError::io("utimes", shown))
    }
}

/// Creates `rel` (a resolved path relative to `root`) and its missing
/// parents with `mode`; only directories created here get `owner` and
/// `timestamp`. An existing non-directory on the way is an error.
pub(crate) fn mkdir_all(
    root: &Path,
    rel: &Path,
    mode: u32,
    owner: Option<Owner>,
    timestamp: Option<i64>,
) -> Result<(), FileOpError> {
    let mut host: PathBuf = root.to_path_buf();
    let mut shown = String::new();
    for comp in rel.components() {
        host.push(comp);
        shown.push('/');
        shown.push_str(&comp.as_os_str().to_string_lossy());
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => return Err(FileOpError::NotADirectory { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileOpError::io("mkdir", shown)(e)),
        }
        fs::create_dir(&host).map_err(FileOpError::io("mkdir", &shown))?;
        chmod(&host, mode).map_err(FileOpError::io("chmod", &shown))?;
        if let Some(owner) = owner {
            lchown(&host, owner).map_err(FileOpError::io("chown", &shown))?;
        }
        if let Some(t) = timestamp {
            lutimes(&host, Time::from_secs(t), Time::from_secs(t))
                .map_err(FileOpError::io("utimes", &shown))?;
        }
    }
    Ok(())
}
