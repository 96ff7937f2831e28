//! Docker's client configuration (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`):
//! `auths` with base64 `auth`, `credsStore` and `credHelpers`.

use super::helper;
use super::Credentials;
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key Docker uses for Docker Hub in `auths` and credential helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The directory holding config.json: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".docker")
}

/// The key a registry is stored under (Docker Hub has its historical URL).
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_AUTH_KEY.to_string(),
        other => other.to_string(),
    }
}

/// Reduces `https://host:port/v1/` and friends to `host:port` for comparison.
fn host_of_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// A loaded config.json; unknown fields are preserved when written back.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    root: Map<String, Value>,
}

impl DockerConfig {
    /// Loads `config.json` from the default directory (missing file = empty config).
    pub fn load_default() -> Result<Self> {
        Self::load(&config_dir().join("config.json"))
    }

    /// Loads a config file (missing file = empty config).
    pub fn load(path: &Path) -> Result<Self> {
        let root = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(Error::Config {
                        path: path.to_path_buf(),
                        reason: "not a JSON object".into(),
                    })
                }
                Err(e) => {
                    return Err(Error::Config {
                        path: path.to_path_buf(),
                        reason: format!("invalid JSON: {e}"),
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The file this config was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential helper for a registry: `credHelpers[key]`, else `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let key = auth_key(registry);
        if let Some(Value::Object(helpers)) = self.root.get("credHelpers") {
            for (k, v) in helpers {
                if (k == &key || host_of_key(k) == host_of_key(&key)) && v.is_string() {
                    return v.as_str().map(str::to_string);
                }
            }
        }
        self.root
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Credentials for a registry: from its helper when one is configured, else from `auths`.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let key = auth_key(registry);
        if let Some(h) = self.helper_for(registry) {
            if let Some(c) = helper::get(&h, &key)? {
                return Ok(Some(c));
            }
        }
        let Some(Value::Object(auths)) = self.root.get("auths") else {
            return Ok(None);
        };
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| host_of_key(k) == host_of_key(&key))
                .map(|(_, v)| v)
        });
        let Some(Value::Object(entry)) = entry else {
            return Ok(None);
        };
        if let Some(tok) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Ok(Some(Credentials {
                username: "<token>".into(),
                password: tok.to_string(),
            }));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| self.err(format!("auths[{key}].auth is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| self.err(format!("auths[{key}].auth is not UTF-8")))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| self.err(format!("auths[{key}].auth is not user:password")))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        let user = entry.get("username").and_then(Value::as_str);
        let pass = entry.get("password").and_then(Value::as_str);
        match (user, pass) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            _ => Ok(None),
        }
    }

    /// Stores credentials like `docker login`: in the helper when configured (the file then only
    /// records the registry), else base64 in `auths`. Writes the file atomically with mode 0600.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<()> {
        let key = auth_key(registry);
        if let Some(h) = self.helper_for(registry) {
            helper::store(&h, &key, creds)?;
            self.auths_mut().insert(key, Value::Object(Map::new()));
        } else {
            let auths = self.auths_mut();
            let raw = format!("{}:{}", creds.username, creds.password);
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
            );
            auths.insert(key, Value::Object(entry));
        }
        self.save()
    }

    /// Removes credentials like `docker logout`. Returns whether anything was removed.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let key = auth_key(registry);
        let mut removed = false;
        if let Some(h) = self.helper_for(registry) {
            removed |= helper::erase(&h, &key)?;
        }
        let auths = self.auths_mut();
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| *k == &key || host_of_key(k) == host_of_key(&key))
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            removed = true;
        }
        self.save()?;
        Ok(removed)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self
            .root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            // Just made it an object above.
            _ => unreachable!("auths is an object"),
        }
    }

    fn err(&self, reason: String) -> Error {
        Error::Config {
            path: self.path.clone(),
            reason,
        }
    }

    fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.err(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(&Value::Object(self.root.clone()))
            .map_err(|e| self.err(e.to_string()))?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.err(e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, json: &str) -> DockerConfig {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        DockerConfig::load(&p).unwrap()
    }

    #[test]
    fn reads_base64_auths_by_host_or_url() {
        let d = tempfile::tempdir().unwrap();
        // "alice:s3cret" and "bob:pw"
        let c = cfg(
            d.path(),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},"http://127.0.0.1:5001":{"auth":"Ym9iOnB3"}},"other":1}"#,
        );
        let hub = c.credentials("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret")
        );
        let local = c.credentials("127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(local.username, "bob");
        assert!(c.credentials("ghcr.io").unwrap().is_none());
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn store_and_erase_round_trip_keeps_other_fields() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(d.path(), r#"{"psFormat":"table"}"#);
        let creds = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        c.store("127.0.0.1:5001", &creds).unwrap();
        let again = DockerConfig::load(&d.path().join("config.json")).unwrap();
        assert_eq!(again.credentials("127.0.0.1:5001").unwrap(), Some(creds));
        let text = std::fs::read_to_string(d.path().join("config.json")).unwrap();
        assert!(text.contains("psFormat"));
        assert!(!text.contains("p:w"), "secret is base64, not plain");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut again = again;
        assert!(again.erase("127.0.0.1:5001").unwrap());
        assert!(!again.erase("127.0.0.1:5001").unwrap());
        assert!(again.credentials("127.0.0.1:5001").unwrap().is_none());
    }

    #[test]
    fn bad_json_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, "{nope").unwrap();
        let err = DockerConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn helper_selection() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(
            d.path(),
            r#"{"credsStore":"desktop","credHelpers":{"ghcr.io":"gh"}}"#,
        );
        assert_eq!(c.helper_for("ghcr.io").as_deref(), Some("gh"));
        assert_eq!(c.helper_for("quay.io").as_deref(), Some("desktop"));
    }
}
