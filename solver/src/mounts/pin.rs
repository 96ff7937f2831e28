//! Mount sources (`source=` of a bind or cache mount) resolved inside their
//! input and pinned, so neither a hostile symlink nor a later swap of one can
//! make a step mount a host path.
//!
//! The path is opened with `openat2(RESOLVE_IN_ROOT)` (symlinks and `..`
//! clamped at the input's root, as BuildKit's `fs.RootPath` does), and the open
//! file is bind-mounted read-only onto a private mount point through
//! `/proc/self/fd/N`. Executors then mount that mount point: what it shows was
//! fixed when it was opened.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use crate::rootfs_path::resolve_in_root;
use crate::sysmount::{sys_mount, unmount};

/// How often a resolution is retried when the tree changes under it.
const MAX_ATTEMPTS: usize = 10;

/// Opens `path` (relative to `root`, or absolute meaning `root`) with
/// `O_PATH`, resolving symlinks and `..` as if `root` were `/`. Fails with
/// `NotFound` when the path does not exist inside the root.
pub fn open_in_root(root: &Path, path: &str) -> io::Result<OwnedFd> {
    let dir = File::open(root)?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    for _ in 0..MAX_ATTEMPTS {
        match openat2(&dir, rel, how) {
            Ok(fd) => return Ok(fd),
            // A rename raced the lookup: the kernel asks for a retry.
            Err(Errno::EAGAIN) => continue,
            // No openat2 (old kernel, or a seccomp filter hiding it).
            Err(Errno::ENOSYS) | Err(Errno::EPERM) => return open_resolved(root, path),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "{path} kept changing while it was resolved"
    )))
}

/// The fallback of [`open_in_root`]: resolves in user space, opens without
/// following a final symlink, and checks that the kernel opened the very path
/// that was resolved (a swapped component shows in `/proc/self/fd`).
fn open_resolved(root: &Path, path: &str) -> io::Result<OwnedFd> {
    let root = fs::canonicalize(root)?;
    for _ in 0..MAX_ATTEMPTS {
        let resolved = resolve_in_root(&root, path, true)?.host;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&resolved)?;
        let opened = fs::read_link(fd_path(&file))?;
        if opened == resolved {
            return Ok(file.into());
        }
    }
    Err(io::Error::other(format!(
        "{path} kept changing while it was resolved"
    )))
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mount sources pinned for one step; unmounted (and their mount points
/// removed) on drop.
#[derive(Debug)]
pub struct PinnedSources {
    parent: PathBuf,
    dir: Option<tempfile::TempDir>,
    pins: Vec<PathBuf>,
}

impl PinnedSources {
    /// Pins go in a fresh directory under `parent`, made at the first pin.
    pub fn new(parent: impl Into<PathBuf>) -> PinnedSources {
        PinnedSources {
            parent: parent.into(),
            dir: None,
            pins: Vec::new(),
        }
    }

    /// Resolves `path` inside `root` and returns a host path showing exactly
    /// what it resolved to, read-only. `NotFound` when it does not exist.
    pub fn pin(&mut self, root: &Path, path: &str) -> io::Result<PathBuf> {
        let fd = open_in_root(root, path)?;
        let is_dir = fs::metadata(fd_path(&fd))?.is_dir();
        let dir = match &self.dir {
            Some(d) => d.path().to_path_buf(),
            None => {
                fs::create_dir_all(&self.parent)?;
                let d = tempfile::Builder::new()
                    .prefix("pins-")
                    .tempdir_in(&self.parent)?;
                let p = d.path().to_path_buf();
                self.dir = Some(d);
                p
            }
        };
        let target = dir.join(self.pins.len().to_string());
        if is_dir {
            fs::create_dir(&target)?;
        } else {
            File::create(&target)?;
        }
        // Not recursive: mounts below the source stay out of the step.
        sys_mount(Some(&fd_path(&fd)), &target, None, libc::MS_BIND, None)?;
        self.pins.push(target.clone());
        // Read-only, so nothing can write (or delete) through a pin, even a
        // leftover one of a crashed build.
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys_mount(None, &target, None, flags, None)?;
        Ok(target)
    }
}

impl Drop for PinnedSources {
    fn drop(&mut self) {
        let mut all_gone = true;
        for p in self.pins.drain(..) {
            if unmount(&p).is_err() {
                all_gone = false;
            }
        }
        if let Some(d) = self.dir.take() {
            if !all_gone {
                // Never recurse into a source that is still mounted.
                let _ = d.keep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with `inside` holding `secret` and hostile links out of it.
    fn hostile_root(outside: &Path) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("inside")).unwrap();
        fs::write(root.path().join("inside/f"), "in-root").unwrap();
        symlink(outside.join("host-file"), root.path().join("abs-file")).unwrap();
        symlink(outside, root.path().join("abs-dir")).unwrap();
        symlink("../../../../..", root.path().join("up")).unwrap();
        symlink("/inside", root.path().join("abs-in-root")).unwrap();
        root
    }

    fn outside() -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        fs::write(out.path().join("host-file"), "HOST").unwrap();
        out
    }

    #[test]
    fn links_resolve_inside_the_root_and_never_reach_the_host() {
        let out = outside();
        let root = hostile_root(out.path());
        for open in [open_in_root, open_resolved] {
            // An absolute link to a host file names a missing file in the root.
            let e = open(root.path(), "abs-file").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
            let e = open(root.path(), "/abs-dir/host-file").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
            // `..` stops at the root.
            let fd = open(root.path(), "up/inside/f").unwrap();
            assert_eq!(
                fs::read_link(fd_path(&fd)).unwrap(),
                root.path().join("inside/f")
            );
            let fd = open(root.path(), "abs-in-root/f").unwrap();
            assert_eq!(
                fs::read_link(fd_path(&fd)).unwrap(),
                root.path().join("inside/f")
            );
        }
    }

    #[test]
    fn a_pin_shows_the_source_read_only_and_goes_away_on_drop() {
        let out = outside();
        let root = hostile_root(out.path());
        let state = tempfile::tempdir().unwrap();
        let mut pins = PinnedSources::new(state.path().join("tmp"));
        let dir = pins.pin(root.path(), "/abs-in-root").unwrap();
        let file = pins.pin(root.path(), "inside/f").unwrap();
        assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), "in-root");
        assert_eq!(fs::read_to_string(&file).unwrap(), "in-root");
        let e = fs::write(dir.join("new"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert!(pins.pin(root.path(), "abs-file").is_err());
        // Swapping the resolved directory for a host link afterwards changes nothing.
        fs::rename(root.path().join("inside"), root.path().join("moved")).unwrap();
        symlink(out.path(), root.path().join("inside")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), "in-root");
        assert!(!dir.join("host-file").exists());
        drop(pins);
        assert_eq!(fs::read_dir(state.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(root.path().join("moved/f")).unwrap(),
            "in-root"
        );
    }
}
