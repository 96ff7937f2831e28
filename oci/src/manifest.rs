//! Manifests and indexes (OCI and Docker schema 2), parsed by what they declare or what the
//! server said they are; Docker schema 1 is refused with a reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::error::{Error, Result};
use crate::media_type::{
    is_index, is_manifest, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_MANIFEST,
};
use crate::platform::Platform;

/// A single-image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (optional in OCI, required in Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// For artifacts: their type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Subject (referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// For artifacts: their type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Subject (referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// A schema-2 manifest of `media_type` over `config` and `layers`.
    pub fn new(media_type: &str, config: Descriptor, layers: Vec<Descriptor>) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: None,
        }
    }
}

impl ImageIndex {
    /// A schema-2 index of `media_type` over `manifests`.
    pub fn new(media_type: &str, manifests: Vec<Descriptor>) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_type.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: None,
        }
    }

    /// The entry for a platform; `None` when nothing matches.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    }

    /// A platform listed by more than one entry (an index must name each once), if any.
    pub fn duplicate_platform(&self) -> Option<Platform> {
        duplicate_platform(self.manifests.iter().filter_map(|d| d.platform.as_ref()))
    }

    /// Platforms listed, for error messages.
    pub fn platforms(&self) -> String {
        let v: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    }
}

/// The first platform that appears twice (after normalisation) among an index's entries.
/// Attestation entries (`unknown/unknown`) are not images and may repeat.
pub fn duplicate_platform<'a>(
    platforms: impl IntoIterator<Item = &'a Platform>,
) -> Option<Platform> {
    let mut seen: Vec<Platform> = Vec::new();
    for p in platforms {
        if p.os == "unknown" && p.architecture == "unknown" {
            continue;
        }
        if seen.iter().any(|s| s.matches(p)) {
            return Some(p.clone().normalized());
        }
        seen.push(p.clone().normalized());
    }
    None
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// A single image.
    Image(Box<ImageManifest>),
    /// An index of images.
    Index(Box<ImageIndex>),
}

impl Manifest {
    /// Parses manifest bytes, using the Content-Type when the document does not say; refuses schema 1.
    /// Returns the manifest and its effective media type.
    pub fn parse(
        what: &str,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<(Manifest, String)> {
        let bad = |reason: String| Error::BadManifest {
            reference: what.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err(Error::Schema1(what.to_string()));
        }
        let declared = value.get("mediaType").and_then(|v| v.as_str());
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| {
                !c.is_empty() && *c != "application/json" && *c != "application/octet-stream"
            });
        let media_type = match (declared, content_type) {
            (Some(d), _) => d.to_string(),
            (None, Some(c)) => c.to_string(),
            (None, None) => {
                if value.get("manifests").is_some() {
                    OCI_INDEX.to_string()
                } else {
                    OCI_MANIFEST.to_string()
                }
            }
        };
        if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
            return Err(Error::Schema1(what.to_string()));
        }
        if is_index(&media_type) {
            let idx: ImageIndex =
                serde_json::from_value(value).map_err(|e| bad(format!("bad index: {e}")))?;
            Ok((Manifest::Index(Box::new(idx)), media_type))
        } else if is_manifest(&media_type) {
            let m: ImageManifest =
                serde_json::from_value(value).map_err(|e| bad(format!("bad manifest: {e}")))?;
            Ok((Manifest::Image(Box::new(m)), media_type))
        } else {
            Err(bad(format!("unsupported media type {media_type}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{DOCKER_CONFIG, DOCKER_MANIFEST};

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:315afd7b0abeeda100222402c7e344901b0bcb282d53965ffa003fdf6ac734c3","size":349,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b8ca9ce1667fbd07f7ba050a2879c9a1727bc760087a63ddc686afa1bd707596","size":349,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;

    #[test]
    fn selects_platform_from_index() {
        let (m, mt) = Manifest::parse("x", INDEX.as_bytes(), None).unwrap();
        assert_eq!(mt, OCI_INDEX);
        let Manifest::Index(idx) = m else {
            panic!("not an index")
        };
        let arm = idx
            .select(&Platform::parse("linux/arm64").unwrap())
            .unwrap();
        assert!(arm.digest.to_string().starts_with("sha256:b8ca"));
        let amd = idx
            .select(&Platform::parse("linux/amd64").unwrap())
            .unwrap();
        assert!(amd.digest.to_string().starts_with("sha256:315a"));
        assert!(idx
            .select(&Platform::parse("linux/s390x").unwrap())
            .is_none());
        assert_eq!(idx.platforms(), "linux/amd64, linux/arm64/v8");
    }

    #[test]
    fn duplicate_platforms() {
        let (m, _) = Manifest::parse("x", INDEX.as_bytes(), None).unwrap();
        let Manifest::Index(mut idx) = m else {
            panic!("not an index")
        };
        assert_eq!(idx.duplicate_platform(), None);
        // arm64/v8 and arm64 are one platform.
        let mut again = idx.manifests[1].clone();
        again.platform = Some(Platform::parse("linux/arm64").unwrap());
        idx.manifests.push(again);
        assert_eq!(
            idx.duplicate_platform().map(|p| p.to_string()).as_deref(),
            Some("linux/arm64")
        );
    }

    #[test]
    fn refuses_schema1() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = Manifest::parse("r", s1, Some(DOCKER_SCHEMA1_SIGNED)).unwrap_err();
        assert!(matches!(err, Error::Schema1(_)));
        assert!(err.to_string().contains("schema 1"));
    }

    #[test]
    fn docker_manifest_by_content_type() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"sha256:{0}","size":1}},"layers":[]}}"#,
            "a".repeat(64)
        );
        let (m, mt) = Manifest::parse("r", m.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        assert!(matches!(m, Manifest::Image(_)));
        assert!(Manifest::parse("r", b"{}", Some("text/plain")).is_err());
    }
}
