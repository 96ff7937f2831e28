//! Manifests and indexes (OCI and Docker v2 schema 2), media types and platform matching.

use crate::digest::Digest;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed (refused).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header for manifest requests: everything we can read, plus schema 1 so we can refuse it clearly.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json;q=0.9, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1";

/// True for the media types of indexes / manifest lists.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// True for the media types of single-image manifests.
pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size in bytes of the target.
    pub size: u64,
    /// Platform (in index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Foreign-layer URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor of `data` with the given media type.
    pub fn of(media_type: &str, data: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            annotations: None,
            urls: None,
            artifact_type: None,
        }
    }
}

/// A platform (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (GOARCH vocabulary).
    pub architecture: String,
    /// Operating system (GOOS vocabulary).
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (also `arch` alone, meaning linux), normalising like containerd.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad = || Error::InvalidPlatform(s.to_string());
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad()),
        };
        Ok(Platform {
            architecture: arch.to_lowercase(),
            os: os.to_lowercase(),
            variant: variant.map(str::to_lowercase),
            ..Default::default()
        }
        .normalized())
    }

    /// The platform of this machine.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: arch.to_string(),
            os: std::env::consts::OS.to_string(),
            ..Default::default()
        }
        .normalized()
    }

    /// Containerd's normalisation: aliases folded, default variants dropped or filled.
    pub fn normalized(mut self) -> Self {
        self.architecture = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "armhf" => "arm".to_string(),
            "i386" => "386".to_string(),
            other => other.to_string(),
        };
        let variant = self.variant.as_deref();
        match self.architecture.as_str() {
            "arm64" if variant == Some("v8") || variant == Some("8") => self.variant = None,
            "amd64" if variant == Some("v1") => self.variant = None,
            "arm" if variant.is_none() => self.variant = Some("v7".to_string()),
            _ => {}
        }
        self
    }

    /// The platform an image config declares (`os`, `architecture`, `variant`), normalised;
    /// `None` when the config is not JSON or names no os or architecture.
    pub fn from_config(config: &[u8]) -> Option<Platform> {
        let v: serde_json::Value = serde_json::from_slice(config).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty());
        Some(
            Platform {
                os: text("os")?.to_string(),
                architecture: text("architecture")?.to_string(),
                variant: text("variant").map(str::to_string),
                ..Default::default()
            }
            .normalized(),
        )
    }

    /// Whether an index entry's platform satisfies this wanted platform.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.clone().normalized();
        let have = candidate.clone().normalized();
        want.os == have.os && want.architecture == have.architecture && want.variant == have.variant
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A single-image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (optional in OCI, required in Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
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
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
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
    Index(ImageIndex),
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
        if is_index_type(&media_type) {
            let idx: ImageIndex =
                serde_json::from_value(value).map_err(|e| bad(format!("bad index: {e}")))?;
            Ok((Manifest::Index(idx), media_type))
        } else if is_manifest_type(&media_type) {
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
    fn platform_from_config_and_duplicates() {
        let p = Platform::from_config(br#"{"os":"linux","architecture":"aarch64","variant":"v8"}"#);
        assert_eq!(p.map(|p| p.to_string()).as_deref(), Some("linux/arm64"));
        assert_eq!(Platform::from_config(br#"{"os":"linux"}"#), None);
        assert_eq!(Platform::from_config(b"not json"), None);
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

    #[test]
    fn platform_parse_and_normalise() {
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux//x").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        let host = Platform::host();
        assert!(!host.architecture.is_empty());
    }
}
