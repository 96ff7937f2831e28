//! What `imagetools inspect --format` shows beyond the manifest, found as buildx's loader
//! finds it: each platform image, its config, and the in-toto statements of its
//! attestation manifests, in the index (buildx's form) or as OCI referrers.

use crate::attest::referrers::{attestations_of, FoundAttestation};
use crate::attest::statement::SPDX_DOCUMENT;
use crate::attest::store::{PREDICATE_TYPE_ANNOTATION, REFERENCE_DIGEST};
use crate::registry_opts::registry_failure;
use kiln_oci::media_type::{is_index, is_manifest};
use kiln_oci::{Descriptor, Digest, ImageManifest, Manifest, Platform, Reference};
use kiln_registry::RegistryClient;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// The index annotation buildx reads first for an attestation's image (the older
/// [`REFERENCE_DIGEST`] second).
const REFERENCE_DIGEST_NEW: &str = "com.docker.reference.digest";
/// Manifests walked at most below the root (a hostile index could list millions).
const MAX_MANIFESTS: usize = 1024;
/// Nested indexes followed at most this deep.
const MAX_DEPTH: usize = 4;
/// A config is read into memory: at most this big.
const MAX_BLOB: u64 = 64 << 20;
/// The predicate type prefix of SLSA provenance (v0.2 and v1).
const SLSA_PREFIX: &str = "https://slsa.dev/provenance/";

/// What the template needs, so nothing else is fetched.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Image configs (`.Image`).
    pub config: bool,
    /// Attestations (`.Provenance`, `.SBOM`).
    pub attestations: bool,
}

/// One platform image and what was read of it.
#[derive(Debug, Default)]
pub struct Asset {
    /// Its config, when wanted.
    pub config: Option<Value>,
    /// Its SLSA predicate, when it has one.
    pub provenance: Option<Value>,
    /// Its SPDX predicates, in index order.
    pub sboms: Vec<Value>,
}

impl Asset {
    /// buildx's `provenanceStub`: `{"SLSA": predicate}`, `{}` without one.
    pub fn provenance_stub(&self) -> Value {
        match &self.provenance {
            Some(p) => json!({ "SLSA": p }),
            None => json!({}),
        }
    }

    /// buildx's `sbomStub`: the first SPDX document as `SPDX`, the others (context and
    /// stage scans) as `AdditionalSPDXs`; `{}` without one.
    pub fn sbom_stub(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some((first, rest)) = self.sboms.split_first() {
            out.insert("SPDX".into(), first.clone());
            if !rest.is_empty() {
                out.insert("AdditionalSPDXs".into(), Value::Array(rest.to_vec()));
            }
        }
        Value::Object(out)
    }

    /// Whether buildx would list this image under `.SBOM`/`.Provenance` of an index.
    fn has_provenance(&self) -> bool {
        self.provenance.is_some()
    }
}

/// The images under a reference, keyed by normalised platform (`linux/arm/v7`).
#[derive(Debug, Default)]
pub struct Loaded {
    /// Per platform; sorted.
    pub images: BTreeMap<String, Asset>,
}

impl Loaded {
    /// Whether buildx prints maps keyed by platform (more than one image) or one image's
    /// values.
    pub fn multi(&self) -> bool {
        self.images.len() > 1
    }

    /// `.Provenance` as buildx prints it.
    pub fn provenance(&self) -> Value {
        self.per_image(|a| a.has_provenance().then(|| a.provenance_stub()))
    }

    /// `.SBOM` as buildx prints it.
    pub fn sbom(&self) -> Value {
        self.per_image(|a| (!a.sboms.is_empty()).then(|| a.sbom_stub()))
    }

    /// `.Image`: the config, or the configs by platform.
    pub fn image(&self) -> Value {
        self.per_image(|a| a.config.clone())
    }

    /// One image's value (an empty object when it has none, as buildx's zero stub prints),
    /// or a map of the images that have one. With no image at all: `null`.
    fn per_image(&self, f: impl Fn(&Asset) -> Option<Value>) -> Value {
        if self.images.is_empty() {
            return Value::Null;
        }
        if !self.multi() {
            return self
                .images
                .values()
                .next()
                .and_then(&f)
                .unwrap_or_else(|| json!({}));
        }
        Value::Object(
            self.images
                .iter()
                .filter_map(|(p, a)| f(a).map(|v| (p.clone(), v)))
                .collect(),
        )
    }
}

/// Walks the manifest `root` (already fetched as `bytes`) of `r`, then reads what `want`
/// asks of each image.
pub async fn load(
    client: &RegistryClient,
    r: &Reference,
    root: Descriptor,
    bytes: Vec<u8>,
    want: Wanted,
) -> Result<Loaded> {
    let mut manifests: BTreeMap<Digest, ImageManifest> = BTreeMap::new();
    let mut images: BTreeMap<String, Digest> = BTreeMap::new();
    let mut queue = VecDeque::from([(root, Some(bytes), 0usize)]);
    let mut walked = 0usize;
    while let Some((desc, bytes, depth)) = queue.pop_front() {
        walked += 1;
        if walked > MAX_MANIFESTS {
            return Err(miette!(
                "{r}: more than {MAX_MANIFESTS} manifests under one reference"
            ));
        }
        let bytes = match bytes {
            Some(b) => b,
            None => {
                client
                    .get_manifest_as(r, desc.digest.as_ref())
                    .await
                    .map_err(registry_failure)?
                    .bytes
            }
        };
        let what = format!("{}@{}", r.name(), desc.digest);
        if is_index(&desc.media_type) {
            let (Manifest::Index(idx), _) =
                Manifest::parse(&what, &bytes, Some(&desc.media_type)).into_diagnostic()?
            else {
                return Err(miette!("{what}: declared an index, is a manifest"));
            };
            if depth >= MAX_DEPTH {
                return Err(miette!("{what}: indexes nested more than {MAX_DEPTH} deep"));
            }
            queue.extend(idx.manifests.into_iter().map(|d| (d, None, depth + 1)));
            continue;
        }
        if !is_manifest(&desc.media_type) {
            // buildx skips what is neither (artifacts of other kinds).
            continue;
        }
        let (Manifest::Image(m), _) =
            Manifest::parse(&what, &bytes, Some(&desc.media_type)).into_diagnostic()?
        else {
            return Err(miette!("{what}: declared a manifest, is an index"));
        };
        // An attestation manifest names its image: it is read with that image below.
        if [REFERENCE_DIGEST_NEW, REFERENCE_DIGEST]
            .iter()
            .any(|k| desc.annotation(k).is_some())
        {
            continue;
        }
        let platform = match &desc.platform {
            Some(p) => p.key(),
            None => {
                let cfg = read_blob(client, r, &m.config).await?;
                Platform::from_config(&cfg).unwrap_or_default()
            }
        };
        images.insert(platform.to_string(), desc.digest.clone());
        manifests.insert(desc.digest.clone(), *m);
    }
    let mut out = Loaded::default();
    for (platform, digest) in images {
        let mut asset = Asset::default();
        if want.config {
            if let Some(m) = manifests.get(&digest) {
                let cfg = read_blob(client, r, &m.config).await?;
                asset.config = Some(
                    serde_json::from_slice(&cfg)
                        .into_diagnostic()
                        .wrap_err_with(|| format!("{}: the config of {digest}", r.name()))?,
                );
            }
        }
        if want.attestations {
            let found = attestations_of(client, r, &digest)
                .await
                .map_err(registry_failure)?;
            for f in &found {
                absorb(f, &mut asset);
            }
        }
        out.images.insert(platform, asset);
    }
    Ok(out)
}

/// Takes one attestation manifest's predicates into `asset`, by each layer's predicate-type
/// annotation as buildx does: every SPDX document, and the manifest's first SLSA
/// provenance (a later manifest's replaces it).
fn absorb(found: &FoundAttestation, asset: &mut Asset) {
    let mut provenance_seen = false;
    for (layer, statement) in &found.statements {
        let predicate_type = layer.annotation(PREDICATE_TYPE_ANNOTATION).unwrap_or("");
        if predicate_type == SPDX_DOCUMENT {
            asset.sboms.push(statement.predicate.clone());
        } else if predicate_type.starts_with(SLSA_PREFIX) && !provenance_seen {
            asset.provenance = Some(statement.predicate.clone());
            provenance_seen = true;
        }
    }
}

/// A small blob (a config) into memory, refusing one bigger than [`MAX_BLOB`].
async fn read_blob(client: &RegistryClient, r: &Reference, desc: &Descriptor) -> Result<Vec<u8>> {
    if desc.size > MAX_BLOB {
        return Err(miette!(
            "{}@{}: {} bytes, more than the {MAX_BLOB} a config may have",
            r.name(),
            desc.digest,
            desc.size
        ));
    }
    let tmp = tempfile::tempdir().into_diagnostic()?;
    let path = tmp.path().join("blob");
    client
        .fetch_blob(r, desc, &path, &|_| {})
        .await
        .map_err(registry_failure)?;
    std::fs::read(&path).into_diagnostic()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(provenance: Option<Value>, sboms: Vec<Value>) -> Asset {
        Asset {
            provenance,
            sboms,
            ..Asset::default()
        }
    }

    #[test]
    fn one_image_prints_its_stub_an_index_a_map_by_platform() {
        let mut one = Loaded::default();
        one.images.insert(
            "linux/amd64".into(),
            asset(
                Some(json!({"a": 1})),
                vec![json!({"s": 1}), json!({"s": 2})],
            ),
        );
        assert_eq!(one.provenance(), json!({"SLSA": {"a": 1}}));
        assert_eq!(
            one.sbom(),
            json!({"SPDX": {"s": 1}, "AdditionalSPDXs": [{"s": 2}]})
        );
        let mut bare = Loaded::default();
        bare.images
            .insert("linux/amd64".into(), asset(None, vec![]));
        assert_eq!(bare.provenance(), json!({}));
        assert_eq!(bare.sbom(), json!({}));
        let mut two = Loaded::default();
        two.images
            .insert("linux/amd64".into(), asset(Some(json!(1)), vec![json!(2)]));
        two.images.insert("linux/arm64".into(), asset(None, vec![]));
        assert_eq!(two.provenance(), json!({"linux/amd64": {"SLSA": 1}}));
        assert_eq!(two.sbom(), json!({"linux/amd64": {"SPDX": 2}}));
        assert_eq!(Loaded::default().sbom(), Value::Null);
    }
}
