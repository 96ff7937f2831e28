//! Why a worker failed a vertex: a kind the caller can act on (the builder picks its
//! hint by it, never by the message), each keeping the error it came from. Messages
//! say what went wrong; what to pass on the command line is the builder's to say.

use std::error::Error as StdError;

use thiserror::Error;

use crate::executor::emulation::EmulationError;
use crate::executor::ExecError;
use crate::ops::file::FileOpError;
use crate::snapshot::blobs::BlobError;
use crate::snapshot::layer::LayerError;
use crate::snapshot::layers::LayerStoreError;

/// Any error, boxed: what a kind keeps when its cause has no type of its own here.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Errors a worker reports, by what went wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A RUN step's process ran and failed (a non-zero exit, a signal).
    #[error(transparent)]
    StepFailed(ExecError),
    /// The executor could not run the step (no usable runtime, the sandbox was refused).
    #[error(transparent)]
    Executor(ExecError),
    /// A step for a foreign platform has no usable QEMU user emulation.
    #[error(transparent)]
    Emulation(#[from] EmulationError),
    /// A step needs an entitlement the build did not grant.
    #[error("RUN {option} needs the {entitlement} entitlement")]
    NotEntitled {
        /// The entitlement (`network.host`, `security.insecure`).
        entitlement: &'static str,
        /// The RUN option asking for it (`--network=host`).
        option: &'static str,
    },
    /// A secret a step uses was not given to the build.
    #[error("secret {id} not found")]
    SecretNotFound {
        /// The secret's id.
        id: String,
        /// Whether the step wants it as an environment variable (else as a file).
        env: bool,
    },
    /// An SSH agent a step mounts was not given to the build.
    #[error("ssh agent {id} not found")]
    SshNotFound {
        /// The agent's id.
        id: String,
    },
    /// A path a COPY or ADD reads is not in its source (or `.dockerignore` hides it).
    #[error(transparent)]
    SourceNotFound(FileOpError),
    /// A RUN mount's `source=` is not in the context or stage it is taken from.
    #[error(
        "mount {dest}: source {path:?} not found in the context or stage it is taken from \
         (symbolic links in it resolve inside it, never on the host)"
    )]
    MountSourceNotFound {
        /// The mount's target in the step.
        dest: String,
        /// The source as written (`/` for the whole input).
        path: String,
        /// Why it could not be resolved.
        #[source]
        source: std::io::Error,
    },
    /// A layer is over the layer size limit (an image's or a step's).
    #[error(transparent)]
    LayerTooLarge(BoxError),
    /// An image could not be fetched (the [`crate::worker::ImageFetcher`]'s error).
    #[error(transparent)]
    ImageFetch(BoxError),
    /// A blob of an imported build cache could not be fetched, or did not verify (its
    /// digest, or the diffID its layer unpacks to). Never a wrong result: the step fails.
    #[error("imported cache blob {digest} (cache source {source_index}): {error}")]
    CacheBlob {
        /// The blob.
        digest: String,
        /// The import source it comes from (its position in the import list, from 0).
        source_index: usize,
        /// Why.
        #[source]
        error: BoxError,
    },
    /// The build was canceled.
    #[error("canceled")]
    Canceled,
    /// Anything else.
    #[error(transparent)]
    Other(BoxError),
}

impl WorkerError {
    /// An error of no particular kind.
    pub fn other(e: impl Into<BoxError>) -> WorkerError {
        WorkerError::Other(e.into())
    }

    /// An image fetch failure keeping its cause (a registry error, say).
    pub fn image_fetch(e: impl Into<BoxError>) -> WorkerError {
        WorkerError::ImageFetch(e.into())
    }
}

impl From<ExecError> for WorkerError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::NonZeroExit { .. } | ExecError::Signaled { .. } => {
                WorkerError::StepFailed(e)
            }
            ExecError::Canceled => WorkerError::Canceled,
            _ => WorkerError::Executor(e),
        }
    }
}

impl From<FileOpError> for WorkerError {
    fn from(e: FileOpError) -> Self {
        match e {
            FileOpError::SourceNotFound { .. }
            | FileOpError::NoMatch { .. }
            | FileOpError::RequiredPathMissing { .. } => WorkerError::SourceNotFound(e),
            _ => WorkerError::Other(e.into()),
        }
    }
}

impl From<LayerError> for WorkerError {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::TooLarge { .. } => WorkerError::LayerTooLarge(e.into()),
            _ => WorkerError::Other(e.into()),
        }
    }
}

impl From<LayerStoreError> for WorkerError {
    fn from(e: LayerStoreError) -> Self {
        match e {
            LayerStoreError::TooLarge { .. }
            | LayerStoreError::BuiltTooLarge { .. }
            | LayerStoreError::Layer(LayerError::TooLarge { .. }) => {
                WorkerError::LayerTooLarge(e.into())
            }
            _ => WorkerError::Other(e.into()),
        }
    }
}

impl From<BlobError> for WorkerError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Layer(e) => e.into(),
            BlobError::LayerStore(e) => e.into(),
            _ => WorkerError::Other(e.into()),
        }
    }
}

impl From<crate::snapshot::flatten::FlattenError> for WorkerError {
    fn from(e: crate::snapshot::flatten::FlattenError) -> Self {
        WorkerError::Other(e.into())
    }
}

impl From<BoxError> for WorkerError {
    fn from(e: BoxError) -> Self {
        WorkerError::Other(e)
    }
}

impl From<String> for WorkerError {
    fn from(message: String) -> Self {
        WorkerError::Other(message.into())
    }
}

impl From<&str> for WorkerError {
    fn from(message: &str) -> Self {
        WorkerError::Other(message.into())
    }
}

/// Errors of no particular kind that workers pass on with `?`.
macro_rules! other_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for WorkerError {
            fn from(e: $t) -> Self {
                WorkerError::Other(e.into())
            }
        }
    )*};
}

other_from!(
    std::io::Error,
    reqwest::Error,
    crate::meta::MetaError,
    crate::content::ContentError,
    crate::cache::contenthash::ContentHashError,
    crate::snapshot::view::ViewError,
    crate::snapshot::overlay::OverlayError,
    crate::ops::source::git::GitError,
    crate::ops::source::http::HttpError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_are_sorted_by_what_went_wrong() {
        let failed = ExecError::NonZeroExit {
            args: vec!["false".into()],
            code: 1,
            output: Default::default(),
        };
        assert!(matches!(
            WorkerError::from(failed),
            WorkerError::StepFailed(_)
        ));
        assert!(matches!(
            WorkerError::from(ExecError::Unavailable("no runtime".into())),
            WorkerError::Executor(_)
        ));
        assert!(matches!(
            WorkerError::from(ExecError::Canceled),
            WorkerError::Canceled
        ));
    }

    #[test]
    fn a_missing_copy_source_keeps_its_message() {
        let e = WorkerError::from(FileOpError::SourceNotFound {
            path: "a.txt".into(),
            origin: "build context",
        });
        assert!(matches!(e, WorkerError::SourceNotFound(_)));
        assert_eq!(
            e.to_string(),
            "file not found in build context: stat a.txt: no such file or directory"
        );
    }
}
