//! A compiled glob: `*`, `?`, `[...]`, `\` escapes and, in the
//! patternmatcher flavor, `**` spanning directories.

use thiserror::Error;

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GlobError {
    /// `[` without its closing `]`.
    #[error("syntax error in pattern {pattern:?}: unterminated character class")]
    UnterminatedClass {
        /// The whole pattern.
        pattern: String,
    },
    /// A trailing `\` with nothing to escape.
    #[error("syntax error in pattern {pattern:?}: trailing escape character")]
    TrailingEscape {
        /// The whole pattern.
        pattern: String,
    },
}

/// Which dialect a pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobFlavor {
    /// Go's `filepath.Match`: `*` never crosses `/`, no `**`.
    FilepathMatch,
    /// moby/patternmatcher (`.dockerignore`, `--exclude`): `**` matches any
    /// number of directories.
    PatternMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` or a medial `**`: zero or more whole directories (`(.*/)?`).
    AnyDirs,
    /// A trailing `**`: anything at all.
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

/// True when `s` has a character `filepath.Match` treats specially.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

impl Glob {
    /// Compiles `pattern` in the given flavor.
    pub fn new(pattern: &str, flavor: GlobFlavor) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            i += 1;
            match c {
                '*' if flavor == GlobFlavor::PatternMatcher && chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    tokens.push(if i >= chars.len() {
                        Token::Rest
                    } else {
                        Token::AnyDirs
                    });
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => match chars.get(i) {
                    Some(&e) => {
                        i += 1;
                        tokens.push(Token::Literal(e));
                    }
                    None => {
                        return Err(GlobError::TrailingEscape {
                            pattern: pattern.to_string(),
                        })
                    }
                },
                '[' => {
                    let (token, next) =
                        parse_class(&chars, i).ok_or_else(|| GlobError::UnterminatedClass {
                            pattern: pattern.to_string(),
                        })?;
                    tokens.push(token);
                    i = next;
                }
                _ => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no wildcard, so it names one path.
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        let text: Vec<char> = path.chars().collect();
        // memo[t][p]: Some(result) once known; keeps `**` and `*` linear-ish.
        let mut memo = vec![vec![None; text.len() + 1]; self.tokens.len() + 1];
        self.match_from(0, 0, &text, &mut memo)
    }

    fn match_from(
        &self,
        t: usize,
        p: usize,
        text: &[char],
        memo: &mut Vec<Vec<Option<bool>>>,
    ) -> bool {
        if let Some(known) = memo[t][p] {
            return known;
        }
        let result = match self.tokens.get(t) {
            None => p == text.len(),
            Some(Token::Literal(c)) => {
                text.get(p) == Some(c) && self.match_from(t + 1, p + 1, text, memo)
            }
            Some(Token::One) => {
                text.get(p).is_some_and(|&c| c != '/') && self.match_from(t + 1, p + 1, text, memo)
            }
            Some(Token::Class { negated, ranges }) => {
                text.get(p).is_some_and(|&c| {
                    c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }) && self.match_from(t + 1, p + 1, text, memo)
            }
            Some(Token::Star) => {
                let mut q = p;
                loop {
                    if self.match_from(t + 1, q, text, memo) {
                        break true;
                    }
                    match text.get(q) {
                        Some(&c) if c != '/' => q += 1,
                        _ => break false,
                    }
                }
            }
            Some(Token::AnyDirs) => {
                // Zero directories, or up to and including any later `/`.
                self.match_from(t + 1, p, text, memo)
                    || (p..text.len())
                        .filter(|&q| text[q] == '/')
                        .any(|q| self.match_from(t + 1, q + 1, text, memo))
            }
            Some(Token::Rest) => true,
        };
        memo[t][p] = Some(result);
        result
    }
}

/// Parses a `[...]` class starting after the `[`; returns the token and the
/// index after `]`.
fn parse_class(chars: &[char], mut i: usize) -> Option<(Token, usize)> {
    let negated = matches!(chars.get(i), Some('^') | Some('!'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i));
        }
        first = false;
        if c == '\\' {
            c = *chars.get(i)?;
            i += 1;
        }
        let mut hi = c;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            hi = *chars.get(i + 1)?;
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i)?;
                i += 1;
            }
        }
        ranges.push((c, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(p: &str, path: &str) -> bool {
        Glob::new(p, GlobFlavor::PatternMatcher)
            .unwrap()
            .matches(path)
    }

    fn fm(p: &str, path: &str) -> bool {
        Glob::new(p, GlobFlavor::FilepathMatch)
            .unwrap()
            .matches(path)
    }

    #[test]
    fn filepath_match_semantics() {
        assert!(fm("*.txt", "a.txt"));
        assert!(!fm("*.txt", "dir/a.txt"));
        assert!(fm("dir/*.txt", "dir/a.txt"));
        assert!(fm("a?c", "abc"));
        assert!(!fm("a?c", "a/c"));
        assert!(fm("[a-c]x", "bx"));
        assert!(!fm("[!a-c]x", "bx"));
        assert!(fm("[^a-c]x", "dx"));
        assert!(fm("\\*", "*"));
        assert!(!fm("\\*", "a"));
        assert!(!fm("**", "a/b"), "** is two stars in filepath.Match");
        assert!(fm("**", "ab"));
    }

    #[test]
    fn double_star_spans_directories() {
        assert!(pm("**/*.go", "a.go"));
        assert!(pm("**/*.go", "x/y/a.go"));
        assert!(pm("a/**/b", "a/b"));
        assert!(pm("a/**/b", "a/x/y/b"));
        assert!(!pm("a/**/b", "a/xb"));
        assert!(pm("a/**", "a/x/y"));
        assert!(pm("**", "anything/at/all"));
        assert!(!pm("*.go", "x/a.go"));
    }

    #[test]
    fn bad_patterns_are_errors_not_panics() {
        assert!(matches!(
            Glob::new("[abc", GlobFlavor::FilepathMatch),
            Err(GlobError::UnterminatedClass { .. })
        ));
        assert!(matches!(
            Glob::new("abc\\", GlobFlavor::PatternMatcher),
            Err(GlobError::TrailingEscape { .. })
        ));
        assert!(Glob::new("[", GlobFlavor::PatternMatcher).is_err());
        assert!(Glob::new("[]", GlobFlavor::PatternMatcher).is_err());
        assert!(Glob::new("[]]", GlobFlavor::PatternMatcher)
            .unwrap()
            .matches("]"));
    }

    #[test]
    fn pathological_stars_stay_fast() {
        let p = Glob::new(&"*a".repeat(30), GlobFlavor::PatternMatcher).unwrap();
        assert!(!p.matches(&"a".repeat(29)));
        let p = Glob::new(&"**/".repeat(20), GlobFlavor::PatternMatcher).unwrap();
        assert!(p.matches(&"x/".repeat(40)));
    }
}
