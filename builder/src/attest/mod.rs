//! Attestations of built images: what is inside them (SBOM).

pub mod sbom;
