//! Every flag of a build checked before anything runs or is written: a bad
//! `--platform`, `--output`, `--build-context`, `--secret`, `--ssh`,
//! `--allow` or `--add-host` fails at once, naming the flag and its value,
//! instead of after the base images were pulled or the steps ran.

use super::run::{check_outputs, target_platforms};
use super::session::{
    local_context_dir, parse_add_host, parse_allow, parse_build_context, parse_secret, parse_ssh,
};
use super::BuildRequest;
use crate::context::ContextSpec;
use crate::export::spec::{Destination, OutputKind, OutputSpec};
use kiln_frontend::lower::NamedContext;
use kiln_oci::Reference;
use miette::{miette, Result};
use std::path::PathBuf;

/// Checks the request's flags; nothing is read but the files they name.
pub fn check(req: &BuildRequest) -> Result<()> {
    check_local_context(req)?;
    let platforms = target_platforms(req)?;
    check_outputs(req, platforms.len() > 1 || req.multi_platform)?;
    for out in &req.outputs {
        check_output(out)?;
    }
    for spec in &req.build_contexts {
        if let (name, NamedContext::Local(_)) = parse_build_context(spec)? {
            local_context_dir(spec, &name)?;
        }
    }
    for spec in &req.secrets {
        parse_secret(spec)?;
    }
    for spec in &req.ssh {
        parse_ssh(spec)?;
    }
    for a in &req.allow {
        parse_allow(a)?;
    }
    for h in &req.add_hosts {
        parse_add_host(h)?;
    }
    Ok(())
}

/// A local context directory and its Dockerfile exist (other contexts are
/// fetched first; their Dockerfile is checked once they are there).
fn check_local_context(req: &BuildRequest) -> Result<()> {
    let ContextSpec::Dir(dir) = &req.context else {
        return Ok(());
    };
    if !dir.is_dir() {
        return Err(miette!(
            help = "the context is a directory, a tarball, a git or HTTP URL, or -",
            "context {}: not a directory",
            dir.display()
        ));
    }
    // Like docker: -f is relative to the working directory for a local context.
    let dockerfile = match req.file.as_deref() {
        Some("-") => return Ok(()),
        Some(f) => PathBuf::from(f),
        None => dir.join("Dockerfile"),
    };
    if !dockerfile.is_file() {
        return Err(miette!(
            help = "name it with -f PATH (relative to the working directory), or - for stdin",
            "Dockerfile {}: no such file",
            dockerfile.display()
        ));
    }
    Ok(())
}

/// An output's names parse, a push has a name to push to, and an archive
/// does not end on a terminal.
fn check_output(out: &OutputSpec) -> Result<()> {
    for n in &out.names {
        Reference::parse(n).map_err(|e| {
            miette!(
                help = "names are [registry/]repository[:tag], lowercase",
                "invalid image name {n:?} in --output: {e}"
            )
        })?;
    }
    if out.push() && out.names.is_empty() {
        return Err(miette!(
            help = "add -t NAME, or name=NAME to the --output",
            "push=true needs an image name to push to"
        ));
    }
    let archive = matches!(
        out.kind,
        OutputKind::Docker | OutputKind::Oci | OutputKind::Tar
    );
    // The same rule the writer applies: an explicit `dest=-` is taken at its word.
    if archive && out.dest.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(miette!(
            help = "give dest=<file>, or redirect stdout",
            "refusing to write a tarball to a terminal"
        ));
    }
    if let Some(Destination::Path(p)) = &out.dest {
        if p.as_os_str().is_empty() {
            return Err(miette!("invalid --output: dest= is empty"));
        }
    }
    Ok(())
}
