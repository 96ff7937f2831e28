//! The state directory: `content/` (OCI layout), `layers/<diffid>/` (unpacked layers),
//! `cache-mounts/<id>/` (persistent cache mounts), `meta.redb` (cache results and layer
//! records, see [`crate::meta`]) and a lock file that lets concurrent builds share the
//! directory while garbage collection excludes them.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::content::{ContentError, ContentStore, LockMode, StoreLock};

/// Environment variable that overrides the default state directory.
pub const ROOT_ENV: &str = "KILN_ROOT";

/// Errors while opening the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No home directory to derive a default location from (the caller names how to choose
    /// one explicitly).
    #[error("cannot choose a state directory: neither XDG_DATA_HOME nor HOME is set")]
    NoDefault,
    /// The content store inside it failed to open.
    #[error(transparent)]
    Content(#[from] ContentError),
}

/// The top-level trees of the state directory, each made owner-only.
const PRIVATE_TREES: [&str; 6] = [
    "layers",
    "cache-mounts",
    "content",
    "executor",
    "tmp",
    "http",
];

/// The directories whose entries are removed through a `.trash/` (see [`crate::trash`]).
pub const TRASH_HOLDERS: [&str; 5] = [
    "layers",
    "layers/.tmp",
    "cache-mounts",
    "tmp",
    "executor/runs",
];

/// Creates `dir` with mode 0700, or takes group and other permissions away from an existing one
/// (through a symlink only when `follow`).
fn private_dir(dir: &Path, follow: bool) -> Result<(), StateError> {
    let err = |source| StateError::Create {
        path: dir.to_path_buf(),
        source,
    };
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let meta = if follow {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    }
    .map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::other("exists and is not a directory")));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        let mode = meta.permissions().mode() & 0o7700;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

/// The opened state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    content: ContentStore,
}

impl StateDir {
    /// Picks the state directory: `explicit` (the CLI's `--root`), else `$KILN_ROOT`, else
    /// `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln`, else `$HOME/.local/share/kiln`.
    pub fn choose_root(explicit: Option<&Path>) -> Result<PathBuf, StateError> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = env(ROOT_ENV) {
            return Ok(PathBuf::from(p));
        }
        if nix::unistd::geteuid().is_root() {
            return Ok(PathBuf::from("/var/lib/kiln"));
        }
        if let Some(p) = env("XDG_DATA_HOME") {
            return Ok(PathBuf::from(p).join("kiln"));
        }
        if let Some(home) = env("HOME") {
            return Ok(PathBuf::from(home).join(".local/share/kiln"));
        }
        Err(StateError::NoDefault)
    }

    /// Opens (creating if needed) the state directory at `root`, owner-only (0700) like its
    /// top-level trees: layers hold set-uid binaries and world-writable directories of
    /// untrusted images, which no other local user may reach. The modes of a directory made
    /// by an older kiln (0755) are repaired here.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| StateError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // The directory itself may be a symlink (to another disk); its trees are made by kiln.
        private_dir(&root, true)?;
        for tree in PRIVATE_TREES {
            private_dir(&root.join(tree), false)?;
        }
        // A killed build leaves its step's mounts behind, secrets tmpfs included: every
        // verb clears those of dead processes (one directory listing when there are none).
        crate::executor::sweep::sweep_runs(&crate::executor::ExecutorConfig {
            state_dir: root.clone(),
        });
        // What a killed removal (prune, a failed build's scratch) left: trash only.
        for dir in TRASH_HOLDERS {
            crate::trash::empty(&root.join(dir));
        }
        let content = ContentStore::open(root.join("content"))?;
        Ok(StateDir { root, content })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI-layout content store (`content/`).
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Where unpacked layers live (`layers/`).
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Where flattened layer chains live (`flat/`, see [`crate::snapshot::flatten`]).
    pub fn flat_dir(&self) -> PathBuf {
        self.root.join("flat")
    }

    /// Where persistent cache mounts live (`cache-mounts/`).
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root.join("cache-mounts")
    }

    /// Where `ADD <url>` downloads and their URL records live (`http/`).
    pub fn http_dir(&self) -> PathBuf {
        self.root.join("http")
    }

    /// The redb metadata database path (`meta.redb`).
    pub fn meta_db_path(&self) -> PathBuf {
        self.root.join("meta.redb")
    }

    /// Takes the state lock: builds hold it [`LockMode::Shared`], prune holds it
    /// [`LockMode::Exclusive`].
    pub fn lock(&self, mode: LockMode) -> Result<StoreLock, StateError> {
        Ok(self.content.lock(mode)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path().join("state")).unwrap();
        assert!(s.layers_dir().is_dir());
        assert!(s.cache_mounts_dir().is_dir());
        assert!(s.root().join("content/oci-layout").is_file());
        assert!(s.root().join("content/index.json").is_file());
        assert_eq!(s.meta_db_path(), d.path().join("state/meta.redb"));
        let _shared = s.lock(LockMode::Shared).unwrap();
        let _again = StateDir::open(s.root())
            .unwrap()
            .lock(LockMode::Shared)
            .unwrap();
    }

    #[test]
    fn the_directory_and_its_trees_are_owner_only_and_repaired() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("state");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        StateDir::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        for tree in PRIVATE_TREES {
            assert_eq!(mode(&root.join(tree)), 0o700, "{tree}");
        }
        // A directory an older kiln made world-traversable.
        for p in [root.clone(), root.join("layers"), root.join("content")] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        StateDir::open(&root).unwrap();
        for p in [root.clone(), root.join("layers"), root.join("content")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        // What a killed prune left in a trash goes at the next open.
        fs::create_dir_all(root.join("layers/.trash/sha256-x.1.0/bin")).unwrap();
        StateDir::open(&root).unwrap();
        assert!(!root.join("layers/.trash").exists());
        // A tree that is a symlink is refused, not followed.
        fs::remove_dir(root.join("http")).unwrap();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("http")).unwrap();
        assert!(StateDir::open(&root).is_err());
        assert_eq!(mode(&elsewhere), 0o755);
    }

    #[test]
    fn explicit_root_wins() {
        let p = Path::new("/x/y");
        assert_eq!(StateDir::choose_root(Some(p)).unwrap(), p);
    }
}
