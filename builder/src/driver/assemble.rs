//! Assembling an image from a build result: the config blob, the manifest
//! over the layer blobs, and (for several platforms) the index, all written
//! into the content store.

use kiln_oci::manifest::duplicate_platform;
use kiln_oci::media_type::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Platform};
use kiln_solver::content::{ContentError, ContentStore};
use kiln_solver::snapshot::layer::Compression;
use std::collections::BTreeMap;
use thiserror::Error;

/// Why an image could not be written.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Two images of an index are for one platform (a consumer could only ever pick the first).
    #[error(
        "two images for platform {0} in one index: each platform's image must be built for it \
         (does the final stage use `FROM --platform=` with a fixed platform or $BUILDPLATFORM?)"
    )]
    DuplicatePlatform(String),
}

/// One layer of an image: its blob and the diffID the config lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The blob (digest, size, media type).
    pub blob: Descriptor,
}

/// How the manifest is written.
#[derive(Debug, Clone, Default)]
pub struct ManifestOptions {
    /// Docker v2 media types instead of OCI ones (`oci-mediatypes=false`).
    pub docker_media_types: bool,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ManifestOptions {
    fn annotations(&self) -> Option<BTreeMap<String, String>> {
        (!self.annotations.is_empty()).then(|| self.annotations.clone())
    }
}

/// Writes the config (`config_json`, already serialised) and the manifest of
/// one image; returns the manifest's descriptor with `platform` filled in,
/// and the config's digest (the image ID).
pub fn write_image(
    store: &ContentStore,
    config_json: &[u8],
    platform: Platform,
    layers: &[ImageLayer],
    opts: &ManifestOptions,
) -> Result<(Descriptor, Digest), ImageError> {
    let config_type = if opts.docker_media_types {
        DOCKER_CONFIG
    } else {
        OCI_CONFIG
    };
    let info = store.put_bytes(config_json)?;
    let config_desc = Descriptor::new(config_type, info.digest.clone(), info.size);
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| {
            let mut d = l.blob.clone();
            // Layers from a base image keep their blob, but their media type
            // follows the manifest's flavour.
            if let Some(c) = Compression::from_media_type(&d.media_type) {
                d.media_type = if opts.docker_media_types {
                    c.docker_media_type()
                } else {
                    c.oci_media_type()
                }
                .to_string();
            }
            d
        })
        .collect();
    let manifest_type = if opts.docker_media_types {
        DOCKER_MANIFEST
    } else {
        OCI_MANIFEST
    };
    let manifest = ImageManifest {
        annotations: opts.annotations(),
        ..ImageManifest::new(manifest_type, config_desc, layer_descs)
    };
    let desc = store.put_json(manifest_type, &manifest)?;
    Ok((desc.with_platform(platform), info.digest))
}

/// Writes an index over per-platform manifests (their descriptors carry the
/// platform); returns its descriptor.
pub fn write_index(
    store: &ContentStore,
    manifests: Vec<Descriptor>,
    opts: &ManifestOptions,
) -> Result<Descriptor, ImageError> {
    if let Some(p) = duplicate_platform(manifests.iter().filter_map(|d| d.platform.as_ref())) {
        return Err(ImageError::DuplicatePlatform(p.to_string()));
    }
    let index_type = if opts.docker_media_types {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let index = ImageIndex {
        annotations: opts.annotations(),
        ..ImageIndex::new(index_type, manifests)
    };
    Ok(store.put_json(index_type, &index)?)
}

/// A descriptor for a layer blob of the given compression.
pub fn layer_descriptor(digest: Digest, size: u64, compression: Compression) -> Descriptor {
    Descriptor::new(compression.oci_media_type(), digest, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::snapshot::layer::{write_layer, DiffOptions};

    #[test]
    fn writes_config_manifest_and_index_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hello"), "hi").unwrap();
        let blob = write_layer(&tree, &store, &DiffOptions::default()).unwrap();
        let layer = ImageLayer {
            diff_id: blob.diff_id.clone(),
            blob: layer_descriptor(blob.blob.digest.clone(), blob.blob.size, blob.compression),
        };
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            blob.diff_id
        );
        let plat = Platform::new("linux", "amd64", None);
        let (desc, config_digest) = write_image(
            &store,
            config.as_bytes(),
            plat.clone(),
            std::slice::from_ref(&layer),
            &ManifestOptions::default(),
        )
        .unwrap();
        assert_eq!(desc.media_type, OCI_MANIFEST);
        assert_eq!(
            desc.platform.as_ref().map(|p| p.architecture.as_str()),
            Some("amd64")
        );
        let manifest: ImageManifest = store.read_json(&desc.digest).unwrap();
        assert_eq!(manifest.layers[0].digest, blob.blob.digest);
        assert_eq!(manifest.config.digest, config_digest);
        assert_eq!(store.read_blob(&config_digest).unwrap(), config.as_bytes());

        let docker = ManifestOptions {
            docker_media_types: true,
            ..Default::default()
        };
        let (d2, _) = write_image(&store, config.as_bytes(), plat, &[layer], &docker).unwrap();
        let m2: ImageManifest = store.read_json(&d2.digest).unwrap();
        assert_eq!(
            m2.layers[0].media_type,
            kiln_oci::media_type::DOCKER_LAYER_GZIP
        );
        assert_ne!(d2.digest, desc.digest);

        let idx = write_index(&store, vec![desc.clone()], &ManifestOptions::default()).unwrap();
        let index: ImageIndex = store.read_json(&idx.digest).unwrap();
        assert_eq!(index.manifests[0].digest, desc.digest);
        // The Docker-typed image is another manifest for the same platform: refused.
        let err =
            write_index(&store, vec![desc.clone(), d2], &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, ImageError::DuplicatePlatform(p) if p == "linux/amd64"),
            "{err}"
        );
    }
}
