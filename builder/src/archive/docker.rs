//! Docker's `docker save` format: a tar with `manifest.json` (and, since Docker 25, an OCI layout
//! alongside). kiln writes both so `docker load` (old and new) and OCI tools accept the file.

use super::oci::{self, NamedImage};
use kiln_oci::layout::LayoutDir;
use kiln_oci::media_type::{DOCKER_CONFIG, DOCKER_MANIFEST};
use kiln_oci::store::read_verified;
use kiln_oci::{Descriptor, Manifest};
use kiln_oci::{Digest, Platform, Reference};
use kiln_oci::{ImageSink, ImageSource};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One entry of manifest.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// Path of the config in the tar.
    #[serde(rename = "Config")]
    pub config: String,
    /// Familiar names (`busybox:latest`).
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer blobs, base first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// manifest.json (and `repositories`) for the images: the platform manifest of each.
pub fn manifest_json(
    store: &dyn ImageSource,
    images: &[NamedImage],
    platform: &Platform,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut entries = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let (m, _) = platform_manifest(store, &img.root, platform)?;
        for n in &img.names {
            if let Some(t) = n.tag() {
                repos
                    .entry(n.familiar_name())
                    .or_default()
                    .insert(t.to_string(), m.config.digest.hex().to_string());
            }
        }
        entries.push(ArchiveEntry {
            config: format!("blobs/sha256/{}", m.config.digest.hex()),
            repo_tags: Some(
                img.names
                    .iter()
                    .filter(|n| n.tag().is_some())
                    .map(|n| n.familiar())
                    .collect(),
            ),
            layers: m
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect(),
        });
    }
    Ok(vec![
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&entries).into_diagnostic()?,
        ),
        (
            "repositories".to_string(),
            serde_json::to_vec(&repos).into_diagnostic()?,
        ),
    ])
}

/// The image manifest of `root` for `platform` (the only one when `root` is a manifest).
pub fn platform_manifest(
    store: &dyn ImageSource,
    root: &Descriptor,
    platform: &Platform,
) -> Result<(kiln_oci::ImageManifest, Descriptor)> {
    let bytes = read_verified(store, root, "manifest").into_diagnostic()?;
    match Manifest::parse(root.digest.as_ref(), &bytes, Some(&root.media_type))
        .into_diagnostic()?
        .0
    {
        Manifest::Image(m) => Ok((*m, root.clone())),
        Manifest::Index(idx) => {
            let d = idx
                .manifests
                .iter()
                .find(|d| {
                    store.has_blob(&d.digest).unwrap_or(false)
                        && d.platform.as_ref().is_some_and(|p| platform.matches(p))
                })
                .or_else(|| {
                    idx.manifests
                        .iter()
                        .find(|d| store.has_blob(&d.digest).unwrap_or(false))
                })
                .ok_or_else(|| {
                    miette!(
                        "index {} has no image for {platform} in the store",
                        root.digest
                    )
                })?
                .clone();
            platform_manifest(store, &d, platform)
        }
    }
}

/// Turns an unpacked `docker save` archive into stored images. If it carries an OCI layout the
/// original manifests are kept; else (the legacy format) Docker v2 manifests are built over its
/// config and layer files.
pub fn import(dir: &Path, store: &dyn ImageSink) -> Result<Vec<NamedImage>> {
    // Check every blob against its name before anything is parsed or stored.
    oci::verify_layout_blobs(dir)?;
    let has_layout = dir.join("index.json").is_file() && dir.join("oci-layout").is_file();
    let manifest_path = dir.join("manifest.json");
    if has_layout {
        let mut images = oci::read_dir_images(dir, None)?;
        // Names from manifest.json when index.json has none.
        if let Ok(bytes) = std::fs::read(&manifest_path) {
            let entries: Vec<ArchiveEntry> = serde_json::from_slice(&bytes)
                .into_diagnostic()
                .wrap_err("manifest.json")?;
            let layout = LayoutDir::open(dir).into_diagnostic()?;
            for img in images.iter_mut().filter(|i| i.names.is_empty()) {
                let Ok((m, _)) = platform_manifest(&layout, &img.root, &Platform::host()) else {
                    continue;
                };
                let cfg = format!("blobs/sha256/{}", m.config.digest.hex());
                for e in entries.iter().filter(|e| e.config == cfg) {
                    for t in e.repo_tags.iter().flatten() {
                        img.names.extend(Reference::parse(t).ok());
                    }
                }
            }
        }
        let layout = LayoutDir::open(dir).into_diagnostic()?;
        oci::import_images(&layout, &images, store)?;
        return Ok(images);
    }
    let bytes = std::fs::read(&manifest_path).map_err(|_| {
        miette!("not an image archive: neither index.json + oci-layout nor manifest.json found")
    })?;
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&bytes)
        .into_diagnostic()
        .wrap_err("manifest.json")?;
    let mut images = Vec::new();
    for e in entries {
        let config = store_file(dir, &e.config, store)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (digest, size) = store_file(dir, l, store)?;
            let mut magic = [0u8; 2];
            let gz = std::fs::File::open(dir.join(safe(l)?))
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok()
                && magic == [0x1f, 0x8b];
            let mt = if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            layers.push(
                serde_json::json!({"mediaType": mt, "size": size, "digest": digest.to_string()}),
            );
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.1, "digest": config.0.to_string()},
            "layers": layers,
        });
        let mb = serde_json::to_vec(&manifest).into_diagnostic()?;
        let d = Descriptor::of(DOCKER_MANIFEST, &mb);
        if !store.has_blob(&d.digest).into_diagnostic()? {
            store.write_blob(&d, &mut mb.as_slice()).into_diagnostic()?;
        }
        images.push(NamedImage {
            names: e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .collect(),
            root: d,
        });
    }
    Ok(images)
}

fn safe(rel: &str) -> Result<&Path> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(miette!("archive path {rel:?} escapes the archive"));
    }
    Ok(p)
}

/// Hashes a file of the unpacked archive and copies it into the store.
fn store_file(dir: &Path, rel: &str, store: &dyn ImageSink) -> Result<(Digest, u64)> {
    let p = dir.join(safe(rel)?);
    let size = std::fs::metadata(&p)
        .into_diagnostic()
        .wrap_err_with(|| format!("archive file {rel}"))?
        .len();
    let digest = oci::hash_file(&p)?;
    if !store.has_blob(&digest).into_diagnostic()? {
        // Verified again while it is copied: the file may change after it was hashed.
        let desc = Descriptor::new("application/octet-stream", digest.clone(), size);
        let f = std::fs::File::open(&p).into_diagnostic()?;
        let mut data = kiln_oci::store::verifying(Box::new(f), &desc, "archive file");
        store.write_blob(&desc, &mut data).into_diagnostic()?;
    }
    Ok((digest, size))
}
