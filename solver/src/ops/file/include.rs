//! Include patterns of a copy (`--parents` and the lowering's selectors):
//! a path can match a pattern fully, or be a directory on the way to a
//! possible match (partial), which must be walked but not yet created.

use super::error::FileOpError;
use crate::pattern::{Glob, GlobFlavor};

/// How a path relates to the include patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Inclusion {
    /// No pattern can match the path or anything below it.
    None,
    /// A directory that may hold matches.
    Partial,
    /// Matched: the path and everything below it are included.
    Full,
}

#[derive(Debug, Clone)]
enum Part {
    /// `**`: any number of components.
    AnyDirs,
    Glob(Glob),
}

/// Compiled include patterns.
#[derive(Debug, Clone)]
pub struct IncludeMatcher {
    patterns: Vec<Vec<Part>>,
}

impl IncludeMatcher {
    /// Compiles patterns relative to the copied source (`a/**/*.go`).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<IncludeMatcher, FileOpError> {
        let mut out = Vec::new();
        for p in patterns {
            let parts = p
                .as_ref()
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(|c| {
                    if c == "**" {
                        Ok(Part::AnyDirs)
                    } else {
                        Glob::new(c, GlobFlavor::FilepathMatch).map(Part::Glob)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(parts);
        }
        Ok(IncludeMatcher { patterns: out })
    }

    /// The best relation of `path` (relative, `/`-separated) to any pattern.
    pub fn matches(&self, path: &str) -> Inclusion {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns
            .iter()
            .map(|p| match_parts(p, &comps))
            .max()
            .unwrap_or(Inclusion::None)
    }
}

fn match_parts(pattern: &[Part], path: &[&str]) -> Inclusion {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => Inclusion::Full,
        (None, Some(_)) => Inclusion::None,
        (Some((Part::AnyDirs, rest)), _) => {
            if rest.is_empty() {
                return Inclusion::Full;
            }
            (0..=path.len())
                .map(|i| match_parts(rest, path.get(i..).unwrap_or_default()))
                .max()
                .unwrap_or(Inclusion::None)
                .max(Inclusion::Partial)
        }
        (Some(_), None) => Inclusion::Partial,
        (Some((Part::Glob(g), rest)), Some((first, others))) => {
            if g.matches(first) {
                match_parts(rest, others)
            } else {
                Inclusion::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Inclusion::*;

    #[test]
    fn full_partial_none() {
        let m = IncludeMatcher::new(&["a/b/*.txt"]).unwrap();
        assert_eq!(m.matches("a"), Partial);
        assert_eq!(m.matches("a/b"), Partial);
        assert_eq!(m.matches("a/b/x.txt"), Full);
        assert_eq!(m.matches("a/b/x.md"), None);
        assert_eq!(m.matches("c"), None);
        let m = IncludeMatcher::new(&["src/**/*.go"]).unwrap();
        assert_eq!(m.matches("src/x.go"), Full);
        assert_eq!(m.matches("src/a/b/x.go"), Full);
        assert_eq!(m.matches("src/a/b"), Partial);
        assert_eq!(m.matches("lib"), None);
        let m = IncludeMatcher::new(&["**"]).unwrap();
        assert_eq!(m.matches("anything/at/all"), Full);
    }
}
