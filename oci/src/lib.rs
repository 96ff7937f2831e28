//! kiln's OCI image vocabulary, at the bottom of the workspace: digests, descriptors, media
//! types, manifests, indexes, image configs, platforms and references — one type per concept,
//! used by every other crate — and images as sources and sinks of that vocabulary (`store`),
//! with one reachable-blob walk (`walk`) and one verified copy (`copy`).

pub mod config;
pub mod copy;
pub mod descriptor;
pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod store;
pub mod tarball;
pub mod walk;

pub use config::ImageConfig;
pub use descriptor::Descriptor;
pub use digest::{Digest, HashingReader, HashingWriter, Verifier};
pub use error::{Error, Result};
pub use manifest::{ImageIndex, ImageManifest, Manifest};
pub use platform::Platform;
pub use reference::Reference;
pub use store::{ImageSink, ImageSource};
