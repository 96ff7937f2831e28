//! The build graph (BuildKit's LLB): ops, vertices and definitions with content-derived digests.

mod definition;
mod digest;
mod op;
mod vertex;

pub use definition::{Definition, GraphError};
pub use digest::{canonical_encoding, vertex_digest, VertexDigest};
pub use op::*;

pub use vertex::{SourceLocation, Vertex, VertexMetadata, VertexRef};

#[cfg(test)]
mod tests;
