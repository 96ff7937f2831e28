//! OCI distribution client for kiln: references, auth, pull, push, and a repository as an
//! image source and sink (`remote`).
//!
//! The wire protocol is spoken directly with `reqwest` (see `client`): kiln needs streaming
//! verification, resumable chunked uploads, cross-repo mounts and its own retry policy, which
//! are easier to get right on the raw requests than around `oci-client`'s buffered API.

pub mod auth;
pub mod client;
pub mod copy;
pub mod error;
pub mod progress;
pub mod pull;
pub mod push;
pub mod remote;
pub mod store;
pub mod transport;

pub use client::RegistryClient;
pub use error::{Error, Result};
pub use transport::TransportOptions;
