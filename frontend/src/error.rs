//! Diagnostics with source locations, shared by the parser, the instruction layer and the checks.
//!
//! A [`SourceError`] names the file, line and column of the problem, carries the offending source
//! line (so a caret can be drawn under it) and a hint how to fix it. The CLI renders it with miette.

use serde::Serialize;
use std::fmt;

/// A place in a Dockerfile: 1-based line and column (in characters) plus the length of the span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file name as given to the parser (`Dockerfile`, `-` for stdin).
    pub file: String,
    /// 1-based line of the start of the span.
    pub line: usize,
    /// 1-based column (characters, not bytes) of the start of the span.
    pub column: usize,
    /// Length of the span in characters on `line` (0 = a point).
    pub len: usize,
    /// 1-based last line the problem covers (equal to `line` for one-line problems).
    pub end_line: usize,
}

impl Location {
    /// A location covering `len` characters from `line:column` on one line.
    pub fn new(file: impl Into<String>, line: usize, column: usize, len: usize) -> Self {
        Location {
            file: file.into(),
            line,
            column,
            len,
            end_line: line,
        }
    }

    /// The same location extended to end on `end_line`.
    pub fn with_end_line(mut self, end_line: usize) -> Self {
        self.end_line = end_line.max(self.line);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What kind of problem a [`SourceError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parser directive (`# syntax=`, `# escape=`, `# check=`) is invalid or repeated.
    Directive,
    /// The Dockerfile has no instruction at all.
    Empty,
    /// An instruction's arguments cannot be split (ENV/LABEL without value, bad `=`).
    Syntax,
    /// A JSON (exec form) argument list is not an array of strings.
    Json,
    /// A heredoc is unterminated or malformed.
    Heredoc,
    /// An instruction is unknown or used wrongly (instruction layer).
    Instruction,
    /// A flag is unknown or has a bad value (instruction layer).
    Flag,
    /// Variable expansion failed (shell lexer).
    Expansion,
    /// A build check reported an error (lint with `error=true`).
    Check,
    /// The build stages are inconsistent (unknown target, cycles, bad references).
    Stage,
}

/// The details of a [`SourceError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// What went wrong, in one sentence.
    pub message: String,
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// Where it went wrong.
    pub location: Location,
    /// The text of the source line at `location.line` (without the newline), when known.
    pub source_line: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

/// An error pointing at a place in a Dockerfile. Derefs to its [`Diagnostic`] (boxed to keep
/// `Result`s small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {}", .0.location, .0.message)]
#[serde(transparent)]
pub struct SourceError(Box<Diagnostic>);

impl std::ops::Deref for SourceError {
    type Target = Diagnostic;
    fn deref(&self) -> &Diagnostic {
        &self.0
    }
}

impl std::ops::DerefMut for SourceError {
    fn deref_mut(&mut self) -> &mut Diagnostic {
        &mut self.0
    }
}

impl SourceError {
    /// A new error of `kind` at `location`.
    pub fn new(kind: ErrorKind, message: impl Into<String>, location: Location) -> Self {
        SourceError(Box::new(Diagnostic {
            message: message.into(),
            kind,
            location,
            source_line: None,
            hint: None,
        }))
    }

    /// Adds a hint how to fix the problem.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches the text of the offending source line.
    pub fn with_source_line(mut self, line: impl Into<String>) -> Self {
        self.source_line = Some(line.into());
        self
    }

    /// Renders the error as plain text: message, location, the source line with a caret, the hint.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}\n  --> {}\n", self.message, self.location);
        if let Some(line) = &self.source_line {
            let number = self.location.line.to_string();
            let pad = " ".repeat(number.len());
            out.push_str(&format!("{pad} |\n{number} | {line}\n"));
            let caret_col = self.location.column.max(1) - 1;
            let indent: String = line
                .chars()
                .take(caret_col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(self.location.len.max(1));
            out.push_str(&format!("{pad} | {indent}{carets}\n"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_column() {
        let e = SourceError::new(
            ErrorKind::Syntax,
            "bad",
            Location::new("Dockerfile", 3, 5, 2),
        );
        assert_eq!(e.to_string(), "Dockerfile:3:5: bad");
    }

    #[test]
    fn render_draws_caret_under_span() {
        let e = SourceError::new(
            ErrorKind::Heredoc,
            "unterminated heredoc",
            Location::new("D", 2, 5, 5),
        )
        .with_source_line("RUN <<EOF")
        .with_hint("end it");
        let r = e.render();
        assert!(r.contains("2 | RUN <<EOF\n"), "{r}");
        assert!(r.contains("  |     ^^^^^\n"), "{r}");
        assert!(r.contains("hint: end it"), "{r}");
    }
}
