//! Docker credential helpers: `docker-credential-<name> get|store|erase` speaking JSON on stdin/stdout.

use super::Credentials;
use crate::error::{Error, Result};
use std::io::Write;
use std::process::{Command, Stdio};

fn run(helper: &str, action: &str, input: &[u8]) -> Result<(bool, String)> {
    let program = format!("docker-credential-{helper}");
    let err = |reason: String| Error::CredentialHelper {
        helper: helper.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok((true, stdout))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Ok((false, if stdout.is_empty() { stderr } else { stdout }))
    }
}

fn is_not_found(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("credentials not found")
}

/// `get`: `None` when the helper has nothing for this server.
pub fn get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let (ok, out) = run(helper, "get", server.as_bytes())?;
    if !ok {
        if is_not_found(&out) {
            return Ok(None);
        }
        return Err(Error::CredentialHelper {
            helper: helper.to_string(),
            reason: format!("get {server}: {out}"),
        });
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let r: Reply = serde_json::from_str(&out).map_err(|e| Error::CredentialHelper {
        helper: helper.to_string(),
        reason: format!("get {server}: unreadable reply: {e}"),
    })?;
    if r.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: r.username,
        password: r.secret,
    }))
}

/// `store`.
pub fn store(helper: &str, server: &str, creds: &Credentials) -> Result<()> {
    let body = serde_json::json!({"ServerURL": server, "Username": creds.username, "Secret": creds.password});
    let (ok, out) = run(helper, "store", body.to_string().as_bytes())?;
    if !ok {
        return Err(Error::CredentialHelper {
            helper: helper.to_string(),
            reason: format!("store {server}: {out}"),
        });
    }
    Ok(())
}

/// `erase`: returns false when nothing was stored.
pub fn erase(helper: &str, server: &str) -> Result<bool> {
    let (ok, out) = run(helper, "erase", server.as_bytes())?;
    if ok {
        return Ok(true);
    }
    if is_not_found(&out) {
        return Ok(false);
    }
    Err(Error::CredentialHelper {
        helper: helper.to_string(),
        reason: format!("erase {server}: {out}"),
    })
}
