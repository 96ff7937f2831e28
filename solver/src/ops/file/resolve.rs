//! Lexical path helpers of the file ops; paths are resolved inside their root by
//! [`crate::rootfs_path`] (re-exported here).

pub use crate::rootfs_path::{resolve_in_root, Resolved};

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

    #[test]
    fn split_last_cleans() {
        assert_eq!(split_last("/a/b/"), Some(("/a".into(), "b".into())));
        assert_eq!(split_last("x"), Some(("/".into(), "x".into())));
        assert_eq!(split_last("/"), None);
        assert_eq!(split_last("../.."), None);
    }
}
