//! The identity of a vertex: sha256 of its canonical encoding and its inputs' digests.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::op::Op;
use kiln_oci::Platform;

/// A sha256 vertex digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexDigest(pub [u8; 32]);

impl VertexDigest {
    /// Lowercase hex without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> String {
        self.hex().chars().take(12).collect()
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        let bytes = hex::decode(hex).ok()?;
        Some(VertexDigest(bytes.try_into().ok()?))
    }
}

impl fmt::Display for VertexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for VertexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VertexDigest({})", self.short())
    }
}

impl Serialize for VertexDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VertexDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VertexDigest::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid sha256 digest"))
    }
}

/// What a vertex digest covers: the op, its platform and the ordered input digests.
#[derive(Serialize)]
struct Identity<'a> {
    op: &'a Op,
    platform: Option<PlatformIdentity<'a>>,
    inputs: &'a [VertexDigest],
}

/// The part of a platform a vertex digest covers, in its pinned encoding (every field, in
/// this order), so cache keys do not move when the platform type gains fields.
#[derive(Serialize)]
struct PlatformIdentity<'a> {
    os: &'a str,
    architecture: &'a str,
    variant: &'a Option<String>,
}

/// The canonical bytes of a vertex: JSON with fields in declaration order and sorted maps.
pub fn canonical_encoding(
    op: &Op,
    platform: &Option<Platform>,
    inputs: &[VertexDigest],
) -> Vec<u8> {
    let identity = Identity {
        op,
        platform: platform.as_ref().map(|p| PlatformIdentity {
            os: &p.os,
            architecture: &p.architecture,
            variant: &p.variant,
        }),
        inputs,
    };
    // Serialising plain data (strings, numbers, vectors, BTreeMaps) cannot fail.
    serde_json::to_vec(&identity).unwrap_or_default()
}

/// The digest of a vertex.
pub fn vertex_digest(
    op: &Op,
    platform: &Option<Platform>,
    inputs: &[VertexDigest],
) -> VertexDigest {
    let mut h = Sha256::new();
    h.update(canonical_encoding(op, platform, inputs));
    VertexDigest(h.finalize().into())
}
