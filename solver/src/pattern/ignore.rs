//! `.dockerignore`: reading the file and deciding which context paths it
//! excludes, with `!` re-inclusion and parent-directory matching as Docker does.

use super::glob::{Glob, GlobError, GlobFlavor};

/// One line of a `.dockerignore` (or one `--exclude` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    glob: Glob,
    /// A `!pattern`: re-includes what earlier patterns excluded.
    pub exclusion: bool,
    /// 1-based line in the file it came from (0 when not from a file).
    pub line: usize,
}

impl IgnorePattern {
    /// The cleaned pattern, without its `!`.
    pub fn pattern(&self) -> &str {
        self.glob.as_str()
    }
}

/// An ordered list of patterns; the last one that matches a path decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternMatcher {
    patterns: Vec<IgnorePattern>,
}

/// Reads `.dockerignore` text: `#` comment lines, blank lines, a leading `!`
/// for exclusions; each pattern is trimmed and cleaned like Go's
/// `filepath.Clean`, and a leading `/` is dropped.
pub fn parse_dockerignore(text: &str) -> Result<PatternMatcher, (usize, GlobError)> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = if i == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        if raw.starts_with('#') {
            continue;
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        lines.push((i + 1, trimmed.to_string()));
    }
    PatternMatcher::from_lines(lines)
}

impl PatternMatcher {
    /// Compiles patterns given with their line numbers (0 for flags).
    pub fn from_lines(lines: Vec<(usize, String)>) -> Result<PatternMatcher, (usize, GlobError)> {
        let mut patterns = Vec::new();
        for (line, text) in lines {
            let (exclusion, body) = match text.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, text.as_str()),
            };
            let cleaned = clean_path(body);
            let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned).to_string();
            if cleaned.is_empty() || cleaned == "." {
                // `/` or `.` as a pattern names the context root itself: never
                // excluded (Docker ignores such lines).
                continue;
            }
            let glob = Glob::new(&cleaned, GlobFlavor::PatternMatcher).map_err(|e| (line, e))?;
            patterns.push(IgnorePattern {
                glob,
                exclusion,
                line,
            });
        }
        Ok(PatternMatcher { patterns })
    }

    /// Compiles plain patterns (for example `COPY --exclude` values).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, GlobError> {
        PatternMatcher::from_lines(
            patterns
                .iter()
                .map(|p| (0, p.as_ref().to_string()))
                .collect(),
        )
        .map_err(|(_, e)| e)
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// True when some `!` pattern exists, so an excluded directory may still
    /// hold included files and must be walked.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last pattern
    /// matching the path or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        self.matching_pattern(path).is_some_and(|p| !p.exclusion)
    }

    /// The pattern that decides `path`, if any.
    pub fn matching_pattern(&self, path: &str) -> Option<&IgnorePattern> {
        let path = clean_path(path);
        let path = path.strip_prefix('/').unwrap_or(&path);
        let mut decided: Option<&IgnorePattern> = None;
        for pattern in &self.patterns {
            let excluded_so_far = decided.is_some_and(|p| !p.exclusion);
            // Only an exclusion can change an excluded path, only an
            // inclusion an included one.
            if pattern.exclusion != excluded_so_far {
                continue;
            }
            if pattern.glob.matches(path)
                || parents(path).any(|parent| pattern.glob.matches(parent))
            {
                decided = Some(pattern);
            }
        }
        decided
    }
}

/// The proper parent directories of `path`, shortest first (`a`, `a/b` for `a/b/c`).
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Lexical clean like Go's `filepath.Clean`, on `/`-separated paths.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> PatternMatcher {
        parse_dockerignore(text).unwrap()
    }

    #[test]
    fn reads_comments_blank_lines_and_cleans() {
        let pm = m("# comment\n\n  *.log  \n/build/\n./tmp/../cache\n");
        let pats: Vec<_> = pm
            .patterns()
            .iter()
            .map(|p| (p.pattern(), p.line))
            .collect();
        assert_eq!(pats, [("*.log", 3), ("build", 4), ("cache", 5)]);
    }

    #[test]
    fn last_match_wins_and_exclusions_reinclude() {
        let pm = m("*.md\n!README.md\n");
        assert!(pm.excludes("CHANGES.md"));
        assert!(!pm.excludes("README.md"));
        assert!(!pm.excludes("docs/x.md"), "*.md only matches at the root");
        let pm = m("**/*.md\n!README*.md\nREADME-secret.md\n");
        assert!(pm.excludes("docs/x.md"));
        assert!(!pm.excludes("README.md"));
        assert!(pm.excludes("README-secret.md"));
    }

    #[test]
    fn a_matching_parent_directory_excludes_its_contents() {
        let pm = m("node_modules\n");
        assert!(pm.excludes("node_modules"));
        assert!(pm.excludes("node_modules/a/b.js"));
        assert!(!pm.excludes("src/node_modules"));
        let pm = m("dir\n!dir/keep\n");
        assert!(pm.excludes("dir/other"));
        assert!(!pm.excludes("dir/keep"));
        assert!(!pm.excludes("dir/keep/inner"));
        assert!(pm.has_exclusions());
    }

    #[test]
    fn everything_but() {
        let pm = m("*\n!src\n!Dockerfile\n");
        assert!(pm.excludes("target"));
        assert!(pm.excludes("x.txt"));
        assert!(!pm.excludes("src/main.rs"));
        assert!(!pm.excludes("Dockerfile"));
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path("a/./b/../c/"), "a/c");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("//"), "/");
    }

    #[test]
    fn bad_pattern_names_its_line() {
        let err = parse_dockerignore("ok\n[bad\n").unwrap_err();
        assert_eq!(err.0, 2);
    }
}
