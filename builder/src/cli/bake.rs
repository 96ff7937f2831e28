//! `kiln bake`: build several targets from bake files (`docker-bake.hcl`, JSON, compose),
//! with buildx's flags.

use crate::bake::{self, files, overrides::Override, plan, print, resolve};
use miette::{IntoDiagnostic, WrapErr};
use std::process::ExitCode;

/// Arguments of `kiln bake`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Targets or groups to build (default: the `default` group, else the only target).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Build definition file (repeatable; `-` reads stdin). Default: compose.yaml,
    /// compose.yml, docker-compose.yml, docker-compose.yaml, docker-bake.json,
    /// docker-bake.hcl, docker-bake.override.json, docker-bake.override.hcl.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<String>,
    /// Print the resolved definition (JSON) instead of building.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub print: bool,
    /// List `targets` or `variables` (`,format=json` for JSON).
    #[arg(long, value_name = "WHAT")]
    pub list: Option<String>,
    /// Override a target attribute (`PATTERN.KEY=VALUE`, `+=` appends; `*` matches names).
    #[arg(long = "set", value_name = "PATTERN.KEY=VALUE")]
    pub set: Vec<String>,
    /// Shorthand for `--set=*.push=true` (image outputs push; else a pushing one is added).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub push: bool,
    /// Shorthand for `--set=*.load=true` (a `docker` output: kiln's local image store).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub load: bool,
    /// Do not use the cache when building.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub no_cache: bool,
    /// Always look up base images in their registry.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub pull: bool,
    /// Progress output (`auto`, `tty`, `plain`, `rawjson`, `quiet`).
    #[arg(long, value_enum, default_value = "auto", env = "BUILDKIT_PROGRESS")]
    pub progress: crate::progress::ProgressMode,
    /// Write every target's build metadata (JSON, by target name) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<std::path::PathBuf>,
    /// Allow extra privileged entitlements (`network.host`, `security.insecure`).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Set method for evaluating the targets (`build`, `check`, `outline`, `targets`).
    #[arg(long, value_name = "METHOD")]
    pub call: Option<String>,
    /// Shorthand for `--call=check`.
    #[arg(long, conflicts_with = "call", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub check: bool,
    /// kiln: when a target fails, go on building those that do not depend on it (the
    /// others are stopped and built again, from the cache, without it).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub keep_going: bool,
    /// Registry settings.
    #[command(flatten)]
    pub registry: crate::registry_opts::RegistryArgs,
}

/// Runs `kiln bake`.
pub fn run(args: Args, root: Option<std::path::PathBuf>) -> miette::Result<ExitCode> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    let env = |name: &str| std::env::var(name).ok();
    let inputs = bake::eval::Inputs {
        builtins: vec![
            ("BAKE_CMD_CONTEXT".into(), "cwd://".into()),
            (
                "BAKE_LOCAL_PLATFORM".into(),
                kiln_oci::Platform::host().to_string(),
            ),
        ],
        env: &env,
    };
    let loaded = files::load(&args.files, &cwd, &inputs).into_diagnostic()?;
    if let Some(what) = &args.list {
        return list(what, &loaded);
    }
    let overrides = overrides(&args)?;
    let def = resolve::resolve(&loaded.config, &args.targets, &overrides).into_diagnostic()?;
    if args.print {
        println!("{}", print::to_json(&def));
        return Ok(ExitCode::SUCCESS);
    }
    build(&args, &def, root)
}

/// The `--set` flags, then the shorthand flags as buildx turns them into overrides.
fn overrides(args: &Args) -> miette::Result<Vec<Override>> {
    let mut sets = args.set.clone();
    for (on, set) in [
        (args.push, "*.push=true"),
        (args.load, "*.load=true"),
        (args.no_cache, "*.no-cache=true"),
        (args.pull, "*.pull=true"),
        (args.check, "*.call=check"),
    ] {
        if on {
            sets.push(set.into());
        }
    }
    if let Some(call) = &args.call {
        sets.push(format!("*.call={call}"));
    }
    bake::overrides::parse(&sets).into_diagnostic()
}

/// `--list=targets|variables[,format=json]`.
fn list(what: &str, loaded: &files::Loaded) -> miette::Result<ExitCode> {
    let mut parts = what.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut json = false;
    for p in parts {
        match p.split_once('=') {
            Some(("format", "json")) => json = true,
            Some(("format", "table")) => json = false,
            _ => {
                return Err(miette::miette!(
                    "invalid --list option {p:?} (format=table|json)"
                ))
            }
        }
    }
    match kind {
        "targets" | "type=targets" => {
            let mut rows: Vec<(String, Option<String>, bool)> = loaded
                .config
                .targets
                .iter()
                .map(|(n, t)| (n.clone(), t.description.clone(), false))
                .chain(
                    loaded
                        .config
                        .groups
                        .iter()
                        .map(|(n, g)| (n.clone(), g.description.clone(), true)),
                )
                .filter(|(n, _, _)| !n.starts_with('_'))
                .collect();
            rows.sort();
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(n, d, g)| {
                        let mut o = serde_json::json!({ "name": n });
                        if let Some(d) = d {
                            o["description"] = d.clone().into();
                        }
                        if *g {
                            o["group"] = true.into();
                        }
                        o
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
            } else {
                let mut table = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
                for (n, d, _) in rows {
                    table.push(vec![n, d.unwrap_or_default()]);
                }
                print!("{}", crate::table::columns(&table, 1));
            }
        }
        "variables" | "type=variables" => {
            let mut vars = loaded.variables.clone();
            vars.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                println!("{}", serde_json::to_string_pretty(&vars).into_diagnostic()?);
            } else {
                let mut table = vec![["VARIABLE", "TYPE", "VALUE", "DESCRIPTION"]
                    .map(String::from)
                    .to_vec()];
                for v in vars {
                    table.push(vec![
                        v.name,
                        v.type_.unwrap_or_default(),
                        v.value.unwrap_or_else(|| "<null>".into()),
                        v.description.unwrap_or_default(),
                    ]);
                }
                print!("{}", crate::table::columns(&table, 1));
            }
        }
        other => {
            return Err(miette::miette!(
                help = "--list=targets or --list=variables",
                "invalid --list {other:?}"
            ))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds every target: all of them in one build graph (see [`crate::driver::multi`]);
/// `--call check|outline|targets` run per target, in dependency order.
fn build(
    args: &Args,
    def: &resolve::Definition,
    root: Option<std::path::PathBuf>,
) -> miette::Result<ExitCode> {
    use clap::ValueEnum;
    let scratch = tempfile::tempdir()
        .into_diagnostic()
        .wrap_err("creating a temporary directory")?;
    let common = plan::Common {
        progress: args
            .progress
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        allow: args.allow.clone(),
        passthrough: registry_args(&args.registry),
    };
    let plan = plan::plan(def, &common, scratch.path()).into_diagnostic()?;
    let jobs: Vec<&plan::Job> = plan.waves.iter().flatten().collect();
    for job in &jobs {
        if !job.ignored.is_empty() {
            eprintln!(
                "WARNING: target {:?}: kiln does not support {} yet; ignored",
                job.name,
                job.ignored.join(", ")
            );
        }
    }
    // `--call check|outline|targets` print their results on stdout: one target at a time,
    // so that each target's result stays in one piece.
    let calls = def
        .targets
        .values()
        .any(|t| t.call.as_deref().is_some_and(|c| c != "build"));
    if calls {
        return call_each(&jobs, root);
    }
    let mut requests = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let req = super::build::request_from_args(&build_args(job)?, root.clone())
            .wrap_err_with(|| format!("target {:?}", job.name))?;
        requests.push(crate::driver::multi::Request {
            name: job.name.clone(),
            req,
            links: job.links.clone(),
            export: !job.linked_only,
        });
    }
    let outcome = crate::driver::multi::run(requests, args.keep_going);
    report(args, outcome)
}

/// A job's flags as `kiln build` reads them.
fn build_args(job: &plan::Job) -> miette::Result<super::build::Args> {
    #[derive(clap::Parser)]
    struct Argv {
        #[command(flatten)]
        args: super::build::Args,
    }
    use clap::Parser;
    let argv = std::iter::once("kiln build".to_string()).chain(job.args.iter().cloned());
    Argv::try_parse_from(argv)
        .map(|a| a.args)
        .map_err(|e| miette::miette!("target {:?}: {}", job.name, e.render()))
}

/// `--call check|outline|targets`: each target's method, one after the other; a failing
/// one stops the others unless `--keep-going`.
fn call_each(jobs: &[&plan::Job], root: Option<std::path::PathBuf>) -> miette::Result<ExitCode> {
    let mut failed = Vec::new();
    for job in jobs {
        let ok = match super::build::run(build_args(job)?, root.clone()) {
            Ok(code) => code == ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[{}] {e:?}", job.name);
                false
            }
        };
        if !ok {
            failed.push(job.name.as_str());
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("ERROR: target {} failed", failed.join(", "));
    Ok(ExitCode::FAILURE)
}

/// Each target's metadata to `--metadata-file`, each failure's error, and the exit status:
/// 128 + the signal that stopped the bake, 1 when a target failed.
fn report(args: &Args, outcome: crate::driver::multi::Outcome) -> miette::Result<ExitCode> {
    use crate::driver::multi::TargetResult;
    let mut metadata = serde_json::Map::new();
    let (mut failed, mut skipped) = (Vec::new(), Vec::new());
    for (name, result) in &outcome.results {
        match result {
            TargetResult::Built { outcome, names } => {
                metadata.insert(name.clone(), super::build::metadata(outcome, names));
            }
            TargetResult::Failed(e) => {
                eprintln!("[{name}] {e:?}");
                failed.push(name.as_str());
            }
            TargetResult::NotBuilt => skipped.push(name.as_str()),
            TargetResult::Linked => {}
        }
    }
    if let Some(path) = &args.metadata_file {
        let text = serde_json::to_string_pretty(&metadata).into_diagnostic()?;
        std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing {}", path.display()))?;
    }
    if let Some(sig) = outcome.signal {
        eprintln!(
            "kiln bake: stopped by {sig:?}; not built: {}",
            skipped.join(", ")
        );
        return Ok(ExitCode::from(sig.exit_code()));
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut msg = format!("ERROR: target {} failed", failed.join(", "));
    if !skipped.is_empty() {
        msg.push_str(&format!("; not built: {}", skipped.join(", ")));
    }
    eprintln!("{msg}");
    Ok(ExitCode::FAILURE)
}

/// The registry flags, passed on to each build.
fn registry_args(r: &crate::registry_opts::RegistryArgs) -> Vec<String> {
    let mut out = Vec::new();
    if !r.insecure_registries.is_empty() {
        out.push(format!(
            "--insecure-registry={}",
            r.insecure_registries.join(",")
        ));
    }
    out.push(format!(
        "--max-concurrent-transfers={}",
        r.max_concurrent_transfers
    ));
    out.push(format!(
        "--registry-idle-timeout={}",
        r.idle_timeout.as_secs()
    ));
    out
}
