//! Parser directives: `# syntax=`, `# escape=`, `# check=` at the top of a Dockerfile.
//!
//! Directives must precede every other line (comments, blank lines and instructions end the
//! directive block), each may appear once, and an unknown directive ends the block, as in
//! BuildKit. `// syntax=` (the prefix BuildKit accepts when detecting the frontend) is accepted
//! too. A UTF-8 BOM and a leading `#!` shebang line are skipped.

use serde::Serialize;

/// One parsed directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value with surrounding whitespace removed.
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// The directives of one Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=<frontend image>`.
    pub syntax: Option<Directive>,
    /// `# escape=\` or `` # escape=` ``.
    pub escape: Option<Directive>,
    /// `# check=skip=...;error=...`.
    pub check: Option<Directive>,
}

impl Directives {
    /// The escape character the directives select (`\` by default).
    pub fn escape_char(&self) -> char {
        match self.escape.as_ref().map(|d| d.value.as_str()) {
            Some("`") => '`',
            _ => '\\',
        }
    }

    /// The parsed `# check=` directive, if present.
    pub fn check_config(&self) -> Option<Result<CheckConfig, DirectiveError>> {
        self.check.as_ref().map(|d| CheckConfig::parse(&d.value))
    }
}

/// Why a directive was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    /// The same directive appeared twice.
    #[error("only one {0} parser directive can be used")]
    Duplicate(String),
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    /// `# check=` with a malformed clause.
    #[error("invalid check option {0:?}")]
    InvalidCheck(String),
}

/// The settings of `# check=skip=A,B|all;error=true|false;experimental=A|all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// Rules to skip (empty when `skip_all`).
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: check violations fail the build.
    pub error: bool,
    /// Experimental rules to enable.
    pub experimental: Vec<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
}

impl CheckConfig {
    /// Parses the value of a `# check=` directive (or of `BUILDKIT_DOCKERFILE_CHECK`).
    pub fn parse(value: &str) -> Result<CheckConfig, DirectiveError> {
        let mut config = CheckConfig::default();
        if value.trim().is_empty() {
            return Ok(config);
        }
        for part in value.splitn(3, ';') {
            let Some((key, val)) = part.split_once('=') else {
                return Err(DirectiveError::InvalidCheck(part.to_string()));
            };
            let val = val.trim();
            match key.trim() {
                "skip" => {
                    if val == "all" {
                        config.skip_all = true;
                    } else {
                        config.skip = val.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "experimental" => {
                    if val == "all" {
                        config.experimental_all = true;
                    } else {
                        config.experimental =
                            val.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    config.error = parse_go_bool(val)
                        .ok_or_else(|| DirectiveError::InvalidCheck(part.to_string()))?;
                }
                other => return Err(DirectiveError::InvalidCheck(other.to_string())),
            }
        }
        Ok(config)
    }

    /// True when rule `name` is skipped.
    pub fn is_skipped(&self, name: &str) -> bool {
        self.skip_all || self.skip.iter().any(|s| s == name)
    }
}

/// Go's `strconv.ParseBool` spellings.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Reads directives line by line until the first line that is not one.
#[derive(Debug, Default)]
pub struct DirectiveParser {
    done: bool,
    directives: Directives,
}

impl DirectiveParser {
    /// A parser at the top of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a non-directive line has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one line (without line ending, leading whitespace already removed). Returns the
    /// directive when the line is one; `Ok(None)` once the directive block has ended.
    pub fn parse_line(
        &mut self,
        line: &str,
        line_number: usize,
    ) -> Result<Option<Directive>, DirectiveError> {
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        let slot = match name.as_str() {
            "syntax" => &mut self.directives.syntax,
            "escape" => &mut self.directives.escape,
            "check" => &mut self.directives.check,
            _ => {
                self.done = true;
                return Ok(None);
            }
        };
        if slot.is_some() {
            return Err(DirectiveError::Duplicate(name));
        }
        if name == "escape" && value != "\\" && value != "`" {
            return Err(DirectiveError::InvalidEscape(value.to_string()));
        }
        let directive = Directive {
            name,
            value: value.to_string(),
            line: line_number,
        };
        *slot = Some(directive.clone());
        Ok(Some(directive))
    }

    /// Ends the directive block (used when an instruction is seen).
    pub fn finish(&mut self) {
        self.done = true;
    }

    /// The directives collected so far.
    pub fn directives(&self) -> &Directives {
        &self.directives
    }

    /// Consumes the parser, returning the directives.
    pub fn into_directives(self) -> Directives {
        self.directives
    }
}

/// Matches `#\s*name\s*=\s*value\s*` (or with `//`); returns (name, value).
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line
        .strip_prefix('#')
        .or_else(|| line.strip_prefix("//"))?
        .trim_start();
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, after) = rest.split_at(name_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Removes a UTF-8 byte-order mark.
pub fn discard_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Finds the `syntax` directive the way BuildKit selects a frontend: BOM and shebang skipped,
/// `#` and `//` prefixes, or a JSON object `{"syntax": "..."}`.
pub fn detect_syntax(source: &str) -> Option<Directive> {
    let text = discard_bom(source);
    let mut parser = DirectiveParser::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        match parser.parse_line(line.trim_start(), i + 1) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if let Some(d) = parser.into_directives().syntax {
        return Some(d);
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let value = object.get("syntax")?.as_str()?.to_string();
    Some(Directive {
        name: "syntax".into(),
        value,
        line: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_grammar() {
        assert_eq!(match_directive("# escape = `"), Some(("escape", "`")));
        assert_eq!(
            match_directive("#syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("// syntax=x"), Some(("syntax", "x")));
        assert_eq!(match_directive("# no directive here"), None);
        assert_eq!(match_directive("# 1abc=x"), None);
        assert_eq!(match_directive("# key="), None);
    }

    #[test]
    fn duplicate_is_an_error_and_unknown_ends_block() {
        let mut p = DirectiveParser::new();
        assert!(p.parse_line("# syntax=a", 1).unwrap().is_some());
        assert_eq!(
            p.parse_line("# SYNTAX=b", 2),
            Err(DirectiveError::Duplicate("syntax".into()))
        );
        let mut p = DirectiveParser::new();
        assert!(p.parse_line("# foo=bar", 1).unwrap().is_none());
        assert!(p.parse_line("# escape=`", 2).unwrap().is_none());
        assert_eq!(p.directives().escape_char(), '\\');
    }

    #[test]
    fn invalid_escape_rejected() {
        let mut p = DirectiveParser::new();
        assert_eq!(
            p.parse_line("# escape=x", 1),
            Err(DirectiveError::InvalidEscape("x".into()))
        );
    }

    #[test]
    fn check_config() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, vec!["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(c.is_skipped("StageNameCasing"));
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("bogus=1").is_err());
        assert!(CheckConfig::parse("skip").is_err());
    }

    #[test]
    fn detect_syntax_forms() {
        let d =
            detect_syntax("\u{feff}#!/usr/bin/env kiln\n# syntax=docker/dockerfile:1\nFROM x\n")
                .unwrap();
        assert_eq!((d.value.as_str(), d.line), ("docker/dockerfile:1", 2));
        assert_eq!(detect_syntax("// syntax=foo\n").unwrap().value, "foo");
        assert_eq!(detect_syntax("{\"syntax\": \"bar\"}").unwrap().value, "bar");
        assert!(detect_syntax("FROM x\n# syntax=late\n").is_none());
    }
}
