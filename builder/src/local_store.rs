//! The local image store (the content store of the state directory) as the registry client sees
//! it, plus lookups of local images by reference or ID.

use kiln_oci::media_type::is_index;

use kiln_oci::{Descriptor, ImageManifest, Manifest, Platform};
use kiln_oci::{Digest, Reference};
use kiln_registry::store::BlobStore;
use kiln_solver::content::ContentStore;
use kiln_solver::state::StateDir;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::{Path, PathBuf};

/// Opens the state directory chosen by `--root` / `KILN_ROOT` / the defaults.
pub fn open_state(root: Option<&Path>) -> Result<StateDir> {
    let root = StateDir::choose_root(root).map_err(crate::hints::state_failure)?;
    StateDir::open(&root)
        .into_diagnostic()
        .wrap_err_with(|| format!("opening state directory {}", root.display()))
}

/// [`ContentStore`] adapted to the registry client's [`BlobStore`].
pub struct LocalStore {
    /// The content store.
    pub content: ContentStore,
}

fn store_err(e: kiln_solver::content::ContentError) -> kiln_registry::Error {
    kiln_registry::Error::io("local store", std::io::Error::other(e.to_string()))
}

impl BlobStore for LocalStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.content.exists(digest).unwrap_or(false)
    }

    fn temp_path(&self) -> kiln_registry::Result<PathBuf> {
        let f = tempfile::Builder::new()
            .prefix("pull-")
            .tempfile_in(self.content.ingest_dir())
            .map_err(|e| kiln_registry::Error::io("creating temporary file", e))?;
        // Keep the name; the downloader recreates the file and commits or removes it.
        let (_, path) = f
            .keep()
            .map_err(|e| kiln_registry::Error::io("creating temporary file", e.error))?;
        Ok(path)
    }

    fn commit_blob(&self, digest: &Digest, tmp: &Path) -> kiln_registry::Result<()> {
        self.content.commit_file(digest, tmp).map_err(store_err)
    }

    fn open_blob(&self, digest: &Digest) -> kiln_registry::Result<std::fs::File> {
        self.content.open_blob(digest).map_err(store_err)
    }
}

/// A local image: a tag of the store, or an untagged image kept by ID.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Full normalised name, e.g. `docker.io/library/busybox:latest`; empty when untagged.
    pub name: String,
    /// The manifest or index it points to (without the ref-name annotation).
    pub descriptor: Descriptor,
    /// Its image ID (see [`LocalStore::image_id`]).
    pub id: Digest,
}

impl LocalStore {
    /// Opens the local store of the state directory.
    pub fn open(root: Option<&Path>) -> Result<Self> {
        Ok(LocalStore {
            content: open_state(root)?.content().clone(),
        })
    }

    /// The image ID of a root, as buildx prints it for `--iidfile` and docker lists it: the
    /// config digest of a single image, the digest of an index (several platforms have no
    /// one config).
    pub fn image_id(&self, d: &Descriptor) -> Digest {
        match self.manifest(d) {
            Ok(Manifest::Image(m)) if !is_index(&d.media_type) => m.config.digest,
            _ => d.digest.clone(),
        }
    }

    /// All tagged images.
    pub fn images(&self) -> Result<Vec<LocalImage>> {
        let tags = self.content.tags().into_diagnostic()?;
        tags.iter()
            .map(|t| {
                let mut d = t.descriptor.clone();
                if let Some(a) = d.annotations.as_mut() {
                    a.remove(kiln_oci::media_type::ANNOTATION_REF_NAME);
                }
                if d.annotations.as_ref().is_some_and(|a| a.is_empty()) {
                    d.annotations = None;
                }
                Ok(LocalImage {
                    name: t.name.clone(),
                    id: self.image_id(&d),
                    descriptor: d,
                })
            })
            .collect()
    }

    /// Images kept without a tag (docker's `<none>`): untagged builds and archive images
    /// without a name, unless a tag points at them by now.
    pub fn untagged(&self) -> Result<Vec<LocalImage>> {
        let tagged: std::collections::BTreeSet<Digest> = self
            .images()?
            .into_iter()
            .map(|i| i.descriptor.digest)
            .collect();
        let mut out: Vec<LocalImage> = Vec::new();
        for d in self.content.untagged().into_diagnostic()? {
            let d = d.clone();
            if tagged.contains(&d.digest) || out.iter().any(|i| i.descriptor.digest == d.digest) {
                continue;
            }
            out.push(LocalImage {
                name: String::new(),
                id: self.image_id(&d),
                descriptor: d,
            });
        }
        Ok(out)
    }

    /// Finds a local image by reference (`busybox`, `127.0.0.1:5000/x:1`) or by image ID
    /// (`sha256:` optional; a unique prefix of at least 4 hex digits, as docker takes it).
    /// A manifest or index digest is accepted too when no image ID matches.
    pub fn find(&self, what: &str) -> Result<LocalImage> {
        let images = self.images()?;
        if let Ok(r) = Reference::parse(what) {
            let name = r.to_string();
            if let Some(i) = images.iter().find(|i| i.name == name) {
                return Ok(i.clone());
            }
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let all: Vec<LocalImage> = images.into_iter().chain(self.untagged()?).collect();
            fn by_id(i: &LocalImage) -> &Digest {
                &i.id
            }
            fn by_root(i: &LocalImage) -> &Digest {
                &i.descriptor.digest
            }
            for key in [by_id as fn(&LocalImage) -> &Digest, by_root] {
                let matches: Vec<&LocalImage> = all
                    .iter()
                    .filter(|i| key(i).hex().starts_with(&hex))
                    .collect();
                let distinct: std::collections::BTreeSet<&Digest> =
                    matches.iter().map(|i| key(i)).collect();
                match distinct.len() {
                    0 => {}
                    1 => return Ok(matches[0].clone()),
                    _ => {
                        return Err(miette!(
                            "image ID {what} is ambiguous (it matches {} images)",
                            distinct.len()
                        ))
                    }
                }
            }
        }
        Err(miette!(
            "no such image: {what} (see `kiln images`; `kiln pull {what}` fetches it)"
        ))
    }

    /// Every local image (tagged or not) with the image ID `id`.
    pub fn with_id(&self, id: &Digest) -> Result<Vec<LocalImage>> {
        Ok(self
            .images()?
            .into_iter()
            .chain(self.untagged()?)
            .filter(|i| i.id == *id)
            .collect())
    }

    /// Keeps an image without a tag, reachable by its ID (an untagged build, an unnamed
    /// archive image).
    pub fn keep_untagged(&self, d: &Descriptor) -> Result<()> {
        self.content
            .add_untagged(&d.clone())
            .into_diagnostic()
            .wrap_err_with(|| format!("keeping image {}", d.digest))
    }

    /// Stores a tag.
    pub fn tag(&self, name: &Reference, d: &Descriptor) -> Result<()> {
        self.content
            .set_tag(&name.to_string(), &d.clone())
            .into_diagnostic()
            .wrap_err_with(|| format!("tagging {name}"))?;
        // A tagged image is no longer `<none>`, as in docker.
        self.content
            .remove_untagged(&d.clone().digest.clone())
            .into_diagnostic()
            .wrap_err_with(|| format!("tagging {name}"))?;
        Ok(())
    }

    /// Parses the manifest a descriptor points to.
    pub fn manifest(&self, d: &Descriptor) -> Result<Manifest> {
        let bytes = self.read_blob(&d.digest).into_diagnostic()?;
        Manifest::parse(d.digest.as_ref(), &bytes, Some(&d.media_type))
            .map(|(m, _)| m)
            .into_diagnostic()
    }

    /// The image manifests of a tagged root present locally, with their platforms: an entry
    /// without one (a single manifest, as `docker save` and builds store them) gets the
    /// platform its config declares, so an image is never taken for another platform.
    pub fn platform_manifests(&self, d: &Descriptor) -> Result<Vec<(Descriptor, ImageManifest)>> {
        let found = match self.manifest(d)? {
            Manifest::Image(m) => vec![(d.clone(), *m)],
            Manifest::Index(idx) => {
                let mut out = Vec::new();
                for c in idx.manifests {
                    // Attestation manifests (`unknown/unknown`) describe an image, are none.
                    let attestation = c.annotation(crate::attest::store::REFERENCE_TYPE)
                        == Some(crate::attest::store::ATTESTATION_MANIFEST);
                    if attestation || !self.has_blob(&c.digest) {
                        continue;
                    }
                    if let Manifest::Image(m) = self.manifest(&c)? {
                        out.push((c, *m));
                    }
                }
                out
            }
        };
        Ok(found
            .into_iter()
            .map(|(mut desc, m)| {
                if desc.platform.is_none() {
                    desc.platform = self
                        .read_blob(&m.config.digest)
                        .ok()
                        .and_then(|c| Platform::from_config(&c));
                }
                (desc, m)
            })
            .collect())
    }

    /// The manifest of a root for a platform (host by default; a root holding one image
    /// gives it when no platform is asked for).
    pub fn manifest_for(
        &self,
        d: &Descriptor,
        platform: Option<&Platform>,
    ) -> Result<(Descriptor, ImageManifest)> {
        let all = self.platform_manifests(d)?;
        if all.len() == 1 && platform.is_none() {
            return all.into_iter().next().ok_or_else(|| miette!("empty image"));
        }
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let have = platforms_of(&all);
        all.into_iter()
            .find(|(desc, _)| desc.platform.as_ref().is_some_and(|p| want.matches(p)))
            .ok_or_else(|| {
                miette!(
                    "image {} has no manifest for platform {want} (the store has {have})",
                    d.digest
                )
            })
    }

    /// Reads and parses an image config.
    pub fn config(&self, m: &ImageManifest) -> Result<serde_json::Value> {
        let bytes = self.read_blob(&m.config.digest).into_diagnostic()?;
        serde_json::from_slice(&bytes).into_diagnostic()
    }
}

/// The platforms of manifests, for messages: `linux/amd64, linux/arm64`, or `none`.
pub fn platforms_of(manifests: &[(Descriptor, ImageManifest)]) -> String {
    let v: Vec<String> = manifests
        .iter()
        .map(|(d, _)| {
            d.platform.as_ref().map_or_else(
                || "an image of unknown platform".to_string(),
                |p| p.to_string(),
            )
        })
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}
