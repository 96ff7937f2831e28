//! Image signatures as cosign makes them (key-based, no transparency log): the key files
//! (`keys`), the simple-signing payload (`payload`) and where signatures live in a
//! registry (`store`).

pub mod keys;
pub mod payload;
pub mod store;
pub mod transfer;
pub mod verify;

use std::path::PathBuf;

/// What can go wrong signing or verifying, apart from registry errors.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SignError {
    /// A key file cannot be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `keygen` would overwrite a key.
    #[error("{} already exists: kiln keygen does not overwrite keys", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file is not a key kiln can use.
    #[error("{}: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An encrypted key and no password.
    #[error("{} is encrypted: the password is needed", path.display())]
    PasswordNeeded {
        /// The file.
        path: PathBuf,
    },
    /// The password does not open the key.
    #[error("{}: wrong password (decryption failed)", path.display())]
    WrongPassword {
        /// The file.
        path: PathBuf,
    },
    /// The image has no signature at all.
    #[error("no signatures found for {reference}: it was never signed, or it changed since it was signed")]
    NoSignatures {
        /// The image, with its digest.
        reference: String,
    },
    /// Signatures exist and none verifies.
    #[error("none of the {count} signature(s) of {reference} verifies:{}", reasons.iter().map(|r| format!("\n  - {r}")).collect::<String>())]
    NoneVerified {
        /// The image, with its digest.
        reference: String,
        /// How many were checked.
        count: usize,
        /// Why each failed.
        reasons: Vec<String>,
    },
    /// Something kiln encodes could not be encoded (not expected).
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
