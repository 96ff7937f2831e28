//! Images in a local OCI layout (`--build-context NAME=oci-layout://PATH[:TAG|@DIGEST]`):
//! the layout's `index.json` picks the image by `org.opencontainers.image.ref.name` tag
//! (default `latest`) or by digest, an index picks the platform, and the manifest,
//! config and layers are copied (verified) from the layout's blobs into kiln's store.
//! In the graph such an image is an `oci-layout://PATH@DIGEST` source pinned to its
//! platform manifest, like a registry image pinned by digest.

use crate::local_store::LocalStore;
use kiln_oci::layout::LayoutDir;
use kiln_oci::media_type::ANNOTATION_REF_NAME;
use kiln_oci::store::verifying;
use kiln_oci::Digest;
use kiln_oci::{Descriptor, ImageManifest, ImageSink, ImageSource, Manifest, Platform};
use std::path::{Path, PathBuf};

/// The scheme prefix of layout references and source identifiers.
pub const SCHEME: &str = "oci-layout://";

/// A parsed `PATH[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory.
    pub path: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`); `latest` when neither is given.
    pub tag: Option<String>,
    /// The digest of an image or index in the layout (wins over the tag).
    pub digest: Option<Digest>,
}

impl LayoutRef {
    /// Parses the part after `oci-layout://`.
    pub fn parse(location: &str) -> Result<LayoutRef, String> {
        let (rest, digest) = match location.rsplit_once('@') {
            Some((p, d)) => (
                p,
                Some(Digest::parse(d).map_err(|e| format!("{SCHEME}{location}: {e}"))?),
            ),
            None => (location, None),
        };
        // PATH:TAG where the tag has no '/'.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') && !p.is_empty() && !t.is_empty() => {
                (p, Some(t.to_string()))
            }
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(format!("{SCHEME}{location}: the layout path is empty"));
        }
        Ok(LayoutRef {
            path: PathBuf::from(path),
            tag,
            digest,
        })
    }

    /// The same reference with the layout's absolute path, checked to be a layout.
    pub fn canonical(&self) -> Result<LayoutRef, String> {
        let path = std::fs::canonicalize(&self.path)
            .map_err(|e| format!("{SCHEME}{}: {e}", self.path.display()))?;
        if !path.join("index.json").is_file() {
            return Err(format!(
                "{SCHEME}{}: not an OCI layout (no index.json)",
                path.display()
            ));
        }
        Ok(LayoutRef {
            path,
            ..self.clone()
        })
    }

    fn blobs(&self) -> Result<LayoutDir, String> {
        LayoutDir::open(&self.path).map_err(|e| e.to_string())
    }

    /// The image of the layout for `platform`: its manifest's descriptor, bytes and parsed form.
    pub fn select(
        &self,
        platform: &Platform,
    ) -> Result<(Descriptor, Vec<u8>, ImageManifest), String> {
        let index_path = self.path.join("index.json");
        let bytes = std::fs::read(&index_path)
            .map_err(|e| format!("reading {}: {e}", index_path.display()))?;
        let index: kiln_oci::ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", index_path.display()))?;
        let root = match (&self.digest, &self.tag) {
            (Some(d), _) => match index.manifests.iter().find(|m| m.digest == *d) {
                Some(m) => m.clone(),
                // Any manifest blob of the layout may be named by digest.
                None if ImageSource::has_blob(&self.blobs()?, d).unwrap_or(false) => {
                    Descriptor::new("", d.clone(), 0)
                }
                None => {
                    return Err(format!(
                        "{}: no image with digest {d} in the layout",
                        self.path.display()
                    ))
                }
            },
            (None, tag) => {
                let tag = tag.as_deref().unwrap_or("latest");
                let name = |m: &Descriptor| {
                    m.annotations
                        .as_ref()
                        .and_then(|a| a.get(ANNOTATION_REF_NAME))
                        .cloned()
                };
                index
                    .manifests
                    .iter()
                    .find(|m| name(m).is_some_and(|n| n == tag || n.ends_with(&format!(":{tag}"))))
                    .cloned()
                    .ok_or_else(|| {
                        let tags: Vec<String> = index.manifests.iter().filter_map(name).collect();
                        format!(
                            "{}: no image tagged {tag:?} in the layout (tags: {})",
                            self.path.display(),
                            if tags.is_empty() {
                                "none".to_string()
                            } else {
                                tags.join(", ")
                            }
                        )
                    })?
            }
        };
        let (desc, bytes, manifest) = self.read_manifest(&root)?;
        match manifest {
            Manifest::Image(m) => Ok((desc, bytes, *m)),
            Manifest::Index(idx) => {
                let child = idx.select(platform).cloned().ok_or_else(|| {
                    format!(
                        "{}: no image for platform {platform} in the index (it has {})",
                        self.path.display(),
                        idx.platforms()
                    )
                })?;
                match self.read_manifest(&child)? {
                    (d, b, Manifest::Image(m)) => Ok((d, b, *m)),
                    (_, _, Manifest::Index(_)) => Err(format!(
                        "{}: nested indexes are not supported",
                        self.path.display()
                    )),
                }
            }
        }
    }

    /// Reads and verifies a manifest or index blob of the layout (its size may be unknown:
    /// a manifest named by digest alone).
    fn read_manifest(&self, d: &Descriptor) -> Result<(Descriptor, Vec<u8>, Manifest), String> {
        let layout = self.blobs()?;
        let size = match d.size {
            0 => std::fs::metadata(layout.blob_path(&d.digest)).map_or(0, |m| m.len()),
            n => n,
        };
        let sized = Descriptor { size, ..d.clone() };
        let bytes = kiln_oci::store::read_verified(&layout, &sized, "manifest")
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let media_type = (!d.media_type.is_empty()).then_some(d.media_type.as_str());
        let what = format!("{SCHEME}{}@{}", self.path.display(), d.digest);
        let (manifest, media_type) =
            Manifest::parse(&what, &bytes, media_type).map_err(|e| e.to_string())?;
        let desc = Descriptor {
            media_type,
            size: bytes.len() as u64,
            ..d.clone()
        };
        Ok((desc, bytes, manifest))
    }

    /// Copies a blob of the layout into the store, verified against its digest and size.
    pub fn import_blob(&self, store: &LocalStore, d: &Descriptor) -> Result<(), String> {
        if ImageSink::has_blob(&store.content, &d.digest).map_err(|e| e.to_string())? {
            return Ok(());
        }
        let layout = self.blobs()?;
        let mut data = verifying(layout.open_blob(d).map_err(|e| e.to_string())?, d, "blob");
        store
            .content
            .write_blob(d, &mut data)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// The pinned form used in the graph: `oci-layout://PATH@DIGEST`.
    pub fn pinned(path: &Path, digest: &Digest) -> String {
        format!("{SCHEME}{}@{digest}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = LayoutRef::parse("/x/y:v1").unwrap();
        assert_eq!(
            (r.path, r.tag, r.digest),
            (PathBuf::from("/x/y"), Some("v1".into()), None)
        );
        let r = LayoutRef::parse(&format!("/x/y@{d}")).unwrap();
        assert_eq!(r.path, PathBuf::from("/x/y"));
        assert_eq!(r.digest.unwrap().to_string(), d);
        let r = LayoutRef::parse("rel/dir").unwrap();
        assert_eq!((r.path, r.tag), (PathBuf::from("rel/dir"), None));
        assert!(LayoutRef::parse("/x@sha256:short").is_err());
        assert!(LayoutRef::parse("").is_err());
    }
}
