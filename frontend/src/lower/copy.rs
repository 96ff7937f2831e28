//! COPY and ADD: a file vertex copying from the context, a stage, an image,
//! a URL or a git repository onto the stage's root (or, with `--link`, onto
//! an empty layer merged over it).

use super::config::join_workdir;
use super::{chown_of, Lowerer, StageState};
use crate::error::{ErrorKind, SourceError};
use crate::instructions::Copy;
use crate::stages::{ResolvedInstruction, Stage};
use kiln_oci::Platform;
use kiln_solver::llb::{
    ChmodOpt, ChownOpt, CopyAction, FileAction, FileOp, MergeOp, MkdirAction, MkfileAction, Op,
    SourceOp, UserSpec, VertexRef,
};
use kiln_solver::ops::file::Chmod;

/// True for what ADD treats as a git repository.
fn is_git_source(src: &str) -> bool {
    let path = src.split('#').next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || path.trim_end_matches('/').ends_with(".git")
}

fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// The file name an HTTP source is saved under: the URL path's last segment.
fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = no_query
        .split_once("://")
        .map_or(no_query, |(_, rest)| rest);
    let path = after_scheme.split_once('/').map_or("", |(_, p)| p);
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if name.is_empty() || name.contains(':') {
        "index.html".to_string()
    } else {
        name.to_string()
    }
}

/// What the phases of lowering one COPY or ADD share.
struct CopyCtx<'a> {
    stage: &'a Stage,
    ri: &'a ResolvedInstruction,
    c: &'a Copy,
    is_add: bool,
    platform: Platform,
    /// The destination, absolute; it ends in `/` when it names a directory.
    dest: String,
    owner: Option<ChownOpt>,
}

/// The file op being built: its inputs (the base, then sources) and actions.
struct FileOpParts {
    inputs: Vec<VertexRef>,
    /// The input the copy writes onto (none with `--link`).
    base: Option<usize>,
    /// The input `--chown` names resolve in (a linked copy's stage below).
    users: Option<usize>,
    actions: Vec<FileAction>,
}

/// Where one non-heredoc source is copied from and to.
struct SourceInput {
    input: VertexRef,
    src_path: String,
    attempt_unpack: bool,
    file_dest: String,
}

/// The destination of `c` in `workdir`, absolute; with a trailing `/` when it names a
/// directory (but not for `/` itself).
fn copy_dest(workdir: &str, c: &Copy) -> String {
    let joined = join_workdir(workdir, &c.dest);
    let dir_like = c.dest.ends_with('/') || c.dest == "." || c.dest.ends_with("/.");
    if dir_like && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

/// The mode of a file written from a heredoc: `--chmod` applied to 0644.
fn heredoc_mode(chmod: &Option<ChmodOpt>) -> u32 {
    match chmod {
        Some(ChmodOpt::Octal(m)) => *m,
        // Validated when the instruction was parsed.
        Some(ChmodOpt::Symbolic(raw)) => Chmod::parse(raw).map_or(0o644, |m| m.apply(0o644, false)),
        None => 0o644,
    }
}

impl FileOpParts {
    /// The op's first inputs: the base (unless `--link`), then for a linked copy whose
    /// `--chown` names a user or group, the stage below.
    fn new(cx: &CopyCtx, below: Option<VertexRef>) -> Self {
        let mut inputs: Vec<VertexRef> = Vec::new();
        let base = match (cx.c.link, below) {
            (false, Some(v)) => {
                inputs.push(v);
                Some(0)
            }
            _ => None,
        };
        // A linked copy starts from an empty layer: `--chown` names resolve in
        // the stage below, an extra input read only for /etc/passwd and /etc/group.
        let names_owner = cx.owner.as_ref().is_some_and(|o| {
            matches!(o.user, UserSpec::Name(_)) || matches!(o.group, Some(UserSpec::Name(_)))
        });
        let users = match (cx.c.link && names_owner, below) {
            (true, Some(below)) => {
                inputs.push(below);
                Some(inputs.len() - 1)
            }
            _ => None,
        };
        FileOpParts {
            inputs,
            base,
            users,
            actions: Vec::new(),
        }
    }

    /// The index of `input`, added unless already there (the base is never reused as a
    /// source input).
    fn input_index(&mut self, input: VertexRef) -> usize {
        match self.inputs.iter().position(|i| *i == input) {
            Some(i) if Some(i) != self.base => i,
            _ => {
                self.inputs.push(input);
                self.inputs.len() - 1
            }
        }
    }

    /// Adds the copy of one source.
    fn push_copy(&mut self, cx: &CopyCtx, src: SourceInput) {
        let src_input = self.input_index(src.input);
        self.actions.push(FileAction::Copy(CopyAction {
            src_input,
            src: src.src_path,
            dest: src.file_dest,
            owner: cx.owner.clone(),
            mode: cx.c.chmod.clone(),
            follow_symlinks: true,
            dir_copy_contents: true,
            attempt_unpack: src.attempt_unpack,
            create_dest_path: true,
            allow_wildcard: true,
            // BuildKit lets a wildcard match nothing (dockerfile2llb sets AllowEmptyWildcard).
            allow_empty_wildcard: true,
            timestamp: None,
            include_patterns: Vec::new(),
            exclude_patterns: cx.c.exclude.clone(),
            parents: cx.c.parents,
            always_replace_existing_dest_paths: false,
        }));
    }
}

impl Lowerer<'_> {
    /// Lowers COPY or ADD: one file op with an action per source onto the stage's root
    /// (with `--link`, onto an empty layer merged over it).
    pub(super) fn lower_copy(
        &mut self,
        stage: &Stage,
        state: &mut StageState,
        ri: &ResolvedInstruction,
        c: &Copy,
        is_add: bool,
        description: String,
    ) -> Result<(), SourceError> {
        let cx = CopyCtx {
            stage,
            ri,
            c,
            is_add,
            platform: state.platform.clone(),
            dest: copy_dest(&state.config.config.working_dir, c),
            owner: c.chown.as_deref().and_then(chown_of),
        };
        let mut parts = FileOpParts::new(&cx, state.vertex);
        for src in &c.sources {
            if c.is_heredoc_source(src) {
                self.heredoc_actions(&cx, src, &mut parts.actions)?;
            } else {
                let input = self.copy_source(&cx, src)?;
                parts.push_copy(&cx, input);
            }
        }
        state.vertex = Some(self.add_copy_vertex(&cx, parts, state.vertex, description)?);
        Ok(())
    }

    /// A heredoc source: a file written at the destination (and its parent directories).
    fn heredoc_actions(
        &self,
        cx: &CopyCtx,
        src: &str,
        actions: &mut Vec<FileAction>,
    ) -> Result<(), SourceError> {
        let name = src
            .trim_start_matches("<<")
            .trim_start_matches('-')
            .trim_matches(['"', '\'']);
        let Some(h) = cx.c.heredocs.iter().find(|h| h.name == name) else {
            return Err(self.err(
                cx.ri.node,
                ErrorKind::Heredoc,
                format!("no heredoc named {name}"),
                None,
            ));
        };
        let path = if cx.dest.ends_with('/') {
            format!("{}{name}", cx.dest)
        } else {
            cx.dest.clone()
        };
        // Mkfile makes no parents; COPY creates the destination's
        // directories (BuildKit copies from a scratch mkfile with createDestPath).
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !parent.is_empty() {
                actions.push(FileAction::Mkdir(MkdirAction {
                    path: parent.to_string(),
                    mode: 0o755,
                    make_parents: true,
                    owner: cx.owner.clone(),
                    timestamp: self.opts.source_date_epoch,
                }));
            }
        }
        actions.push(FileAction::Mkfile(MkfileAction {
            path,
            mode: heredoc_mode(&cx.c.chmod),
            data: h.chomped_content().into_bytes(),
            owner: cx.owner.clone(),
            timestamp: self.opts.source_date_epoch,
        }));
        Ok(())
    }

    /// Where a source comes from: ADD's git repository or URL, else the context, a stage,
    /// an image or a named context.
    fn copy_source(&mut self, cx: &CopyCtx, src: &str) -> Result<SourceInput, SourceError> {
        if cx.is_add && (is_url(src) || src.starts_with("git@")) {
            return if is_git_source(src) {
                self.git_source(cx, src)
            } else {
                self.http_source(cx, src)
            };
        }
        let c = cx.c;
        if c.checksum.is_some() && cx.is_add {
            return Err(self.err(
                cx.ri.node,
                ErrorKind::Flag,
                "checksum can't be specified for non-HTTP(S) sources",
                Some("--checksum only applies to ADD of a URL"),
            ));
        }
        let v = match &c.from {
            Some(f) => self.source_named(f, &cx.platform, cx.ri.node)?,
            None => Some(self.local(&self.opts.context.clone(), &cx.platform, cx.ri.node)?),
        };
        let Some(v) = v else {
            // COPY --from a scratch stage that never changed: nothing to copy from.
            return Err(self.err(
                cx.ri.node,
                ErrorKind::Stage,
                format!("{src}: not found: the stage copied from is empty"),
                None,
            ));
        };
        Ok(SourceInput {
            input: v,
            src_path: src.to_string(),
            attempt_unpack: cx.is_add && c.unpack != Some(false) && c.from.is_none(),
            file_dest: cx.dest.clone(),
        })
    }

    /// ADD of a git repository: its whole tree is copied to the destination.
    fn git_source(&mut self, cx: &CopyCtx, src: &str) -> Result<SourceInput, SourceError> {
        let mut op = SourceOp::git(
            src.trim_start_matches("https://")
                .trim_start_matches("http://"),
        );
        op.identifier = format!("git://{src}");
        if cx.c.keep_git_dir == Some(true) {
            op = op.attr("git.keepgitdir", "true");
        }
        let meta = self.metadata(
            format!("[internal] load git source {src}"),
            cx.ri.node,
            cx.stage,
        );
        let v = self.add(Op::Source(op), &cx.platform, &[], meta, cx.ri.node)?;
        Ok(SourceInput {
            input: v,
            src_path: "/".to_string(),
            attempt_unpack: false,
            file_dest: cx.dest.clone(),
        })
    }

    /// ADD of a URL: the file, saved under the URL path's last segment.
    fn http_source(&mut self, cx: &CopyCtx, src: &str) -> Result<SourceInput, SourceError> {
        let file = url_file_name(src);
        let mut op = SourceOp::http(src).attr("http.filename", &file);
        if let Some(sum) = &cx.c.checksum {
            op = op.attr("http.checksum", sum);
        }
        let meta = self.metadata(
            format!("[internal] load remote file {src}"),
            cx.ri.node,
            cx.stage,
        );
        let v = self.add(Op::Source(op), &cx.platform, &[], meta, cx.ri.node)?;
        let file_dest = if cx.dest.ends_with('/') {
            format!("{}{file}", cx.dest)
        } else {
            cx.dest.clone()
        };
        Ok(SourceInput {
            input: v,
            src_path: format!("/{file}"),
            attempt_unpack: false,
            file_dest,
        })
    }

    /// Adds the file op, and with `--link` the merge of its layer over the stage below;
    /// returns the stage's new vertex.
    fn add_copy_vertex(
        &mut self,
        cx: &CopyCtx,
        parts: FileOpParts,
        below: Option<VertexRef>,
        description: String,
    ) -> Result<VertexRef, SourceError> {
        let meta = self.metadata(description.clone(), cx.ri.node, cx.stage);
        let file = self.add(
            Op::File(FileOp {
                base: parts.base,
                actions: parts.actions,
                users: parts.users,
            }),
            &cx.platform,
            &parts.inputs,
            meta,
            cx.ri.node,
        )?;
        Ok(match (cx.c.link, below) {
            (true, Some(below)) => {
                let meta = self.metadata(description, cx.ri.node, cx.stage);
                self.add(
                    Op::Merge(MergeOp {}),
                    &cx.platform,
                    &[below, file],
                    meta,
                    cx.ri.node,
                )?
            }
            _ => file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names_and_git_detection() {
        assert_eq!(
            url_file_name("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_file_name("https://example.com/"), "index.html");
        assert!(is_git_source(
            "https://github.com/moby/buildkit.git#v0.10:docs"
        ));
        assert!(is_git_source("git@github.com:moby/buildkit.git"));
        assert!(!is_git_source("https://example.com/file.tar"));
    }
}
