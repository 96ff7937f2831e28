//! Resolving a path inside a root directory (a rootfs, a file op's source or destination, a
//! mount's source) the way a process chrooted into that root would: `..` stops at the root,
//! and symlinks (absolute or relative) are followed without ever leaving it. A hostile image
//! can hold links such as `/etc -> /host/etc`; every path created or opened on the host side
//! resolves through here. The one resolver of the solver, as continuity's `fs.RootPath` is
//! BuildKit's.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Symlinks followed before giving up with ELOOP (Linux's limit is 40; Go's
/// RootPath allows 255).
const MAX_SYMLINKS: usize = 255;

/// A path resolved inside a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path on the host (`root` joined with `rel`).
    pub host: PathBuf,
    /// The clean path relative to the root, `/`-separated, empty for the root.
    pub rel: PathBuf,
}

impl Resolved {
    /// `rel` as a `/`-separated string (lossy for non-UTF-8 names), for
    /// pattern matching and messages.
    pub fn rel_str(&self) -> String {
        self.rel.to_string_lossy().into_owned()
    }

    /// The path as the container sees it: `/` and `rel` (lossy for non-UTF-8 names).
    pub fn container_path(&self) -> String {
        format!("/{}", self.rel_str())
    }
}

/// Resolves `path` (absolute or relative, both taken from `root`) inside
/// `root`. With `follow_final` false a symlink in the last component is
/// returned as is. Components that do not exist are kept literally.
pub fn resolve_in_root(root: &Path, path: &str, follow_final: bool) -> io::Result<Resolved> {
    resolve_os(root, OsStr::new(path), follow_final)
}

fn components(path: &OsStr) -> impl Iterator<Item = OsString> + '_ {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

fn resolve_os(root: &Path, path: &OsStr, follow_final: bool) -> io::Result<Resolved> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut links = 0usize;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            stack.pop();
            continue;
        }
        stack.push(comp);
        if pending.is_empty() && !follow_final {
            break;
        }
        let host = join(root, &stack);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&host)?;
                stack.pop();
                if target.is_absolute() {
                    stack.clear();
                }
                for c in components(target.as_os_str())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    pending.push_front(c);
                }
            }
            Ok(_) => {}
            // What does not exist (yet) is taken literally, like RootPath does.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(e),
        }
    }
    let rel: PathBuf = stack.iter().collect();
    Ok(Resolved {
        host: join(root, &stack),
        rel,
    })
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

/// Joins an already resolved container path onto the rootfs.
pub fn host_path(rootfs: &Path, resolved: &str) -> PathBuf {
    rootfs.join(resolved.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dotdot_and_absolute_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        let res = resolve_in_root(r, "../../a/../../a/b/../..", true).unwrap();
        assert_eq!(res.host, r);
        assert_eq!(
            resolve_in_root(r, "/a/b", true).unwrap().rel,
            Path::new("a/b")
        );
    }

    #[test]
    fn symlinks_are_clamped_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        symlink("/real", r.join("abs")).unwrap();
        symlink("../../../../real/dir", r.join("rel")).unwrap();
        symlink("/etc", r.join("hostetc")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        assert_eq!(
            resolve_in_root(r, "abs/dir/x", true).unwrap().host,
            r.join("real/dir/x")
        );
        assert_eq!(
            resolve_in_root(r, "rel", true).unwrap().host,
            r.join("real/dir")
        );
        // A link to the host's /etc resolves to the root's /etc.
        assert_eq!(
            resolve_in_root(r, "hostetc/passwd", true).unwrap().host,
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, "abs", false).unwrap().host,
            r.join("abs")
        );
        let err = resolve_in_root(r, "loop1/x", true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink("/real", root.path().join("etc")).unwrap();
        let r = resolve_in_root(root.path(), "/etc/hosts", true).unwrap();
        assert_eq!(r.container_path(), "/real/hosts");
    }

    #[test]
    fn dotdot_is_clamped_at_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../tmp", root.path().join("up")).unwrap();
        let path = |p: &str| {
            resolve_in_root(root.path(), p, true)
                .unwrap()
                .container_path()
        };
        assert_eq!(path("/up/x"), "/tmp/x");
        assert_eq!(path("/../../a/../b"), "/b");
    }

    #[test]
    fn relative_symlink_and_missing_tail() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        symlink("usr/bin", root.path().join("bin")).unwrap();
        let path = |p: &str| {
            resolve_in_root(root.path(), p, true)
                .unwrap()
                .container_path()
        };
        assert_eq!(path("bin/new/deeper"), "/usr/bin/new/deeper");
        assert_eq!(path("/"), "/");
    }

    #[test]
    fn a_file_on_the_way_is_taken_literally() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("file"), b"").unwrap();
        let r = resolve_in_root(root.path(), "/file/x", true).unwrap();
        assert_eq!(r.host, root.path().join("file/x"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;

    const TARGETS: &[&str] = &[
        "..",
        "/",
        "../..",
        "a",
        "/a/b",
        "../../../etc",
        "b/../..",
        "l1",
        "/l2/..",
        ".",
    ];
    const COMPONENTS: &[&str] = &["a", "b", "l1", "l2", "..", ".", "", "x"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the links and the path, the result lies in the root and,
        /// once the existing part is canonicalized by the host, still does.
        #[test]
        fn never_leaves_the_root(
            t1 in 0..TARGETS.len(),
            t2 in 0..TARGETS.len(),
            t3 in 0..TARGETS.len(),
            path in proptest::collection::vec(0..COMPONENTS.len(), 0..8),
            follow in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir_all(root.join("a/b")).unwrap();
            symlink(TARGETS[t1], root.join("l1")).unwrap();
            symlink(TARGETS[t2], root.join("l2")).unwrap();
            symlink(TARGETS[t3], root.join("a/l3")).unwrap();
            let path: Vec<&str> = path.iter().map(|i| COMPONENTS[*i]).collect();
            let path = path.join("/");
            let Ok(r) = resolve_in_root(&root, &path, follow) else {
                return Ok(());
            };
            prop_assert!(r.host.starts_with(&root));
            prop_assert_eq!(&r.host, &root.join(&r.rel));
            prop_assert!(r.rel.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            // The part that exists, resolved by the kernel, is inside too
            // (with follow_final the last link was followed by us).
            let check = if follow || r.host == root {
                r.host.clone()
            } else {
                r.host.parent().unwrap_or(&root).to_path_buf()
            };
            let existing = check.ancestors().find(|p| p.exists()).unwrap().to_path_buf();
            let canon = std::fs::canonicalize(&existing).unwrap();
            prop_assert!(canon.starts_with(std::fs::canonicalize(&root).unwrap()), "{} -> {}", path, canon.display());
        }
    }
}
