//! Why a file action failed. Messages name the path as the user wrote it.

use std::io;

use thiserror::Error;

use super::chmod::ChmodError;
use crate::archive::ExtractError;
use crate::pattern::GlobError;

/// A failed COPY/ADD/WORKDIR/heredoc action.
#[derive(Debug, Error)]
pub enum FileOpError {
    /// The source path does not exist or `.dockerignore` hides it.
    #[error("file not found in {origin}: stat {path}: no such file or directory")]
    SourceNotFound {
        /// The source as written.
        path: String,
        /// Where it was looked for ("build context or excluded by
        /// .dockerignore" for the context, "the copied stage or image" otherwise).
        origin: &'static str,
    },
    /// A wildcard source matched nothing.
    #[error("no source files were specified: {pattern} matched no files in the build context (or all were excluded by .dockerignore)")]
    NoMatch {
        /// The pattern as written.
        pattern: String,
    },
    /// `--parents` without wildcards names a path that does not exist.
    #[error("required path {path} not found")]
    RequiredPathMissing {
        /// The path as written.
        path: String,
    },
    /// The destination's parent must exist (`create_dest_path` is off).
    #[error("failed to stat {path}: parent directory does not exist")]
    DestParentMissing {
        /// The destination as written.
        path: String,
    },
    /// A `src_input` index with no matching source root.
    #[error("copy from input {index}, but only {count} inputs were given")]
    NoSuchInput {
        /// The index in the action.
        index: usize,
        /// How many inputs there are.
        count: usize,
    },
    /// A bad `--chmod` value.
    #[error(transparent)]
    Chmod(#[from] ChmodError),
    /// A bad `--chown` value.
    #[error("invalid chown value {value:?}: {reason}")]
    Chown {
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A bad include/exclude pattern or wildcard.
    #[error("invalid pattern: {0}")]
    Pattern(#[from] GlobError),
    /// A directory would be replaced by a file.
    #[error("cannot replace directory {path} with a file")]
    ReplaceDirWithFile {
        /// The destination path inside the root.
        path: String,
    },
    /// A directory would be copied onto something else.
    #[error("cannot copy to non-directory: {path}")]
    NotADirectory {
        /// The destination path inside the root.
        path: String,
    },
    /// A file type the copier does not know.
    #[error("cannot copy {path}: unsupported file type")]
    UnsupportedFileType {
        /// The source path inside its root.
        path: String,
    },
    /// `rm` of a missing path.
    #[error("rm {path}: no such file or directory")]
    RmNotFound {
        /// The path as written.
        path: String,
    },
    /// `rm /`.
    #[error("rm {path}: refusing to remove the root")]
    RmRoot {
        /// The path as written.
        path: String,
    },
    /// Unpacking an archive failed.
    #[error(transparent)]
    Unpack(#[from] ExtractError),
    /// A streamed copy (see [`super::Stream`]) would have to write where it streamed a
    /// file; the worker copies again without streaming. Never shown.
    #[error("the streamed copy must be made unstreamed")]
    StreamConflict,
    /// A filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`copy`, `mkdir`, `chown`, ...).
        op: &'static str,
        /// The path involved (inside its root).
        path: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl FileOpError {
    /// Wraps an I/O error with the operation and the path.
    pub(crate) fn io(
        op: &'static str,
        path: impl std::fmt::Display,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_string();
        move |source| FileOpError::Io { op, path, source }
    }
}
