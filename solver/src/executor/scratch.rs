//! Where steps keep their scratch: run directories (bundle, mount points, secrets), the
//! OCI runtime's state and the generated /etc files. A step makes and removes a dozen of
//! these. On ext4 without a journal each inode allocation walks past every inode freed in
//! the last minutes (`recently_deleted`), so a build of hundreds of steps got slower with
//! every step when they lived in the state directory. They live on a tmpfs when there is
//! one (`/run` for root, `$XDG_RUNTIME_DIR`, else `/dev/shm`), in a private
//! directory of their own per state directory; else in the state directory's `executor/`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

/// Set to `0` to keep scratch in the state directory (benchmarks, tests of that layout).
pub const SCRATCH_ENV: &str = "KILN_EXECUTOR_TMPFS";

const TMPFS_MAGIC: u64 = 0x0102_1994;

/// The executor directory of state directory `state_dir` (see the module documentation).
pub fn executor_dir(state_dir: &Path) -> PathBuf {
    static CHOSEN: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(Mutex::default);
    if let Some(dir) = chosen.lock().ok().and_then(|c| c.get(state_dir).cloned()) {
        return dir;
    }
    let dir = tmpfs_dir(state_dir).unwrap_or_else(|| state_dir.join("executor"));
    if let Ok(mut c) = chosen.lock() {
        c.insert(state_dir.to_path_buf(), dir.clone());
    }
    dir
}

/// `<tmpfs>/kiln/<hash of the state dir>`, made private, when a tmpfs of ours is there.
fn tmpfs_dir(state_dir: &Path) -> Option<PathBuf> {
    if std::env::var_os(SCRATCH_ENV).is_some_and(|v| v == "0") {
        return None;
    }
    let euid = nix::unistd::geteuid();
    let mut candidates = Vec::new();
    if euid.is_root() {
        candidates.push(PathBuf::from("/run/kiln"));
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(run).join("kiln"));
    }
    // Shared by all users: a name of our own, which must be ours (`private_dir`).
    candidates.push(PathBuf::from(format!("/dev/shm/kiln-{euid}")));
    let kiln = candidates.into_iter().find(|dir| {
        let on_tmpfs = dir.parent().and_then(|p| rustix::fs::statfs(p).ok());
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = on_tmpfs.is_some_and(|s| s.f_type as u64 == TMPFS_MAGIC);
        on_tmpfs && private_dir(dir).is_some()
    })?;
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep_orphans(&kiln));
    let state = fs::canonicalize(state_dir)
        .or_else(|_| std::path::absolute(state_dir))
        .ok()?;
    let hash = Sha256::digest(state.as_os_str().as_encoded_bytes());
    let dir = kiln.join(hex::encode(hash.get(..16)?));
    private_dir(&dir)?;
    // Names the state dir, so that the scratch of one deleted since can go.
    let owner = dir.join(OWNER);
    if fs::symlink_metadata(&owner).is_err() {
        fs::write(&owner, state.as_os_str().as_encoded_bytes()).ok()?;
    }
    Some(dir)
}

/// The file in a scratch directory naming its state directory.
const OWNER: &str = "state-dir";

/// Removes the scratch directories under `kiln` whose state directory is gone (nothing can
/// use them: a build needs its state dir), unless something is mounted in them.
fn sweep_orphans(kiln: &Path) {
    let Ok(entries) = fs::read_dir(kiln) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(state) = fs::read(dir.join(OWNER)) else {
            continue;
        };
        let state = Path::new(std::ffi::OsStr::from_bytes(&state));
        let gone = matches!(
            fs::symlink_metadata(state),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        );
        if gone && crate::sysmount::mounts_under(&dir).is_empty() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Makes `dir` (mode 0700) or checks an existing one is a directory of ours that no one
/// else may enter: run directories hold secrets.
fn private_dir(dir: &Path) -> Option<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Some(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = fs::symlink_metadata(dir).ok()?;
    let ours = meta.is_dir()
        && meta.uid() == nix::unistd::geteuid().as_raw()
        && meta.permissions().mode() & 0o077 == 0;
    ours.then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_or_foreign_directory_is_not_taken() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("kiln");
        assert_eq!(private_dir(&dir), Some(()));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&dir), None, "others may enter it");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert_eq!(private_dir(&link), None, "a symlink");
    }

    #[test]
    fn the_scratch_of_a_deleted_state_directory_goes() {
        let d = tempfile::tempdir().unwrap();
        let kiln = d.path().join("kiln");
        let live_state = d.path().join("state");
        fs::create_dir(&live_state).unwrap();
        for (name, owner) in [
            ("orphan", Some(d.path().join("deleted"))),
            ("live", Some(live_state)),
            ("being-made", None),
        ] {
            fs::create_dir_all(kiln.join(name).join("runs")).unwrap();
            if let Some(owner) = owner {
                fs::write(kiln.join(name).join(OWNER), owner.as_os_str().as_bytes()).unwrap();
            }
        }
        sweep_orphans(&kiln);
        let mut left: Vec<_> = fs::read_dir(&kiln)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["being-made", "live"]);
    }

    #[test]
    fn each_state_directory_has_its_own_executor_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (executor_dir(a.path()), executor_dir(b.path()));
        assert_ne!(da, db);
        assert_eq!(executor_dir(a.path()), da, "the same each time");
        match tmpfs_dir(a.path()) {
            Some(t) => {
                assert_eq!(t, da);
                let magic = rustix::fs::statfs(&t).unwrap().f_type as u64;
                assert_eq!(magic, TMPFS_MAGIC);
            }
            None => assert_eq!(da, a.path().join("executor")),
        }
    }
}
