//! The `--name[=value]` flags of an instruction, checked against what the instruction accepts
//! (BuildKit's BFlags): unknown flags get a did-you-mean suggestion, booleans take Go's spellings.

use std::collections::BTreeMap;

/// How a flag takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name=value`, at most once.
    String,
    /// `--name` or `--name=true|false`.
    Bool,
    /// `--name=value`, repeatable.
    Strings,
}

/// One flag problem, before it is given a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// The flag as written (`--mout=type=cache`).
    pub flag: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Parsed flag values of one instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    values: BTreeMap<String, Vec<String>>,
    raw: BTreeMap<String, String>,
}

impl Flags {
    /// Checks `flags` (as the parser split them: `--name=value`) against `allowed`.
    pub fn parse(
        instruction: &str,
        flags: &[String],
        allowed: &[(&str, FlagKind)],
    ) -> Result<Flags, FlagError> {
        let mut out = Flags::default();
        for f in flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                let hint = match crate::suggest::closest(name, names.iter().copied(), true) {
                    Some(s) => Some(format!("did you mean --{s}?")),
                    None if names.is_empty() => {
                        Some(format!("{} takes no flags", instruction.to_uppercase()))
                    }
                    None => Some(format!(
                        "{} accepts: {}",
                        instruction.to_uppercase(),
                        names
                            .iter()
                            .map(|n| format!("--{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                let suggestion = crate::suggest::closest(name, names.iter().copied(), true)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(FlagError {
                    flag: f.clone(),
                    message: format!("unknown flag: --{name}{suggestion}"),
                    hint,
                });
            };
            let value = match kind {
                FlagKind::Bool => {
                    let v = value.unwrap_or("true");
                    match parse_go_bool(v) {
                        Some(b) => b.to_string(),
                        None => {
                            return Err(FlagError {
                                flag: f.clone(),
                                message: format!(
                                    "expecting boolean value for flag {name}, not: {v}"
                                ),
                                hint: Some(format!(
                                    "write --{name}, --{name}=true or --{name}=false"
                                )),
                            })
                        }
                    }
                }
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => {
                        return Err(FlagError {
                            flag: f.clone(),
                            message: format!("missing a value on flag: --{name}"),
                            hint: Some(format!("write --{name}=<value>")),
                        })
                    }
                },
            };
            let entry = out.values.entry(name.to_string()).or_default();
            if *kind == FlagKind::String && !entry.is_empty() {
                return Err(FlagError {
                    flag: f.clone(),
                    message: format!("duplicate flag specified: --{name}"),
                    hint: Some(format!("give --{name} only once")),
                });
            }
            entry.push(value);
            out.raw.insert(name.to_string(), f.clone());
        }
        Ok(out)
    }

    /// The value of a string flag.
    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// The value of a bool flag (`None` when absent).
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(|v| v == "true")
    }

    /// All values of a repeatable flag.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// The flag text as written (for locating it in the source line).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.raw.get(name).map(String::as_str)
    }
}

/// Go's `strconv.ParseBool` spellings.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &[(&str, FlagKind)] = &[
        ("mount", FlagKind::Strings),
        ("network", FlagKind::String),
        ("link", FlagKind::Bool),
    ];

    fn f(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_kinds() {
        let fl = Flags::parse(
            "run",
            &f(&["--mount=a", "--mount=b", "--network=none", "--link"]),
            RUN,
        )
        .unwrap();
        assert_eq!(fl.strings("mount"), vec!["a", "b"]);
        assert_eq!(fl.string("network").as_deref(), Some("none"));
        assert_eq!(fl.bool("link"), Some(true));
        assert_eq!(fl.bool("absent"), None);
    }

    #[test]
    fn unknown_flag_suggests() {
        let e = Flags::parse("run", &f(&["--mout=type=cache"]), RUN).unwrap_err();
        assert_eq!(e.message, "unknown flag: --mout (did you mean mount?)");
        let e = Flags::parse("env", &f(&["--x=1"]), &[]).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("ENV takes no flags"));
    }

    #[test]
    fn bad_bool_and_duplicate() {
        assert!(Flags::parse("run", &f(&["--link=maybe"]), RUN).is_err());
        assert!(Flags::parse("run", &f(&["--network=a", "--network=b"]), RUN).is_err());
        assert!(Flags::parse("run", &f(&["--network"]), RUN).is_err());
    }
}
