//! Resolving container paths inside a rootfs on the host without escaping it.
//!
//! A hostile image can hold symlinks such as `/etc -> /host/etc`; every path we
//! create or open on the host side must resolve them as if `rootfs` were `/`.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute or relative to `/` inside the container) against
/// `rootfs`, following symlinks as the container would see them and clamping
/// `..` and absolute link targets at the rootfs. Missing trailing components are
/// kept as they are. Returns the container-absolute resolved path.
pub fn resolve_in_root(rootfs: &Path, path: &str) -> io::Result<String> {
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut followed = 0usize;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = rootfs.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many levels of symbolic links resolving {path}"),
                    ));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(name),
            Err(e) => return Err(e),
        }
    }
    let mut out = String::from("/");
    for (i, part) in resolved.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&String::from_utf8_lossy(part.as_bytes()));
    }
    Ok(out)
}

/// Joins an already resolved container path onto the rootfs.
pub fn host_path(rootfs: &Path, resolved: &str) -> PathBuf {
    rootfs.join(resolved.trim_start_matches('/'))
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink("/real", root.path().join("etc")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), "/etc/hosts").unwrap(),
            "/real/hosts"
        );
    }

    #[test]
    fn dotdot_is_clamped_at_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../tmp", root.path().join("up")).unwrap();
        assert_eq!(resolve_in_root(root.path(), "/up/x").unwrap(), "/tmp/x");
        assert_eq!(resolve_in_root(root.path(), "/../../a/../b").unwrap(), "/b");
    }

    #[test]
    fn relative_symlink_and_missing_tail() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        symlink("usr/bin", root.path().join("bin")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), "bin/new/deeper").unwrap(),
            "/usr/bin/new/deeper"
        );
        assert_eq!(resolve_in_root(root.path(), "/").unwrap(), "/");
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        assert!(resolve_in_root(root.path(), "/a/x").is_err());
    }
}
