//! `--chmod` values: octal (`0755`) or symbolic (`u+x`, `u=rwX,go=rX`, `g=u`).

/// Who a symbolic clause applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Who {
    /// User bits.
    pub user: bool,
    /// Group bits.
    pub group: bool,
    /// Other bits.
    pub other: bool,
}

/// What a clause sets: permission letters or a copy of another class.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Perms {
    /// `rwxXst` letters.
    Letters(String),
    /// `u`, `g` or `o`: copy that class's current bits.
    Copy(char),
}

/// One `who op perms` action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    /// Classes affected (`None` = none written, which means all, masked by the umask in chmod(1)).
    pub who: Option<Who>,
    /// `+`, `-` or `=`.
    pub op: char,
    /// Bits.
    pub perms: Perms,
}

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Chmod {
    /// An octal mode.
    Octal(u32),
    /// Comma-separated symbolic clauses.
    Symbolic(Vec<Vec<Action>>),
}

impl Chmod {
    /// Parses and validates a chmod value.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            let m = u32::from_str_radix(s, 8)
                .map_err(|_| format!("invalid chmod {s:?}: not an octal mode"))?;
            if m > 0o7777 {
                return Err(format!("invalid chmod {s:?}: mode is larger than 7777"));
            }
            return Ok(Chmod::Octal(m));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            clauses.push(parse_clause(clause).ok_or_else(|| format!("invalid chmod {s:?}"))?);
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The resulting mode for a file with `mode` (`is_dir` matters for `X`).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for a in clause {
                let who = a.who.unwrap_or(Who {
                    user: true,
                    group: true,
                    other: true,
                });
                let mut mask = 0;
                if who.user {
                    mask |= 0o4700;
                }
                if who.group {
                    mask |= 0o2070;
                }
                if who.other {
                    mask |= 0o1007;
                }
                let bits = match &a.perms {
                    Perms::Copy(c) => {
                        let src = match c {
                            'u' => (mode >> 6) & 7,
                            'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        (src << 6) | (src << 3) | src
                    }
                    Perms::Letters(l) => {
                        let mut b = 0;
                        for ch in l.chars() {
                            b |= match ch {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                                's' => 0o6000,
                                't' => 0o1000,
                                _ => 0,
                            };
                        }
                        b
                    }
                };
                let bits = bits & mask;
                mode = match a.op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !mask) | bits,
                };
            }
        }
        mode
    }
}

fn parse_clause(clause: &str) -> Option<Vec<Action>> {
    let mut chars = clause.chars().peekable();
    let mut who = Who {
        user: false,
        group: false,
        other: false,
    };
    let mut any_who = false;
    while let Some(&c) = chars.peek() {
        match c {
            'u' => who.user = true,
            'g' => who.group = true,
            'o' => who.other = true,
            'a' => {
                who = Who {
                    user: true,
                    group: true,
                    other: true,
                };
            }
            _ => break,
        }
        any_who = true;
        chars.next();
    }
    let who = any_who.then_some(who);
    let mut actions = Vec::new();
    while let Some(op) = chars.next() {
        if !matches!(op, '+' | '-' | '=') {
            return None;
        }
        let mut perms = String::new();
        while let Some(&c) = chars.peek() {
            if matches!(c, '+' | '-' | '=') {
                break;
            }
            perms.push(c);
            chars.next();
        }
        let perms = if perms.len() == 1 && matches!(perms.as_str(), "u" | "g" | "o") {
            Perms::Copy(perms.chars().next()?)
        } else if perms.chars().all(|c| "rwxXst".contains(c)) {
            Perms::Letters(perms)
        } else {
            return None;
        };
        actions.push(Action { who, op, perms });
    }
    (!actions.is_empty()).then_some(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("0644").unwrap().apply(0o777, false), 0o644);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert_eq!(
            Chmod::parse("u=rwX,go=rX").unwrap().apply(0o600, true),
            0o755
        );
        assert_eq!(
            Chmod::parse("u=rwX,go=rX").unwrap().apply(0o600, false),
            0o644
        );
        assert_eq!(Chmod::parse("g=u").unwrap().apply(0o740, false), 0o770);
        assert_eq!(Chmod::parse("o-r").unwrap().apply(0o644, false), 0o640);
    }

    #[test]
    fn invalid() {
        for bad in ["", "888", "77777", "u", "x+", "u+q", "u+x,", "z=r"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }
}
