//! COPY and ADD: a file vertex copying from the context, a stage, an image,
//! a URL or a git repository onto the stage's root (or, with `--link`, onto
//! an empty layer merged over it).

use super::config::join_workdir;
use super::{chown_of, Lowerer, StageState};
use crate::error::{ErrorKind, SourceError};
use crate::instructions::Copy;
use crate::stages::{ResolvedInstruction, Stage};
use kiln_solver::llb::{
    ChmodOpt, CopyAction, FileAction, FileOp, MergeOp, MkdirAction, MkfileAction, Op, SourceOp,
    UserSpec, VertexRef,
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

impl Lowerer<'_> {
    pub(super) fn lower_copy(
        &mut self,
        stage: &Stage,
        state: &mut StageState,
        ri: &ResolvedInstruction,
        c: &Copy,
        is_add: bool,
        description: String,
    ) -> Result<(), SourceError> {
        let platform = state.platform.clone();
        let workdir = state.config.config.working_dir.clone();
        let dest = {
            let joined = join_workdir(&workdir, &c.dest);
            let dir_like = c.dest.ends_with('/') || c.dest == "." || c.dest.ends_with("/.");
            if dir_like && joined != "/" {
                format!("{joined}/")
            } else {
                joined
            }
        };
        let owner = c.chown.as_deref().and_then(chown_of);
        let mode = c.chmod.clone();
        // Inputs: the base (unless --link), then each source.
        let mut inputs: Vec<VertexRef> = Vec::new();
        let base = match (c.link, state.vertex) {
            (false, Some(v)) => {
                inputs.push(v);
                Some(0)
            }
            _ => None,
        };
        // A linked copy starts from an empty layer: `--chown` names resolve in
        // the stage below, an extra input read only for /etc/passwd and /etc/group.
        let names_owner = owner.as_ref().is_some_and(|o| {
            matches!(o.user, UserSpec::Name(_)) || matches!(o.group, Some(UserSpec::Name(_)))
        });
        let users = match (c.link && names_owner, state.vertex) {
            (true, Some(below)) => {
                inputs.push(below);
                Some(inputs.len() - 1)
            }
            _ => None,
        };
        let mut actions = Vec::new();
        for src in &c.sources {
            if c.is_heredoc_source(src) {
                let name = src
                    .trim_start_matches("<<")
                    .trim_start_matches('-')
                    .trim_matches(['"', '\'']);
                let Some(h) = c.heredocs.iter().find(|h| h.name == name) else {
                    return Err(self.err(
                        ri.node,
                        ErrorKind::Heredoc,
                        format!("no heredoc named {name}"),
                        None,
                    ));
                };
                let path = if dest.ends_with('/') {
                    format!("{dest}{name}")
                } else {
                    dest.clone()
                };
                let file_mode = match &c.chmod {
                    Some(ChmodOpt::Octal(m)) => *m,
                    // Validated when the instruction was parsed.
                    Some(ChmodOpt::Symbolic(raw)) => {
                        Chmod::parse(raw).map_or(0o644, |m| m.apply(0o644, false))
                    }
                    None => 0o644,
                };
                // Mkfile makes no parents; COPY creates the destination's
                // directories (BuildKit copies from a scratch mkfile with createDestPath).
                if let Some((parent, _)) = path.rsplit_once('/') {
                    if !parent.is_empty() {
                        actions.push(FileAction::Mkdir(MkdirAction {
                            path: parent.to_string(),
                            mode: 0o755,
                            make_parents: true,
                            owner: owner.clone(),
                            timestamp: self.opts.source_date_epoch,
                        }));
                    }
                }
                actions.push(FileAction::Mkfile(MkfileAction {
                    path,
                    mode: file_mode,
                    data: h.chomped_content().into_bytes(),
                    owner: owner.clone(),
                    timestamp: self.opts.source_date_epoch,
                }));
                continue;
            }
            let (input, src_path, attempt_unpack, file_dest) = if is_add
                && (is_url(src) || src.starts_with("git@"))
            {
                if is_git_source(src) {
                    let mut op = SourceOp::git(
                        src.trim_start_matches("https://")
                            .trim_start_matches("http://"),
                    );
                    op.identifier = format!("git://{src}");
                    if c.keep_git_dir == Some(true) {
                        op = op.attr("git.keepgitdir", "true");
                    }
                    let meta =
                        self.metadata(format!("[internal] load git source {src}"), ri.node, stage);
                    let v = self.add(Op::Source(op), &platform, &[], meta, ri.node)?;
                    (v, "/".to_string(), false, dest.clone())
                } else {
                    let file = url_file_name(src);
                    let mut op = SourceOp::http(src).attr("http.filename", &file);
                    if let Some(sum) = &c.checksum {
                        op = op.attr("http.checksum", sum);
                    }
                    let meta =
                        self.metadata(format!("[internal] load remote file {src}"), ri.node, stage);
                    let v = self.add(Op::Source(op), &platform, &[], meta, ri.node)?;
                    let file_dest = if dest.ends_with('/') {
                        format!("{dest}{file}")
                    } else {
                        dest.clone()
                    };
                    (v, format!("/{file}"), false, file_dest)
                }
            } else {
                if c.checksum.is_some() && is_add {
                    return Err(self.err(
                        ri.node,
                        ErrorKind::Flag,
                        "checksum can't be specified for non-HTTP(S) sources",
                        Some("--checksum only applies to ADD of a URL"),
                    ));
                }
                let v = match &c.from {
                    Some(f) => self.source_named(f, &platform, ri.node)?,
                    None => Some(self.local(&self.opts.context.clone(), &platform, ri.node)?),
                };
                let Some(v) = v else {
                    // COPY --from a scratch stage that never changed: nothing to copy from.
                    return Err(self.err(
                        ri.node,
                        ErrorKind::Stage,
                        format!("{src}: not found: the stage copied from is empty"),
                        None,
                    ));
                };
                let unpack = is_add && c.unpack != Some(false) && c.from.is_none();
                (v, src.clone(), unpack, dest.clone())
            };
            let index = match inputs.iter().position(|i| *i == input) {
                Some(i) if Some(i) != base => i,
                _ => {
                    inputs.push(input);
                    inputs.len() - 1
                }
            };
            actions.push(FileAction::Copy(CopyAction {
                src_input: index,
                src: src_path,
                dest: file_dest,
                owner: owner.clone(),
                mode: mode.clone(),
                follow_symlinks: true,
                dir_copy_contents: true,
                attempt_unpack,
                create_dest_path: true,
                allow_wildcard: true,
                // BuildKit lets a wildcard match nothing (dockerfile2llb sets AllowEmptyWildcard).
                allow_empty_wildcard: true,
                timestamp: None,
                include_patterns: Vec::new(),
                exclude_patterns: c.exclude.clone(),
                parents: c.parents,
                always_replace_existing_dest_paths: false,
            }));
        }
        let meta = self.metadata(description.clone(), ri.node, stage);
        let file = self.add(
            Op::File(FileOp {
                base,
                actions,
                users,
            }),
            &platform,
            &inputs,
            meta,
            ri.node,
        )?;
        state.vertex = Some(match (c.link, state.vertex) {
            (true, Some(below)) => {
                let meta = self.metadata(description, ri.node, stage);
                self.add(
                    Op::Merge(MergeOp {}),
                    &platform,
                    &[below, file],
                    meta,
                    ri.node,
                )?
            }
            _ => file,
        });
        Ok(())
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
