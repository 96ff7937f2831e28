//! The simple-signing payload cosign signs: which image (by manifest digest) under which
//! repository name.

use kiln_oci::{Digest, Reference};
use serde::{Deserialize, Serialize};

/// Media type of the payload blob (the layer of a signature manifest).
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The `critical.type` of a cosign signature.
pub const TYPE: &str = "cosign container image signature";

/// The payload document; fields in the order cosign (Go) writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What is signed.
    pub critical: Critical,
    /// Free annotations (`null` when none, as cosign writes it).
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The signed claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository.
    pub identity: Identity,
    /// The manifest.
    pub image: Image,
    /// Always [`TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// The repository the image was signed under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository`, as go-containerregistry names it.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// The signed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Its digest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl SimpleSigning {
    /// The payload for manifest `digest` in `r`'s repository.
    pub fn new(r: &Reference, digest: &Digest) -> Self {
        SimpleSigning {
            critical: Critical {
                identity: Identity {
                    docker_reference: docker_reference(r),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: TYPE.to_string(),
            },
            optional: None,
        }
    }
}

/// The repository as go-containerregistry's `Repository.Name()` spells it, which cosign
/// writes: Docker Hub is `index.docker.io`.
fn docker_reference(r: &Reference) -> String {
    if r.registry() == kiln_oci::reference::DOCKER_HUB {
        format!("index.docker.io/{}", r.repository())
    } else {
        r.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_cosign_does() {
        let r = Reference::parse("127.0.0.1:5000/a/b:1").unwrap();
        let d = Digest::of(b"m");
        let json = serde_json::to_string(&SimpleSigning::new(&r, &d)).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/a/b"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
    }

    #[test]
    fn docker_hub_is_index_docker_io() {
        let r = Reference::parse("busybox").unwrap();
        let p = SimpleSigning::new(&r, &Digest::of(b"m"));
        assert_eq!(
            p.critical.identity.docker_reference,
            "index.docker.io/library/busybox"
        );
    }
}
