//! `kiln login`: check credentials against a registry and store them like docker does.

use crate::registry_opts::{runtime, RegistryArgs};
use kiln_registry::auth::config::DockerConfig;
use kiln_registry::auth::Credentials;
use kiln_registry::{RegistryClient, TransportOptions};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln login`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Registry host (default: Docker Hub).
    pub server: Option<String>,
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Normalises `https://host/v1/` or `docker.io` to the registry name used in references.
pub fn server_name(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {label}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs `kiln login`.
pub fn run(args: Args, _root: Option<&Path>) -> Result<ExitCode> {
    let server = server_name(args.server.as_deref());
    if args.password.is_some() && args.password_stdin {
        return Err(miette!(
            "--password and --password-stdin are mutually exclusive"
        ));
    }
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => return Err(miette!("--password-stdin requires --username")),
        None => prompt("Username")?,
    };
    let password = if let Some(p) = &args.password {
        p.clone()
    } else if args.password_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .into_diagnostic()
            .wrap_err("reading password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(miette!(
                "cannot prompt for a password without a terminal; use --password-stdin"
            ));
        }
        prompt("Password")?
    };
    if username.is_empty() || password.is_empty() {
        return Err(miette!("username and password must not be empty"));
    }
    let creds = Credentials { username, password };
    // Check the credentials before storing them: ask for a token / probe /v2/ with them.
    let mut opts = TransportOptions::default();
    opts.insecure_registries
        .extend(args.registry.insecure_registries.iter().cloned());
    opts.idle_timeout = args.registry.idle_timeout;
    opts.notices = kiln_registry::progress::Notices::new(|n| eprintln!("{n}"));
    let client =
        RegistryClient::with_credentials(opts, HashMap::from([(server.clone(), creds.clone())]));
    runtime()?
        .block_on(client.check_login(&server))
        .into_diagnostic()
        .wrap_err_with(|| format!("login to {server} failed"))?;
    let mut cfg = DockerConfig::load_default().into_diagnostic()?;
    cfg.store(&server, &creds).into_diagnostic()?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}
