//! Advisory locks (flock) that serialise store updates between processes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::error::{ContentError, Result};

/// A held flock; released when dropped.
pub struct StoreLock {
    _lock: Flock<File>,
    mode: LockMode,
}

impl StoreLock {
    /// The mode it is held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

/// Whether other holders may hold the lock at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders (builds using the store).
    Shared,
    /// One holder (index.json updates, garbage collection).
    Exclusive,
}

/// Opens (creating if missing, never truncating) the file a lock is taken on.
fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ContentError::io("open lock file", path, e))
}

/// Blocks until the lock on `path` (created if missing) is held in `mode`.
pub fn lock_file(path: &Path, mode: LockMode) -> Result<StoreLock> {
    let file = open_lock_file(path)?;
    let arg = match mode {
        LockMode::Shared => FlockArg::LockShared,
        LockMode::Exclusive => FlockArg::LockExclusive,
    };
    let lock = Flock::lock(file, arg)
        .map_err(|(_, errno)| ContentError::io("flock", path, errno.into()))?;
    Ok(StoreLock { _lock: lock, mode })
}

/// Takes the lock on `path` in `mode` if that is possible without waiting.
pub fn try_lock_file(path: &Path, mode: LockMode) -> Result<Option<StoreLock>> {
    let file = open_lock_file(path)?;
    let arg = match mode {
        LockMode::Shared => FlockArg::LockSharedNonblock,
        LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(StoreLock { _lock: lock, mode })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ContentError::io("flock", path, errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let a = lock_file(&p, LockMode::Shared).unwrap();
        let b = try_lock_file(&p, LockMode::Shared).unwrap();
        assert!(b.is_some(), "two shared holders");
        assert!(try_lock_file(&p, LockMode::Exclusive).unwrap().is_none());
        drop(a);
        drop(b);
        let x = try_lock_file(&p, LockMode::Exclusive).unwrap();
        assert!(x.is_some());
        assert!(try_lock_file(&p, LockMode::Shared).unwrap().is_none());
    }
}
