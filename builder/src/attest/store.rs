//! Attestations stored as buildx stores them: per platform image, an attestation manifest in
//! the image index (platform `unknown/unknown`, annotated with the image it describes) whose
//! layers are in-toto statements.

use super::statement::Statement;
use kiln_oci::media_type::{OCI_CONFIG, OCI_MANIFEST};
use kiln_oci::{Descriptor, ImageManifest, Platform};
use kiln_solver::content::{ContentError, ContentStore};
use std::collections::BTreeMap;

/// The media type of an in-toto statement layer.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The layer annotation naming the statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// The index annotation saying what an entry is.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The index annotation naming the image an attestation manifest describes.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// [`REFERENCE_TYPE`]'s value for attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// Whether an index entry is an attestation manifest (buildx's `attestation-manifest`).
pub fn is_attestation_manifest(d: &Descriptor) -> bool {
    d.annotation(REFERENCE_TYPE) == Some(ATTESTATION_MANIFEST)
}

/// Writes the attestation manifest of the image `subject` holding `statements` (one layer
/// each), and returns its index entry.
pub fn write_attestation_manifest(
    store: &ContentStore,
    subject: &Descriptor,
    statements: &[Statement],
) -> Result<Descriptor, ContentError> {
    let mut layers = Vec::with_capacity(statements.len());
    for s in statements {
        let info = store.put_json(IN_TOTO_MEDIA_TYPE, s)?;
        layers.push(Descriptor {
            annotations: Some(BTreeMap::from([(
                PREDICATE_TYPE_ANNOTATION.to_string(),
                s.predicate_type.clone(),
            )])),
            ..info
        });
    }
    // The statements are stored as they are: their diffIDs are their digests.
    let config = serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    });
    let config = store.put_json(OCI_CONFIG, &config)?;
    let manifest = ImageManifest::new(OCI_MANIFEST, config, layers);
    let mut desc = store.put_json(OCI_MANIFEST, &manifest)?;
    desc.platform = Some(Platform::new("unknown", "unknown", None));
    desc.annotations = Some(BTreeMap::from([
        (REFERENCE_DIGEST.to_string(), subject.digest.to_string()),
        (REFERENCE_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
    ]));
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::statement::Subject;

    #[test]
    fn the_manifest_holds_each_statement_as_an_annotated_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        let image = store.put_bytes(b"{}").unwrap();
        let subject = Descriptor::new(OCI_MANIFEST, image.digest.clone(), image.size);
        let st = Statement::new(
            vec![Subject::for_manifest(None, None, &image.digest)],
            "https://slsa.dev/provenance/v1",
            serde_json::json!({}),
        );
        let desc = write_attestation_manifest(&store, &subject, std::slice::from_ref(&st)).unwrap();
        let ann = desc.annotations.as_ref().unwrap();
        assert_eq!(ann[REFERENCE_TYPE], ATTESTATION_MANIFEST);
        assert_eq!(ann[REFERENCE_DIGEST], image.digest.to_string());
        assert_eq!(
            desc.platform.as_ref().unwrap().to_string(),
            "unknown/unknown"
        );
        let m: ImageManifest = store.read_json(&desc.digest).unwrap();
        assert_eq!(m.layers[0].media_type, IN_TOTO_MEDIA_TYPE);
        let back: Statement =
            serde_json::from_slice(&store.read_blob(&m.layers[0].digest).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}
