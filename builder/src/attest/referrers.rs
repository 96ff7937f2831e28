//! Attestations as OCI 1.1 referrers (`-o type=registry,…,referrers=true`): per platform
//! image, an artifact manifest whose `subject` is the image, pushed beside the image instead
//! of listed in its index (no `unknown/unknown` entries); and reading attestations back
//! whichever way they were stored.
//!
//! The artifact is BuildKit's attestation manifest in its `oci-artifact=true` form
//! (`artifactType` [`ATTESTATION_ARTIFACT_TYPE`], the empty config, `subject` set), so tools
//! that read BuildKit's referrers read kiln's.

use super::statement::Statement;
use super::store::{is_attestation_manifest, ATTESTATION_MANIFEST, IN_TOTO_MEDIA_TYPE};
use super::store::{REFERENCE_DIGEST, REFERENCE_TYPE};
use kiln_oci::media_type::{is_index, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Reference};
use kiln_registry::{Error, RegistryClient};
use kiln_solver::content::{ContentError, ContentStore};
use std::collections::BTreeMap;

/// The `artifactType` of an attestation artifact (BuildKit's, with `oci-artifact=true`).
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// OCI 1.1's empty descriptor media type, the config of artifacts.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty descriptor's content.
const EMPTY_JSON: &[u8] = b"{}";
/// A statement larger than this is refused (an SBOM of a large image is a few MB).
const MAX_STATEMENT: u64 = 64 << 20;
/// Attestation manifests read per image, and statements per manifest, at most.
const MAX_ATTESTATIONS: usize = 64;

/// A build's images in referrers form.
#[derive(Debug, Clone)]
pub struct ReferrersForm {
    /// What the outputs name: the index without attestation entries, or the one image.
    pub root: Descriptor,
    /// Each platform image's attestation artifact.
    pub artifacts: Vec<Artifact>,
}

/// One attestation artifact and the image it is about.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The artifact manifest (with its `artifactType` and annotations, as a referrers
    /// index lists it).
    pub manifest: Descriptor,
    /// The platform image's manifest.
    pub subject: Descriptor,
}

/// Rewrites a buildx-style index (attestation manifests as index entries) into the
/// referrers form, writing the new documents to `store`. Without `keep_index` an index left
/// with one image is replaced by that image, as the build would be without attestations.
pub fn to_referrers(
    store: &ContentStore,
    index: &Descriptor,
    keep_index: bool,
) -> Result<ReferrersForm, ContentError> {
    let parsed: ImageIndex = store.read_json(&index.digest)?;
    let (attestations, images): (Vec<Descriptor>, Vec<Descriptor>) = parsed
        .manifests
        .iter()
        .cloned()
        .partition(is_attestation_manifest);
    if attestations.is_empty() {
        return Ok(ReferrersForm {
            root: index.clone(),
            artifacts: Vec::new(),
        });
    }
    let empty = store.put_bytes(EMPTY_JSON)?;
    let config = Descriptor::new(EMPTY_MEDIA_TYPE, empty.digest, empty.size);
    let mut artifacts = Vec::with_capacity(attestations.len());
    for att in &attestations {
        let Some(subject) = images
            .iter()
            .find(|i| Some(i.digest.to_string().as_str()) == att.annotation(REFERENCE_DIGEST))
        else {
            continue;
        };
        let layers = store.read_json::<ImageManifest>(&att.digest)?.layers;
        artifacts.push(write_artifact(store, config.clone(), layers, subject)?);
    }
    let root = match images.as_slice() {
        [one] if !keep_index => one.clone(),
        _ => {
            let mut clean = parsed.clone();
            clean.manifests = images;
            let media_type = clean
                .media_type
                .clone()
                .unwrap_or_else(|| index.media_type.clone());
            store.put_json(&media_type, &clean)?
        }
    };
    Ok(ReferrersForm { root, artifacts })
}

/// Writes the artifact manifest holding `layers` (in-toto statements) about `subject`.
fn write_artifact(
    store: &ContentStore,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: &Descriptor,
) -> Result<Artifact, ContentError> {
    let annotations = BTreeMap::from([
        (REFERENCE_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
        (REFERENCE_DIGEST.to_string(), subject.digest.to_string()),
    ]);
    let subject = Descriptor::new(&subject.media_type, subject.digest.clone(), subject.size);
    let mut manifest = ImageManifest::new(OCI_MANIFEST, config, layers);
    manifest.artifact_type = Some(ATTESTATION_ARTIFACT_TYPE.to_string());
    manifest.subject = Some(subject.clone());
    manifest.annotations = Some(annotations.clone());
    let mut desc = store.put_json(OCI_MANIFEST, &manifest)?;
    desc.artifact_type = Some(ATTESTATION_ARTIFACT_TYPE.to_string());
    desc.annotations = Some(annotations);
    Ok(Artifact {
        manifest: desc,
        subject,
    })
}

/// One attestation manifest of an image, read back.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "read by `imagetools inspect` (helper sbomx's branch)"
)]
pub struct FoundAttestation {
    /// The attestation manifest (an index entry, or a referrer).
    pub manifest: Descriptor,
    /// Its in-toto statements, each with its layer descriptor (annotated with
    /// `in-toto.io/predicate-type`).
    pub statements: Vec<(Descriptor, Statement)>,
}

/// The attestations of the image `subject` in `r`'s repository, stored either way: entries
/// of the index `r` names (buildx's `attestation-manifest`s about `subject`), and referrers
/// of `subject` of [`ATTESTATION_ARTIFACT_TYPE`] (referrers API, else the fallback tag).
/// Each manifest once, index entries first.
#[allow(
    dead_code,
    reason = "read by `imagetools inspect` (helper sbomx's branch)"
)]
pub async fn attestations_of(
    client: &RegistryClient,
    r: &Reference,
    subject: &Digest,
) -> kiln_registry::Result<Vec<FoundAttestation>> {
    let mut manifests: Vec<Descriptor> = index_entries(client, r)
        .await?
        .into_iter()
        .filter(|d| {
            is_attestation_manifest(d)
                && d.annotation(REFERENCE_DIGEST) == Some(subject.to_string().as_str())
        })
        .collect();
    for d in client
        .referrers(r, subject, Some(ATTESTATION_ARTIFACT_TYPE))
        .await?
    {
        if !manifests.iter().any(|m| m.digest == d.digest) {
            manifests.push(d);
        }
    }
    manifests.truncate(MAX_ATTESTATIONS);
    let mut out = Vec::with_capacity(manifests.len());
    for manifest in manifests {
        let statements = read_statements(client, r, &manifest).await?;
        out.push(FoundAttestation {
            manifest,
            statements,
        });
    }
    Ok(out)
}

/// Every image of the index `r` names (or the one image it names) with its attestations
/// ([`attestations_of`]), in the index's order; attestation entries are not images.
#[allow(
    dead_code,
    reason = "read by `imagetools inspect` (helper sbomx's branch)"
)]
pub async fn all_attestations(
    client: &RegistryClient,
    r: &Reference,
) -> kiln_registry::Result<Vec<(Descriptor, Vec<FoundAttestation>)>> {
    let images: Vec<Descriptor> = match index_entries(client, r).await? {
        entries if !entries.is_empty() => entries
            .into_iter()
            .filter(|d| !is_attestation_manifest(d))
            .collect(),
        _ => {
            let m = client.get_manifest(r).await?;
            let media_type = m.content_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
            vec![Descriptor::new(&media_type, m.digest, m.bytes.len() as u64)]
        }
    };
    let mut out = Vec::with_capacity(images.len());
    for image in images.into_iter().take(MAX_ATTESTATIONS) {
        let found = attestations_of(client, r, &image.digest).await?;
        out.push((image, found));
    }
    Ok(out)
}

/// The entries of the index `r` names; none when it names an image.
async fn index_entries(
    client: &RegistryClient,
    r: &Reference,
) -> kiln_registry::Result<Vec<Descriptor>> {
    let m = client.get_manifest(r).await?;
    if !m.content_type.as_deref().is_some_and(is_index) {
        return Ok(Vec::new());
    }
    let index: ImageIndex =
        serde_json::from_slice(&m.bytes).map_err(|e| protocol(r, &m.digest, e))?;
    Ok(index.manifests)
}

/// The in-toto statements of one attestation manifest (other layers are skipped).
async fn read_statements(
    client: &RegistryClient,
    r: &Reference,
    manifest: &Descriptor,
) -> kiln_registry::Result<Vec<(Descriptor, Statement)>> {
    let at = r.with_digest(manifest.digest.clone());
    let fetched = client.get_manifest(&at).await?;
    let parsed: ImageManifest =
        serde_json::from_slice(&fetched.bytes).map_err(|e| protocol(r, &manifest.digest, e))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let mut out = Vec::new();
    for (i, layer) in parsed
        .layers
        .into_iter()
        .filter(|l| l.media_type == IN_TOTO_MEDIA_TYPE)
        .take(MAX_ATTESTATIONS)
        .enumerate()
    {
        if layer.size > MAX_STATEMENT {
            return Err(Error::Protocol {
                registry: r.registry().to_string(),
                reason: format!(
                    "{}@{}: statement {} of {} bytes is larger than {MAX_STATEMENT}",
                    r.name(),
                    manifest.digest,
                    layer.digest,
                    layer.size
                ),
            });
        }
        let path = dir.path().join(i.to_string());
        client.fetch_blob(r, &layer, &path, &|_| {}).await?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading a statement", e))?;
        let statement: Statement =
            serde_json::from_slice(&bytes).map_err(|e| protocol(r, &layer.digest, e))?;
        out.push((layer, statement));
    }
    Ok(out)
}

fn protocol(r: &Reference, digest: &Digest, e: serde_json::Error) -> Error {
    Error::Protocol {
        registry: r.registry().to_string(),
        reason: format!("{}@{digest}: {e}", r.name()),
    }
}
