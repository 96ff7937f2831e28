//! Resolving a path inside a root directory the way a process chrooted into
//! that root would: `..` stops at the root, and symlinks (absolute or
//! relative) are followed without ever leaving it.

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

/// Splits a `/`-separated path into its clean parent and last component
/// (`/a/b/` -> (`/a`, `b`)); `None` for the root itself.
pub fn split_last(path: &str) -> Option<(String, String)> {
    let clean = clean_abs(path);
    let (dir, base) = clean.rsplit_once('/')?;
    if base.is_empty() {
        return None;
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    Some((dir.to_string(), base.to_string()))
}

/// Cleans `path` lexically as an absolute path (`a/../b/` -> `/b`), so `..`
/// can never climb above `/`.
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
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
    fn split_last_cleans() {
        assert_eq!(split_last("/a/b/"), Some(("/a".into(), "b".into())));
        assert_eq!(split_last("x"), Some(("/".into(), "x".into())));
        assert_eq!(split_last("/"), None);
        assert_eq!(split_last("../.."), None);
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
