//! The resolved targets as builds: each target becomes the `kiln build` flags it stands
//! for, and its `target:` contexts links to the targets they name (the dependency's result
//! feeds the dependent in the one build graph, see [`crate::driver::multi`]).

use super::resolve::Definition;
use super::target::Target;
use std::path::Path;

/// Options of `kiln bake` that reach every build.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// `--progress` (`auto`, `plain`, …).
    pub progress: String,
    /// `--allow` entitlements, added to each target's `entitlements`.
    pub allow: Vec<String>,
    /// Flags passed on unchanged (registry settings).
    pub passthrough: Vec<String>,
}

/// One target's build.
#[derive(Debug, Clone)]
pub struct Job {
    /// The target name.
    pub name: String,
    /// `kiln build`'s arguments (after `build`).
    pub args: Vec<String>,
    /// Its `target:` contexts: the context name and the target it names.
    pub links: Vec<(String, String)>,
    /// Built only for the targets that link to it (not asked for): nothing exported.
    pub linked_only: bool,
    /// What kiln cannot do yet that the target asks for (warned about, not failed on).
    pub ignored: Vec<&'static str>,
}

/// Every target's job, in build order (waves of independent jobs).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Waves: a wave's jobs depend only on earlier waves.
    pub waves: Vec<Vec<Job>>,
}

/// Builds the plan; `scratch` holds inline Dockerfiles.
pub fn plan(
    def: &Definition,
    common: &Common,
    scratch: &Path,
) -> Result<Plan, super::error::BakeError> {
    let order = super::order::build_order(def)?;
    let mut waves = Vec::new();
    for (wi, wave) in order.iter().enumerate() {
        let mut jobs = Vec::new();
        for (ji, name) in wave.iter().enumerate() {
            let t = &def.targets[name];
            let dir = scratch.join(format!("{wi}-{ji}"));
            std::fs::create_dir_all(&dir).map_err(|source| super::error::BakeError::Read {
                path: dir.display().to_string(),
                source,
            })?;
            let linked_only = def.linked.contains(name);
            jobs.push(job(name, t, common, &dir, linked_only)?);
        }
        waves.push(jobs);
    }
    Ok(Plan { waves })
}

/// A `cwd://PATH` (relative to where kiln bake runs; `BAKE_CMD_CONTEXT` is `cwd://`) as a
/// path, the empty one being the working directory.
fn local_path(p: &str) -> &str {
    match p.strip_prefix("cwd://") {
        Some("") => ".",
        Some(rest) => rest,
        None => p,
    }
}

fn job(
    name: &str,
    t: &Target,
    common: &Common,
    dir: &Path,
    linked_only: bool,
) -> Result<Job, super::error::BakeError> {
    let mut a: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: &str| a.push(format!("{k}={v}"));
    let context = t.context.as_deref().unwrap_or(".");
    let context = local_path(context);
    let dockerfile = t.dockerfile.as_deref().unwrap_or("Dockerfile");
    if let Some(inline) = &t.dockerfile_inline {
        let p = dir.join("Dockerfile");
        std::fs::write(&p, inline).map_err(|source| super::error::BakeError::Read {
            path: p.display().to_string(),
            source,
        })?;
        flag("--file", &p.display().to_string());
    } else {
        let dockerfile = local_path(dockerfile);
        // A bake file's dockerfile is relative to the target's context (buildx); build's -f
        // is relative to the working directory.
        let is_remote = context.contains("://") || context.starts_with("git@");
        if Path::new(dockerfile).is_absolute() || is_remote {
            flag("--file", dockerfile);
        } else {
            flag(
                "--file",
                &Path::new(context).join(dockerfile).display().to_string(),
            );
        }
    }
    if let Some(s) = &t.target {
        flag("--target", s);
    }
    for (k, v) in t.args.iter().flatten() {
        flag("--build-arg", &format!("{k}={v}"));
    }
    for (k, v) in t.labels.iter().flatten() {
        flag("--label", &format!("{k}={v}"));
    }
    if !linked_only {
        for tag in t.tags.iter().flatten() {
            flag("--tag", tag);
        }
        for o in t.output.iter().flatten() {
            flag("--output", o);
        }
    }
    if let Some(p) = t.platforms.as_ref().filter(|p| !p.is_empty()) {
        flag("--platform", &p.join(","));
    }
    for c in t.cache_from.iter().flatten() {
        flag("--cache-from", c);
    }
    for c in t.attest.iter().flatten() {
        flag("--attest", c);
    }
    for c in t.cache_to.iter().flatten() {
        flag("--cache-to", c);
    }
    for s in t.secret.iter().flatten() {
        flag("--secret", s);
    }
    for s in t.ssh.iter().flatten() {
        flag("--ssh", s);
    }
    if t.no_cache == Some(true) {
        flag("--no-cache", "true");
    }
    if let Some(f) = t.no_cache_filter.as_ref().filter(|f| !f.is_empty()) {
        flag("--no-cache-filter", &f.join(","));
    }
    if t.pull == Some(true) {
        flag("--pull", "true");
    }
    if let Some(n) = &t.network {
        flag("--network", n);
    }
    for an in t.annotations.iter().flatten() {
        flag("--annotation", an);
    }
    if let Some(c) = &t.call {
        flag("--call", c);
    }
    let mut allow: Vec<&str> = t
        .entitlements
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    allow.extend(common.allow.iter().map(String::as_str));
    allow.dedup();
    if !allow.is_empty() {
        flag("--allow", &allow.join(","));
    }
    for (h, ip) in t.extra_hosts.iter().flatten() {
        flag("--add-host", &format!("{h}:{ip}"));
    }
    let mut links = Vec::new();
    for (k, v) in t.contexts.iter().flatten() {
        let v = match v.strip_prefix("target:") {
            Some(dep) => {
                links.push((k.clone(), dep.to_string()));
                continue;
            }
            None if v.starts_with("cwd://") => local_path(v).to_string(),
            None => v.clone(),
        };
        flag("--build-context", &format!("{k}={v}"));
    }
    if !common.progress.is_empty() {
        flag("--progress", &common.progress);
    }
    a.extend(common.passthrough.iter().cloned());
    a.push(context.to_string());
    let mut ignored = Vec::new();
    for (set, what) in [
        (t.shm_size.is_some(), "shm-size"),
        (t.ulimits.as_ref().is_some_and(|v| !v.is_empty()), "ulimits"),
    ] {
        if set {
            ignored.push(what);
        }
    }
    Ok(Job {
        name: name.to_string(),
        args: a,
        links,
        linked_only,
        ignored,
    })
}
