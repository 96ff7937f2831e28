//! COPY source wildcards: Go `filepath.Match` per path component, expanded
//! against a source root. Components before the first wildcard are resolved
//! (symlinks followed inside the root); the rest is matched entry by entry.

use std::fs;
use std::path::Path;

use super::error::FileOpError;
use super::resolve::{clean_abs, resolve_in_root};
use crate::pattern::{Glob, GlobFlavor, PatternMatcher};

/// Whether a path component has an unescaped `*`, `?` or `[`.
pub fn component_has_wildcard(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Whether any component of `path` has a wildcard.
pub fn has_wildcard(path: &str) -> bool {
    path.split('/').any(component_has_wildcard)
}

/// Expands `pattern` inside `root`, returning root-relative absolute-style
/// paths (`/dir/match`) in lexical order. A pattern without wildcards comes
/// back as its clean self, whether or not it exists. Paths `ignore` excludes
/// are dropped.
pub fn expand(
    root: &Path,
    pattern: &str,
    ignore: Option<&PatternMatcher>,
) -> Result<Vec<String>, FileOpError> {
    let clean = clean_abs(pattern);
    let comps: Vec<&str> = clean.split('/').filter(|c| !c.is_empty()).collect();
    let Some(first_wild) = comps.iter().position(|c| component_has_wildcard(c)) else {
        return Ok(vec![clean]);
    };
    let (literal, wild) = comps.split_at(first_wild);
    let globs = wild
        .iter()
        .map(|c| Glob::new(c, GlobFlavor::FilepathMatch))
        .collect::<Result<Vec<_>, _>>()?;
    let base =
        resolve_in_root(root, &literal.join("/"), true).map_err(FileOpError::io("stat", &clean))?;
    let base_rel = base.rel_str();
    let mut level = vec![(base.host, base_rel)];
    let mut out = Vec::new();
    for (depth, glob) in globs.iter().enumerate() {
        let last = depth + 1 == globs.len();
        let mut next = Vec::new();
        for (dir, rel) in &level {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                let Some(name) = name.to_str() else { continue };
                if !glob.matches(name) {
                    continue;
                }
                let child_rel = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let host = dir.join(name);
                if last {
                    let excluded = ignore.is_some_and(|m| {
                        m.excludes(&child_rel) && !(m.has_exclusions() && host.is_dir())
                    });
                    if !excluded {
                        out.push(format!("/{child_rel}"));
                    }
                } else if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                    // Like filepath.Walk, symlinks to directories are not
                    // descended into.
                    next.push((host, child_rel));
                }
            }
        }
        level = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_per_component_in_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "home1.txt",
            "home2.txt",
            "hom.md",
            "sub/a.txt",
            "sub/b.md",
            "zz/a.txt",
        ] {
            let p = r.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        assert_eq!(
            expand(r, "hom*", None).unwrap(),
            ["/hom.md", "/home1.txt", "/home2.txt"]
        );
        assert_eq!(
            expand(r, "/home?.txt", None).unwrap(),
            ["/home1.txt", "/home2.txt"]
        );
        assert_eq!(
            expand(r, "*/a.txt", None).unwrap(),
            ["/sub/a.txt", "/zz/a.txt"]
        );
        assert_eq!(expand(r, "sub/*.md", None).unwrap(), ["/sub/b.md"]);
        assert_eq!(expand(r, "../../*.md", None).unwrap(), ["/hom.md"]);
        assert!(expand(r, "nothing*", None).unwrap().is_empty());
        assert_eq!(expand(r, "literal/../x", None).unwrap(), ["/x"]);
        let ig = PatternMatcher::new(&["home1.txt"]).unwrap();
        assert_eq!(expand(r, "home*", Some(&ig)).unwrap(), ["/home2.txt"]);
        assert!(has_wildcard("a/[b]/c"));
        assert!(!has_wildcard("a/\\*b"));
    }
}
