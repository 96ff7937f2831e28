//! Checking one signature: the key signed exactly this payload, and the payload claims the
//! manifest being verified.

use super::payload::{SimpleSigning, TYPE};
use super::store::{Found, SIGNATURE_ANNOTATION};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kiln_oci::Digest;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};

/// Signs `payload` with ECDSA P-256 / SHA-256: the base64 of the ASN.1 DER signature, as
/// cosign's annotation holds it.
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    use p256::ecdsa::signature::Signer as _;
    let sig: Signature = key.sign(payload);
    B64.encode(sig.to_der().as_bytes())
}

/// Checks a found signature against `key` and `subject`; its payload when it holds, else
/// why not (a sentence naming the payload digest).
pub fn check(found: &Found, key: &VerifyingKey, subject: &Digest) -> Result<SimpleSigning, String> {
    let name = &found.layer.digest;
    let sig_b64 = found
        .layer
        .annotation(SIGNATURE_ANNOTATION)
        .ok_or_else(|| format!("payload {name}: no {SIGNATURE_ANNOTATION} annotation"))?;
    let der = B64
        .decode(sig_b64.trim())
        .map_err(|e| format!("payload {name}: the signature is not base64: {e}"))?;
    let sig = DerSignature::try_from(der.as_slice()).map_err(|_| {
        format!("payload {name}: the signature is not an ASN.1 DER ECDSA signature")
    })?;
    key.verify(&found.payload, &sig).map_err(|_| {
        format!("payload {name}: the signature does not verify with this key (signed with another key, or the payload was altered)")
    })?;
    let claims: SimpleSigning = serde_json::from_slice(&found.payload)
        .map_err(|e| format!("payload {name}: not a simple-signing payload: {e}"))?;
    if claims.critical.kind != TYPE {
        return Err(format!(
            "payload {name}: type {:?} is not {TYPE:?}",
            claims.critical.kind
        ));
    }
    if claims.critical.image.docker_manifest_digest != subject.to_string() {
        return Err(format!(
            "payload {name}: signs manifest {}, not {subject}",
            claims.critical.image.docker_manifest_digest
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::payload::MEDIA_TYPE;
    use kiln_oci::{Descriptor, Reference};
    use rand_core::OsRng;

    fn found(payload: &[u8], sig: &str) -> Found {
        Found {
            layer: Descriptor::of(MEDIA_TYPE, payload).with_annotation(SIGNATURE_ANNOTATION, sig),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn checks_key_payload_and_digest() {
        let key = SigningKey::random(&mut OsRng);
        let other = SigningKey::random(&mut OsRng);
        let r = Reference::parse("127.0.0.1:5000/x:1").unwrap();
        let d = Digest::of(b"manifest");
        let payload = serde_json::to_vec(&SimpleSigning::new(&r, &d)).unwrap();
        let sig = sign(&key, &payload);
        assert!(check(&found(&payload, &sig), key.verifying_key(), &d).is_ok());
        let err = check(&found(&payload, &sig), other.verifying_key(), &d).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = check(
            &found(&payload, &sig),
            key.verifying_key(),
            &Digest::of(b"x"),
        )
        .unwrap_err();
        assert!(err.contains("signs manifest"), "{err}");
        let mut altered = payload.clone();
        altered.push(b' ');
        let err = check(&found(&altered, &sig), key.verifying_key(), &d).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }
}
