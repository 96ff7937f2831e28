//! The cache config: kiln's records inside BuildKit's cache image shape. Version 1; readers
//! refuse other versions (a miss, with a warning, never a wrong result). See
//! `docs/remote-cache.md`.

use serde::{Deserialize, Serialize};

use crate::cache::{CacheKey, ContentChecksum, KeyParts};
use kiln_oci::Digest;

/// The version of [`KilnCache`] this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The config blob (media type [`kiln_oci::media_type::BUILDKIT_CACHE_CONFIG`]), or the
/// value of the image config key [`kiln_oci::media_type::CONFIG_KEY_INLINE_CACHE`] for an
/// inline cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// BuildKit's layer list, always empty: BuildKit reading a kiln cache finds no records
    /// instead of failing.
    #[serde(default)]
    pub layers: Vec<serde_json::Value>,
    /// BuildKit's record list, always empty (see `layers`).
    #[serde(default)]
    pub records: Vec<serde_json::Value>,
    /// kiln's records.
    pub kiln: KilnCache,
}

/// kiln's part of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilnCache {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The layer blobs records refer to, by position; each is also a layer of the cache
    /// manifest (or, for an inline cache, of the image).
    pub blobs: Vec<CacheBlob>,
    /// One record per cached step.
    pub records: Vec<CacheRecord>,
    /// Cache-mount contents (`cache-mounts=true`).
    #[serde(default)]
    pub mounts: Vec<CacheMountRecord>,
}

/// A layer blob of the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheBlob {
    /// The compressed blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type (gzip, zstd or plain tar).
    pub media_type: String,
    /// The digest of its uncompressed tar.
    pub diff_id: Digest,
}

/// One cached step: its key and the filesystem it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    /// The step's cache key.
    pub key: CacheKey,
    /// Its snapshot's layers, bottom first, as positions in [`KilnCache::blobs`].
    pub layers: Vec<usize>,
    /// What made it (the vertex description), for messages.
    pub description: String,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
    /// Checksums of paths of this result that later steps selected (COPY --from sources),
    /// so an importer keys those steps without downloading this result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<SelectionChecksum>,
    /// What the key was made of, to explain misses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<KeyParts>,
}

/// The checksum of some selected paths of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionChecksum {
    /// [`selectors_digest`] of the selectors.
    pub selectors: String,
    /// Their content checksum.
    pub checksum: ContentChecksum,
}

/// The contents of one cache mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMountRecord {
    /// The cache id (`id=`, else the target path), as the cache-mount store names it.
    pub id: String,
    /// Its tar, as a position in [`KilnCache::blobs`].
    pub blob: usize,
}

/// A stable digest of a selector list (hex), the key of [`SelectionChecksum`].
pub fn selectors_digest(selectors: &[crate::cache::Selector]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for s in selectors {
        h.update((s.path.len() as u64).to_le_bytes());
        h.update(s.path.as_bytes());
        h.update([u8::from(s.wildcards), u8::from(s.follow_final_symlink)]);
    }
    hex::encode(h.finalize())
}

impl CacheConfig {
    /// A config holding `cache`.
    pub fn new(cache: KilnCache) -> Self {
        CacheConfig {
            layers: Vec::new(),
            records: Vec::new(),
            kiln: cache,
        }
    }

    /// Parses a config and checks it: the version, and that every position it holds is in
    /// range. `what` names it in errors (a digest or a reference).
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, super::RemoteCacheError> {
        let bad = |reason: String| super::RemoteCacheError::BadConfig {
            digest: what.to_string(),
            reason,
        };
        let config: CacheConfig = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a kiln cache config: {e}")))?;
        let k = &config.kiln;
        if k.version != FORMAT_VERSION {
            return Err(super::RemoteCacheError::OtherVersion {
                digest: what.to_string(),
                found: k.version,
                supported: FORMAT_VERSION,
            });
        }
        let n = k.blobs.len();
        for r in &k.records {
            if let Some(i) = r.layers.iter().find(|i| **i >= n) {
                return Err(bad(format!("record {} names layer {i} of {n}", r.key)));
            }
        }
        if let Some(m) = k.mounts.iter().find(|m| m.blob >= n) {
            return Err(bad(format!(
                "cache mount {:?} names layer {} of {n}",
                m.id, m.blob
            )));
        }
        Ok(config)
    }

    /// The JSON bytes (deterministic for the same content).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data structures always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cache blob for tests, told apart by `n`.
    pub(crate) fn blob(n: u8) -> CacheBlob {
        CacheBlob {
            digest: Digest::of(&[n]),
            size: 1,
            media_type: kiln_oci::media_type::OCI_LAYER_GZIP.into(),
            diff_id: Digest::of(&[n, n]),
        }
    }

    fn config(layers: Vec<usize>) -> CacheConfig {
        CacheConfig::new(KilnCache {
            version: FORMAT_VERSION,
            blobs: vec![blob(1), blob(2)],
            records: vec![CacheRecord {
                key: CacheKey([7; 32]),
                layers,
                description: "RUN make".into(),
                created_at: 1,
                checksums: vec![],
                parts: None,
            }],
            mounts: vec![],
        })
    }

    #[test]
    fn a_config_round_trips_and_out_of_range_positions_are_refused() {
        let c = config(vec![0, 1]);
        assert_eq!(CacheConfig::parse("x", &c.to_bytes()).unwrap(), c);
        let err = CacheConfig::parse("x", &config(vec![0, 2]).to_bytes()).unwrap_err();
        assert!(err.to_string().contains("names layer 2 of 2"), "{err}");
    }

    #[test]
    fn another_version_or_a_buildkit_config_is_refused_with_the_reason() {
        let mut c = config(vec![0]);
        c.kiln.version = 2;
        let err = CacheConfig::parse("x", &c.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert!(matches!(
            err,
            super::super::RemoteCacheError::OtherVersion { found: 2, .. }
        ));
        let bk = br#"{"layers":[{"blob":"sha256:00","parent":-1}],"records":[]}"#;
        let err = CacheConfig::parse("x", bk).unwrap_err();
        assert!(err.to_string().contains("not a kiln cache config"), "{err}");
    }
}
