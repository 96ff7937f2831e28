//! Reading files of a hostile image root: every path resolves inside the root,
//! only regular files are read, and every read is capped.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kiln_solver::rootfs_path::resolve_in_root;

/// An unpacked image root directory, read as the container would see it.
#[derive(Debug, Clone)]
pub struct ImageRoot {
    root: PathBuf,
}

/// Why one file of the image could not be read (the scan goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is absent (a normal outcome: most images lack most databases).
    #[error("{0} does not exist")]
    Missing(String),
    /// The path resolved to something other than a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// The file is larger than the scanner reads.
    #[error("{path} is larger than {cap} bytes")]
    TooLarge {
        /// Container path.
        path: String,
        /// The cap in bytes.
        cap: u64,
    },
    /// Any other I/O failure.
    #[error("reading {path}")]
    Io {
        /// Container path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageRoot {
    /// An image root at `root` on the host.
    pub fn new(root: &Path) -> ImageRoot {
        ImageRoot {
            root: root.to_path_buf(),
        }
    }

    /// The host directory of the root.
    pub fn host_root(&self) -> &Path {
        &self.root
    }

    /// Resolves a container path (symlinks followed as inside the container,
    /// clamped at the root) to its host path.
    pub fn resolve(&self, container_path: &str) -> Result<PathBuf, ReadError> {
        let resolved =
            resolve_in_root(&self.root, container_path, true).map_err(|source| ReadError::Io {
                path: container_path.to_string(),
                source,
            })?;
        Ok(resolved.host)
    }

    /// Reads a container path of at most `cap` bytes, following symlinks inside the root.
    pub fn read(&self, container_path: &str, cap: u64) -> Result<Vec<u8>, ReadError> {
        let host = self.resolve(container_path)?;
        read_host_file(&host, container_path, cap)
    }

    /// Reads a container path as text (invalid UTF-8 replaced), at most `cap` bytes.
    pub fn read_text(&self, container_path: &str, cap: u64) -> Result<String, ReadError> {
        self.read(container_path, cap)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The names in a container directory (symlinks resolved inside the root),
    /// sorted, at most `max` of them; empty when the directory is absent.
    pub fn list_dir(&self, container_path: &str, max: usize) -> Vec<String> {
        let Ok(host) = self.resolve(container_path) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&host) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .take(max)
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The container path of a host path under the root (for found files).
    pub fn container_path(&self, host: &Path) -> String {
        match host.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.to_string_lossy()),
            Err(_) => host.to_string_lossy().into_owned(),
        }
    }
}

/// Opens a host path without following a final symlink, checks that it is a
/// regular file and reads at most `cap` bytes of it.
pub fn read_host_file(host: &Path, shown: &str, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(host, shown)?;
    let len = file
        .metadata()
        .map_err(|source| ReadError::Io {
            path: shown.to_string(),
            source,
        })?
        .len();
    if len > cap {
        return Err(ReadError::TooLarge {
            path: shown.to_string(),
            cap,
        });
    }
    let mut buf = Vec::with_capacity(len as usize);
    // The file may grow after the check: the take keeps the cap.
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Io {
            path: shown.to_string(),
            source,
        })?;
    if buf.len() as u64 > cap {
        return Err(ReadError::TooLarge {
            path: shown.to_string(),
            cap,
        });
    }
    Ok(buf)
}

/// Opens a regular file with O_NOFOLLOW (a symlink swapped in is refused).
pub fn open_regular(host: &Path, shown: &str) -> Result<File, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(host)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ReadError::Missing(shown.to_string()),
            _ if source.raw_os_error() == Some(libc::ELOOP) => {
                ReadError::NotAFile(shown.to_string())
            }
            _ => ReadError::Io {
                path: shown.to_string(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| ReadError::Io {
        path: shown.to_string(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(shown.to_string()));
    }
    Ok(file)
}
