//! Path patterns as Docker uses them: `.dockerignore` and `--exclude` patterns
//! (moby/patternmatcher semantics, with `**`), and COPY source wildcards (Go's
//! `filepath.Match`). Matching works on `/`-separated relative paths.

mod glob;
mod ignore;

pub use glob::{has_wildcards, Glob, GlobError, GlobFlavor};
pub use ignore::{clean_path, parse_dockerignore, IgnorePattern, PatternMatcher};
