//! Persistent cache-mount directories under `<state>/cache-mounts/` and their
//! sharing modes.
//!
//! Every user holds an advisory lock (`flock`) on the directory's lock file while
//! the step runs: `shared` users a shared lock, `locked` users an exclusive one
//! (so a second locked user waits), and `private` users try an exclusive lock on
//! the main directory, then on numbered siblings, creating one when all are busy.
//! Locks are per open file, so they serialise threads and processes alike.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    /// Concurrent users share one directory.
    #[default]
    Shared,
    /// A concurrent user gets a separate directory.
    Private,
    /// Concurrent users take turns.
    Locked,
}

/// The cache-mount area of a state directory.
#[derive(Debug, Clone)]
pub struct CacheMounts {
    root: PathBuf,
    restore_limit: Option<u64>,
}

/// The mode of a new cache directory when `mode=` is not given (BuildKit's).
const DEFAULT_MODE: u32 = 0o755;

/// The store id of a cache mount without a `from=` source: the llb id, followed by the
/// settings when `mode`/`uid`/`gid` were given (BuildKit keys such a cache by the `mkdir`
/// that seeds it, so each setting is a cache of its own). The worker names a mount with a
/// source by that source too, which is local to the machine.
pub fn store_id(id: &str, settings: Option<(u32, u32, u32)>) -> String {
    match settings {
        Some((mode, uid, gid)) => format!("{id}:mkdir:{mode:o}:{uid}:{gid}"),
        None => id.to_string(),
    }
}

/// The `(mode, uid, gid)` the directory of store id `id` is made with on first use: the
/// settings of its [`store_id`] suffix, else `0755` and root.
pub fn settings_of(id: &str) -> (u32, u32, u32) {
    let mut parts = id.rsplitn(5, ':');
    let (gid, uid, mode, mkdir) = (parts.next(), parts.next(), parts.next(), parts.next());
    let parsed = (mkdir == Some("mkdir") && parts.next().is_some())
        .then(|| {
            Some((
                u32::from_str_radix(mode?, 8).ok()?,
                uid?.parse().ok()?,
                gid?.parse().ok()?,
            ))
        })
        .flatten();
    parsed.unwrap_or((DEFAULT_MODE, 0, 0))
}

/// A cache directory held for the duration of a step; the lock is released on drop.
#[derive(Debug)]
pub struct CacheLease {
    dir: PathBuf,
    _lock: File,
}

impl CacheLease {
    /// The directory to mount.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl CacheMounts {
    /// Uses `root` (normally `<state>/cache-mounts`), creating it if needed.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(CacheMounts {
            root,
            restore_limit: None,
        })
    }

    /// Refuses restores (from a remote cache) that unpack to more than `max` bytes, as the
    /// layer store refuses such layers.
    pub fn with_restore_limit(mut self, max: Option<u64>) -> Self {
        self.restore_limit = max;
        self
    }

    /// The limit set by [`CacheMounts::with_restore_limit`].
    pub fn restore_limit(&self) -> Option<u64> {
        self.restore_limit
    }

    /// The area's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the lock of `id`'s main directory (the one `shared` and `locked` users get,
    /// and `private` users first try) without creating the directory: shared to read it
    /// while `shared` users may run, exclusive to replace it. The lease's directory may
    /// not exist.
    pub fn hold(&self, id: &str, exclusive: bool) -> io::Result<CacheLease> {
        let name = Self::key(id);
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let lock = self.lock(&name, op)?;
        Ok(CacheLease {
            dir: self.root.join(name),
            _lock: lock,
        })
    }

    /// Puts `filled` (a directory under [`CacheMounts::root`]) in place as the main
    /// directory of `id`, which `lease` (from [`CacheMounts::hold`], exclusive) holds and
    /// which is missing or empty. The new directory gets the mode and owner the empty one
    /// had, else those a first use would give it ([`settings_of`]).
    pub fn install(&self, lease: &CacheLease, id: &str, filled: &Path) -> io::Result<()> {
        let (mode, uid, gid) = match fs::symlink_metadata(lease.dir()) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                (m.mode() & 0o7777, m.uid(), m.gid())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => settings_of(id),
            Err(e) => return Err(e),
        };
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(filled, Some(uid), Some(gid))?;
        }
        fs::set_permissions(filled, fs::Permissions::from_mode(mode))?;
        let name = Self::key(id);
        fs::write(self.root.join(format!("{name}.id")), id)?;
        // rename(2) replaces an empty directory atomically: a user never sees it half-filled.
        fs::rename(filled, lease.dir())
    }

    /// The directory name for a cache id: ids are arbitrary strings (often
    /// paths), so they are hashed; the id itself is kept in `<name>.id`.
    pub fn key(id: &str) -> String {
        let digest = Sha256::digest(id.as_bytes());
        hex::encode(digest.get(..16).unwrap_or_default())
    }

    /// Acquires the directory for `id`, waiting or diverting per `sharing`, and
    /// creating it with `mode`/`uid`/`gid` on first use.
    pub fn acquire(
        &self,
        id: &str,
        sharing: CacheSharing,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<CacheLease> {
        self.acquire_seeded(id, sharing, mode, uid, gid, None)
    }

    /// [`CacheMounts::acquire`], a new directory starting with the contents of `seed`.
    pub fn acquire_seeded(
        &self,
        id: &str,
        sharing: CacheSharing,
        mode: u32,
        uid: u32,
        gid: u32,
        seed: Option<&Path>,
    ) -> io::Result<CacheLease> {
        let key = Self::key(id);
        let new = NewDir {
            id,
            mode,
            uid,
            gid,
            seed,
        };
        match sharing {
            CacheSharing::Shared => self.take(&key, libc::LOCK_SH, &new),
            CacheSharing::Locked => self.take(&key, libc::LOCK_EX, &new),
            CacheSharing::Private => {
                for n in 0u32.. {
                    let name = if n == 0 {
                        key.clone()
                    } else {
                        format!("{key}-{n}")
                    };
                    match self.take(&name, libc::LOCK_EX | libc::LOCK_NB, &new) {
                        Ok(lease) => return Ok(lease),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(io::Error::other("no free private cache directory"))
            }
        }
    }

    fn lock(&self, name: &str, op: libc::c_int) -> io::Result<File> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(format!("{name}.lock")))?;
        loop {
            if unsafe { libc::flock(lock.as_raw_fd(), op) } == 0 {
                return Ok(lock);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn take(&self, name: &str, op: libc::c_int, new: &NewDir<'_>) -> io::Result<CacheLease> {
        let lock = self.lock(name, op)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            self.create(&dir, name, new)?;
        }
        Ok(CacheLease { dir, _lock: lock })
    }

    /// Creates the directory under a temporary name and renames it into place,
    /// so a crash never leaves a half-initialised cache directory.
    fn create(&self, dir: &Path, name: &str, new: &NewDir<'_>) -> io::Result<()> {
        let tmp = self
            .root
            .join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        if let Some(seed) = new.seed {
            seed_from(&tmp, seed)?;
        }
        std::os::unix::fs::chown(&tmp, Some(new.uid), Some(new.gid))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(new.mode & 0o7777))?;
        fs::write(self.root.join(format!("{name}.id")), new.id)?;
        match fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// What a cache directory is made with on first use.
struct NewDir<'a> {
    id: &'a str,
    mode: u32,
    uid: u32,
    gid: u32,
    seed: Option<&'a Path>,
}

/// Copies the contents of `seed` (a directory; a missing one seeds nothing) into `dir`
/// with COPY's rules: owners, modes, times and links kept.
fn seed_from(dir: &Path, seed: &Path) -> io::Result<()> {
    use crate::llb::{CopyAction, FileAction};
    use crate::ops::file::{apply_file_actions, SourceRoot};
    if !seed.is_dir() {
        return Ok(());
    }
    let copy = FileAction::Copy(CopyAction::whole_tree(0));
    apply_file_actions(dir, &[SourceRoot::new(seed)], &[copy])
        .map_err(|e| io::Error::other(format!("seeding from {}: {e}", seed.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_new_directory_starts_with_the_seed_an_existing_one_keeps_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let seed = tmp.path().join("seed");
        fs::create_dir_all(seed.join("sub")).unwrap();
        fs::write(seed.join("sub/f"), "seeded").unwrap();
        std::os::unix::fs::symlink("sub/f", seed.join("link")).unwrap();
        let c = CacheMounts::new(tmp.path().join("mounts")).unwrap();
        let lease = c
            .acquire_seeded("s", CacheSharing::Shared, 0o750, 7, 8, Some(&seed))
            .unwrap();
        assert_eq!(
            fs::read_to_string(lease.dir().join("sub/f")).unwrap(),
            "seeded"
        );
        assert_eq!(
            fs::read_link(lease.dir().join("link")).unwrap(),
            Path::new("sub/f")
        );
        let md = fs::metadata(lease.dir()).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 7, 8));
        fs::write(lease.dir().join("added"), "kept").unwrap();
        fs::remove_file(lease.dir().join("sub/f")).unwrap();
        drop(lease);
        let again = c
            .acquire_seeded("s", CacheSharing::Shared, 0o750, 7, 8, Some(&seed))
            .unwrap();
        assert!(again.dir().join("added").exists());
        assert!(
            !again.dir().join("sub/f").exists(),
            "an existing directory is not re-seeded"
        );
    }

    #[test]
    fn a_store_id_carries_the_settings_a_new_directory_is_made_with() {
        assert_eq!(store_id("go", None), "go");
        let id = store_id("ns/go", Some((0o700, 1000, 1001)));
        assert_eq!(id, "ns/go:mkdir:700:1000:1001");
        assert_eq!(settings_of(&id), (0o700, 1000, 1001));
        assert_eq!(settings_of("go"), (0o755, 0, 0));
        assert_eq!(settings_of(":mkdir:700:1:1"), (0o700, 1, 1));
        for odd in [
            "mkdir:700:1:1",
            "a:mkdir:9:1:1",
            "a:mkdir:700:x:1",
            "a:b:c:d",
        ] {
            assert_eq!(settings_of(odd), (0o755, 0, 0), "{odd}");
        }
    }

    #[test]
    fn hold_takes_the_lock_without_creating_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(root.path()).unwrap();
        let held = c.hold("h", true).unwrap();
        assert!(!held.dir().exists());
        let (tx, rx) = mpsc::channel();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            let lease = c2.acquire("h", CacheSharing::Shared, 0o755, 0, 0).unwrap();
            tx.send(lease.dir().to_path_buf()).unwrap();
        });
        // Not a timing assertion: the user must not have got the lock while we hold it.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        assert!(rx.recv().unwrap().is_dir());
        t.join().unwrap();
    }

    #[test]
    fn shared_users_get_the_same_dir_with_mode() {
        let root = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(root.path()).unwrap();
        let a = c
            .acquire("/root/.cache", CacheSharing::Shared, 0o750, 0, 0)
            .unwrap();
        let b = c
            .acquire("/root/.cache", CacheSharing::Shared, 0o755, 0, 0)
            .unwrap();
        assert_eq!(a.dir(), b.dir());
        assert_eq!(fs::metadata(a.dir()).unwrap().mode() & 0o7777, 0o750);
        let other = c
            .acquire("other", CacheSharing::Shared, 0o755, 0, 0)
            .unwrap();
        assert_ne!(other.dir(), a.dir());
    }

    #[test]
    fn private_users_get_separate_dirs_then_reuse() {
        let root = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(root.path()).unwrap();
        let a = c.acquire("x", CacheSharing::Private, 0o755, 0, 0).unwrap();
        let b = c.acquire("x", CacheSharing::Private, 0o755, 0, 0).unwrap();
        assert_ne!(a.dir(), b.dir());
        let first = a.dir().to_path_buf();
        drop(a);
        let again = c.acquire("x", CacheSharing::Private, 0o755, 0, 0).unwrap();
        assert_eq!(again.dir(), first);
    }

    #[test]
    fn locked_second_user_waits_for_the_first() {
        let root = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(root.path()).unwrap();
        let first = c.acquire("l", CacheSharing::Locked, 0o755, 0, 0).unwrap();
        let (tx, rx) = mpsc::channel();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            let lease = c2.acquire("l", CacheSharing::Locked, 0o755, 0, 0).unwrap();
            tx.send(lease.dir().to_path_buf()).unwrap();
        });
        // Not a timing assertion: the waiter must not have got the lock while we hold it.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        let dir = first.dir().to_path_buf();
        drop(first);
        assert_eq!(rx.recv().unwrap(), dir);
        t.join().unwrap();
    }
}
