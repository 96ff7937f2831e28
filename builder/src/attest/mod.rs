//! Attestations of built images: what is inside them (SBOM), how they were built
//! (provenance), and how both are stored with the image.

pub mod options;
pub mod provenance;
pub mod referrers;
pub mod sbom;
pub mod statement;
pub mod store;
