//! The Dockerfile AST: one [`Node`] per instruction, in BuildKit's node shape.
//!
//! BuildKit keeps an instruction as a linked list (`node.Next`) of argument strings; here the
//! list is the `args` vector. ONBUILD's wrapped instruction (BuildKit `node.Next.Children[0]`)
//! is `sub`. Quotes and escapes inside arguments are kept raw: quote removal and `$`
//! expansion happen later, in the shell lexer.

use crate::directives::Directives;
use crate::error::{ErrorKind, Location, SourceError};
use serde::Serialize;

/// A here-document attached to a RUN, COPY or ADD instruction (or to ONBUILD wrapping one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The raw body lines including their newlines; leading tabs are NOT stripped here even when
    /// `chomp` is set (use [`Heredoc::chomped_content`]).
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from body lines (and the terminator may be indented).
    pub chomp: bool,
    /// The fd prefix of `3<<EOF`; 0 when absent.
    pub file_descriptor: u64,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set, else the body as is.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// The lines an instruction covers in its file, and the column its keyword starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// 1-based first line (the line with the keyword).
    pub start_line: usize,
    /// 1-based last line (continuations and heredoc bodies included).
    pub end_line: usize,
    /// 1-based column (characters) of the keyword on `start_line`.
    pub column: usize,
}

/// One instruction (a child of the AST root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The instruction keyword, lower-cased (`run`); BuildKit's `node.Value`.
    #[serde(rename = "instruction")]
    pub value: String,
    /// The keyword as written (`Run`), for the ConsistentInstructionCasing check.
    pub keyword: String,
    /// Leading `--name=value` flags, exactly as BuildKit splits them (quotes removed, `--` dropped).
    pub flags: Vec<String>,
    /// The argument list (BuildKit's `node.Next` chain): JSON-decoded elements for exec form,
    /// one string for shell form, `key value sep` triples for ENV/LABEL.
    pub args: Vec<String>,
    /// True when the arguments were written as a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's wrapped instruction.
    pub sub: Option<Box<Node>>,
    /// Heredocs whose bodies follow this instruction, in order of appearance.
    pub heredocs: Vec<Heredoc>,
    /// The instruction text after joining continuation lines (BuildKit's `node.Original`).
    pub original: String,
    /// Comment lines directly above the instruction (without `#`).
    pub prev_comment: Vec<String>,
    /// Where the instruction is.
    pub span: Span,
}

impl Node {
    /// The instruction keyword, lower-cased.
    pub fn instruction(&self) -> &str {
        &self.value
    }

    /// True when the keyword is `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.value.eq_ignore_ascii_case(name)
    }

    /// The value of flag `--name=value` (`Some("")` for a bare `--name`), the last one if repeated.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find_map(|f| {
            let rest = f.strip_prefix("--")?;
            match rest.split_once('=') {
                Some((n, v)) if n == name => Some(v),
                None if rest == name => Some(""),
                _ => None,
            }
        })
    }

    /// The name of every flag (`mount` for `--mount=type=cache`), in order.
    pub fn flag_names(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| {
            let rest = f.strip_prefix("--").unwrap_or(f);
            rest.split_once('=').map_or(rest, |(n, _)| n)
        })
    }

    /// ENV/LABEL triples as `(key, raw value, separator)`: separator is `=` or `""` (legacy form).
    pub fn key_values(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.args
            .chunks(3)
            .filter(|c| c.len() == 3)
            .map(|c| (c[0].as_str(), c[1].as_str(), c[2].as_str()))
    }

    /// The location of the keyword, for diagnostics.
    pub fn location(&self, file: &str) -> Location {
        Location::new(
            file,
            self.span.start_line,
            self.span.column,
            self.keyword.chars().count(),
        )
        .with_end_line(self.span.end_line)
    }

    /// BuildKit's `Node.Dump()` of this instruction (without the surrounding parentheses).
    pub fn dump(&self) -> String {
        super::dump::dump_node(self)
    }
}

/// A warning the parser records without failing (BuildKit's parser warnings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Short description (`Empty continuation line found in: RUN ...`).
    pub short: String,
    /// Longer explanation.
    pub detail: String,
    /// Documentation URL.
    pub url: String,
    /// The build check this warning belongs to (`NoEmptyContinuation`).
    pub rule: String,
    /// 1-based line the warning refers to.
    pub line: usize,
}

/// The parsed Dockerfile: the root of the AST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ast {
    /// The file name used in diagnostics.
    pub file: String,
    /// The parser directives found at the top.
    pub directives: Directives,
    /// The instructions in order.
    pub children: Vec<Node>,
    /// 1-based line of the first instruction.
    pub start_line: usize,
    /// 1-based last line of the last instruction.
    pub end_line: usize,
    /// Warnings such as empty continuation lines.
    pub warnings: Vec<Warning>,
    /// The active escape character (`\` or `` ` ``).
    pub escape: char,
    #[serde(skip)]
    pub(crate) source: String,
    #[serde(skip)]
    pub(crate) line_starts: Vec<usize>,
}

impl Ast {
    /// BuildKit's `AST.Dump()`: one `(instruction ...)` per line, no trailing newline.
    pub fn dump(&self) -> String {
        super::dump::dump_ast(self)
    }

    /// The text of 1-based source line `line` without its line ending.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.source.len());
        let text = self.source.get(start..end)?;
        Some(text.trim_end_matches(['\r', '\n']))
    }

    /// An error of `kind` pointing at `node`'s keyword, with the source line attached.
    pub fn error_at(
        &self,
        node: &Node,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> SourceError {
        self.error_at_location(node.location(&self.file), kind, message)
    }

    /// An error of `kind` at `location` (in this file), with the source line attached.
    pub fn error_at_location(
        &self,
        location: Location,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> SourceError {
        let line = location.line;
        let err = SourceError::new(kind, message, location);
        match self.line_text(line) {
            Some(text) => err.with_source_line(text),
            None => err,
        }
    }

    /// The location of the first occurrence of `needle` (a flag, an argument) within the lines
    /// of `node`, so a diagnostic can put its caret under it; the keyword's location when the
    /// text is not found verbatim (e.g. it was split across a continuation).
    pub fn locate(&self, node: &Node, needle: &str) -> Location {
        if !needle.is_empty() {
            for line in node.span.start_line..=node.span.end_line {
                let Some(text) = self.line_text(line) else {
                    break;
                };
                // Skip the keyword itself on the first line so `RUN run` finds the argument.
                let skip = if line == node.span.start_line {
                    text.char_indices()
                        .nth(node.span.column.saturating_sub(1) + node.keyword.chars().count())
                        .map_or(text.len(), |(i, _)| i)
                } else {
                    0
                };
                if let Some(i) = text.get(skip..).and_then(|t| t.find(needle)) {
                    let column = text[..skip + i].chars().count() + 1;
                    return Location::new(&self.file, line, column, needle.chars().count());
                }
            }
        }
        node.location(&self.file)
    }

    /// An error of `kind` with the caret under `needle` inside `node` (see [`Ast::locate`]).
    pub fn error_at_text(
        &self,
        node: &Node,
        needle: &str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> SourceError {
        self.error_at_location(self.locate(node, needle), kind, message)
    }

    /// The full source text the AST was parsed from (BOM removed, invalid UTF-8 replaced).
    pub fn source(&self) -> &str {
        &self.source
    }
}
