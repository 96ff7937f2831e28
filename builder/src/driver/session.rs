//! What the client lends a build: the context directory, `--secret`s,
//! `--ssh` agents, `--allow` entitlements and `--add-host` entries.

use super::oci_layout::{self, LayoutRef};
use super::ssh_agent::KeyAgent;
use super::BuildRequest;
use crate::context::BuildContext;
use kiln_frontend::lower::NamedContext;
use kiln_solver::executor::HostEntry;
use kiln_solver::worker::{LocalDir, Session};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::PathBuf;
use std::sync::Arc;

/// `--secret [type=file|env,]id=ID[,src=PATH|,env=VAR]`: the id and its bytes.
/// Without a type, an env var named like the id wins over a file (buildx).
pub fn parse_secret(spec: &str) -> Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.trim() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            other => {
                return Err(miette!(
                "invalid --secret {spec:?}: unknown key {other:?} (expected id, src, env, type)"
            ))
            }
        }
    }
    let id = id
        .or_else(|| {
            src.as_deref()
                .and_then(|s| s.rsplit('/').next())
                .map(String::from)
        })
        .ok_or_else(|| miette!("invalid --secret {spec:?}: id= is required"))?;
    let from_env = |var: &str| {
        std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| miette!("--secret {id}: environment variable {var} is not set"))
    };
    let data = match (kind.as_deref(), src, env) {
        (Some("env"), _, e) | (None, None, e @ Some(_)) => from_env(e.as_deref().unwrap_or(&id))?,
        (Some("file") | None, Some(path), _) => std::fs::read(&path)
            .into_diagnostic()
            .wrap_err_with(|| format!("--secret {id}: reading {path}"))?,
        (None, None, None) if std::env::var_os(&id).is_some() => from_env(&id)?,
        (Some("file"), None, _) | (None, None, None) => {
            return Err(miette!(
                "invalid --secret {spec:?}: give src=<file> or env=<VAR>"
            ))
        }
        (Some(other), _, _) => {
            return Err(miette!("invalid --secret {spec:?}: unknown type {other:?}"))
        }
    };
    Ok((id, data))
}

/// What one `--ssh` flag lends the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// A running agent's socket (`--ssh ID=$SSH_AUTH_SOCK`, or no path: SSH_AUTH_SOCK).
    Socket(PathBuf),
    /// Private key files kiln serves from an agent of its own (`--ssh ID=KEY[,KEY]`).
    Keys(Vec<PathBuf>),
}

/// `--ssh default|ID[=SOCKET|KEY[,KEY]]`: the id and what it names. As in
/// buildx, a single path naming a socket is an agent; other paths are keys.
pub fn parse_ssh(spec: &str) -> Result<(String, SshSource)> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), Some(p.to_string())),
        None => (spec.to_string(), None),
    };
    if id.is_empty() {
        return Err(miette!(
            "invalid --ssh {spec:?}: expected ID[=SOCKET|KEY[,KEY]]"
        ));
    }
    let Some(paths) = paths else {
        let sock = std::env::var("SSH_AUTH_SOCK").map_err(|_| {
            miette!(
                "--ssh {id}: SSH_AUTH_SOCK is not set; give the agent socket or key files as --ssh {id}=<path>"
            )
        })?;
        return Ok((id, SshSource::Socket(PathBuf::from(sock))));
    };
    let paths: Vec<PathBuf> = paths
        .split(',')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let is_socket = |p: &PathBuf| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
    };
    match paths.as_slice() {
        [] => Err(miette!(
            "invalid --ssh {spec:?}: expected ID[=SOCKET|KEY[,KEY]]"
        )),
        [one] if is_socket(one) => Ok((id, SshSource::Socket(one.clone()))),
        _ => {
            for p in &paths {
                if !p.is_file() {
                    return Err(miette!(
                        "--ssh {id}: {} is neither an agent socket nor a key file",
                        p.display()
                    ));
                }
            }
            Ok((id, SshSource::Keys(paths)))
        }
    }
}

/// `--add-host host:ip` or `host=ip`.
pub fn parse_add_host(spec: &str) -> Result<HostEntry> {
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| miette!("invalid --add-host {spec:?}: expected host:ip"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Ok(HostEntry {
        name: name.to_string(),
        ip: ip
            .parse()
            .map_err(|_| miette!("invalid --add-host {spec:?}: {ip:?} is not an IP address"))?,
    })
}

/// `--build-context name=value`: the lower-case name and what it is. A
/// directory is lent to the build as the local source `context:<name>`.
pub fn parse_build_context(spec: &str) -> Result<(String, NamedContext)> {
    let (name, value) = spec.split_once('=').ok_or_else(|| {
        miette!("invalid --build-context {spec:?}: expected NAME=PATH, NAME=docker-image://REF or NAME=oci-layout://PATH[:TAG|@DIGEST]")
    })?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(miette!(
            "invalid --build-context {spec:?}: the name is empty"
        ));
    }
    if let Some(r) = value.strip_prefix("docker-image://") {
        return Ok((name, NamedContext::Image(r.to_string())));
    }
    if let Some(location) = value.strip_prefix(oci_layout::SCHEME) {
        // The image of a local OCI layout: resolved like an image, by the layout's
        // absolute path so the graph's identifier does not depend on the cwd.
        let layout = LayoutRef::parse(location)
            .and_then(|l| l.canonical())
            .map_err(|e| miette!("--build-context {name}: {e}"))?;
        let mut reference = format!("{}{}", oci_layout::SCHEME, layout.path.display());
        match (&layout.digest, &layout.tag) {
            (Some(d), _) => reference.push_str(&format!("@{d}")),
            (None, Some(t)) => reference.push_str(&format!(":{t}")),
            (None, None) => {}
        }
        return Ok((name, NamedContext::Image(reference)));
    }
    if value.contains("://") {
        return Err(miette!(
            "--build-context {spec:?}: only directories, docker-image:// and oci-layout:// are supported (git and URLs are not yet)"
        ));
    }
    Ok((name.clone(), NamedContext::Local(format!("context:{name}"))))
}

/// The directory of a `--build-context NAME=DIR`; it must exist.
pub fn local_context_dir(spec: &str, name: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(spec.split_once('=').map(|(_, v)| v).unwrap_or_default());
    if !dir.is_dir() {
        return Err(miette!(
            help = "a build context is a directory, docker-image://REF or oci-layout://PATH",
            "invalid --build-context {spec:?}: {} is not a directory (context {name})",
            dir.display()
        ));
    }
    Ok(dir)
}

/// A privilege `--allow` grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `network.host`: `RUN --network=host`.
    NetworkHost,
    /// `security.insecure`: `RUN --security=insecure`.
    SecurityInsecure,
}

/// One `--allow` value.
pub fn parse_allow(a: &str) -> Result<Entitlement> {
    match a.trim() {
        "network.host" => Ok(Entitlement::NetworkHost),
        "security.insecure" => Ok(Entitlement::SecurityInsecure),
        other => Err(miette!(
            help = "kiln grants network.host and security.insecure",
            "invalid --allow {other:?}: unknown entitlement"
        )),
    }
}

/// The session of a build request, and the SSH agents kiln serves for it
/// (they stop when the returned list is dropped, so keep it for the build).
pub fn session_from_flags(
    req: &BuildRequest,
    ctx: &BuildContext,
) -> Result<(Session, Vec<KeyAgent>)> {
    let mut agents = Vec::new();
    let mut session = Session::default();
    session.locals.insert(
        "context".to_string(),
        LocalDir {
            root: ctx.root.clone(),
            ignore: Arc::new(ctx.ignore.clone()),
            keep: None,
            persistent: !ctx.is_temporary(),
        },
    );
    for spec in &req.build_contexts {
        if let (name, NamedContext::Local(local)) = parse_build_context(spec)? {
            let dir = local_context_dir(spec, &name)?;
            let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
                Ok(text) => kiln_solver::pattern::parse_dockerignore(&text)
                    .map_err(|(line, e)| miette!("{}/.dockerignore:{line}: {e}", dir.display()))?,
                Err(_) => Default::default(),
            };
            session.locals.insert(
                local,
                LocalDir {
                    root: dir,
                    ignore: Arc::new(ignore),
                    keep: None,
                    persistent: true,
                },
            );
        }
    }
    for s in &req.secrets {
        let (id, data) = parse_secret(s)?;
        session.secrets.insert(id, data);
    }
    for s in &req.ssh {
        let (id, source) = parse_ssh(s)?;
        let socket = match source {
            SshSource::Socket(path) => path,
            SshSource::Keys(keys) => {
                let agent = KeyAgent::start(&keys)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("--ssh {id}"))?;
                let socket = agent.socket();
                agents.push(agent);
                socket
            }
        };
        session.ssh.insert(id, socket);
    }
    for a in &req.allow {
        match parse_allow(a)? {
            Entitlement::NetworkHost => session.allow_network_host = true,
            Entitlement::SecurityInsecure => session.allow_insecure = true,
        }
    }
    for h in &req.add_hosts {
        session.extra_hosts.push(parse_add_host(h)?);
    }
    Ok((session, agents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_files_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "s3cret").unwrap();
        let (id, data) = parse_secret(&format!("id=tok,src={}", f.display())).unwrap();
        assert_eq!((id.as_str(), data.as_slice()), ("tok", &b"s3cret"[..]));
        std::env::set_var("KILN_TEST_SECRET_VAR", "from-env");
        let (id, data) = parse_secret("id=x,env=KILN_TEST_SECRET_VAR").unwrap();
        assert_eq!((id.as_str(), data.as_slice()), ("x", &b"from-env"[..]));
        assert!(parse_secret("id=x,src=/no/such/file")
            .unwrap_err()
            .to_string()
            .contains("/no/such/file"));
        assert!(parse_secret("src=").is_err());
        assert!(parse_secret("id=x,bogus=1").is_err());
    }

    #[test]
    fn oci_layout_contexts_become_absolute_image_references() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |v: String| parse_build_context(&format!("Base={v}"));
        let err = spec(format!("oci-layout://{}:v1", dir.path().display())).unwrap_err();
        assert!(err.to_string().contains("no index.json"), "{err}");
        std::fs::write(dir.path().join("index.json"), "{}").unwrap();
        let (name, ctx) = spec(format!("oci-layout://{}/.:v1", dir.path().display())).unwrap();
        let abs = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(name, "base");
        assert_eq!(
            ctx,
            NamedContext::Image(format!("oci-layout://{}:v1", abs.display()))
        );
        let d = format!("sha256:{}", "b".repeat(64));
        let (_, ctx) = spec(format!("oci-layout://{}@{d}", dir.path().display())).unwrap();
        assert_eq!(
            ctx,
            NamedContext::Image(format!("oci-layout://{}@{d}", abs.display()))
        );
        assert!(spec("git://example.com/repo.git".into()).is_err());
    }

    #[test]
    fn add_host_forms() {
        assert_eq!(parse_add_host("db:10.0.0.2").unwrap().name, "db");
        assert_eq!(parse_add_host("db=::1").unwrap().ip.to_string(), "::1");
        assert!(parse_add_host("db:not-an-ip").is_err());
    }
}
