//! An SSH agent served by kiln itself for `--ssh ID=KEY[,KEY]`: buildx loads
//! the key files into an in-process agent so `RUN --mount=type=ssh` works
//! without a running ssh-agent; kiln does the same.
//!
//! Only what an SSH client needs is spoken (draft-miller-ssh-agent):
//! REQUEST_IDENTITIES and SIGN_REQUEST; every other request gets FAILURE, so
//! nothing can add, remove or export keys through the socket.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::{Algorithm, HashAlg, PrivateKey, Signature, SigningKey};

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// SIGN_REQUEST flags asking for an RSA signature over SHA-256 / SHA-512.
const RSA_SHA2_256: u32 = 2;
const RSA_SHA2_512: u32 = 4;
/// Longest request accepted; real ones are a few kilobytes.
const MAX_MESSAGE: usize = 256 * 1024;

/// A key file kiln cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Unreadable, or not an OpenSSH private key.
    #[error(
        "{path}: not an OpenSSH private key ({source}); ssh-keygen writes that format by default"
    )]
    Parse {
        /// The key file.
        path: PathBuf,
        /// Why ssh-key refused it.
        source: ssh_key::Error,
    },
    /// Protected by a passphrase, which a build cannot ask for.
    #[error("{0}: the key is protected by a passphrase; add it to an ssh-agent and pass --ssh ID=$SSH_AUTH_SOCK instead")]
    Encrypted(PathBuf),
}

/// Keys served on a private socket until dropped.
pub struct KeyAgent {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

impl KeyAgent {
    /// Loads `keys` and starts serving them on a socket in a new private directory.
    pub fn start(keys: &[PathBuf]) -> Result<KeyAgent, AgentStartError> {
        let keys = keys
            .iter()
            .map(|p| load_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir()
            .map_err(AgentStartError::Io)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(AgentStartError::Io)?;
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).map_err(AgentStartError::Io)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(AgentStartError::Io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let keys = Arc::new(keys);
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let keys = Arc::clone(&keys);
                std::thread::spawn(move || serve(conn, &keys));
            }
        });
        Ok(KeyAgent { dir, stop })
    }

    /// The agent's socket (what `SSH_AUTH_SOCK` would name).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop` and ends.
        let _ = UnixStream::connect(self.socket());
    }
}

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentStartError {
    /// A key file was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The socket could not be made.
    #[error("starting the ssh agent: {0}")]
    Io(io::Error),
}

fn load_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let key = PrivateKey::read_openssh_file(path).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(KeyError::Encrypted(path.to_path_buf()));
    }
    Ok(key)
}

/// Answers one client's requests until it hangs up or sends garbage.
fn serve(mut conn: UnixStream, keys: &[PrivateKey]) {
    while let Ok(Some(request)) = read_message(&mut conn) {
        let reply = answer(&request, keys).unwrap_or_else(|| vec![FAILURE]);
        if write_message(&mut conn, &reply).is_err() {
            return;
        }
    }
}

/// The reply to one request (type byte + contents), or None for FAILURE.
fn answer(request: &[u8], keys: &[PrivateKey]) -> Option<Vec<u8>> {
    let (&kind, mut body) = request.split_first()?;
    match kind {
        REQUEST_IDENTITIES => {
            let mut out = vec![IDENTITIES_ANSWER];
            put_u32(&mut out, u32::try_from(keys.len()).ok()?);
            for key in keys {
                put_string(&mut out, &key.public_key().to_bytes().ok()?);
                put_string(&mut out, key.comment().as_bytes());
            }
            Some(out)
        }
        SIGN_REQUEST => {
            let blob = take_string(&mut body)?;
            let data = take_string(&mut body)?;
            let flags = take_u32(&mut body).unwrap_or(0);
            let key = keys
                .iter()
                .find(|k| k.public_key().to_bytes().ok().as_deref() == Some(blob))?;
            let signature = sign(key, data, flags)?;
            // The signature blob: string algorithm name, string signature bytes.
            let mut encoded = Vec::new();
            put_string(&mut encoded, signature.algorithm().as_str().as_bytes());
            put_string(&mut encoded, signature.as_bytes());
            let mut out = vec![SIGN_RESPONSE];
            put_string(&mut out, &encoded);
            Some(out)
        }
        _ => None,
    }
}

/// Signs `data` as the client asked; SHA-1 RSA signatures (no flag) are refused.
fn sign(key: &PrivateKey, data: &[u8], flags: u32) -> Option<Signature> {
    match key.key_data() {
        KeypairData::Rsa(rsa) if flags & RSA_SHA2_512 != 0 => sign_rsa(rsa, data, HashAlg::Sha512),
        KeypairData::Rsa(rsa) if flags & RSA_SHA2_256 != 0 => sign_rsa(rsa, data, HashAlg::Sha256),
        KeypairData::Rsa(_) => None,
        _ => try_sign(key, data),
    }
}

/// PKCS#1 v1.5 over SHA-256 or SHA-512. Done here rather than by ssh-key,
/// whose 0.6 RSA signer builds the key from the wrong primes and fails.
fn sign_rsa(key: &RsaKeypair, data: &[u8], hash: HashAlg) -> Option<Signature> {
    use rsa::signature::{SignatureEncoding, Signer};
    let big = |m: &ssh_key::Mpint| m.as_positive_bytes().map(rsa::BigUint::from_bytes_be);
    let private = rsa::RsaPrivateKey::from_components(
        big(&key.public.n)?,
        big(&key.public.e)?,
        big(&key.private.d)?,
        vec![big(&key.private.p)?, big(&key.private.q)?],
    )
    .ok()?;
    let bytes = match hash {
        HashAlg::Sha256 => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private)
            .try_sign(data)
            .ok()?
            .to_vec(),
        _ => rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(private)
            .try_sign(data)
            .ok()?
            .to_vec(),
    };
    Signature::new(Algorithm::Rsa { hash: Some(hash) }, bytes).ok()
}

/// `SigningKey`'s bound brings its `Signer` supertrait's method into scope.
fn try_sign<K: SigningKey>(key: &K, data: &[u8]) -> Option<Signature> {
    key.try_sign(data).ok()
}

fn read_message(conn: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match conn.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(conn: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    conn.write_all(&out)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

fn take_u32(body: &mut &[u8]) -> Option<u32> {
    let (head, rest) = body.split_first_chunk::<4>()?;
    *body = rest;
    Some(u32::from_be_bytes(*head))
}

fn take_string<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(body)? as usize;
    if body.len() < len {
        return None;
    }
    let (s, rest) = body.split_at(len);
    *body = rest;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A fresh unencrypted key of `kind` made by ssh-keygen; returns its path.
    fn keygen(dir: &Path, kind: &str, extra: &[&str]) -> PathBuf {
        let path = dir.join(format!("id_{kind}"));
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                kind,
                "-N",
                "",
                "-C",
                &format!("kiln-test-{kind}"),
                "-f",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .expect("ssh-keygen (Debian package openssh-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }

    fn with_agent(agent: &KeyAgent, args: &[&str]) -> std::process::Output {
        Command::new(args[0])
            .args(&args[1..])
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .expect("run an OpenSSH tool")
    }

    #[test]
    fn openssh_lists_the_keys_and_verifies_their_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![
            keygen(dir.path(), "ed25519", &[]),
            keygen(dir.path(), "ecdsa", &["-b", "256"]),
            keygen(dir.path(), "rsa", &["-b", "2048"]),
        ];
        let agent = KeyAgent::start(&keys).unwrap();
        let list = with_agent(&agent, &["ssh-add", "-l"]);
        let listed = String::from_utf8_lossy(&list.stdout);
        assert!(list.status.success(), "{listed}");
        for kind in ["ED25519", "ECDSA", "RSA"] {
            assert!(listed.contains(&format!("({kind})")), "{listed}");
        }
        // ssh-keygen -Y sign finds the private half through the agent: the
        // signature it gets back must verify against the public key.
        let message = dir.path().join("message");
        std::fs::write(&message, b"signed through kiln's agent\n").unwrap();
        for key in &keys {
            // Only the public half stays on disk, so the agent must sign.
            std::fs::remove_file(key).unwrap();
            let public = key.with_extension("pub");
            let sign = with_agent(
                &agent,
                &[
                    "ssh-keygen",
                    "-Y",
                    "sign",
                    "-n",
                    "file",
                    "-f",
                    public.to_str().unwrap(),
                    message.to_str().unwrap(),
                ],
            );
            assert!(
                sign.status.success(),
                "{}",
                String::from_utf8_lossy(&sign.stderr)
            );
            let signers = dir.path().join("allowed_signers");
            let pubtext = std::fs::read_to_string(&public).unwrap();
            std::fs::write(&signers, format!("kiln@test {pubtext}")).unwrap();
            let verify = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", "file", "-I", "kiln@test", "-f"])
                .arg(&signers)
                .arg("-s")
                .arg(message.with_extension("sig"))
                .stdin(std::fs::File::open(&message).unwrap())
                .output()
                .unwrap();
            assert!(
                verify.status.success(),
                "{}: {}",
                key.display(),
                String::from_utf8_lossy(&verify.stderr)
            );
            std::fs::remove_file(message.with_extension("sig")).unwrap();
        }
    }

    #[test]
    fn requests_other_than_list_and_sign_fail() {
        let dir = tempfile::tempdir().unwrap();
        let agent = KeyAgent::start(&[keygen(dir.path(), "ed25519", &[])]).unwrap();
        // ssh-add -D (remove all identities) must not be honoured.
        let remove = with_agent(&agent, &["ssh-add", "-D"]);
        assert!(!remove.status.success());
        let list = with_agent(&agent, &["ssh-add", "-l"]);
        assert!(String::from_utf8_lossy(&list.stdout).contains("ED25519"));
        // A malformed sign request gets FAILURE, not a dead agent.
        assert_eq!(answer(&[SIGN_REQUEST, 0, 0, 0, 9], &[]), None);
        assert_eq!(answer(&[], &[]), None);
    }

    #[test]
    fn unusable_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&locked)
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = KeyAgent::start(std::slice::from_ref(&locked))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("passphrase") && err.contains("locked"),
            "{err}"
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a key").unwrap();
        let err = KeyAgent::start(&[junk]).err().unwrap().to_string();
        assert!(
            err.contains("junk") && err.contains("OpenSSH private key"),
            "{err}"
        );
    }
}
