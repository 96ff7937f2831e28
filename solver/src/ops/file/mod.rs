//! The file op: COPY/ADD (with wildcards, `--chown`, `--chmod`, `--parents`,
//! `--exclude`, archive unpacking), Mkfile, Mkdir, Rm and Symlink applied
//! onto a destination root, with Docker's semantics.
//!
//! The caller prepares the destination (an overlay mount of the lower layers
//! with a fresh upper dir, or an empty directory for `COPY --link`) and the
//! source roots; everything here is blocking filesystem work, so run it on a
//! blocking thread (`tokio::task::spawn_blocking`).

mod chmod;
mod chown;
mod copy;
mod error;
mod include;
mod meta;
mod mkdir;
mod mkfile;
mod resolve;
mod reuse;
mod rm;
mod stream;
mod symlink;
mod unpack;
pub(crate) mod wildcard;

use std::path::Path;

pub use chmod::{parse_chmod, Chmod, ChmodError};
pub use chown::{parse_chown, resolve_owner, Owner};
pub use error::FileOpError;
pub use include::{IncludeMatcher, Inclusion};
pub use resolve::{resolve_in_root, Resolved};
pub use reuse::Reuse;
pub use stream::Stream;
pub use wildcard::{expand as expand_wildcards, has_wildcard};

pub(crate) use meta::{lutimes, Time};

use crate::llb::FileAction;
use crate::pattern::PatternMatcher;

/// A directory copies read from: the build context (with its `.dockerignore`
/// matcher) or another stage's or image's root.
#[derive(Debug, Clone, Copy)]
pub struct SourceRoot<'a> {
    /// The directory.
    pub path: &'a Path,
    /// Paths hidden from the copy (`.dockerignore`), relative to `path`.
    pub ignore: Option<&'a PatternMatcher>,
}

impl<'a> SourceRoot<'a> {
    /// A root without an ignore filter.
    pub fn new(path: &'a Path) -> Self {
        SourceRoot { path, ignore: None }
    }
}

/// Options of [`apply_file_actions_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOpOptions<'a> {
    /// Root whose /etc/passwd and /etc/group resolve `--chown` names; default
    /// the destination. `COPY --link` writes into an empty directory, so its
    /// names must come from the image below instead.
    pub users_root: Option<&'a Path>,
    /// Take unchanged files over from the previous result of the same step (copies only;
    /// see [`Reuse::applies_to`]).
    pub reuse: Option<&'a Reuse>,
    /// Stream regular files into the layer tar instead of writing them (copies only).
    pub stream: Option<&'a Stream>,
}

/// Applies `actions` in order onto `dest_root`. A copy's `src_input` indexes
/// `inputs`. Several copies to the same destination that does not end in
/// `/` (COPY with several sources) need that destination to be a directory.
pub fn apply_file_actions(
    dest_root: &Path,
    inputs: &[SourceRoot<'_>],
    actions: &[FileAction],
) -> Result<(), FileOpError> {
    apply_file_actions_with(dest_root, inputs, actions, &FileOpOptions::default())
}

/// [`apply_file_actions`] with options.
pub fn apply_file_actions_with(
    dest_root: &Path,
    inputs: &[SourceRoot<'_>],
    actions: &[FileAction],
    opts: &FileOpOptions<'_>,
) -> Result<(), FileOpError> {
    let users_root = opts.users_root.unwrap_or(dest_root);
    // As BuildKit, several sources into one path that is not a directory are
    // copied in turn (a later file replaces an earlier one); no error.
    for action in actions {
        match action {
            FileAction::Copy(c) => {
                let source = inputs.get(c.src_input).ok_or(FileOpError::NoSuchInput {
                    index: c.src_input,
                    count: inputs.len(),
                })?;
                copy::apply_copy(dest_root, users_root, source, c, opts)?;
            }
            FileAction::Mkfile(a) => mkfile::apply_mkfile(dest_root, users_root, a)?,
            FileAction::Mkdir(a) => mkdir::apply_mkdir(dest_root, users_root, a)?,
            FileAction::Rm(a) => rm::apply_rm(dest_root, a)?,
            FileAction::Symlink(a) => symlink::apply_symlink(dest_root, users_root, a)?,
        }
    }
    Ok(())
}
