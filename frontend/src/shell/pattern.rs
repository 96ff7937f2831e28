//! Shell glob patterns of `${v#p}`, `${v%p}` and `${v/p/r}`: `?` is one character, `*` any run,
//! `\*`, `\?` and `\\` are literal. Bracket expressions are not supported (as in BuildKit).

use std::fmt;

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
}

/// Pattern steps (characters × pattern elements) one substitution may take:
/// large values with `*` patterns would otherwise take hours.
const MAX_STEPS: usize = 10_000_000;

/// A compiled shell pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    toks: Vec<Tok>,
}

/// A pattern with an escape that is not `\*`, `\?`, `\\`, `\}` or `\/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPattern {
    /// The character after the backslash (`None` at the end of the pattern).
    pub escaped: Option<char>,
}

impl fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.escaped {
            Some(c) => write!(f, "invalid escape '\\{c}'"),
            None => write!(f, "invalid escape '\\' at the end of the pattern"),
        }
    }
}

impl std::error::Error for InvalidPattern {}

impl Pattern {
    /// Compiles `raw`, which still holds its backslash escapes.
    pub fn compile(raw: &str) -> Result<Self, InvalidPattern> {
        let mut toks = Vec::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match chars.peek().copied() {
                    // `}` and `/` had to be escaped inside `${}`; the escape is not part of the pattern.
                    Some('}') | Some('/') => {}
                    Some(e @ ('*' | '?' | '\\')) => {
                        chars.next();
                        toks.push(Tok::Lit(e));
                    }
                    other => return Err(InvalidPattern { escaped: other }),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern { toks })
    }

    fn reversed(&self) -> Pattern {
        let mut toks = self.toks.clone();
        toks.reverse();
        Pattern { toks }
    }

    /// For each `k` in `0..=value.len()-start`, whether `value[start..start+k]` matches the
    /// whole pattern; `None` once `steps` passes [`MAX_STEPS`].
    fn match_ends(&self, value: &[char], start: usize, steps: &mut usize) -> Option<Vec<bool>> {
        let m = self.toks.len();
        let rest = value.get(start..).unwrap_or(&[]);
        // Each start costs its state vectors even when it fails at once.
        *steps += m + 1;
        let mut states = vec![false; m + 1];
        states[0] = true;
        self.close(&mut states);
        // Grown as the scan goes: most starts fail after a character or two.
        let mut out = vec![states[m]];
        let mut next = vec![false; m + 1];
        for &c in rest {
            *steps += m + 1;
            if *steps > MAX_STEPS {
                return None;
            }
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for (i, tok) in self.toks.iter().enumerate() {
                if !states[i] {
                    continue;
                }
                match *tok {
                    Tok::Lit(l) if l == c => {
                        next[i + 1] = true;
                        any = true;
                    }
                    Tok::Any => {
                        next[i + 1] = true;
                        any = true;
                    }
                    Tok::Star => {
                        next[i] = true;
                        any = true;
                    }
                    Tok::Lit(_) => {}
                }
            }
            if !any {
                break;
            }
            std::mem::swap(&mut states, &mut next);
            self.close(&mut states);
            out.push(states[m]);
        }
        Some(out)
    }

    /// Epsilon closure: a `*` may match nothing.
    fn close(&self, states: &mut [bool]) {
        for (i, tok) in self.toks.iter().enumerate() {
            if states[i] && *tok == Tok::Star {
                states[i + 1] = true;
            }
        }
    }

    /// `${v#p}` (shortest) / `${v##p}` (longest): `value` without the matching prefix;
    /// `None` when matching takes more than [`MAX_STEPS`].
    pub fn trim_prefix(&self, value: &str, longest: bool) -> Option<String> {
        let chars: Vec<char> = value.chars().collect();
        let ends = self.match_ends(&chars, 0, &mut 0)?;
        Some(match pick(&ends, longest) {
            Some(k) => chars[k..].iter().collect(),
            None => value.to_string(),
        })
    }

    /// `${v%p}` (shortest) / `${v%%p}` (longest): `value` without the matching suffix;
    /// `None` when matching takes more than [`MAX_STEPS`].
    pub fn trim_suffix(&self, value: &str, longest: bool) -> Option<String> {
        let mut chars: Vec<char> = value.chars().collect();
        chars.reverse();
        let ends = self.reversed().match_ends(&chars, 0, &mut 0)?;
        Some(match pick(&ends, longest) {
            Some(k) => {
                let keep = chars.len() - k;
                value.chars().take(keep).collect()
            }
            None => value.to_string(),
        })
    }

    /// Leftmost-longest match at or after `from`: `(start, end)` in chars;
    /// `Err` once `steps` passes [`MAX_STEPS`].
    fn find(
        &self,
        chars: &[char],
        from: usize,
        steps: &mut usize,
    ) -> Result<Option<(usize, usize)>, TooExpensive> {
        for s in from..=chars.len() {
            let ends = self.match_ends(chars, s, steps).ok_or(TooExpensive)?;
            if let Some(k) = pick(&ends, true) {
                return Ok(Some((s, s + k)));
            }
        }
        Ok(None)
    }

    /// `${v/p/r}` (first) and `${v//p/r}` (all): replaces leftmost-longest matches of the pattern.
    /// `Ok(None)` once the result would be longer than `max` bytes.
    pub fn replace(
        &self,
        value: &str,
        replacement: &str,
        all: bool,
        max: usize,
    ) -> Result<Option<String>, TooExpensive> {
        let chars: Vec<char> = value.chars().collect();
        let mut steps = 0;
        if !all {
            let out = match self.find(&chars, 0, &mut steps)? {
                Some((s, e)) => {
                    let mut out: String = chars[..s].iter().collect();
                    out.push_str(replacement);
                    out.extend(&chars[e..]);
                    out
                }
                None => value.to_string(),
            };
            return Ok((out.len() <= max).then_some(out));
        }
        // Successive non-overlapping matches; an empty match right after a match is skipped, and the
        // search always advances at least one character (Go regexp's ReplaceAll rules).
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= chars.len() {
            let Some((s, e)) = self.find(&chars, search, &mut steps)? else {
                break;
            };
            out.extend(&chars[last_end..s]);
            if e > last_end || s == 0 {
                out.push_str(replacement);
            }
            if out.len() > max {
                return Ok(None);
            }
            last_end = e;
            search = if search + 1 > e { search + 1 } else { e };
        }
        out.extend(chars.get(last_end..).unwrap_or(&[]));
        Ok((out.len() <= max).then_some(out))
    }
}

/// Matching took more than [`MAX_STEPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooExpensive;

fn pick(ends: &[bool], longest: bool) -> Option<usize> {
    if longest {
        ends.iter().rposition(|&b| b)
    } else {
        ends.iter().position(|&b| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::compile(s).unwrap()
    }

    #[test]
    fn prefix_and_suffix() {
        assert_eq!(
            p("*/").trim_prefix("/usr/local/bin", false).unwrap(),
            "usr/local/bin"
        );
        assert_eq!(p("*/").trim_prefix("/usr/local/bin", true).unwrap(), "bin");
        assert_eq!(
            p("/*").trim_suffix("/usr/local/bin", false).unwrap(),
            "/usr/local"
        );
        assert_eq!(p("/*").trim_suffix("/usr/local/bin", true).unwrap(), "");
        assert_eq!(p("x").trim_prefix("abc", false).unwrap(), "abc");
        assert_eq!(p("a?c").trim_prefix("abcd", false).unwrap(), "d");
        assert_eq!(p("\\*").trim_prefix("*a", false).unwrap(), "a");
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(
            p("o").replace("foo boo", "0", false, 99).unwrap().unwrap(),
            "f0o boo"
        );
        assert_eq!(
            p("o").replace("foo boo", "0", true, 99).unwrap().unwrap(),
            "f00 b00"
        );
        assert_eq!(
            p("o*").replace("foo boo", "X", false, 99).unwrap().unwrap(),
            "fX"
        );
        assert_eq!(
            p("").replace("ab", "-", true, 99).unwrap().unwrap(),
            "-a-b-"
        );
        assert_eq!(
            p("").replace("ab", "---", true, 8),
            Ok(None),
            "over the limit"
        );
        let long = "a".repeat(20_000);
        assert_eq!(
            p("a*x").replace(&long, "y", true, usize::MAX),
            Err(TooExpensive),
            "quadratic matching is cut off"
        );
        assert_eq!(p("*x").trim_prefix(&long, true).as_deref(), Some(&long[..]));
    }

    #[test]
    fn invalid_escape() {
        assert!(Pattern::compile("\\a").is_err());
        assert!(Pattern::compile("a\\").is_err());
        assert_eq!(p("a\\}").trim_prefix("a}b", false).unwrap(), "b");
    }
}
