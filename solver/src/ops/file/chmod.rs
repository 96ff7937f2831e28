//! `--chmod`: octal modes and chmod(1)'s symbolic modes (`+x`, `u=rwX,go=rX`,
//! `g=u`). This is the one parser and applier of the flag; the frontend
//! validates values with [`parse_chmod`].

use thiserror::Error;

use crate::llb::ChmodOpt;

/// A `--chmod` value that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChmodError {
    /// A numeric value that is not octal or above 07777.
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    Octal(String),
    /// A symbolic value that does not follow `[ugoa]*[+-=]([rwxXst]*|[ugo])`.
    #[error("invalid chmod parameter: '{value}': {reason}")]
    Symbolic {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The permission classes bits of `u`, `g` and `o` (with their special bit).
const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perms {
    /// Letters: `r`, `w`, `x`, `X` (conditional x), `s`, `t`.
    Letters { bits: u32, cond_exec: bool },
    /// Copy the rwx bits of a class (`u`, `g`, `o`), as a shift amount.
    Copy(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Action {
    op: u8,
    perms: Perms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    /// Union of USER/GROUP/OTHER; `None` when no class was written (= all).
    who: Option<u32>,
    actions: Vec<Action>,
}

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// Parses a `--chmod` value as written in a Dockerfile into the graph's form
/// (validating symbolic values).
pub fn parse_chmod(value: &str) -> Result<ChmodOpt, ChmodError> {
    match Chmod::parse(value)?.kind {
        Kind::Octal(m) => Ok(ChmodOpt::Octal(m)),
        Kind::Symbolic(_) => Ok(ChmodOpt::Symbolic(value.to_string())),
    }
}

impl Chmod {
    /// Parses octal (`755`, `0644`) or symbolic (`u+x,go-w`) text.
    pub fn parse(value: &str) -> Result<Chmod, ChmodError> {
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(value, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod {
                    kind: Kind::Octal(m),
                }),
                _ => Err(ChmodError::Octal(value.to_string())),
            };
        }
        let bad = |reason| ChmodError::Symbolic {
            value: value.to_string(),
            reason,
        };
        let mut clauses = Vec::new();
        for text in value.split(',') {
            let bytes = text.as_bytes();
            let mut i = 0;
            let mut who = None;
            while let Some(&c) = bytes.get(i) {
                let class = match c {
                    b'u' => USER,
                    b'g' => GROUP,
                    b'o' => OTHER,
                    b'a' => USER | GROUP | OTHER,
                    _ => break,
                };
                who = Some(who.unwrap_or(0) | class);
                i += 1;
            }
            let mut actions = Vec::new();
            while let Some(&op) = bytes.get(i) {
                if !matches!(op, b'+' | b'-' | b'=') {
                    return Err(bad("expected an operator (+, - or =)"));
                }
                i += 1;
                let perms = match bytes.get(i) {
                    Some(b'u') => Some(6),
                    Some(b'g') => Some(3),
                    Some(b'o') => Some(0),
                    _ => None,
                };
                let perms = if let Some(shift) = perms {
                    i += 1;
                    Perms::Copy(shift)
                } else {
                    let mut bits = 0;
                    let mut cond_exec = false;
                    while let Some(&c) = bytes.get(i) {
                        match c {
                            b'r' => bits |= 0o444,
                            b'w' => bits |= 0o222,
                            b'x' => bits |= 0o111,
                            b'X' => cond_exec = true,
                            b's' => bits |= 0o6000,
                            b't' => bits |= 0o1000,
                            _ => break,
                        }
                        i += 1;
                    }
                    Perms::Letters { bits, cond_exec }
                };
                actions.push(Action { op, perms });
            }
            if actions.is_empty() {
                return Err(bad("expected an operator (+, - or =)"));
            }
            if i != bytes.len() {
                return Err(bad("unexpected character"));
            }
            clauses.push(Clause { who, actions });
        }
        Ok(Chmod {
            kind: Kind::Symbolic(clauses),
        })
    }

    /// Reads the graph's form.
    pub fn from_opt(opt: &ChmodOpt) -> Result<Chmod, ChmodError> {
        match opt {
            ChmodOpt::Octal(m) if *m <= 0o7777 => Ok(Chmod {
                kind: Kind::Octal(*m),
            }),
            ChmodOpt::Octal(m) => Err(ChmodError::Octal(format!("{m:o}"))),
            ChmodOpt::Symbolic(s) => Chmod::parse(s),
        }
    }

    /// The mode a file with permission bits `mode` gets (`is_dir` matters
    /// for `X`). Only the low 12 bits are looked at and returned. An octal
    /// value replaces the rwx bits and keeps the file's setuid, setgid and
    /// sticky bits, as BuildKit's copier does.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match &self.kind {
            Kind::Octal(m) => return (mode & 0o7000) | (m & 0o777),
            Kind::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            let who = clause.who.unwrap_or(USER | GROUP | OTHER);
            for action in &clause.actions {
                let bits = match action.perms {
                    Perms::Letters { bits, cond_exec } => {
                        // X: search for directories, execute for files some
                        // class can already execute.
                        let x = if cond_exec && (is_dir || mode & 0o111 != 0) {
                            0o111
                        } else {
                            0
                        };
                        bits | x
                    }
                    Perms::Copy(shift) => {
                        let b = (mode >> shift) & 0o7;
                        (b << 6) | (b << 3) | b
                    }
                };
                let bits = bits & who;
                mode = match action.op {
                    b'+' => mode | bits,
                    b'-' => mode & !bits,
                    _ => (mode & !who) | bits,
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal() {
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("0644", 0o777, true), 0o644);
        // Special bits come from the file, not from the octal value.
        assert_eq!(ap("4755", 0, false), 0o755);
        assert_eq!(ap("700", 0o2755, true), 0o2700);
        assert!(matches!(Chmod::parse("8"), Err(ChmodError::Octal(_))));
        assert!(matches!(Chmod::parse("17777"), Err(ChmodError::Octal(_))));
        assert_eq!(parse_chmod("0755").unwrap(), ChmodOpt::Octal(0o755));
    }

    #[test]
    fn symbolic_table() {
        let cases: &[(&str, u32, bool, u32)] = &[
            ("+x", 0o644, false, 0o755),
            ("a+x", 0o600, false, 0o711),
            ("u+x", 0o644, false, 0o744),
            ("go-w", 0o666, false, 0o644),
            ("u=rwX,go=rX", 0o600, false, 0o644),
            ("u=rwX,go=rX", 0o700, false, 0o755),
            ("u=rwX,go=rX", 0o600, true, 0o755),
            ("g=u", 0o750, false, 0o770),
            ("o=g", 0o750, false, 0o755),
            ("u=", 0o755, false, 0o055),
            ("a=r", 0o777, false, 0o444),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o777, true, 0o1777),
            ("o+t", 0o777, true, 0o1777),
            ("u+t", 0o777, true, 0o777),
            ("u+x-w", 0o644, false, 0o544),
            ("ug=rw,o=", 0o777, false, 0o660),
        ];
        for (s, before, dir, want) in cases {
            assert_eq!(ap(s, *before, *dir), *want, "{s} on {before:o} dir={dir}");
        }
    }

    #[test]
    fn symbolic_errors() {
        for bad in ["", "u", "x+", "u+q", "u+x,", "a~r", "+rw x"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            parse_chmod("u+x").unwrap(),
            ChmodOpt::Symbolic("u+x".to_string())
        );
    }
}
