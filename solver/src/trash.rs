//! Removing a stored tree so that its name goes at once: it is first renamed into
//! the `.trash/` directory beside it, then deleted. A process killed midway leaves
//! garbage in `.trash/` (emptied by the next kiln to start), never a half-deleted
//! tree under a name a record or a later build would trust.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The name of the trash directory inside a store directory.
pub const TRASH: &str = ".trash";

/// Removes `path` (a file or a tree), renaming it into its parent's `.trash/` first
/// (removed again when empty). A missing `path` is not an error.
pub fn discard(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Err(io::Error::other("cannot discard a filesystem root"));
    };
    let trash = parent.join(TRASH);
    // Another process may remove the empty trash between our mkdir and rename: retry.
    for _ in 0..3 {
        match fs::DirBuilder::new().mode(0o700).create(&trash) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let doomed = unique_name(&trash, path);
        match fs::rename(path, &doomed) {
            // The name is gone, which is what counts; what a concurrent `empty` or a
            // failure leaves in the trash goes later.
            Ok(()) => {
                let _ = remove(&doomed);
                let _ = fs::remove_dir(&trash);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(path).is_err() {
                    let _ = fs::remove_dir(&trash);
                    return Ok(());
                }
            }
            // Another filesystem mounted there: nothing to rename into; delete in place.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return remove(path),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} kept disappearing while {} was being discarded",
        trash.display(),
        path.display()
    )))
}

/// Deletes what killed removals left in `dir/.trash/`; how many entries went.
pub fn empty(dir: &Path) -> usize {
    let trash = dir.join(TRASH);
    let Ok(entries) = fs::read_dir(&trash) else {
        return 0;
    };
    let removed = entries
        .flatten()
        .filter(|e| remove(&e.path()).is_ok())
        .count();
    let _ = fs::remove_dir(&trash);
    removed
}

fn unique_name(trash: &Path, path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    trash.join(format!(
        "{name}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn remove(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // A mount inside (a killed step's view of a layer) is unmounted first; a
            // recursive delete never goes through one.
            for m in crate::sysmount::mounts_under(path) {
                let _ = crate::sysmount::unmount(&m);
            }
            if !crate::sysmount::mounts_under(path).is_empty() {
                return Err(io::Error::other(format!(
                    "{} still has mounts inside",
                    path.display()
                )));
            }
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_tree_is_gone_and_a_killed_removal_is_finished_by_empty() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("layer");
        fs::create_dir_all(tree.join("bin")).unwrap();
        fs::write(tree.join("bin/sh"), "sh").unwrap();
        fs::write(d.path().join("record"), "r").unwrap();
        discard(&tree).unwrap();
        discard(&d.path().join("record")).unwrap();
        discard(&d.path().join("missing")).unwrap();
        assert!(!tree.exists());
        assert!(!d.path().join(TRASH).exists(), "an empty trash goes too");

        // A removal killed after the rename: the name is gone, the rest waits in the trash.
        let half = d.path().join("half");
        fs::create_dir_all(half.join("etc")).unwrap();
        fs::create_dir(d.path().join(TRASH)).unwrap();
        fs::rename(&half, d.path().join(TRASH).join("half.1.0")).unwrap();
        assert!(!half.exists());
        assert_eq!(empty(d.path()), 1);
        assert!(!d.path().join(TRASH).exists());
        assert_eq!(empty(&d.path().join("nothing-here")), 0);
    }

    /// Needs root: a mount left inside a trashed tree is unmounted, never deleted through.
    #[test]
    fn emptying_never_deletes_through_a_mount() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts)"
        );
        let d = tempfile::tempdir().unwrap();
        let precious = d.path().join("precious");
        fs::create_dir(&precious).unwrap();
        fs::write(precious.join("keep"), "layer data").unwrap();
        let view = d.path().join(TRASH).join("run.1.0/rootfs");
        fs::create_dir_all(&view).unwrap();
        crate::sysmount::sys_mount(Some(&precious), &view, None, libc::MS_BIND, None).unwrap();
        assert_eq!(empty(d.path()), 1);
        assert!(crate::sysmount::mounts_under(d.path()).is_empty());
        assert!(!d.path().join(TRASH).exists());
        assert_eq!(
            fs::read_to_string(precious.join("keep")).unwrap(),
            "layer data"
        );
    }
}
