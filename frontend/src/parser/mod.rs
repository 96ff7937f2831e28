//! The Dockerfile parser: bytes → [`Ast`] of BuildKit-shaped instruction [`Node`]s.
//!
//! `scanner` splits physical lines and joins continuations, `command` splits keyword and
//! flags, `arguments` parses each instruction's argument form, `heredoc` finds heredocs and
//! `dump` prints BuildKit's conformance format.

mod arguments;
mod command;
pub mod dump;
pub mod heredoc;
mod json_form;
pub mod node;
mod scanner;

pub use node::{Ast, Heredoc, Node, Span, Warning};

use crate::directives::{DirectiveError, DirectiveParser};
use crate::error::{ErrorKind, Location, SourceError};
use arguments::{form_of, parse_arguments, ArgumentError, Form};
use scanner::Lines;

/// Parses Dockerfile `source`, naming it `file` in diagnostics.
pub fn parse_named(file: &str, source: &[u8]) -> Result<Ast, SourceError> {
    let text = String::from_utf8_lossy(source);
    Parser::new(file, &text).run()
}

/// Parses Dockerfile `source` (diagnostics name it `Dockerfile`).
pub fn parse(source: &str) -> Result<Ast, SourceError> {
    Parser::new("Dockerfile", source).run()
}

struct Parser<'a> {
    file: &'a str,
    source: &'a str,
    lines: Lines<'a>,
    directives: DirectiveParser,
    escape: char,
}

impl<'a> Parser<'a> {
    fn new(file: &'a str, source: &'a str) -> Self {
        let source = crate::directives::discard_bom(source);
        Parser {
            file,
            source,
            lines: Lines::new(source),
            directives: DirectiveParser::new(),
            escape: '\\',
        }
    }

    fn error(&self, kind: ErrorKind, message: String, location: Location) -> SourceError {
        let line = location.line;
        let mut err = SourceError::new(kind, message, location);
        if let Some(text) = self.lines.line_text(line) {
            err = err.with_source_line(text);
        }
        err
    }

    fn run(mut self) -> Result<Ast, SourceError> {
        let mut children: Vec<Node> = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = self.lines.next_line() {
            let line_no = self.lines.current();
            let trimmed = scanner::trim_newline(raw).trim_start();
            if line_no == 1 && trimmed.starts_with("#!") {
                // A shebang line does not end the directive block.
                continue;
            }
            let is_comment = trimmed.starts_with('#');
            if is_comment {
                let comment = trimmed[1..].trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            match self.directives.parse_line(trimmed, line_no) {
                Ok(Some(_)) => {
                    self.escape = self.directives.directives().escape_char();
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(self.directive_error(e, line_no, trimmed)),
            }
            let first = if is_comment { "" } else { trimmed };
            let column = scanner::leading_columns(scanner::trim_newline(raw)) + 1;
            let Some((buf, span)) = self.logical_line(first, line_no, column, &mut warnings)?
            else {
                continue;
            };
            let mut node = self
                .node_from_line(&buf, span)
                .map_err(|e| self.argument_error(e, span.start_line, span.end_line, column))?;
            if can_contain_heredoc(&node) && buf.contains("<<") {
                self.read_heredocs(&mut node, &buf)?;
            }
            node.prev_comment = std::mem::take(&mut comments);
            children.push(node);
        }
        self.finish(children, warnings)
    }

    /// One instruction's text: `first` (its first physical line) joined with the lines its
    /// continuations take, comment lines and empty lines skipped (the latter warned about).
    /// `None` for a lone continuation with nothing before it.
    fn logical_line(
        &mut self,
        first: &str,
        start_line: usize,
        column: usize,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<(String, Span)>, SourceError> {
        let (first_part, mut end_of_line) = scanner::trim_continuation(first, self.escape);
        if end_of_line && first_part.is_empty() {
            return Ok(None);
        }
        let mut buf = first_part.to_string();
        let mut empty_continuation = false;
        while !end_of_line {
            let Some(next) = self.lines.next_line() else {
                break;
            };
            let next = scanner::trim_newline(next);
            let content = next.trim_start();
            if content.starts_with('#') {
                continue;
            }
            if content.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = scanner::trim_continuation(next, self.escape);
            buf.push_str(part);
            end_of_line = eol;
        }
        let end_line = self.lines.current();
        if empty_continuation {
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {first_part}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
                rule: "NoEmptyContinuation".into(),
                line: end_line,
            });
        }
        if buf.trim().is_empty() {
            return Err(self.lone_continuation(start_line, end_line, column));
        }
        let span = Span {
            start_line,
            end_line,
            column,
        };
        Ok(Some((buf, span)))
    }

    /// A continuation whose lines hold no instruction. BuildKit records an instruction with
    /// an empty keyword here and fails later with "unknown instruction"; failing now points
    /// at the cause.
    fn lone_continuation(&self, start_line: usize, end_line: usize, column: usize) -> SourceError {
        let text = self.lines.line_text(start_line).unwrap_or("");
        let location = Location::new(self.file, start_line, column, text.trim().chars().count())
            .with_end_line(end_line);
        self.error(
            ErrorKind::Syntax,
            "line continuation without an instruction".into(),
            location,
        )
        .with_hint(format!(
            "remove the trailing `{}` or put an instruction before it",
            self.escape
        ))
    }

    /// Reads the bodies of the heredocs `line` opens, from the lines after it, into `node`.
    fn read_heredocs(&mut self, node: &mut Node, line: &str) -> Result<(), SourceError> {
        let start_line = node.span.start_line;
        for mut doc in heredoc::heredocs_from_line(line) {
            let mut terminated = false;
            while let Some(body) = self.lines.next_line() {
                let mut candidate = scanner::trim_newline(body);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    terminated = true;
                    break;
                }
                doc.content.push_str(body);
            }
            if !terminated {
                return Err(self.unterminated_heredoc(&doc, start_line));
            }
            node.heredocs.push(doc);
        }
        node.span.end_line = self.lines.current();
        Ok(())
    }

    /// The error for a heredoc the file ends inside.
    fn unterminated_heredoc(&self, doc: &Heredoc, start_line: usize) -> SourceError {
        let first_text = self.lines.line_text(start_line).unwrap_or("");
        let (col, len) = heredoc_column(first_text, &doc.name);
        let location =
            Location::new(self.file, start_line, col, len).with_end_line(self.lines.current());
        self.error(
            ErrorKind::Heredoc,
            format!("unterminated heredoc {:?}", doc.name),
            location,
        )
        .with_hint(format!(
            "end the heredoc with a line containing only `{}`{}",
            doc.name,
            if doc.chomp {
                " (leading tabs allowed)"
            } else {
                ""
            }
        ))
    }

    /// The tree of `children`; an error when there are none.
    fn finish(self, children: Vec<Node>, warnings: Vec<Warning>) -> Result<Ast, SourceError> {
        let (Some(first), Some(last)) = (children.first(), children.last()) else {
            let line = self.lines.current().max(1);
            return Err(self
                .error(
                    ErrorKind::Empty,
                    "file with no instructions".into(),
                    Location::new(self.file, line, 1, 0),
                )
                .with_hint("a Dockerfile needs at least one instruction, usually `FROM <image>`"));
        };
        let (start_line, end_line) = (first.span.start_line, last.span.end_line);
        let line_starts = self.lines.line_starts().to_vec();
        Ok(Ast {
            file: self.file.to_string(),
            directives: self.directives.into_directives(),
            children,
            start_line,
            end_line,
            warnings,
            escape: self.escape,
            source: self.source.to_string(),
            line_starts,
        })
    }

    fn node_from_line(&self, line: &str, span: Span) -> Result<Node, ArgumentError> {
        let split = command::split_command(line);
        let value = split.keyword.to_lowercase();
        let form = form_of(&value);
        let mut node = Node {
            keyword: split.keyword.to_string(),
            flags: split.flags,
            args: Vec::new(),
            json: false,
            sub: None,
            heredocs: Vec::new(),
            original: line.to_string(),
            prev_comment: Vec::new(),
            span,
            value,
        };
        if form == Form::SubCommand {
            if !split.rest.is_empty() {
                node.sub = Some(Box::new(self.node_from_line(split.rest, span)?));
            }
        } else {
            let parsed = parse_arguments(form, split.rest, self.escape)?;
            node.args = parsed.args;
            node.json = parsed.json;
        }
        Ok(node)
    }

    fn directive_error(&self, e: DirectiveError, line: usize, text: &str) -> SourceError {
        let hint = match &e {
            DirectiveError::Duplicate(name) => {
                format!("remove this line: the `{name}` directive is already set above")
            }
            DirectiveError::InvalidEscape(_) => "use `# escape=\\` or `# escape=``".to_string(),
            DirectiveError::InvalidCheck(_) => {
                "use `# check=skip=Rule1,Rule2;error=true` (or skip=all)".to_string()
            }
        };
        let len = text.chars().count();
        self.error(
            ErrorKind::Directive,
            e.to_string(),
            Location::new(self.file, line, 1, len),
        )
        .with_hint(hint)
    }

    fn argument_error(
        &self,
        e: ArgumentError,
        start_line: usize,
        end_line: usize,
        column: usize,
    ) -> SourceError {
        let text = self.lines.line_text(start_line).unwrap_or("");
        let keyword_len = text
            .split_whitespace()
            .next()
            .map_or(0, |k| k.chars().count());
        let mut line = start_line;
        let (kind, message, hint, col, len) = match e {
            ArgumentError::MissingValue(key) => (
                ErrorKind::Syntax,
                format!("{key} must have two arguments"),
                format!("write `{key} NAME=value` (an empty value is written `{key} NAME=\"\"`)"),
                column,
                keyword_len,
            ),
            ArgumentError::NoEquals(word) => {
                let found = (start_line..=end_line).find_map(|n| {
                    let found = find_column(self.lines.line_text(n)?, &word)?;
                    Some((n, found))
                });
                let (col, len) = match found {
                    Some((n, found)) => {
                        line = n;
                        found
                    }
                    None => (column, keyword_len),
                };
                (
                    ErrorKind::Syntax,
                    format!(
                        "Syntax error - can't find = in {}. Must be of the form: name=value",
                        dump::go_quote(&word)
                    ),
                    format!("write `{word}=value`, or quote the value if it contains spaces"),
                    col,
                    len,
                )
            }
            ArgumentError::NotStringArray => {
                let (col, len) = match text.find('[') {
                    Some(i) => (
                        text[..i].chars().count() + 1,
                        text[i..].trim_end().chars().count(),
                    ),
                    None => (column, keyword_len),
                };
                (
                    ErrorKind::Json,
                    "when using JSON array syntax, arrays must be comprised of strings only".into(),
                    "quote every element, e.g. `[\"echo\", \"hi\"]`, or use the shell form without brackets".into(),
                    col,
                    len,
                )
            }
        };
        self.error(
            kind,
            message,
            Location::new(self.file, line, col, len).with_end_line(end_line),
        )
        .with_hint(hint)
    }
}

/// RUN, COPY and ADD (also wrapped in ONBUILD) in shell form may carry heredocs.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.sub, node.value.as_str()) {
        (Some(sub), "onbuild") => sub,
        _ => node,
    };
    matches!(node.value.as_str(), "run" | "copy" | "add") && !node.json
}

/// 1-based column and length (characters) of `needle` in `text`.
fn find_column(text: &str, needle: &str) -> Option<(usize, usize)> {
    let i = text.find(needle)?;
    Some((text[..i].chars().count() + 1, needle.chars().count().max(1)))
}

/// Where the `<<` of heredoc `name` starts on `text`, and the length up to the end of the name.
fn heredoc_column(text: &str, name: &str) -> (usize, usize) {
    let mut search = 0;
    while let Some(off) = text.get(search..).and_then(|t| t.find("<<")) {
        let at = search + off;
        if let Some(name_at) = text[at..].find(name) {
            let len = text[at..at + name_at + name.len()].chars().count();
            return (text[..at].chars().count() + 1, len);
        }
        search = at + 2;
    }
    (1, text.chars().count().max(1))
}
