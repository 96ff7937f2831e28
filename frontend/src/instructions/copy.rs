//! COPY and ADD with their flags.

use super::flags::FlagKind;
use super::{Ctx, Expand};
use crate::error::{ErrorKind, SourceError};
use crate::parser::Heredoc;
use kiln_solver::llb::ChmodOpt;
use kiln_solver::ops::file::parse_chmod;

/// A typed COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    /// Sources (paths, URLs, git refs, or `<<EOF` heredoc markers).
    pub sources: Vec<String>,
    /// Destination.
    pub dest: String,
    /// `--from` (COPY only; never expanded).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod` as written (expanded).
    pub chmod_raw: Option<String>,
    /// `--chmod` parsed (after expansion when it uses variables).
    pub chmod: Option<ChmodOpt>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: Option<bool>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--unpack` (ADD only).
    pub unpack: Option<bool>,
    /// Heredocs used as inline sources.
    pub heredocs: Vec<Heredoc>,
}

const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", FlagKind::String),
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
];

const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
    ("keep-git-dir", FlagKind::Bool),
    ("checksum", FlagKind::String),
    ("unpack", FlagKind::Bool),
];

pub(crate) fn parse(cx: &Ctx) -> Result<Copy, SourceError> {
    let is_add = cx.node.value == "add";
    let fl = cx.flags(if is_add { ADD_FLAGS } else { COPY_FLAGS })?;
    let upper = cx.node.value.to_uppercase();
    let args: Vec<&String> = cx.node.args.iter().filter(|a| !a.is_empty()).collect();
    let Some((dest, sources)) = args.split_last() else {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!("{upper} requires at least two arguments"),
            Some(format!("write {upper} <src>... <dest>")),
        ));
    };
    if sources.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!("{upper} requires at least two arguments, but only one was provided. Destination could not be determined"),
            Some(format!("write {upper} <src>... <dest>")),
        ));
    }
    if dest.starts_with("<<") && !cx.node.heredocs.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            format!("{upper} cannot accept a heredoc as a destination"),
            None,
        ));
    }
    let chmod_raw = fl.string("chmod");
    let chmod = match &chmod_raw {
        Some(c) if !c.contains('$') => Some(parse_chmod(c).map_err(|m| {
            cx.error_at_text(
                fl.raw("chmod").unwrap_or("--chmod"),
                ErrorKind::Flag,
                m.to_string(),
                Some("use an octal mode (0755) or symbolic clauses (u=rwX,go=rX)".into()),
            )
        })?),
        _ => None,
    };
    Ok(Copy {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        from: fl.string("from"),
        chown: fl.string("chown"),
        chmod_raw,
        chmod,
        link: fl.bool("link").unwrap_or(false),
        parents: fl.bool("parents").unwrap_or(false),
        exclude: fl.strings("exclude"),
        keep_git_dir: fl.bool("keep-git-dir"),
        checksum: fl.string("checksum"),
        unpack: fl.bool("unpack"),
        heredocs: cx.node.heredocs.clone(),
    })
}

impl Copy {
    /// True when `src` names one of the instruction's heredocs.
    pub fn is_heredoc_source(&self, src: &str) -> bool {
        src.starts_with("<<") && !self.heredocs.is_empty()
    }

    /// Expands the bodies of heredocs with an unquoted delimiter (`<<EOF`,
    /// not `<<"EOF"`); `<<-` tabs are stripped first, as BuildKit does.
    pub(crate) fn expand_heredocs(&mut self, cx: &Ctx, ex: &mut Expand) -> Result<(), SourceError> {
        for h in self.heredocs.iter_mut().filter(|h| h.expand) {
            h.content = ex(&h.chomped_content()).map_err(|m| cx.expansion_error(m))?;
            h.chomp = false;
        }
        Ok(())
    }

    pub(crate) fn expand(&mut self, cx: &Ctx, ex: &mut Expand) -> Result<(), SourceError> {
        let fail = |m: String| cx.expansion_error(m);
        if let Some(from) = &self.from {
            if from.contains('$') {
                return Err(cx.error_at_text(
                    from,
                    ErrorKind::Expansion,
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    Some("add `ARG X` before the first FROM, `FROM ${X} AS src`, then `COPY --from=src ...`".into()),
                ));
            }
        }
        for s in self.sources.iter_mut() {
            if s.starts_with("<<") && !self.heredocs.is_empty() {
                continue;
            }
            *s = ex(s).map_err(fail)?;
        }
        self.dest = ex(&self.dest).map_err(fail)?;
        if let Some(c) = &mut self.chown {
            *c = ex(c).map_err(fail)?;
        }
        for e in self.exclude.iter_mut() {
            *e = ex(e).map_err(fail)?;
        }
        if let Some(raw) = &mut self.chmod_raw {
            *raw = ex(raw).map_err(fail)?;
            self.chmod = Some(parse_chmod(raw).map_err(|m| {
                cx.error(
                    ErrorKind::Flag,
                    m.to_string(),
                    Some("use an octal mode (0755) or symbolic clauses (u=rwX,go=rX)".into()),
                )
            })?);
        }
        if let Some(c) = &mut self.checksum {
            *c = ex(c).map_err(fail)?;
            if !valid_checksum(c) {
                return Err(cx.error(
                    ErrorKind::Flag,
                    format!("invalid checksum digest format {c:?}"),
                    Some(
                        "use sha256:<64 hex digits> for URLs, or a commit SHA (or prefix) for git"
                            .into(),
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `algo:hex` with the right length, or a hex git commit (prefix).
fn valid_checksum(c: &str) -> bool {
    let hex = |s: &str, n: Option<usize>| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()) && n.is_none_or(|n| s.len() == n)
    };
    match c.split_once(':') {
        Some(("sha256", h)) => hex(h, Some(64)),
        Some(("sha384", h)) => hex(h, Some(96)),
        Some(("sha512", h)) => hex(h, Some(128)),
        Some(_) => false,
        None => hex(c, None) && c.len() <= 64,
    }
}
