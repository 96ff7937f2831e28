//! Where signatures live in a registry, both ways cosign knows: layers of the OCI manifest
//! tagged `sha256-<hex>.sig` in the image's repository (each signing appends one), and an
//! OCI 1.1 referrer of the signed manifest (one artifact per signing).

use super::payload;
use kiln_oci::media_type::{OCI_EMPTY, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageManifest, Reference};
use kiln_registry::{Error, RegistryClient, Result};

/// Annotation holding the base64 ASN.1 DER ECDSA signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `artifactType` of signature referrers (what cosign's OCI 1.1 mode uses).
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const EMPTY_JSON: &[u8] = b"{}";
/// A payload is a few hundred bytes; refuse to download anything much larger.
const MAX_PAYLOAD: u64 = 1 << 20;
/// Signatures read per image at most (a hostile repository could list thousands).
const MAX_SIGNATURES: usize = 256;
/// go-containerregistry's zero time, which cosign's signature config carries.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The `.sig` tag of a manifest: `sha256-<hex>.sig`.
pub fn signature_tag(subject: &Digest) -> String {
    format!("{}-{}.sig", subject.algorithm(), subject.hex())
}

/// The manifest `r` names, as a descriptor (digest, size, media type).
pub async fn resolve(client: &RegistryClient, r: &Reference) -> Result<Option<Descriptor>> {
    Ok(client
        .head_manifest(r)
        .await?
        .map(|(digest, size, media_type)| Descriptor::new(&media_type, digest, size)))
}

/// Where [`attach`] put a signature.
#[derive(Debug)]
pub struct Attached {
    /// `repo:sha256-<hex>.sig`.
    pub tag: Reference,
    /// The referrer manifest's digest, or why the registry would not take it (the `.sig`
    /// signature, which cosign and `kiln verify` read, is stored either way).
    pub referrer: std::result::Result<Digest, Error>,
}

/// Stores `signature` (base64 DER) of `payload_bytes` for `subject` in `r`'s repository:
/// appended to the `.sig` manifest and pushed as a referrer.
pub async fn attach(
    client: &RegistryClient,
    r: &Reference,
    subject: &Descriptor,
    payload_bytes: &[u8],
    signature: &str,
) -> Result<Attached> {
    let layer = Descriptor::of(payload::MEDIA_TYPE, payload_bytes)
        .with_annotation(SIGNATURE_ANNOTATION, signature);
    push_small_blob(client, r, &layer, payload_bytes).await?;
    let tag = r.with_tag(&signature_tag(&subject.digest));
    append_to_sig_manifest(client, &tag, vec![layer.clone()]).await?;
    let referrer = push_referrer(client, r, subject, layer).await;
    Ok(Attached { tag, referrer })
}

/// Uploads an in-memory blob (through a temporary file, as the client streams files).
async fn push_small_blob(
    client: &RegistryClient,
    r: &Reference,
    desc: &Descriptor,
    data: &[u8],
) -> Result<()> {
    let file =
        tempfile::NamedTempFile::new().map_err(|e| Error::io("creating a temporary file", e))?;
    std::fs::write(file.path(), data).map_err(|e| Error::io("writing a temporary file", e))?;
    let path = file.path().to_path_buf();
    client
        .push_blob(r, desc, &move || std::fs::File::open(&path), None, &|_| {})
        .await?;
    Ok(())
}

/// Reads the `.sig` manifest (none yet is an empty one), adds the `new` layers it lacks and
/// writes it back with a config listing every layer, as cosign's does.
pub(super) async fn append_to_sig_manifest(
    client: &RegistryClient,
    tag: &Reference,
    new: Vec<Descriptor>,
) -> Result<()> {
    let mut layers = match get_parsed(client, tag).await {
        Ok(m) => m.layers,
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => return Err(e),
    };
    for layer in new {
        if !layers.contains(&layer) {
            layers.push(layer);
        }
    }
    let config = serde_json::json!({
        "architecture": "",
        "created": ZERO_TIME,
        "history": layers.iter().map(|_| serde_json::json!({"created": ZERO_TIME})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>()},
        "config": {},
    });
    let config = serde_json::to_vec(&config).map_err(|e| encode_error(tag, e))?;
    let config_desc = Descriptor::of(kiln_oci::media_type::OCI_CONFIG, &config);
    push_small_blob(client, tag, &config_desc, &config).await?;
    let manifest = ImageManifest::new(OCI_MANIFEST, config_desc, layers);
    let bytes = serde_json::to_vec(&manifest).map_err(|e| encode_error(tag, e))?;
    client.put_manifest(tag, &bytes, OCI_MANIFEST).await?;
    Ok(())
}

/// Pushes the signature as an OCI 1.1 artifact whose subject is the signed manifest.
async fn push_referrer(
    client: &RegistryClient,
    r: &Reference,
    subject: &Descriptor,
    layer: Descriptor,
) -> Result<Digest> {
    let empty = Descriptor::of(OCI_EMPTY, EMPTY_JSON);
    push_small_blob(client, r, &empty, EMPTY_JSON).await?;
    let mut manifest = ImageManifest::new(OCI_MANIFEST, empty, vec![layer]);
    manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());
    manifest.subject = Some(Descriptor::new(
        &subject.media_type,
        subject.digest.clone(),
        subject.size,
    ));
    let bytes = serde_json::to_vec(&manifest).map_err(|e| encode_error(r, e))?;
    let mut desc = Descriptor::of(OCI_MANIFEST, &bytes);
    desc.artifact_type = Some(ARTIFACT_TYPE.to_string());
    client
        .push_referrer(r, &bytes, &desc, &subject.digest)
        .await?;
    Ok(desc.digest)
}

/// One signature found for an image, its payload downloaded and checked against its digest.
#[derive(Debug)]
pub struct Found {
    /// The payload layer (with the signature annotation).
    pub layer: Descriptor,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Every signature of `subject` in `r`'s repository: the `.sig` manifest's layers and the
/// signature referrers' layers, without duplicates.
pub async fn find(client: &RegistryClient, r: &Reference, subject: &Digest) -> Result<Vec<Found>> {
    let mut layers = Vec::new();
    let tag = r.with_tag(&signature_tag(subject));
    match get_parsed(client, &tag).await {
        Ok(m) => layers.extend(m.layers),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e),
    }
    let referrers = client.referrers(r, subject, Some(ARTIFACT_TYPE)).await?;
    for referrer in referrers.into_iter().take(MAX_SIGNATURES) {
        let at = r.with_digest(referrer.digest.clone());
        layers.extend(get_parsed(client, &at).await?.layers);
        if layers.len() > MAX_SIGNATURES {
            break;
        }
    }
    let mut seen = std::collections::HashSet::new();
    layers.retain(|l| {
        l.media_type == payload::MEDIA_TYPE
            && seen.insert((
                l.digest.clone(),
                l.annotation(SIGNATURE_ANNOTATION).map(str::to_owned),
            ))
    });
    layers.truncate(MAX_SIGNATURES);
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let mut out = Vec::new();
    for (i, layer) in layers.into_iter().enumerate() {
        if layer.size > MAX_PAYLOAD {
            return Err(Error::Protocol {
                registry: r.registry().to_string(),
                reason: format!(
                    "signature payload {} of {} is {} bytes, more than a payload can be",
                    layer.digest,
                    r.name(),
                    layer.size
                ),
            });
        }
        let path = dir.path().join(i.to_string());
        client.fetch_blob(r, &layer, &path, &|_| {}).await?;
        let payload =
            std::fs::read(&path).map_err(|e| Error::io("reading a signature payload", e))?;
        out.push(Found { layer, payload });
    }
    Ok(out)
}

/// A signature or referrer manifest; the error says which one is not.
pub(super) async fn get_parsed(client: &RegistryClient, at: &Reference) -> Result<ImageManifest> {
    let m = client.get_manifest(at).await?;
    serde_json::from_slice(&m.bytes).map_err(|e| Error::Protocol {
        registry: at.registry().to_string(),
        reason: format!("{at}: not a signature manifest: {e}"),
    })
}

fn encode_error(at: &Reference, e: serde_json::Error) -> Error {
    Error::Protocol {
        registry: at.registry().to_string(),
        reason: format!("encoding a manifest for {at}: {e}"),
    }
}
