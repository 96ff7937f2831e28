//! Typed instructions built from parser [`Node`]s: flags checked and parsed, forms decided.
//!
//! Parsing ([`Instruction::parse`]) needs no variables. Build-time expansion
//! ([`Instruction::expand`]) happens later, per stage, with the ARG/ENV scope of that point
//! (see `stages.rs`); it only touches the fields BuildKit expands.

pub mod copy;
pub mod duration;
pub mod expose;
pub mod flags;
pub mod healthcheck;
pub mod mount;
pub mod run;

use crate::error::{ErrorKind, Location, SourceError};
use crate::parser::{Ast, Node};
use flags::{FlagError, FlagKind, Flags};

pub use copy::Copy;
pub use healthcheck::Healthcheck;
pub use run::Run;

/// The 18 instruction keywords (lower-case).
pub const KEYWORDS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// A command line in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "form", content = "args", rename_all = "lowercase")]
pub enum CommandLine {
    /// `["exe", "arg"]`.
    Exec(Vec<String>),
    /// `exe arg` run through the stage's SHELL.
    Shell(String),
}

impl CommandLine {
    fn from_node(node: &Node) -> CommandLine {
        if node.json {
            CommandLine::Exec(node.args.clone())
        } else {
            CommandLine::Shell(node.args.join(" "))
        }
    }
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct From {
    /// The base: an image reference, `scratch` or an earlier stage's name.
    pub image: String,
    /// The stage name (as written).
    pub name: Option<String>,
    /// The `AS` keyword as written (for FromAsCasing).
    pub as_keyword: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// One `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// ENV or LABEL pairs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValues {
    /// The pairs in order.
    pub pairs: Vec<KeyValue>,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// One `name[=default]` of ARG.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    /// Name.
    pub name: String,
    /// Default value (raw until the stage resolves it).
    pub default: Option<String>,
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Onbuild {
    /// The trigger text as written after ONBUILD.
    pub expression: String,
    /// The wrapped instruction, parsed (and checked) now, run by child images.
    pub inner: Box<Instruction>,
}

/// A typed Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum Instruction {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// SHELL (JSON form only).
    Shell(Vec<String>),
    /// LABEL.
    Label(KeyValues),
    /// ENV.
    Env(KeyValues),
    /// MAINTAINER (deprecated).
    Maintainer(String),
    /// EXPOSE ports (`80`, `53/udp`, `8000-8010/tcp`).
    Expose(Vec<String>),
    /// ADD.
    Add(Copy),
    /// COPY.
    Copy(Copy),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// USER `user[:group]`.
    User(String),
    /// WORKDIR path.
    Workdir(String),
    /// ARG declarations.
    Arg(Vec<ArgDecl>),
    /// ONBUILD trigger.
    Onbuild(Onbuild),
    /// STOPSIGNAL.
    Stopsignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
}

/// The expansion function: a raw word in, the expanded word (or an error message) out.
pub type Expand<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

/// Where an instruction problem is and how to describe it.
pub(crate) struct Ctx<'a> {
    pub ast: &'a Ast,
    pub node: &'a Node,
}

impl Ctx<'_> {
    /// An error at the node's keyword.
    pub fn error(
        &self,
        kind: ErrorKind,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> SourceError {
        let e = self.ast.error_at(self.node, kind, message);
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }

    /// An error pointing at `needle` on the instruction's first line (falls back to the keyword).
    pub fn error_at_text(
        &self,
        needle: &str,
        kind: ErrorKind,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> SourceError {
        let line = self.node.span.start_line;
        let loc = self
            .ast
            .line_text(line)
            .and_then(|t| t.find(needle).map(|b| t[..b].chars().count() + 1))
            .map(|col| Location::new(self.ast.file.clone(), line, col, needle.chars().count()))
            .unwrap_or_else(|| self.node.location(&self.ast.file));
        let e = self.ast.error_at_location(loc, kind, message);
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }

    /// A variable-expansion failure, with a hint how to fix it.
    pub fn expansion_error(&self, message: impl Into<String>) -> SourceError {
        let message = message.into();
        let syntax = [
            "syntax error",
            "unsupported modifier",
            "invalid pattern",
            "unexpected end",
            "nested",
        ]
        .iter()
        .any(|k| message.contains(k));
        let too_large = message.contains("too large") || message.contains("grows past");
        let hint = if too_large {
            "a value that grows from line to line (an ARG or ENV doubling the one before) cannot be expanded; keep expanded values under 1 MiB"
        } else if message.contains("--from") {
            "define a stage with FROM ${ARG} AS name and use --from=name"
        } else if syntax {
            "check the ${...} syntax: ${VAR}, ${VAR:-default}, ${VAR#pattern}, ${VAR/pattern/replacement}; write \\$ for a literal $"
        } else {
            "define the variable with ARG or ENV, or pass it with --build-arg NAME=value"
        };
        self.error(ErrorKind::Expansion, message, Some(hint.to_string()))
    }

    fn flags(&self, allowed: &[(&str, FlagKind)]) -> Result<Flags, SourceError> {
        Flags::parse(&self.node.value, &self.node.flags, allowed)
            .map_err(|e: FlagError| self.error_at_text(&e.flag, ErrorKind::Flag, e.message, e.hint))
    }

    fn one_arg(&self) -> Result<String, SourceError> {
        match self.node.args.first() {
            Some(a) if !a.is_empty() => Ok(a.clone()),
            _ => Err(self.error(
                ErrorKind::Instruction,
                format!(
                    "{} requires exactly one argument",
                    self.node.value.to_uppercase()
                ),
                None,
            )),
        }
    }

    fn at_least_one(&self) -> Result<(), SourceError> {
        if self.node.args.iter().all(|a| a.is_empty()) {
            return Err(self.error(
                ErrorKind::Instruction,
                format!(
                    "{} requires at least one argument",
                    self.node.value.to_uppercase()
                ),
                None,
            ));
        }
        Ok(())
    }
}

/// FROM: `image [AS name]` with `--platform`; the stage name checked.
fn parse_from(cx: &Ctx) -> Result<From, SourceError> {
    let fl = cx.flags(&[("platform", FlagKind::String)])?;
    let a = &cx.node.args;
    let (image, name, as_keyword) = match a.len() {
        1 => (a[0].clone(), None, None),
        3 if a[1].eq_ignore_ascii_case("as") => {
            (a[0].clone(), Some(a[2].clone()), Some(a[1].clone()))
        }
        _ => {
            return Err(cx.error(
                ErrorKind::Instruction,
                "FROM requires either one or three arguments",
                Some("write FROM <image> [AS <name>]".into()),
            ))
        }
    };
    if let Some(n) = &name {
        if !valid_stage_name(n) {
            return Err(cx.error_at_text(
                n,
                ErrorKind::Instruction,
                format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                Some("use letters, digits, '-', '_' and '.', starting with a letter".into()),
            ));
        }
    }
    Ok(From {
        image,
        name,
        as_keyword,
        platform: fl.string("platform"),
    })
}

/// SHELL: a non-empty JSON array.
fn parse_shell(cx: &Ctx) -> Result<Vec<String>, SourceError> {
    if !cx.node.json {
        return Err(cx.error(
            ErrorKind::Instruction,
            "SHELL requires the arguments to be in JSON form",
            Some(r#"write SHELL ["/bin/sh", "-c"]"#.into()),
        ));
    }
    if cx.node.args.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            "SHELL requires at least one argument",
            None,
        ));
    }
    Ok(cx.node.args.clone())
}

/// ENV or LABEL: at least one pair; `legacy` when one is written `KEY value`.
fn parse_key_values(cx: &Ctx) -> Result<KeyValues, SourceError> {
    let node = cx.node;
    let mut pairs = Vec::new();
    let mut legacy = false;
    for (k, v, sep) in node.key_values() {
        legacy |= sep.is_empty();
        pairs.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    if pairs.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!(
                "{} requires at least one argument",
                node.value.to_uppercase()
            ),
            Some(format!("write {} key=value", node.value.to_uppercase())),
        ));
    }
    Ok(KeyValues { pairs, legacy })
}

/// ARG: one or more `name[=default]`, no name blank.
fn parse_arg(cx: &Ctx) -> Result<Vec<ArgDecl>, SourceError> {
    let node = cx.node;
    if node.args.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            "ARG requires at least one argument",
            Some("write ARG NAME or ARG NAME=default".into()),
        ));
    }
    let decls = node
        .args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((n, d)) => ArgDecl {
                name: n.to_string(),
                default: Some(d.to_string()),
            },
            None => ArgDecl {
                name: a.clone(),
                default: None,
            },
        })
        .collect::<Vec<_>>();
    if let Some(bad) = decls.iter().find(|d| d.name.is_empty()) {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!(
                "ARG names can not be blank: {:?}",
                bad.default.as_deref().unwrap_or("")
            ),
            None,
        ));
    }
    Ok(decls)
}

/// ONBUILD: the trigger parsed now (not ONBUILD, FROM or MAINTAINER), and its text.
fn parse_onbuild(cx: &Ctx) -> Result<Onbuild, SourceError> {
    let node = cx.node;
    let Some(sub) = &node.sub else {
        return Err(cx.error(
            ErrorKind::Instruction,
            "ONBUILD requires at least one argument",
            None,
        ));
    };
    if matches!(sub.value.as_str(), "onbuild" | "from" | "maintainer") {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!(
                "{} isn't allowed as an ONBUILD trigger",
                sub.value.to_uppercase()
            ),
            None,
        ));
    }
    let inner = Instruction::parse(cx.ast, sub)?;
    let expression = node
        .original
        .trim_start()
        .get(node.keyword.len()..)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(Onbuild {
        expression,
        inner: Box::new(inner),
    })
}

/// The error for an unknown keyword, suggesting the closest one.
fn unknown_instruction(cx: &Ctx, other: &str) -> SourceError {
    let hint = crate::suggest::closest(other, KEYWORDS, false)
        .map(|s| format!("did you mean {}?", s.to_uppercase()));
    cx.error(
        ErrorKind::Instruction,
        format!("unknown instruction: {}", cx.node.keyword),
        hint.or_else(|| Some("instructions are FROM, RUN, COPY, ADD, ENV, ARG, ...".into())),
    )
}

impl Instruction {
    /// Builds the typed instruction for `node` of `ast` (no variable expansion yet).
    pub fn parse(ast: &Ast, node: &Node) -> Result<Instruction, SourceError> {
        let cx = Ctx { ast, node };
        let no_flags = |cx: &Ctx| cx.flags(&[]).map(|_| ());
        Ok(match node.value.as_str() {
            "from" => Instruction::From(parse_from(&cx)?),
            "run" => Instruction::Run(run::parse(&cx)?),
            "cmd" | "entrypoint" => {
                no_flags(&cx)?;
                let c = CommandLine::from_node(node);
                if node.value == "cmd" {
                    Instruction::Cmd(c)
                } else {
                    Instruction::Entrypoint(c)
                }
            }
            "shell" => {
                no_flags(&cx)?;
                Instruction::Shell(parse_shell(&cx)?)
            }
            "env" | "label" => {
                no_flags(&cx)?;
                let kv = parse_key_values(&cx)?;
                if node.value == "env" {
                    Instruction::Env(kv)
                } else {
                    Instruction::Label(kv)
                }
            }
            "maintainer" => {
                no_flags(&cx)?;
                Instruction::Maintainer(cx.one_arg()?)
            }
            "expose" => {
                no_flags(&cx)?;
                cx.at_least_one()?;
                Instruction::Expose(node.args.clone())
            }
            "add" | "copy" => {
                let c = copy::parse(&cx)?;
                if node.value == "add" {
                    Instruction::Add(c)
                } else {
                    Instruction::Copy(c)
                }
            }
            "volume" => {
                no_flags(&cx)?;
                cx.at_least_one()?;
                Instruction::Volume(
                    node.args
                        .iter()
                        .filter(|a| !a.is_empty())
                        .cloned()
                        .collect(),
                )
            }
            "user" => {
                no_flags(&cx)?;
                Instruction::User(cx.one_arg()?)
            }
            "workdir" => {
                no_flags(&cx)?;
                Instruction::Workdir(cx.one_arg()?)
            }
            "stopsignal" => {
                no_flags(&cx)?;
                Instruction::Stopsignal(cx.one_arg()?)
            }
            "arg" => {
                no_flags(&cx)?;
                Instruction::Arg(parse_arg(&cx)?)
            }
            "onbuild" => {
                no_flags(&cx)?;
                Instruction::Onbuild(parse_onbuild(&cx)?)
            }
            "healthcheck" => Instruction::Healthcheck(healthcheck::parse(&cx)?),
            other => return Err(unknown_instruction(&cx, other)),
        })
    }

    /// Expands the fields BuildKit expands (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME
    /// WORKDIR, RUN mount options except `from`, `--chown`/`--chmod`/`--checksum`, FROM `--platform`).
    /// ARG defaults are expanded by the stage resolver (only when not overridden).
    pub(crate) fn expand(&mut self, cx: &Ctx, ex: &mut Expand) -> Result<(), SourceError> {
        let fail = |m: String| cx.expansion_error(m);
        match self {
            Instruction::From(f) => {
                f.image = ex(&f.image).map_err(fail)?;
                if let Some(p) = &mut f.platform {
                    *p = ex(p).map_err(fail)?;
                }
            }
            Instruction::Env(kv) | Instruction::Label(kv) => {
                for p in &mut kv.pairs {
                    p.key = ex(&p.key).map_err(fail)?;
                    p.value = ex(&p.value).map_err(fail)?;
                }
            }
            Instruction::Expose(v) => {
                // As BuildKit (ProcessWords): one value may expand to several ports.
                let mut ports = Vec::with_capacity(v.len());
                for w in v.iter() {
                    let expanded = ex(w).map_err(fail)?;
                    ports.extend(expanded.split_whitespace().map(str::to_string));
                }
                for p in &ports {
                    expose::exposed_ports(p).map_err(|e| {
                        cx.error(
                            ErrorKind::Instruction,
                            e.to_string(),
                            Some("write a port (0-65535) or range with an optional protocol: EXPOSE 80 53/udp 8000-8010/tcp".into()),
                        )
                    })?;
                }
                *v = ports;
            }
            Instruction::Volume(v) => {
                for w in v.iter_mut() {
                    *w = ex(w).map_err(fail)?;
                }
            }
            Instruction::User(s) | Instruction::Workdir(s) | Instruction::Stopsignal(s) => {
                *s = ex(s).map_err(fail)?;
            }
            Instruction::Add(c) | Instruction::Copy(c) => c.expand(cx, ex)?,
            Instruction::Run(r) => r.expand(cx, ex)?,
            Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Maintainer(_)
            | Instruction::Arg(_)
            | Instruction::Onbuild(_)
            | Instruction::Healthcheck(_) => {}
        }
        Ok(())
    }

    /// Expands the bodies of COPY/ADD heredocs whose delimiter is unquoted,
    /// with `ex` using [`crate::shell::Lexer::heredoc_body`] (BuildKit's
    /// `ExpandRaw`). RUN heredocs are left to the shell, as in BuildKit.
    pub(crate) fn expand_heredocs(&mut self, cx: &Ctx, ex: &mut Expand) -> Result<(), SourceError> {
        if let Instruction::Add(c) | Instruction::Copy(c) = self {
            c.expand_heredocs(cx, ex)?;
        }
        Ok(())
    }

    /// The upper-case keyword.
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Label(_) => "LABEL",
            Instruction::Env(_) => "ENV",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_.]*$` on the lower-cased name.
pub fn valid_stage_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}
