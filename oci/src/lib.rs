//! kiln's OCI image vocabulary, at the bottom of the workspace: digests, descriptors, media
//! types, manifests, indexes, image configs, platforms and references — one type per concept,
//! used by every other crate.

pub mod config;
pub mod descriptor;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod reference;

pub use config::ImageConfig;
pub use descriptor::Descriptor;
pub use digest::{Digest, HashingReader, HashingWriter, Verifier};
pub use error::{Error, Result};
pub use manifest::{ImageIndex, ImageManifest, Manifest};
pub use platform::Platform;
pub use reference::Reference;
