//! `RUN --mount=...`: the CSV option list, every key and alias, and the per-type defaults.

use std::borrow::Cow;
use std::fmt;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory from the context, a stage or an image (read-only by default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A build secret as a file or env var.
    Secret,
    /// The SSH agent socket.
    Ssh,
}

impl MountType {
    const NAMES: [&'static str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

    fn parse(s: &str) -> Option<MountType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        };
        f.write_str(s)
    }
}

/// Concurrency mode of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Several builds use it at once (default).
    #[default]
    Shared,
    /// Each concurrent writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A parsed RUN mount with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// Mount type (default bind).
    pub kind: MountType,
    /// Mount path in the container (defaulted for secret and ssh; `None` or relative: under the WORKDIR).
    pub target: Option<String>,
    /// Path inside `from` (bind, cache) or legacy secret source.
    pub source: Option<String>,
    /// Stage, named context or image to mount from (never expanded).
    pub from: Option<String>,
    /// Read-only (bind defaults to true).
    pub read_only: bool,
    /// Cache id (default: target), secret id (default: basename of target), ssh id (default `default`).
    pub id: Option<String>,
    /// Cache sharing mode.
    pub sharing: Sharing,
    /// File mode (cache 0755, secret 0400, ssh 0600).
    pub mode: Option<u32>,
    /// Owner uid (cache, secret, ssh; default 0).
    pub uid: Option<u32>,
    /// Owner gid (cache, secret, ssh; default 0).
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// Fail when the secret or ssh key is missing.
    pub required: bool,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

/// A mount option problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

fn err(message: String, hint: Option<String>) -> MountError {
    MountError { message, hint }
}

const KEYS: [&str; 18] = [
    "type",
    "target",
    "dst",
    "destination",
    "source",
    "src",
    "from",
    "ro",
    "readonly",
    "rw",
    "readwrite",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "size",
    "required",
];

/// Splits a CSV record (Go's encoding/csv rules: double quotes, `""` inside quotes).
pub fn split_csv(s: &str) -> Result<Vec<Cow<'_, str>>, MountError> {
    // Common case: no quotes, fields borrow from the input.
    if !s.contains('"') {
        return Ok(s.split(',').map(Cow::Borrowed).collect());
    }
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if c == '"' && at_start {
            loop {
                match chars.next() {
                    None => {
                        return Err(err(
                            format!("unterminated quote in mount options {s:?}"),
                            None,
                        ))
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(o) => cur.push(o),
                }
            }
            at_start = false;
            continue;
        }
        if c == ',' {
            fields.push(Cow::Owned(std::mem::take(&mut cur)));
            at_start = true;
            continue;
        }
        at_start = false;
        cur.push(c);
    }
    fields.push(Cow::Owned(cur));
    Ok(fields)
}

/// Parses one `--mount` value. `expand` is applied to every value except `from`; `ssh_index`
/// numbers ssh mounts for their default target.
pub fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ssh_index: usize,
) -> Result<Mount, MountError> {
    let fields = split_csv(spec)?;
    // The type decides which keys are valid, so find it first.
    let kind = mount_type(&fields, expand)?;
    let mut m = Mount {
        kind,
        target: None,
        source: None,
        from: None,
        read_only: kind == MountType::Bind,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
        env: None,
    };
    for field in fields {
        if field.is_empty() {
            continue;
        }
        set_field(&mut m, &field, expand)?;
    }
    apply_defaults(&mut m, ssh_index)?;
    Ok(m)
}

/// The mount's `type=` (the last one given; bind when none).
fn mount_type(
    fields: &[Cow<'_, str>],
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<MountType, MountError> {
    let mut kind = MountType::Bind;
    for f in fields {
        if let Some((k, v)) = f.split_once('=') {
            if k.trim().eq_ignore_ascii_case("type") {
                let v = expand(v).map_err(|e| err(e, None))?;
                kind = MountType::parse(&v).ok_or_else(|| {
                    err(
                        format!(
                            "unsupported mount type {v:?}{}",
                            crate::suggest::did_you_mean(&v, MountType::NAMES)
                        ),
                        Some("type is one of bind, cache, tmpfs, secret, ssh".into()),
                    )
                })?;
            }
        }
    }
    Ok(kind)
}

/// Applies one field: a boolean key (bare or `=bool`) or a `key=value` pair, its value
/// expanded (except `from`).
fn set_field(
    m: &mut Mount,
    field: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<(), MountError> {
    let (key, value) = match field.split_once('=') {
        Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
        None => (field.trim().to_ascii_lowercase(), None),
    };
    // Bare boolean keys.
    let as_bool = |v: Option<&str>| -> Result<bool, MountError> {
        match v {
            None => Ok(true),
            Some(v) => super::flags::parse_go_bool(v).ok_or_else(|| {
                err(
                    format!("invalid value for {key}: {v}"),
                    Some("use true or false".into()),
                )
            }),
        }
    };
    match key.as_str() {
        "ro" | "readonly" => {
            m.read_only = as_bool(value)?;
            return Ok(());
        }
        "rw" | "readwrite" => {
            m.read_only = !as_bool(value)?;
            return Ok(());
        }
        "required" => {
            m.required = as_bool(value)?;
            return Ok(());
        }
        _ => {}
    }
    let Some(raw) = value else {
        return Err(err(
            format!("invalid field '{field}' must be a key=value pair"),
            Some("write key=value, e.g. target=/cache".into()),
        ));
    };
    let value = if key == "from" {
        raw.to_string()
    } else {
        expand(raw).map_err(|e| err(e, None))?
    };
    set_value(m, &key, value, field)
}

/// Sets the option `key` (lower-case) to its expanded `value`, if the mount's type takes it.
fn set_value(m: &mut Mount, key: &str, value: String, field: &str) -> Result<(), MountError> {
    let kind = m.kind;
    let not_for = |what: &str| {
        err(
            format!("{what} is not allowed for {kind} mounts"),
            Some(format!("remove {what} from the --mount={kind} options")),
        )
    };
    match key {
        "type" => {}
        "target" | "dst" | "destination" => m.target = Some(value),
        "source" | "src" => {
            if matches!(kind, MountType::Tmpfs | MountType::Ssh) {
                return Err(not_for("source"));
            }
            m.source = Some(value)
        }
        "from" => {
            if !matches!(kind, MountType::Bind | MountType::Cache) {
                return Err(not_for("from"));
            }
            m.from = Some(value)
        }
        "id" => m.id = Some(value),
        "sharing" => m.sharing = parse_sharing(kind, &value)?,
        "mode" => {
            m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                err(
                    format!("invalid mode {value:?}: not an octal number"),
                    Some("e.g. mode=0755".into()),
                )
            })?)
        }
        "uid" | "gid" => {
            let n: u32 = value
                .parse()
                .map_err(|_| err(format!("invalid {key} {value:?}: not a number"), None))?;
            if key == "uid" {
                m.uid = Some(n)
            } else {
                m.gid = Some(n)
            }
        }
        "size" => {
            if kind != MountType::Tmpfs {
                return Err(not_for("size"));
            }
            m.size = Some(kiln_solver::units::parse_ram_size(&value).map_err(|_| {
                err(
                    format!("invalid size {value:?}"),
                    Some("e.g. size=64m".into()),
                )
            })?)
        }
        "env" => {
            if kind != MountType::Secret {
                return Err(not_for("env"));
            }
            m.env = Some(value)
        }
        other => {
            return Err(err(
                format!(
                    "unexpected key '{other}' in '{field}'{}",
                    crate::suggest::did_you_mean(other, KEYS.iter().copied().chain(["env"]))
                ),
                None,
            ))
        }
    }
    Ok(())
}

/// A cache mount's `sharing=` value.
fn parse_sharing(kind: MountType, value: &str) -> Result<Sharing, MountError> {
    if kind != MountType::Cache {
        return Err(err(
            "invalid cache sharing set for non-cache mount".into(),
            Some("sharing only applies to type=cache".into()),
        ));
    }
    match value.to_ascii_lowercase().as_str() {
        "shared" => Ok(Sharing::Shared),
        "private" => Ok(Sharing::Private),
        "locked" => Ok(Sharing::Locked),
        _ => Err(err(
            format!("unsupported sharing value {value:?}"),
            Some("sharing is one of shared, private, locked".into()),
        )),
    }
}

fn apply_defaults(m: &mut Mount, ssh_index: usize) -> Result<(), MountError> {
    match m.kind {
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            // No target means the working directory (BuildKit joins a relative or empty target
            // with the stage's WORKDIR).
            // A cache's mode/uid/gid stay unset unless given: BuildKit keys the
            // cache by whether they were (the lowering applies 0755/0/0).
            if m.kind == MountType::Cache && m.id.is_none() {
                m.id = Some(m.target.clone().unwrap_or_default());
            }
        }
        MountType::Secret => {
            if m.id.is_none() {
                let from_target = m
                    .target
                    .as_deref()
                    .or(m.source.as_deref())
                    .and_then(|t| t.trim_end_matches('/').rsplit('/').next())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                m.id = from_target;
            }
            let Some(id) = m.id.clone() else {
                return Err(err(
                    "secret mount requires an id or a target".into(),
                    Some("add id=<secret id> to the --mount=type=secret options".into()),
                ));
            };
            if m.target.is_none() && m.env.is_none() {
                m.target = Some(format!("/run/secrets/{id}"));
            }
            m.mode.get_or_insert(0o400);
            m.uid.get_or_insert(0);
            m.gid.get_or_insert(0);
        }
        MountType::Ssh => {
            if m.id.is_none() {
                m.id = Some("default".into());
            }
            if m.target.is_none() {
                m.target = Some(format!("/run/buildkit/ssh_agent.{ssh_index}"));
            }
            m.mode.get_or_insert(0o600);
            m.uid.get_or_insert(0);
            m.gid.get_or_insert(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Mount, MountError> {
        parse_mount(s, &mut |v: &str| Ok(v.replace("$D", "/data")), 0)
    }

    #[test]
    fn bind_defaults_to_read_only_context() {
        let m = parse("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        assert!(m.from.is_none());
        assert!(!parse("type=bind,target=/src,rw").unwrap().read_only);
    }

    #[test]
    fn cache_defaults_and_aliases() {
        let m = parse("type=cache,dst=/root/.cache,sharing=locked").unwrap();
        assert_eq!(m.id.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Sharing::Locked);
        assert_eq!((m.mode, m.uid, m.gid), (None, None, None));
        assert!(!m.read_only);
        let m = parse("type=cache,destination=$D,from=$X,id=x,uid=1000,mode=0700").unwrap();
        assert_eq!(m.target.as_deref(), Some("/data"));
        assert_eq!(m.from.as_deref(), Some("$X"), "from is never expanded");
        assert_eq!((m.uid, m.mode), (Some(1000), Some(0o700)));
    }

    #[test]
    fn secret_and_ssh_defaults() {
        let m = parse("type=secret,id=tok").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/tok"));
        assert_eq!(m.mode, Some(0o400));
        let m = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(m.target, None);
        assert!(m.required);
        let m = parse("type=secret,target=/x/api_key").unwrap();
        assert_eq!(m.id.as_deref(), Some("api_key"));
        let m = parse("type=ssh").unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/buildkit/ssh_agent.0"));
        assert_eq!(m.id.as_deref(), Some("default"));
        assert_eq!(m.mode, Some(0o600));
        let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("ro").unwrap().target,
            None,
            "no target: the working directory"
        );
        assert_eq!(
            parse("type=cache,target=/x,sharng=locked")
                .unwrap_err()
                .message,
            "unexpected key 'sharng' in 'sharng=locked' (did you mean sharing?)"
        );
        assert!(parse("type=cahce,target=/x")
            .unwrap_err()
            .message
            .contains("did you mean cache?"));
        assert!(parse("type=bind,target=/x,sharing=locked").is_err());
        assert!(parse("type=secret,id=a,from=b").is_err());
        assert!(parse("type=cache,target=/x,mode=9").is_err());
        assert!(parse("type=cache,target=/x,bogus").is_err());
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(split_csv("a,\"b,c\",d").unwrap(), vec!["a", "b,c", "d"]);
    }
}
