//! RUN mounts: what a step asks for (`MountSpec`), and the host-side preparation
//! that turns each into a plain container mount (`ContainerMount`) both executors
//! understand.

pub mod bind;
pub mod cache;
pub mod pin;
pub mod secret;
pub mod ssh;

use std::path::{Path, PathBuf};

pub use cache::{CacheLease, CacheMounts, CacheSharing};

/// One `RUN --mount` as the solver hands it to an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host directory or file (a snapshot, the context): ro by default,
    /// rw writes go to a throwaway overlay.
    Bind {
        /// Host path of the source.
        source: PathBuf,
        /// Absolute path in the container.
        target: String,
        /// Whether writes are refused (true) or discarded after the step (false).
        readonly: bool,
    },
    /// A persistent directory under the state dir's `cache-mounts/`.
    Cache(CacheSpec),
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path in the container.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A secret as a file, an environment variable or both.
    Secret(SecretSpec),
    /// An SSH agent socket forwarded into the container.
    Ssh(SshSpec),
}

/// A cache mount's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// Cache id (defaults to the target in the frontend).
    pub id: String,
    /// Absolute path in the container.
    pub target: String,
    /// Concurrency semantics.
    pub sharing: CacheSharing,
    /// Mode of the directory when first created.
    pub mode: u32,
    /// Owner of the directory when first created.
    pub uid: u32,
    /// Group of the directory when first created.
    pub gid: u32,
    /// Mount read-only.
    pub readonly: bool,
    /// Host directory whose contents a new cache directory starts with
    /// (`from=`/`source=`); the caller keys `id` by that source.
    pub seed: Option<PathBuf>,
}

/// A secret's options; the data comes from the client (`--secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// Secret id.
    pub id: String,
    /// The secret's bytes.
    pub data: Vec<u8>,
    /// File target; `None` with no `env` means `/run/secrets/<id>`.
    pub target: Option<String>,
    /// Environment variable to expose the secret as.
    pub env: Option<String>,
    /// File mode (default 0400).
    pub mode: u32,
    /// File owner.
    pub uid: u32,
    /// File group.
    pub gid: u32,
}

impl std::fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret bytes.
        f.debug_struct("SecretSpec")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl SecretSpec {
    /// Where the secret file goes, if it is a file at all.
    pub fn file_target(&self) -> Option<String> {
        match (&self.target, &self.env) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(format!("/run/secrets/{}", self.id)),
        }
    }
}

/// An SSH agent forward's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// Forward id (`default` unless named).
    pub id: String,
    /// The agent socket on the host.
    pub agent_socket: PathBuf,
    /// Socket path in the container (default `/run/buildkit/ssh_agent.<n>`).
    pub target: Option<String>,
    /// Socket mode (default 0600).
    pub mode: u32,
    /// Socket owner.
    pub uid: u32,
    /// Socket group.
    pub gid: u32,
}

/// A mount as both executors apply it, after host-side preparation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    /// Absolute destination in the container, symlinks already resolved.
    pub destination: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// The kinds of mounts a sandbox is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A fresh procfs.
    Proc,
    /// The minimal /dev: a tmpfs with null, zero, full, random, urandom, tty,
    /// a private devpts (with ptmx), /dev/shm and the fd symlinks.
    Dev,
    /// sysfs (read-only unless insecure).
    Sysfs {
        /// Mount read-only.
        readonly: bool,
    },
    /// A bind mount of a host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount read-only.
        readonly: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
        /// Root directory mode.
        mode: u32,
    },
}

impl ContainerMount {
    /// Whether the mount point must be a file (a bind of a non-directory).
    pub fn needs_file_stub(&self) -> bool {
        match &self.kind {
            MountKind::Bind { source, .. } => !source.is_dir(),
            _ => false,
        }
    }
}

/// Sorts user mounts so parents are mounted before their children, keeping
/// the given order otherwise (BuildKit mounts in the same order).
pub fn sort_by_depth(mounts: &mut [ContainerMount]) {
    mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_targets() {
        let mut s = SecretSpec {
            id: "tok".into(),
            data: b"x".to_vec(),
            target: None,
            env: None,
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        assert_eq!(s.file_target().as_deref(), Some("/run/secrets/tok"));
        s.env = Some("TOKEN".into());
        assert_eq!(s.file_target(), None);
        s.target = Some("/t".into());
        assert_eq!(s.file_target().as_deref(), Some("/t"));
        assert!(!format!("{s:?}").contains("data"));
    }

    #[test]
    fn depth_sort_is_stable_parents_first() {
        let m = |d: &str| ContainerMount {
            destination: d.into(),
            kind: MountKind::Tmpfs {
                size: None,
                mode: 0o1777,
            },
        };
        let mut v = vec![m("/a/b/c"), m("/z"), m("/a"), m("/a/b")];
        sort_by_depth(&mut v);
        let d: Vec<_> = v.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(d, vec!["/z", "/a", "/a/b", "/a/b/c"]);
    }
}
