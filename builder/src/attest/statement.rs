//! The in-toto statement (v1) every attestation is wrapped in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The statement type of in-toto v1.
pub const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an SPDX document.
pub const SPDX_DOCUMENT: &str = "https://spdx.dev/Document";

/// What a statement is about: an image manifest, by name and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// `pkg:docker/NAME@TAG?platform=…` as BuildKit names the image.
    pub name: String,
    /// Algorithm → hex.
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// The subject for a manifest `digest` named by the image's first name (`_` when it has
    /// none, as BuildKit writes it) and its platform.
    pub fn for_manifest(
        image_name: Option<&str>,
        platform: Option<&kiln_oci::Platform>,
        digest: &kiln_oci::Digest,
    ) -> Subject {
        let mut name = match image_name {
            Some(n) => format!("pkg:docker/{n}"),
            None => "_".to_string(),
        };
        if let (Some(p), true) = (platform, image_name.is_some()) {
            name.push_str("?platform=");
            name.push_str(&p.to_string().replace('/', "%2F"));
        }
        let (alg, hex) = digest
            .to_string()
            .split_once(':')
            .map(|(a, h)| (a.to_string(), h.to_string()))
            .unwrap_or_default();
        Subject {
            name,
            digest: BTreeMap::from([(alg, hex)]),
        }
    }
}

/// An in-toto v1 statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`IN_TOTO_STATEMENT_V1`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What it is about.
    pub subject: Vec<Subject>,
    /// What the predicate is.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The attestation itself.
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A v1 statement of `predicate_type` about `subject`.
    pub fn new(subject: Vec<Subject>, predicate_type: &str, predicate: serde_json::Value) -> Self {
        Statement {
            statement_type: IN_TOTO_STATEMENT_V1.to_string(),
            subject,
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }
}
