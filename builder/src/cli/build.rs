//! `kiln build`: flags spelled as buildx spells them. `--call build` (the default) builds;
//! `--check` / `--call check` runs the build checks, `--call outline` and `--call targets`
//! describe the Dockerfile.

use crate::context::{BuildContext, ContextSpec};
use kiln_frontend::lint::{self, render, CheckOptions};
use kiln_frontend::stages::{self, ResolveOptions};
use kiln_oci::Platform;
use miette::{IntoDiagnostic, WrapErr};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Arguments of `kiln build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build context: a directory, a tarball, a git or HTTP URL, or `-` for stdin.
    #[arg(value_name = "PATH | URL | -")]
    pub context: String,
    /// Name of the Dockerfile (default: `PATH/Dockerfile`); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,
    /// Set the target build stage to build.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set build-time variables (`KEY=VALUE`, or `KEY` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Set target platform for build (`os/arch[/variant]`, comma-separated or repeated).
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Set method for evaluating build (`build`, `check`, `outline`, `targets`), with an optional
    /// `,format=json`.
    #[arg(long, value_name = "METHOD", default_value = "build")]
    pub call: String,
    /// Shorthand for `--call=check`.
    #[arg(long, conflicts_with = "call", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub check: bool,
    /// Output format of `--call` results (`text` or `json`).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Name and optionally a tag (`name:tag`). Repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Output destination (`type=image|registry|oci|docker|local|tar[,key=value]`, a directory, or `-`).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Shorthand for `--output=type=registry`.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub push: bool,
    /// Shorthand for `--output=type=docker` (kiln: into the local image store).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub load: bool,
    /// Export the build cache (`type=registry,ref=REF`, `type=local,dest=DIR`, `type=inline`,
    /// with `mode=min|max`, `cache-mounts=true`, `ignore-error=true`, …; a bare value is a
    /// registry reference). Repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache (`type=registry,ref=REF` — a cache image, or an image with an
    /// inline cache —, `type=local,src=DIR`; a bare value is a registry reference). Repeatable:
    /// the sources are merged, the first holding a step wins.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Do not use the cache when building.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub no_cache: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Always look up base images in their registry.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub pull: bool,
    /// Progress output (`auto`, `tty`, `plain`, `rawjson`, `quiet`).
    #[arg(long, value_enum, default_value = "auto", env = "BUILDKIT_PROGRESS")]
    pub progress: crate::progress::ProgressMode,
    /// Only print the image ID on success.
    #[arg(short = 'q', long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", value_parser = super::parse_bool, value_name = "BOOL")]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<std::path::PathBuf>,
    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<std::path::PathBuf>,
    /// Set image metadata (`KEY=VALUE`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add an annotation to the image manifest (`KEY=VALUE`, or `manifest:KEY=VALUE`).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Secret to expose to the build (`id=ID[,src=PATH|,env=VAR]`).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent socket or keys to expose (`default|ID[=SOCKET]`).
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// Allow extra privileged entitlements (`network.host`, `security.insecure`).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Default network of RUN steps: `default` (an own namespace with outbound
    /// access), `none` or `host` (needs `--allow network.host`).
    #[arg(long, value_name = "MODE", default_value = "default", value_parser = parse_network)]
    pub network: kiln_solver::llb::NetworkMode,
    /// Add a custom host-to-IP mapping (`host:ip`).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Additional build context (`name=PATH`, `name=docker-image://REF`,
    /// `name=oci-layout://PATH[:TAG|@DIGEST]`).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Maximum steps run at once (default: twice the number of cores, at least 4).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Refuse layers larger than SIZE unpacked (`10GB`, `512MB`; 1024-based as docker reads
    /// sizes): base-image layers as they unpack, each step's layer as it is kept. Default: no
    /// limit.
    #[arg(
        long = "max-layer-size",
        value_name = "SIZE",
        env = "KILN_MAX_LAYER_SIZE"
    )]
    pub max_layer_size: Option<String>,
    /// RUN sandbox: `auto` (native where it can run, else an OCI runtime), `oci` or `native`.
    #[arg(
        long,
        value_name = "KIND",
        default_value = "auto",
        env = "KILN_EXECUTOR"
    )]
    pub executor: String,
    /// Provenance attestation: `true`, `false`, or `mode=min|max[,version=v1|v0.2][,builder-id=ID]`
    /// (shorthand for `--attest type=provenance`). Min provenance is on by default for pushed
    /// and OCI images (`BUILDX_NO_DEFAULT_ATTESTATIONS=1` turns the default off).
    #[arg(long, value_name = "SPEC", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// SBOM attestation: `true`, `false` or `generator=builtin` (shorthand for
    /// `--attest type=sbom`).
    #[arg(long, value_name = "SPEC", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Attestation (`type=provenance|sbom[,key=value…]`). Repeatable.
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,
    /// Print the build graph instead of building (`graph`: Graphviz DOT).
    #[arg(long, value_name = "WHAT")]
    pub print: Option<String>,
    /// Registry settings.
    #[command(flatten)]
    pub registry: crate::registry_opts::RegistryArgs,
    /// docker build's legacy flags, accepted and ignored.
    #[command(flatten)]
    pub legacy: super::legacy::LegacyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Build,
    Check,
    Outline,
    Targets,
}

/// Runs `kiln build`.
pub fn run(args: Args, root: Option<std::path::PathBuf>) -> miette::Result<ExitCode> {
    for note in args.legacy.notes() {
        eprintln!("{note}");
    }
    let (method, json) = method(&args)?;
    if method == Method::Build {
        return build_image(args, root);
    }
    let scratch = tempfile::tempdir()
        .into_diagnostic()
        .wrap_err("creating a temporary directory")?;
    let ctx = BuildContext::load(
        &ContextSpec::parse(&args.context),
        args.file.as_deref(),
        scratch.path(),
    )
    .into_diagnostic()?;
    let name = ctx.dockerfile.name.clone();
    let source = String::from_utf8_lossy(&ctx.dockerfile.content).into_owned();
    let ast = kiln_frontend::parse_named(&name, &ctx.dockerfile.content)
        .map_err(|e| super::dockerfile::report(e, &name, &source))?;
    let resolve = resolve_options(&args)?;
    let fail = |e| super::dockerfile::report(e, &name, &source);
    match method {
        Method::Check => call_check(&ast, &ctx, resolve, json, &fail),
        Method::Outline => {
            let build = stages::resolve(&ast, &resolve).map_err(fail)?;
            let outline = build.outline();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outline).into_diagnostic()?
                );
            } else {
                print!("{}", outline_text(&outline));
            }
            Ok(ExitCode::SUCCESS)
        }
        Method::Targets => {
            let build = stages::resolve(
                &ast,
                &ResolveOptions {
                    all_stages: false,
                    ..resolve
                },
            )
            .map_err(fail)?;
            let targets = build.targets();
            if json {
                let v = serde_json::json!({ "targets": targets });
                println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
            } else {
                print!("{}", targets_text(&targets));
            }
            Ok(ExitCode::SUCCESS)
        }
        Method::Build => Ok(ExitCode::FAILURE),
    }
}

/// `--call check`: the build checks, as text or JSON; fails when they are configured to.
fn call_check(
    ast: &kiln_frontend::parser::Ast,
    ctx: &BuildContext,
    resolve: ResolveOptions,
    json: bool,
    fail: &dyn Fn(kiln_frontend::error::SourceError) -> miette::Report,
) -> miette::Result<ExitCode> {
    let ignore = &ctx.ignore;
    let is_ignored = |p: &str| ignore.excludes(p);
    let report = lint::check(
        ast,
        &CheckOptions {
            resolve,
            ignored: Some(&is_ignored),
        },
    )
    .map_err(fail)?;
    if json {
        let v = serde_json::json!({
            "warnings": report.warnings,
            "error": report.failure_message(),
        });
        println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
    } else {
        print!("{}", render::report_text(&report, ast.source()));
    }
    if let Some(msg) = report.failure_message() {
        if !json {
            eprintln!("ERROR: {msg}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The build itself: flags into a request, the request run, results reported.
fn build_image(args: Args, root: Option<std::path::PathBuf>) -> miette::Result<ExitCode> {
    use crate::driver::run::run as run_build;
    let req = build_request(&args, root)?;
    let names: Vec<String> = req
        .outputs
        .iter()
        .flat_map(|o| o.names.iter().cloned())
        .collect();
    let outcome = match run_build(req) {
        Ok(outcome) => outcome,
        // A signal ends the build with the shell's 128 + signal status.
        Err(e) => match e.downcast_ref::<crate::driver::interrupt::Interrupted>() {
            Some(i) => {
                let code = i.signal.exit_code();
                eprintln!("{e:?}");
                return Ok(ExitCode::from(code));
            }
            None => return Err(e),
        },
    };
    report_outcome(&args, &outcome, &names)?;
    Ok(ExitCode::SUCCESS)
}

/// The flags as a build request (bake's targets are built from theirs).
pub(crate) fn request_from_args(
    args: &Args,
    root: Option<std::path::PathBuf>,
) -> miette::Result<crate::driver::BuildRequest> {
    build_request(args, root)
}

/// The flags as a build request; the flags `build_image` reads itself are checked here,
/// before anything is built.
fn build_request(
    args: &Args,
    root: Option<std::path::PathBuf>,
) -> miette::Result<crate::driver::BuildRequest> {
    let resolve = resolve_options(args)?;
    let labels = parse_labels(&args.labels)?;
    let annotations = args
        .annotations
        .iter()
        .map(|a| parse_annotation(a))
        .collect::<miette::Result<Vec<_>>>()?;
    let print_graph = print_graph_flag(args.print.as_deref())?;
    check_flags(args)?;
    let outputs =
        crate::export::spec::outputs_from_flags(&args.outputs, &args.tags, args.push, args.load)
            .into_diagnostic()?;
    let (cache_to, cache_from) =
        crate::remote_cache::spec::from_flags(&args.cache_to, &args.cache_from).map_err(|e| {
            crate::hints::with_help(
                miette::Report::from_err(e.clone()),
                crate::hints::for_cache_spec(&e),
            )
        })?;
    let executor = args.executor.parse().into_diagnostic()?;
    if args.network == kiln_solver::llb::NetworkMode::Host
        && !args.allow.iter().any(|a| a == "network.host")
    {
        return Err(miette::miette!(
            "--network host needs the network.host entitlement: pass --allow network.host"
        ));
    }
    let source_date_epoch = source_date_epoch(&resolve.build_args)?;
    // BUILDKIT_MULTI_PLATFORM=1 makes an index even for one platform, as buildx does.
    let multi_platform = std::env::var("BUILDKIT_MULTI_PLATFORM")
        .map(|v| matches!(v.trim(), "1" | "true"))
        .unwrap_or(false);
    let max_layer_size = max_layer_size(args.max_layer_size.as_deref())?;
    let no_default_attestations = std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .map(|v| !matches!(v.trim(), "" | "0" | "false"))
        .unwrap_or(false);
    let attest = crate::attest::options::Attestations::from_flags(
        args.provenance.as_deref(),
        args.sbom.as_deref(),
        &args.attest,
        no_default_attestations,
    )
    .into_diagnostic()?;
    Ok(crate::driver::BuildRequest {
        root,
        context: ContextSpec::parse(&args.context),
        file: args.file.clone(),
        target: args.target.clone(),
        build_args: resolve.build_args,
        platforms: args.platform.clone(),
        multi_platform,
        outputs,
        cache_to,
        cache_from,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        progress: if args.quiet {
            crate::progress::ProgressMode::Quiet
        } else {
            args.progress
        },
        jobs: args.jobs.unwrap_or_else(default_jobs),
        executor,
        max_layer_size,
        secrets: args.secrets.clone(),
        ssh: args.ssh.clone(),
        allow: args.allow.clone(),
        add_hosts: args.add_hosts.clone(),
        network: args.network,
        build_contexts: args.build_contexts.clone(),
        labels,
        annotations,
        source_date_epoch,
        print_graph,
        registry: args.registry.clone(),
        attest,
    })
}

/// `--label KEY=VALUE` values.
fn parse_labels(labels: &[String]) -> miette::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| miette::miette!("invalid --label {l:?}: expected KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--print`: only `graph` (print the build graph instead of building).
fn print_graph_flag(print: Option<&str>) -> miette::Result<bool> {
    match print {
        None => Ok(false),
        Some("graph") => Ok(true),
        Some(other) => Err(miette::miette!(
            help = "--print=graph prints the build graph as DOT",
            "unknown --print {other:?}"
        )),
    }
}

/// SOURCE_DATE_EPOCH: `--build-arg SOURCE_DATE_EPOCH=` as BuildKit reads it; else the
/// environment, as buildx passes it on. Empty means unset.
fn source_date_epoch(build_args: &BTreeMap<String, String>) -> miette::Result<Option<u64>> {
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
    match epoch {
        Some(v) if !v.is_empty() => {
            Ok(Some(v.parse::<u64>().map_err(|_| {
                miette::miette!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// `--max-layer-size`: a size, or none when empty or absent.
fn max_layer_size(v: Option<&str>) -> miette::Result<Option<u64>> {
    match v {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(kiln_solver::units::parse_ram_size(v).map_err(
            |_| {
                miette::miette!(
                    help = "a size such as 10GB, 512MB or 1073741824 (bytes)",
                    "invalid --max-layer-size {v:?}"
                )
            },
        )?)),
    }
}

/// The default of `--jobs`. Steps wait on I/O and sleeps as much as they compute: like
/// BuildKit, let more run than there are cores.
fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(2)
        .max(4)
}

/// What a finished build reports: the image ID (`--quiet`, `--iidfile`) and the
/// `--metadata-file`, as buildx writes them.
fn report_outcome(
    args: &Args,
    outcome: &crate::driver::run::BuildOutcome,
    names: &[String],
) -> miette::Result<()> {
    if let Some(image) = &outcome.image {
        write_image_id(args, image.config_digest.as_ref())?;
    }
    if let Some(index) = &outcome.index {
        // For an index the image ID is the index digest, as buildx reports it.
        write_image_id(args, index.digest.as_ref())?;
    }
    if let Some(path) = &args.metadata_file {
        let text = serde_json::to_string_pretty(&metadata(outcome, names)).into_diagnostic()?;
        std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A build's `--metadata-file` JSON, as buildx writes it (and kiln's counts); `names` are
/// the image names of its outputs.
pub(crate) fn metadata(
    outcome: &crate::driver::run::BuildOutcome,
    names: &[String],
) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "kiln.vertices.executed": outcome.executed,
        "kiln.vertices.cached": outcome.cached,
    });
    if !outcome.cache_exports.is_empty() {
        meta["kiln.cache.exported"] = serde_json::json!(outcome.cache_exports);
    }
    if let Some(image) = &outcome.image {
        let id = image.config_digest.to_string();
        meta["containerimage.digest"] = serde_json::json!(image.manifest.digest.to_string());
        meta["containerimage.config.digest"] = serde_json::json!(id);
        meta["containerimage.descriptor"] = serde_json::json!(image.manifest);
        meta["image.name"] = serde_json::json!(names.join(","));
    }
    // With referrers=true the outputs name the images without attestation entries: an index
    // only when the build would make one without attestations.
    let index = match &outcome.referrers {
        Some(form) => {
            meta["kiln.attestations"] = serde_json::json!(form
                .artifacts
                .iter()
                .map(|a| serde_json::json!({
                    "subject": a.subject.digest.to_string(),
                    "digest": a.manifest.digest.to_string(),
                    "artifactType": a.manifest.artifact_type,
                }))
                .collect::<Vec<_>>());
            Some(&form.root).filter(|r| kiln_oci::media_type::is_index(&r.media_type))
        }
        None => outcome.index.as_ref(),
    };
    if let Some(index) = index {
        // For an index the image ID is the index digest, as buildx reports it.
        let id = index.digest.to_string();
        meta["containerimage.digest"] = serde_json::json!(id);
        meta["containerimage.descriptor"] = serde_json::json!(index);
        meta["image.name"] = serde_json::json!(names.join(","));
        meta["kiln.platforms"] = serde_json::json!(outcome
            .platform_images
            .iter()
            .map(|i| serde_json::json!({
                "platform": i.manifest.platform,
                "digest": i.manifest.digest.to_string(),
                "config.digest": i.config_digest.to_string(),
            }))
            .collect::<Vec<_>>());
    }
    meta
}

/// The image ID on stdout with `--quiet`, and in the `--iidfile`.
fn write_image_id(args: &Args, id: &str) -> miette::Result<()> {
    if args.quiet {
        println!("{id}");
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, id)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The flags `build_image` reads itself, checked before anything is built
/// (the request's own flags are checked by `build::validate`).
fn check_flags(args: &Args) -> miette::Result<()> {
    for t in &args.tags {
        let parsed = kiln_oci::Reference::parse(t).map_err(|e| {
            miette::miette!(
                help = "a tag is [registry/]repository[:tag], the repository lowercase",
                "invalid -t/--tag {t:?}: {e}"
            )
        })?;
        if parsed.digest().is_some() {
            return Err(miette::miette!(
                help = "name the image by repository and tag, e.g. -t app:1",
                "invalid -t/--tag {t:?}: a tag cannot name a digest"
            ));
        }
    }
    if args.jobs == Some(0) {
        return Err(miette::miette!(
            "invalid --jobs 0: at least one step must run"
        ));
    }
    // Written after the build: a missing directory would waste the whole build.
    for (flag, file) in [
        ("--iidfile", &args.iidfile),
        ("--metadata-file", &args.metadata_file),
    ] {
        let Some(file) = file else { continue };
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(miette::miette!(
                "invalid {flag} {}: its directory does not exist",
                file.display()
            ));
        }
    }
    Ok(())
}

/// `--annotation [TYPE[,TYPE][PLATFORM]:]KEY=VALUE` as buildx spells it. kiln
/// annotates the image manifests (type `manifest`, the default); the other
/// types are refused rather than turned into a key such as `index:KEY`.
fn parse_annotation(a: &str) -> miette::Result<(String, String)> {
    let bad = |why: &str| miette::miette!("invalid --annotation {a:?}: {why}");
    let (lhs, v) = a.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
    let key = match lhs.split_once(':') {
        Some((prefix, key)) if is_annotation_prefix(prefix) => {
            let (types, platform) = match prefix.split_once('[') {
                Some((types, platform)) => (types, Some(platform.trim_end_matches(']'))),
                None => (prefix, None),
            };
            for t in types.split(',') {
                match t {
                    "manifest" => {}
                    "index" | "manifest-descriptor" | "index-descriptor" => {
                        return Err(miette::miette!(
                            help = "annotate the manifest: --annotation KEY=VALUE",
                            "invalid --annotation {a:?}: kiln does not support {t} annotations yet"
                        ))
                    }
                    other => return Err(bad(&format!("unknown annotation type {other:?}"))),
                }
            }
            if let Some(p) = platform {
                return Err(miette::miette!(
                    help = "annotate every platform's manifest: --annotation KEY=VALUE",
                    "invalid --annotation {a:?}: kiln does not support per-platform ({p}) annotations yet"
                ));
            }
            key
        }
        _ => lhs,
    };
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(bad("the key is empty or has spaces"));
    }
    Ok((key.to_string(), v.to_string()))
}

/// Whether `prefix` (before a `:`) names annotation types, as buildx reads it:
/// lowercase words and dashes, comma-separated, with an optional `[platform]`.
fn is_annotation_prefix(prefix: &str) -> bool {
    let types = prefix.split_once('[').map_or(prefix, |(t, _)| t);
    !types.is_empty()
        && types
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c == ',')
}

fn method(args: &Args) -> miette::Result<(Method, bool)> {
    let spec = if args.check {
        "check"
    } else {
        args.call.as_str()
    };
    let mut parts = spec.split(',');
    let m = match parts
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "build" | "" => Method::Build,
        "check" | "lint" => Method::Check,
        "outline" => Method::Outline,
        "targets" => Method::Targets,
        other => {
            return Err(miette::miette!(
                help = "methods: build, check, outline, targets",
                "unknown --call method {other:?}"
            ))
        }
    };
    let mut format = args.format.clone();
    for p in parts {
        match p.split_once('=') {
            Some(("format", f)) => format = Some(f.to_string()),
            _ => {
                return Err(miette::miette!(
                    help = "write --call outline,format=json",
                    "invalid --call option {p:?}"
                ))
            }
        }
    }
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => {
            return Err(miette::miette!(
                help = "formats: text, json",
                "unknown format {f:?}"
            ))
        }
    };
    Ok((m, json))
}

fn resolve_options(args: &Args) -> miette::Result<ResolveOptions> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        if a.is_empty() || a.starts_with('=') {
            return Err(miette::miette!(
                "invalid --build-arg {a:?}: expected KEY=VALUE or KEY"
            ));
        }
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg KEY` takes the value from the environment, and is ignored when unset.
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let target_platform = match args.platform.iter().find(|p| !p.trim().is_empty()) {
        None => Platform::host(),
        Some(p) if p == "local" => Platform::host(),
        Some(p) => Platform::parse(p).map_err(|e| {
            miette::miette!(help = "e.g. --platform linux/arm64", "--platform: {e}")
        })?,
    };
    Ok(ResolveOptions {
        target: args.target.clone(),
        build_args,
        target_platform,
        ..ResolveOptions::default()
    })
}

fn outline_text(o: &stages::outline::Outline) -> String {
    let mut out = String::new();
    let mut head = vec![vec![
        "TARGET:".to_string(),
        if o.name.is_empty() {
            "(default)".into()
        } else {
            o.name.clone()
        },
    ]];
    if let Some(d) = &o.description {
        head.push(vec!["DESCRIPTION:".into(), d.clone()]);
    }
    out.push_str(&crate::table::columns(&head, 1));
    out.push('\n');
    if !o.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_string(),
            "VALUE".into(),
            "DESCRIPTION".into(),
        ]];
        for a in &o.args {
            rows.push(vec![
                a.name.clone(),
                a.value.clone().unwrap_or_default(),
                a.description.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&crate::table::columns(&rows, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if !list.is_empty() {
            let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
            for s in list {
                rows.push(vec![
                    s.name.clone(),
                    if s.required {
                        "true".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            out.push_str(&crate::table::columns(&rows, 3));
            out.push('\n');
        }
    }
    out
}

fn targets_text(targets: &[stages::outline::Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".into()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, _) => "(default)".to_string(),
            (false, true) => format!("{} (default)", t.name),
            (false, false) => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone().unwrap_or_default()]);
    }
    crate::table::columns(&rows, 3)
}

/// `--network` values, as buildx names them.
fn parse_network(s: &str) -> Result<kiln_solver::llb::NetworkMode, String> {
    use kiln_solver::llb::NetworkMode;
    match s {
        "default" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(format!(
            "unknown network mode {other:?} (expected default, none or host)"
        )),
    }
}
