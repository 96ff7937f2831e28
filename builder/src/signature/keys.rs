//! Key files: ECDSA P-256 keys in PEM. Private keys are PKCS#8 (`PRIVATE KEY`), or, with a
//! password, cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` (the PKCS#8 DER sealed with NaCl
//! secretbox under an scrypt-derived key), so cosign reads kiln's keys and kiln cosign's.
//! Public keys are SubjectPublicKeyInfo (`PUBLIC KEY`).

use super::SignError;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// PEM label of cosign's encrypted private keys (older cosign wrote `COSIGN` for `SIGSTORE`).
const ENCRYPTED_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];
/// scrypt cost cosign uses (go-securesystemslib's default): N = 2^15, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// The highest cost accepted from a key file, so a hostile file cannot demand gigabytes.
const MAX_SCRYPT_LOG_N: u8 = 20;
const MAX_SCRYPT_R: u32 = 32;
const MAX_SCRYPT_P: u32 = 16;
/// Key files are small; anything larger is not a key.
const MAX_KEY_FILE: u64 = 64 << 10;

/// The encrypted key document (go-securesystemslib's `encrypted` package layout).
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

/// Go encodes `[]byte` in JSON as padded standard base64.
mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

/// The two files `keygen PREFIX` writes.
#[derive(Debug)]
pub struct KeyPaths {
    /// `PREFIX.key`.
    pub private: PathBuf,
    /// `PREFIX.pub`.
    pub public: PathBuf,
}

impl KeyPaths {
    /// The paths for `prefix`.
    pub fn of(prefix: &Path) -> Self {
        let with = |ext: &str| {
            let mut s = prefix.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        KeyPaths {
            private: with(".key"),
            public: with(".pub"),
        }
    }
}

/// Generates a key pair and writes it (private key mode 0600, encrypted when `password` is
/// given and non-empty); existing files are never overwritten.
pub fn generate(paths: &KeyPaths, password: Option<&str>) -> Result<(), SignError> {
    for p in [&paths.private, &paths.public] {
        if p.symlink_metadata().is_ok() {
            return Err(SignError::Exists { path: p.clone() });
        }
    }
    let key = SigningKey::random(&mut OsRng);
    let private = private_pem(&key, password.filter(|p| !p.is_empty()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| encode_error("the public key", e))?;
    write_new(&paths.private, private.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&paths.public, public.as_bytes(), 0o644) {
        // Half a pair is worse than none: the next try would refuse to overwrite it.
        let _ = std::fs::remove_file(&paths.private);
        return Err(e);
    }
    Ok(())
}

fn encode_error(what: &'static str, e: impl std::fmt::Display) -> SignError {
    SignError::Encode {
        what,
        reason: e.to_string(),
    }
}

/// The private key's PEM: PKCS#8, or sealed as cosign does with a password.
fn private_pem(key: &SigningKey, password: Option<&str>) -> Result<String, SignError> {
    let Some(password) = password else {
        return key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| encode_error("the private key", e));
    };
    let der = key
        .to_pkcs8_der()
        .map_err(|e| encode_error("the private key", e))?;
    let mut salt = vec![0u8; 32];
    let mut nonce = vec![0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let box_key = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
    let ciphertext = XSalsa20Poly1305::new((&box_key).into())
        .encrypt(nonce.as_slice().into(), der.as_bytes())
        .map_err(|e| encode_error("the private key", e))?;
    let sealed = Sealed {
        kdf: Kdf {
            name: "scrypt".into(),
            params: KdfParams {
                n: 1 << SCRYPT_LOG_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt,
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce,
        },
        ciphertext,
    };
    let json = serde_json::to_vec(&sealed).map_err(|e| encode_error("the private key", e))?;
    pem_rfc7468::encode_string(ENCRYPTED_LABELS[0], pem_rfc7468::LineEnding::LF, &json)
        .map_err(|e| encode_error("the private key", e))
}

/// The 32-byte secretbox key for `password`.
fn derive(password: &str, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], SignError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| encode_error("the scrypt parameters", e))?;
    let mut out = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
        .map_err(|e| encode_error("the key derivation", e))?;
    Ok(out)
}

/// Creates `path` (never replacing anything) with `mode` and writes `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), SignError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| SignError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)
}

fn read_small(path: &Path) -> Result<String, SignError> {
    use std::io::Read;
    let io = |source| SignError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut s = String::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut s)
        .map_err(io)?;
    if s.len() as u64 > MAX_KEY_FILE {
        return Err(bad(path, "too large for a key file"));
    }
    Ok(s)
}

fn bad(path: &Path, reason: impl Into<String>) -> SignError {
    SignError::BadKey {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a private key: PKCS#8 PEM, or cosign's encrypted PEM opened with `password` (none:
/// the empty password).
pub fn load_private(path: &Path, password: Option<&str>) -> Result<SigningKey, SignError> {
    let text = read_small(path)?;
    let (label, body) = pem_rfc7468::decode_vec(text.trim().as_bytes())
        .map_err(|e| bad(path, format!("not a PEM private key: {e}")))?;
    if label == "PRIVATE KEY" {
        return SigningKey::from_pkcs8_der(&body)
            .map_err(|e| bad(path, format!("not an ECDSA P-256 PKCS#8 key: {e}")));
    }
    if !ENCRYPTED_LABELS.contains(&label) {
        return Err(bad(
            path,
            format!(
                "PEM block {label:?} is not a private key kiln reads (PRIVATE KEY or {})",
                ENCRYPTED_LABELS[0]
            ),
        ));
    }
    let der = match password {
        Some(p) => open_sealed(path, &body, p)?,
        // cosign seals keys made with an empty password too: try that before asking.
        None => match open_sealed(path, &body, "") {
            Ok(der) => der,
            Err(SignError::WrongPassword { .. }) => {
                return Err(SignError::PasswordNeeded {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(e),
        },
    };
    SigningKey::from_pkcs8_der(&der)
        .map_err(|e| bad(path, format!("the decrypted key is not ECDSA P-256: {e}")))
}

/// Decrypts cosign's sealed key document.
fn open_sealed(path: &Path, body: &[u8], password: &str) -> Result<Vec<u8>, SignError> {
    let sealed: Sealed = serde_json::from_slice(body)
        .map_err(|e| bad(path, format!("encrypted key document: {e}")))?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(bad(
            path,
            format!(
                "encrypted with {}/{}, kiln reads scrypt/nacl/secretbox",
                sealed.kdf.name, sealed.cipher.name
            ),
        ));
    }
    let KdfParams { n, r, p } = sealed.kdf.params;
    let log_n = n.checked_ilog2().unwrap_or(0);
    if !n.is_power_of_two()
        || log_n == 0
        || log_n > MAX_SCRYPT_LOG_N.into()
        || r > MAX_SCRYPT_R
        || p > MAX_SCRYPT_P
    {
        return Err(bad(
            path,
            format!("unsupported scrypt parameters N={n} r={r} p={p}"),
        ));
    }
    if sealed.cipher.nonce.len() != 24 {
        return Err(bad(path, "the secretbox nonce is not 24 bytes"));
    }
    let key = derive(password, &sealed.kdf.salt, log_n as u8, r, p)?;
    XSalsa20Poly1305::new((&key).into())
        .decrypt(
            sealed.cipher.nonce.as_slice().into(),
            sealed.ciphertext.as_slice(),
        )
        .map_err(|_| SignError::WrongPassword {
            path: path.to_path_buf(),
        })
}

/// Reads a public key (SubjectPublicKeyInfo PEM, as `cosign public-key` writes).
pub fn load_public(path: &Path) -> Result<VerifyingKey, SignError> {
    let text = read_small(path)?;
    VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
        bad(
            path,
            format!("not an ECDSA P-256 public key (PEM PUBLIC KEY): {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trips_and_wants_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let paths = KeyPaths::of(&dir.path().join("k"));
        generate(&paths, Some("pw")).unwrap();
        let text = std::fs::read_to_string(&paths.private).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let key = load_private(&paths.private, Some("pw")).unwrap();
        let public = load_public(&paths.public).unwrap();
        assert_eq!(key.verifying_key(), &public);
        assert!(matches!(
            load_private(&paths.private, Some("other")),
            Err(SignError::WrongPassword { .. })
        ));
        assert!(matches!(
            load_private(&paths.private, None),
            Err(SignError::PasswordNeeded { .. })
        ));
    }

    #[test]
    fn a_key_sealed_with_the_empty_password_opens_without_one() {
        // cosign seals keys even when its password is empty.
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::random(&mut OsRng);
        let path = dir.path().join("c.key");
        std::fs::write(&path, private_pem(&key, Some("")).unwrap()).unwrap();
        assert_eq!(load_private(&path, None).unwrap(), key);
    }

    /// A key `cosign generate-key-pair` sealed with an empty password (N=2^16), from
    /// sigstore-rs's test data (tests/data/keys/cosign_generated_encrypted_empty_private.key,
    /// Apache-2.0): cosign's format as cosign writes it, not as kiln does.
    const COSIGN_EMPTY_PASSWORD_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJFY3pJR3Z0bnpFcCsxaEpudERnbGI1UnoxN3gwQVMy
YklvWGRNcDQrU1NJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJtSVVKbG1OMzNINExvZ0dhaG5MamdmK3R4SmJwci93MCJ9LCJj
aXBoZXJ0ZXh0IjoiM3FtS2FidXRuYm1WT1IvTkZGM2NDaUErTXp1WWQ5L0VERDVI
MVlUSGhQVzZsSzAvdjVqdDZCQzlsME12NGV5am9qZkl0d3B6a2JJOXQrZGx5VXZ3
VUgvMWZjbkFZT2dEdXRLQzkvSkNiOE02SVY2VHpVaDF5c0ZFWDFzeG9xb1FzeUpL
bjM0UVlldFNlaVdDaGtmUHUyZXByQjFEV0pwekdzTGZIakxNVTkzOEdmNk1xM1A0
N0ZSd2syZzY1cFZnSGMwVWV1L1N1OUs0Zmc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";

    #[test]
    fn reads_a_key_cosign_generated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosign.key");
        std::fs::write(&path, COSIGN_EMPTY_PASSWORD_KEY).unwrap();
        let key = load_private(&path, None).unwrap();
        assert_eq!(load_private(&path, Some("")).unwrap(), key);
        assert!(matches!(
            load_private(&path, Some("not-it")),
            Err(SignError::WrongPassword { .. })
        ));
    }

    #[test]
    fn hostile_scrypt_cost_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let doc = br#"{"kdf":{"name":"scrypt","params":{"N":1099511627776,"r":8,"p":1},"salt":"AAAA"},"cipher":{"name":"nacl/secretbox","nonce":"AAAA"},"ciphertext":"AAAA"}"#;
        let pem = pem_rfc7468::encode_string(ENCRYPTED_LABELS[0], pem_rfc7468::LineEnding::LF, doc)
            .unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, pem).unwrap();
        let err = load_private(&path, Some("pw")).unwrap_err().to_string();
        assert!(err.contains("unsupported scrypt parameters"), "{err}");
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let paths = KeyPaths::of(&dir.path().join("k"));
        std::fs::write(&paths.public, "keep").unwrap();
        assert!(matches!(
            generate(&paths, None),
            Err(SignError::Exists { .. })
        ));
        assert_eq!(std::fs::read_to_string(&paths.public).unwrap(), "keep");
        assert!(!paths.private.exists());
    }
}
