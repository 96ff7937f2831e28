//! One `kiln build`: context and Dockerfile in, stages resolved against
//! their base images, lowered to a graph, solved with the cache, and
//! exported to every requested output.

use super::cache::{ignorable_cache_blob, remote_blobs, DropCacheSource};
use super::checks::BuildChecks;
use super::commit::{export_image, ExportOptions, ExportStores, ExportedImage};
use super::export_steps::ExportSteps;
use super::images::{BuildImages, Resolver};
use super::interrupt::{Armed, Interrupted, Interrupts};
use super::session::{parse_build_context, session_from_flags};
use super::ssh_agent::KeyAgent;
use super::BuildRequest;
use crate::attest::sbom::extras::ExtraScans;
use crate::cli::dockerfile::report;
use crate::context::BuildContext;
use crate::driver::assemble::{write_index, ManifestOptions};
use crate::local_store::{open_state, LocalStore};
use crate::progress::ProgressDisplay;
use kiln_frontend::error::{ErrorKind, Location, SourceError};
use kiln_frontend::lower::{
    lower_into, rfc3339, ImageResolver, LowerOptions, NamedContext, NoCache,
};
use kiln_frontend::parser::Ast;
use kiln_frontend::stages::{self, Base, ResolveOptions};
use kiln_oci::Descriptor;
use kiln_oci::Platform;
use kiln_solver::cache::CacheStore;
use kiln_solver::executor::lazy::LazyExecutor;
use kiln_solver::executor::ExecutorConfig;
use kiln_solver::llb::{self, Definition, VertexRef};
use kiln_solver::progress::{channel, ProgressSender};
use kiln_solver::scheduler::{Scheduler, SolveError};
use kiln_solver::snapshot::Snapshot;
use kiln_solver::state::StateDir;
use kiln_solver::worker::{LocalWorker, Output};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image, when an output needed one and one platform was built.
    pub image: Option<ExportedImage>,
    /// The index over every platform's image (several platforms, or
    /// `BUILDKIT_MULTI_PLATFORM=1`).
    pub index: Option<Descriptor>,
    /// Each platform's image, in `--platform` order (when an output needed images).
    pub platform_images: Vec<ExportedImage>,
    /// Vertices executed (not from the cache).
    pub executed: usize,
    /// Vertices whose result came from the cache.
    pub cached: usize,
    /// What each `--cache-to type=registry|local` wrote.
    pub cache_exports: Vec<crate::remote_cache::export::ExportReport>,
    /// Each platform's attestation files for `type=local|tar` (`provenance.json`,
    /// `sbom.spdx.json`), in `--platform` order; empty when none were asked for.
    pub attestation_files: Vec<super::attest::AttestationFiles>,
    /// The images with their attestations as OCI 1.1 referrers, for `referrers=true` outputs.
    pub referrers: Option<crate::attest::referrers::ReferrersForm>,
}

impl BuildOutcome {
    /// The root the outputs name: the index, else the single image's manifest.
    pub fn root(&self) -> Option<&Descriptor> {
        self.index
            .as_ref()
            .or_else(|| self.image.as_ref().map(|i| &i.manifest))
    }
}

/// One target platform's part of the shared graph.
struct PlatformTarget {
    platform: kiln_oci::Platform,
    target: Option<VertexRef>,
    config: kiln_oci::config::ImageConfig,
    history_vertices: Vec<(usize, Option<VertexRef>)>,
    /// Stages (and the context) the SBOM scans too (`BUILDKIT_SBOM_SCAN_*`).
    sbom_scans: ExtraScans,
}

/// The `--platform` values as platforms (`local` is the host), duplicates dropped.
pub(super) fn target_platforms(req: &BuildRequest) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for p in req
        .platforms
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        let parsed = if p == "local" {
            Platform::host()
        } else {
            Platform::parse(p).map_err(|e| {
                miette!(
                    help = "e.g. --platform linux/amd64,linux/arm64",
                    "--platform: {e}"
                )
            })?
        };
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    if out.is_empty() {
        out.push(Platform::host());
    }
    Ok(out)
}

/// Runs a build: every target platform is lowered into one graph (work that
/// does not depend on the platform is one vertex) and solved at once. A `--cache-from`
/// source with `ignore-error=true` whose blob proves unusable is dropped and the build run
/// again (at most once per source).
pub fn run(mut req: BuildRequest) -> Result<BuildOutcome> {
    loop {
        match run_once(req.clone()) {
            Err(e) => match e.downcast::<DropCacheSource>() {
                Ok(drop) if drop.index < req.cache_from.len() => {
                    let source = req.cache_from.remove(drop.index);
                    eprintln!(
                        "WARNING: --cache-from {}: {} (ignored: ignore-error=true; building again without this cache)",
                        source.location.describe(),
                        drop.message
                    );
                }
                Ok(drop) => return Err(miette!("{drop}")),
                Err(e) => return Err(e),
            },
            ok => return ok,
        }
    }
}

/// One attempt of [`run`]: the one-request case of the phases (prepare, solve, export).
fn run_once(req: BuildRequest) -> Result<BuildOutcome> {
    // Bad flags fail here, before the state directory is even opened.
    super::validate::check(&req)?;
    let shared = Shared::open(&req)?;
    let mut graph = Graph::default();
    let prepared = prepare(req, &shared, &mut graph, &BTreeMap::new())?;
    if prepared.req.print_graph {
        return Ok(print_graph(&graph.definition, &prepared));
    }
    let imported = import_cache(&shared, &prepared.req, &prepared.platforms)?;
    let m = Machinery::start(&shared, &[&prepared], &graph.definition, imported)?;
    let (armed, solved) = solve_requests(&shared, &m, &graph.definition, &[&prepared]);
    let result = match solved {
        Ok(r) => r,
        Err(e) => {
            let drop = match &e {
                SolveError::Vertex { source, .. } => ignorable_cache_blob(&prepared.req, source),
                _ => None,
            };
            if let Some(stop) = m.fail(shared, armed) {
                return Err(stop.into());
            }
            let report = solve_error(e, &graph.definition, &prepared.df);
            return Err(drop.map_or(report, miette::Report::new));
        }
    };
    drop(armed);
    // A signal that came as the solve ended: stop before exporting anything.
    if let Some(signal) = shared.interrupts.signal() {
        return Err(Interrupted { signal }.into());
    }
    let exported = export_request(&shared, &m, &graph.definition, prepared, result, None);
    // The display ends when every progress sender is gone, the worker's too.
    m.finish();
    exported
}

/// What every request of one solve shares: the state directory (locked for the whole
/// build), the runtime and its signal listener, the registry client and the base images.
pub(super) struct Shared {
    pub(super) state: StateDir,
    /// Held for the whole build: prune takes it exclusively, so it never removes what a
    /// running build uses.
    _lock: kiln_solver::content::StoreLock,
    pub(super) store: Arc<LocalStore>,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) interrupts: Interrupts,
    pub(super) client: kiln_registry::RegistryClient,
    pub(super) images: Arc<BuildImages>,
}

impl Shared {
    /// Opens the state directory and starts the runtime; `req` gives the root, the
    /// registry settings and `--pull`.
    pub(super) fn open(req: &BuildRequest) -> Result<Shared> {
        let state = open_state(req.root.as_deref())?;
        let lock = state
            .lock(kiln_solver::content::LockMode::Shared)
            .into_diagnostic()?;
        let store = Arc::new(LocalStore {
            content: state.content().clone(),
        });
        let runtime = crate::registry_opts::runtime()?;
        let interrupts = Interrupts::listen(&runtime)
            .into_diagnostic()
            .wrap_err("listening for signals")?;
        let client = req.registry.client();
        let images = Arc::new(BuildImages::new(
            Arc::clone(&store),
            client.clone(),
            runtime.handle().clone(),
            req.pull,
            req.registry.concurrency(),
        ));
        Ok(Shared {
            state,
            _lock: lock,
            store,
            runtime,
            interrupts,
            client,
            images,
        })
    }
}

/// The combined build graph of every request, and the local source name each context
/// directory has in it.
#[derive(Default)]
pub(super) struct Graph {
    pub(super) definition: Definition,
    locals: LocalNames,
}

/// Local source names by directory: requests whose context is the same directory share its
/// source (one transfer, one hash); different directories wanting one name get distinct ones.
#[derive(Default)]
struct LocalNames {
    /// The name given out and the directory it stands for.
    taken: Vec<(String, std::path::PathBuf)>,
}

impl LocalNames {
    /// The name of `dir`'s source, `wanted` unless another directory has it.
    fn name(&mut self, wanted: &str, dir: &std::path::Path) -> String {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut n = 0usize;
        loop {
            let candidate = match n {
                0 => wanted.to_string(),
                n => format!("{wanted}#{n}"),
            };
            match self.taken.iter().find(|(name, _)| *name == candidate) {
                Some((_, d)) if *d == dir => return candidate,
                Some(_) => n += 1,
                None => {
                    self.taken.push((candidate.clone(), dir));
                    return candidate;
                }
            }
        }
    }
}

/// A target's result fed to another request as a named context (bake's `target:NAME`),
/// per platform.
#[derive(Debug, Clone)]
pub(super) struct Linked {
    pub(super) platform: Platform,
    pub(super) vertex: Option<VertexRef>,
    pub(super) config: kiln_oci::config::ImageConfig,
}

/// One request, loaded and lowered into the combined graph.
pub(super) struct Prepared {
    pub(super) req: BuildRequest,
    df: Dockerfile,
    platforms: Vec<Platform>,
    multi: bool,
    targets: Vec<PlatformTarget>,
    checks: Option<BuildChecks>,
    no_cache: NoCache,
    started_on: i64,
    /// The request's local source names (`context`, `context:NAME`) as the graph has them.
    locals: BTreeMap<String, String>,
}

impl Prepared {
    /// Each platform's root vertex, in `--platform` order, then the stages its SBOM scans.
    pub(super) fn roots(&self) -> Vec<Option<VertexRef>> {
        // The stages an SBOM scans are solved too, after the targets.
        let scanned = self.targets.iter().flat_map(|t| t.sbom_scans.vertices());
        self.targets
            .iter()
            .map(|t| t.target)
            .chain(scanned)
            .collect()
    }

    /// Each platform's result as a named context of another request.
    pub(super) fn linked(&self) -> Vec<Linked> {
        self.targets
            .iter()
            .map(|t| Linked {
                platform: t.platform.clone(),
                vertex: t.target,
                config: t.config.clone(),
            })
            .collect()
    }

    /// The platforms of [`Prepared::roots`].
    pub(super) fn roots_platforms(&self) -> Vec<Platform> {
        self.platforms.clone()
    }

    /// The request's Dockerfile.
    pub(super) fn dockerfile(&self) -> &Dockerfile {
        &self.df
    }
}

/// Phase 1–2 for one request: its Dockerfile loaded and every platform lowered into
/// `graph`; `links` are named contexts that are results of other requests in it.
pub(super) fn prepare(
    req: BuildRequest,
    shared: &Shared,
    graph: &mut Graph,
    links: &BTreeMap<String, Vec<Linked>>,
) -> Result<Prepared> {
    let started_on = jiff::Timestamp::now().as_second();
    let df = Dockerfile::load(&req, &shared.state)?;
    let platforms = target_platforms(&req)?;
    let multi = platforms.len() > 1 || req.multi_platform;
    tracing::debug!(instructions = df.ast.children.len(), platforms = ?platforms.iter().map(ToString::to_string).collect::<Vec<_>>(), "Dockerfile parsed");
    check_outputs(&req, multi)?;
    for why in super::attest::warnings(&req) {
        eprintln!("WARNING: {why}");
    }
    let mut locals = BTreeMap::new();
    locals.insert(
        "context".to_string(),
        graph.locals.name("context", &df.ctx.root),
    );
    for spec in &req.build_contexts {
        if let (name, NamedContext::Local(local)) = parse_build_context(spec)? {
            let dir = super::session::local_context_dir(spec, &name)?;
            locals.insert(local.clone(), graph.locals.name(&local, &dir));
        }
    }
    let lowered = lower_platforms(
        &req,
        &df,
        &platforms,
        multi,
        &shared.images,
        (&mut graph.definition, &locals, links),
    )?;
    Ok(Prepared {
        req,
        df,
        platforms,
        multi,
        targets: lowered.targets,
        checks: lowered.checks,
        no_cache: lowered.no_cache,
        started_on,
        locals,
    })
}

/// `--cache-from`, imported before the machinery starts.
pub(super) fn import_cache(
    shared: &Shared,
    req: &BuildRequest,
    platforms: &[Platform],
) -> Result<Option<crate::remote_cache::import::Imported>> {
    crate::remote_cache::import(
        &req.cache_from,
        &shared.store,
        &shared.client,
        shared.runtime.handle(),
        platforms,
    )
}

/// Phase 4: every request's platforms solved at once by one scheduler. The returned guard
/// keeps signals turned into a cancel until it is dropped.
pub(super) fn solve_requests(
    shared: &Shared,
    m: &Machinery,
    def: &Definition,
    requests: &[&Prepared],
) -> (Armed, std::result::Result<Solved, SolveError>) {
    let wanted: Vec<Option<VertexRef>> = requests.iter().flat_map(|p| p.roots()).collect();
    let first = &requests[0].req;
    tracing::debug!(vertices = def.len(), jobs = first.jobs, executor = ?first.executor, no_cache = ?requests.iter().map(|p| &p.no_cache).collect::<Vec<_>>(), "solving");
    // A copy only the image needs writes its layer blob as it copies; worth it when the
    // export takes that blob as is (gzip at the default level, times not clamped).
    let blob_as_is = |p: &&Prepared| {
        p.req.source_date_epoch.is_none()
            && export_options(&p.req).is_ok_and(|o| {
                o.compression == kiln_solver::snapshot::layer::Compression::Gzip
                    && o.level.is_none()
            })
    };
    if requests.iter().all(blob_as_is) {
        let roots: Vec<VertexRef> = wanted.iter().flatten().copied().collect();
        m.worker.plan_streamed_copies(def, &roots);
    }
    let armed = shared.interrupts.arm();
    let solved = shared.runtime.block_on(solve(
        def,
        &wanted,
        &m.cache,
        m.worker.clone(),
        first.jobs,
        &m.tx,
        shared.interrupts.received(),
    ));
    if let Ok(r) = &solved {
        tracing::debug!(executed = r.executed, cached = r.cached, "solved");
    }
    (armed, solved)
}

/// Phases 5–7 for one request: its images, attestations, outputs, then its cache; `target`
/// names its export steps when several requests are built together.
pub(super) fn export_request(
    shared: &Shared,
    m: &Machinery,
    def: &Definition,
    p: Prepared,
    mut result: Solved,
    target: Option<&str>,
) -> Result<BuildOutcome> {
    let Prepared {
        req,
        df,
        multi,
        targets,
        started_on,
        ..
    } = p;
    let state = &shared.state;
    let remote_blobs = remote_blobs(&req, m.imported.as_ref(), &m.worker);
    let sbom_extras = ExtraScans::solved(
        targets.iter().map(|t| &t.sbom_scans),
        result.snapshots.split_off(targets.len()),
    );
    let steps = ExportSteps::start_for(&m.tx, &req.outputs, target);
    let solved = result.records.clone();
    let (in_index, as_files) = (
        super::attest::wanted(&req),
        super::attest::files_wanted(&req),
    );
    // With attestations the index is written once they are made, over images and them.
    let (mut outcome, results) = export_images(
        &req,
        state,
        m,
        remote_blobs.as_ref(),
        targets,
        result,
        &steps,
        (multi, in_index),
    )?;
    if in_index || as_files {
        let inputs = super::attest::AttestInputs {
            req: &req,
            dockerfile_name: &dockerfile_path(&req),
            dockerfile: &df.ctx.dockerfile.content,
            definition: def,
            started_on,
            layers: m.worker.layers(),
            content: state.content(),
            docker_media_types: export_options(&req)?.docker_media_types,
            sbom_extras: (
                &sbom_extras,
                crate::attest::sbom::extras::ContextDir {
                    root: &df.ctx.root,
                    ignore: &df.ctx.ignore,
                },
            ),
        };
        if in_index {
            let step = steps.image_step(&req.outputs);
            super::attest::attach(&inputs, &mut outcome, &results, step)?;
        }
        if as_files {
            outcome.attestation_files = super::attest::files(&inputs, &results)?;
        }
    }
    // The outputs are written while the display still runs: they are its last steps.
    let layers = m.worker.layers().clone();
    // An image push mounts what the imported caches of its registry hold.
    let mount_from: Vec<kiln_oci::Reference> = m
        .imported
        .iter()
        .flat_map(|i| i.repositories.iter().map(|(_, r)| r.clone()))
        .collect();
    let result = crate::export::BuildResult {
        req: &req,
        runtime: &shared.runtime,
        store: &shared.store,
        layers: &layers,
        results: &results,
        outcome: &outcome,
        mount_from: &mount_from,
        remote_blobs: remote_blobs.as_ref(),
    };
    let written = crate::export::write_outputs(&result, &steps);
    drop(steps);
    // The cache goes after the outputs, and only when they were written.
    written?;
    outcome.cache_exports = export_cache(&req, shared, m, def, &solved, &results)?;
    Ok(outcome)
}

/// The Dockerfile's path as provenance records it: its file name (`-f`'s last component, as
/// BuildKit names the file in its `dockerfile` local), never a host path.
fn dockerfile_path(req: &BuildRequest) -> String {
    req.file
        .as_deref()
        .filter(|f| *f != "-")
        .and_then(|f| std::path::Path::new(f).file_name())
        .map_or_else(
            || "Dockerfile".to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// A build's Dockerfile, loaded from its context and parsed.
pub(super) struct Dockerfile {
    ctx: BuildContext,
    /// Its name, for errors.
    name: String,
    /// Its text, for the excerpts of errors.
    source: String,
    ast: Ast,
}

impl Dockerfile {
    /// Phase 1: loads the context (staged under the state directory) and parses the Dockerfile.
    fn load(req: &BuildRequest, state: &StateDir) -> Result<Dockerfile> {
        let scratch = state.root().join("tmp");
        tracing::debug!(context = ?req.context, file = ?req.file, "loading the context");
        let ctx =
            BuildContext::load(&req.context, req.file.as_deref(), &scratch).into_diagnostic()?;
        tracing::debug!(root = %ctx.root.display(), dockerfile = %ctx.dockerfile.name, bytes = ctx.dockerfile.content.len(), "context loaded");
        let name = ctx.dockerfile.name.clone();
        let source = String::from_utf8_lossy(&ctx.dockerfile.content).into_owned();
        let ast = kiln_frontend::parse_named(&name, &ctx.dockerfile.content)
            .map_err(|e| report(e, &name, &source))?;
        Ok(Dockerfile {
            ctx,
            name,
            source,
            ast,
        })
    }

    /// A Dockerfile error, rendered with its excerpt.
    fn fail(&self, e: SourceError) -> miette::Report {
        report(e, &self.name, &self.source)
    }
}

/// Every target platform of one request, lowered into the graph.
struct PlatformParts {
    /// Each platform's part, in `--platform` order.
    targets: Vec<PlatformTarget>,
    /// The build checks (run on the first platform's stages).
    checks: Option<BuildChecks>,
    no_cache: NoCache,
}

/// `--no-cache` and `--no-cache-filter` as the lowering's cache policy.
fn no_cache_policy(req: &BuildRequest) -> NoCache {
    if req.no_cache {
        NoCache::All
    } else if !req.no_cache_filter.is_empty() {
        NoCache::Stages(
            req.no_cache_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        )
    } else {
        NoCache::None
    }
}

/// Phase 2: resolves each target platform's stages against their base images and lowers
/// them into the graph (local sources named as `locals` says, `links` as named contexts);
/// runs the build checks once.
fn lower_platforms(
    req: &BuildRequest,
    df: &Dockerfile,
    platforms: &[Platform],
    multi: bool,
    images: &Arc<BuildImages>,
    (definition, locals, links): (
        &mut Definition,
        &BTreeMap<String, String>,
        &BTreeMap<String, Vec<Linked>>,
    ),
) -> Result<PlatformParts> {
    let no_cache = no_cache_policy(req);
    let local_name = |n: &str| locals.get(n).cloned().unwrap_or_else(|| n.to_string());
    let named_contexts: BTreeMap<String, NamedContext> = req
        .build_contexts
        .iter()
        .map(|spec| {
            parse_build_context(spec).map(|(name, ctx)| match ctx {
                NamedContext::Local(l) => (name, NamedContext::Local(local_name(&l))),
                other => (name, other),
            })
        })
        .collect::<Result<_>>()?;
    let fail = |e: SourceError| df.fail(e);
    let mut resolver = Resolver(Arc::clone(images));
    let mut targets = Vec::with_capacity(platforms.len());
    let mut checks = None;
    for target_platform in platforms {
        let platform = target_platform.clone();
        let mut named_contexts = named_contexts.clone();
        for (name, linked) in links {
            named_contexts.insert(name.clone(), linked_context(name, linked, &platform)?);
        }
        let (build, resolve_opts) = resolve_stages(
            &df.ast,
            req,
            target_platform,
            &named_contexts,
            &mut resolver,
            &fail,
        )?;
        if checks.is_none() {
            checks = Some(BuildChecks::run(&df.ast, &df.ctx, &resolve_opts, &build));
        }
        let opts = LowerOptions {
            platform: platform.clone(),
            context: local_name("context"),
            no_cache: no_cache.clone(),
            source_date_epoch: req.source_date_epoch.map(|s| s as i64),
            named_contexts,
            platform_in_descriptions: multi,
            sandbox_hostname: req.build_args.get("BUILDKIT_SANDBOX_HOSTNAME").cloned(),
            cache_mount_ns: req.build_args.get("BUILDKIT_CACHE_MOUNT_NS").cloned(),
            default_network: req.network,
        };
        let lowered = lower_into(
            std::mem::take(definition),
            &df.ast,
            &build,
            &mut resolver,
            &opts,
        )
        .map_err(fail)?;
        *definition = lowered.definition;
        let mut config = lowered.config;
        for (k, v) in &req.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        targets.push(PlatformTarget {
            platform,
            target: lowered.target,
            config,
            history_vertices: lowered.history_vertices,
            sbom_scans: ExtraScans::plan(req.attest.sbom, &build, &lowered.stage_vertices),
        });
    }
    Ok(PlatformParts {
        targets,
        checks,
        no_cache,
    })
}

/// The linked target's result for `platform`: the one of the same platform, else its only
/// one (buildx: a single-platform dependency serves every platform of its dependent).
fn linked_context(name: &str, linked: &[Linked], platform: &Platform) -> Result<NamedContext> {
    let found = linked
        .iter()
        .find(|l| l.platform == *platform)
        .or(match linked {
            [one] => Some(one),
            _ => None,
        })
        .ok_or_else(|| {
            miette!(
                help = "give the linked target the platforms of the targets that use it",
                "named context {name:?}: the linked target is not built for {platform}"
            )
        })?;
    Ok(NamedContext::Target {
        vertex: found.vertex,
        config: Box::new(found.config.clone()),
    })
}

/// `--print-graph`: prints the graph (DOT) instead of building it.
fn print_graph(def: &Definition, p: &Prepared) -> BuildOutcome {
    let refs: Vec<VertexRef> = p.roots().into_iter().flatten().collect();
    print!("{}", def.to_dot(&refs));
    BuildOutcome {
        image: None,
        index: None,
        platform_images: Vec::new(),
        executed: 0,
        cached: 0,
        cache_exports: Vec::new(),
        attestation_files: Vec::new(),
        referrers: None,
    }
}

/// What runs the steps and shows their progress, kept until the outputs are written.
pub(super) struct Machinery {
    images: Arc<BuildImages>,
    cache: Arc<CacheStore>,
    worker: Arc<LocalWorker>,
    display: ProgressDisplay,
    tx: ProgressSender,
    /// The `--ssh` agents, serving until the build ends.
    _ssh_agents: Vec<KeyAgent>,
    /// What `--cache-from` imported.
    imported: Option<crate::remote_cache::import::Imported>,
}

impl Machinery {
    /// Phase 3: the session (every request's, merged), executor, cache, progress display
    /// and worker. The checks are reported first, and fail the build there when configured
    /// to. `prefixes` name vertices in the display (bake: the targets using each).
    pub(super) fn start(
        shared: &Shared,
        requests: &[&Prepared],
        def: &Definition,
        imported: Option<crate::remote_cache::import::Imported>,
    ) -> Result<Machinery> {
        Self::start_prefixed(shared, requests, def, imported, Default::default())
    }

    /// [`Machinery::start`] with vertex name prefixes for the display.
    pub(super) fn start_prefixed(
        shared: &Shared,
        requests: &[&Prepared],
        def: &Definition,
        imported: Option<crate::remote_cache::import::Imported>,
        prefixes: std::collections::HashMap<llb::VertexDigest, String>,
    ) -> Result<Machinery> {
        let first = &requests[0].req;
        let state = &shared.state;
        let (session, ssh_agents) = merged_session(requests)?;
        let executor = executor(first, state, def)?;
        let cache = Arc::new(CacheStore::open(&state.meta_db_path()).into_diagnostic()?);
        let (tx, rx) = channel();
        let display = ProgressDisplay::start_prefixed(first.progress, rx, prefixes);
        for p in requests {
            if let Some(checks) = &p.checks {
                checks.report(&tx, &p.df.name);
                if let Some(failure) = checks.failure() {
                    drop(tx);
                    let _ = display.finish();
                    return Err(failure);
                }
            }
        }
        let mut worker = LocalWorker::new(
            state,
            Arc::clone(&cache),
            Arc::new(executor),
            shared.images.clone(),
            session,
            tx.clone(),
        )
        .into_diagnostic()
        .wrap_err("opening the build's worker")?;
        worker.limit_layer_size(first.max_layer_size);
        if let Some(imported) = &imported {
            crate::remote_cache::report_import(&tx, imported);
            if let Err(e) = crate::remote_cache::attach(&mut worker, imported, def) {
                drop(tx);
                drop(worker);
                let _ = display.finish();
                return Err(match ignorable_cache_blob(first, &e) {
                    Some(drop) => miette::Report::new(drop),
                    None => {
                        let hint = crate::hints::for_worker(&e);
                        crate::hints::with_help(miette::Report::from_err(e), hint)
                            .wrap_err("restoring cache mounts from --cache-from")
                    }
                });
            }
        }
        Ok(Machinery {
            images: Arc::clone(&shared.images),
            cache,
            worker: Arc::new(worker),
            display,
            tx,
            _ssh_agents: ssh_agents,
            imported,
        })
    }

    /// Phase 4's failure: tears the build down in order. Gives the signal when one stopped
    /// it; else prints the failed steps' output and gives `None` (the caller renders the
    /// error).
    pub(super) fn fail(self, shared: Shared, armed: Armed) -> Option<Interrupted> {
        let Machinery {
            tx,
            worker,
            display,
            images,
            ..
        } = self;
        drop(tx);
        drop(worker);
        // The display ends when the last step's thread has let go of the
        // worker, i.e. once the steps the cancel killed have been torn down.
        let failed = display.finish().failed;
        // Then whatever else the cancel stopped (image pulls) winds down: a pull
        // still running on a step's thread must end before the runtime's timers do.
        images.wait_for_fetches(CLEANUP_TIMEOUT);
        let Shared {
            runtime,
            interrupts,
            ..
        } = shared;
        runtime.shutdown_timeout(CLEANUP_TIMEOUT);
        drop(armed);
        if let Some(signal) = interrupts.signal() {
            return Some(Interrupted { signal });
        }
        // buildx's block with the failed step's last output lines, in
        // every progress mode (quiet and tty showed none of it).
        for failed in failed {
            eprintln!("{failed}");
        }
        None
    }

    /// Phase 6's end: the display ends once every progress sender is gone, the worker's too.
    pub(super) fn finish(self) {
        let Machinery {
            tx,
            worker,
            display,
            ..
        } = self;
        drop(tx);
        drop(worker);
        let _ = display.finish();
    }
}

/// Every request's session in one: the locals under their names in the graph, the secrets,
/// SSH agents, entitlements and hosts of all.
fn merged_session(requests: &[&Prepared]) -> Result<(kiln_solver::worker::Session, Vec<KeyAgent>)> {
    let mut merged = kiln_solver::worker::Session::default();
    let mut agents = Vec::new();
    for p in requests {
        let (session, mut more) = session_from_flags(&p.req, &p.df.ctx)?;
        agents.append(&mut more);
        for (name, dir) in session.locals {
            let name = p.locals.get(&name).cloned().unwrap_or(name);
            merged.locals.entry(name).or_insert(dir);
        }
        for (id, secret) in session.secrets {
            merged.secrets.entry(id).or_insert(secret);
        }
        for (id, socket) in session.ssh {
            merged.ssh.entry(id).or_insert(socket);
        }
        merged.allow_network_host |= session.allow_network_host;
        merged.allow_insecure |= session.allow_insecure;
        for h in session.extra_hosts {
            if !merged.extra_hosts.contains(&h) {
                merged.extra_hosts.push(h);
            }
        }
    }
    Ok((merged, agents))
}

/// The executor, chosen when a step first runs: a fully cached build never probes the
/// runtimes.
fn executor(req: &BuildRequest, state: &StateDir, def: &Definition) -> Result<LazyExecutor> {
    Ok(LazyExecutor::new(
        req.executor,
        ExecutorConfig {
            // Runtimes resolve relative paths against their bundle, not our cwd.
            state_dir: std::path::absolute(state.root())
                .into_diagnostic()
                .wrap_err_with(|| format!("state directory {}", state.root().display()))?,
        },
    )
    .expecting_steps(
        def.vertices()
            .any(|(_, v)| matches!(v.op(), llb::Op::Exec(_))),
    ))
}

/// Whether an output needs an image (not only a filesystem).
fn needs_image(req: &BuildRequest) -> bool {
    use crate::export::spec::OutputKind;
    req.outputs.iter().any(|o| {
        matches!(
            o.kind,
            OutputKind::Image | OutputKind::Docker | OutputKind::Oci
        )
    })
}

/// Phase 5: each platform's image when an output needs one (its history dated by when
/// each result was made) and the index over them for a multi-platform build.
#[allow(clippy::too_many_arguments)]
fn export_images(
    req: &BuildRequest,
    state: &StateDir,
    m: &Machinery,
    remote_blobs: Option<&std::collections::BTreeSet<kiln_oci::Digest>>,
    targets: Vec<PlatformTarget>,
    result: Solved,
    steps: &ExportSteps,
    (multi, attested): (bool, bool),
) -> Result<(BuildOutcome, Vec<PlatformResult>)> {
    let stores = ExportStores {
        layers: m.worker.layers(),
        content: state.content(),
        cache: &m.cache,
        remote_blobs,
    };
    let needs_image = needs_image(req);
    let image_step = steps.image_step(&req.outputs);
    let layers_item = image_step
        .filter(|_| needs_image)
        .map(|s| s.item("exporting layers"));
    let mut platform_images = Vec::new();
    let mut results = Vec::new();
    // `--cache-to type=inline`: the records go into each image's config.
    let inline = req
        .cache_to
        .iter()
        .any(|t| t.location == crate::remote_cache::spec::CacheLocation::Inline)
        .then(|| m.worker.export_records(&result.records));
    if inline.is_some() && !needs_image {
        crate::remote_cache::warn(
            &m.tx,
            "exporting cache inline",
            "--cache-to type=inline: no output makes an image to carry it; nothing exported".into(),
        );
    }
    for (t, snapshot) in targets.into_iter().zip(result.snapshots) {
        let mut config = t.config;
        // A result's history entries carry the time that result was made, so a
        // rebuild from the cache gives the same image (SOURCE_DATE_EPOCH wins).
        if req.source_date_epoch.is_none() {
            date_history(&mut config, &t.history_vertices, &result.made_at);
        }
        if needs_image {
            let opts = export_options(req)?;
            let keys = |layers: &[(Descriptor, kiln_oci::Digest)]| match &inline {
                Some(records) => crate::remote_cache::inline_key(records, &snapshot, layers),
                None => BTreeMap::new(),
            };
            let exported = platform_image(req, m, &stores, &snapshot, config, &opts, &keys)
                .inspect_err(|e| {
                    if let Some(step) = image_step {
                        step.error(&e.to_string());
                    }
                })?;
            platform_images.push(exported);
        }
        results.push(PlatformResult {
            platform: t.platform,
            snapshot,
        });
    }
    if let Some(item) = layers_item {
        item.done();
    }
    if let Some(step) = image_step {
        for image in &platform_images {
            step.done_item(format!("exporting manifest {}", image.manifest.digest));
            step.done_item(format!("exporting config {}", image.config_digest));
        }
    }
    let index = if needs_image && multi && !attested {
        Some(write_platform_index(req, state, &platform_images)?)
    } else {
        None
    };
    if let (Some(step), Some(index)) = (image_step, &index) {
        step.done_item(format!("exporting manifest list {}", index.digest));
    }
    let image = if multi {
        None
    } else {
        platform_images.first().cloned()
    };
    let outcome = BuildOutcome {
        image,
        index,
        platform_images,
        executed: result.executed,
        cached: result.cached,
        cache_exports: Vec::new(),
        attestation_files: Vec::new(),
        referrers: None,
    };
    Ok((outcome, results))
}

/// One platform's image. Lazily imported layers are fetched first, unless the image may
/// list them without their bytes (pushed only, see [`remote_blobs`]); when it cannot after
/// all (a layer wanted in another compression), they are fetched and the image made again.
fn platform_image(
    req: &BuildRequest,
    m: &Machinery,
    stores: &ExportStores<'_>,
    snapshot: &Snapshot,
    config: kiln_oci::config::ImageConfig,
    opts: &ExportOptions,
    keys: super::commit::ConfigKeys<'_>,
) -> Result<ExportedImage> {
    let fetch = || {
        m.worker
            .fetch_lazy_blobs(snapshot)
            .map_err(|e| match ignorable_cache_blob(req, &e) {
                Some(drop) => miette::Report::new(drop),
                None => {
                    let hint = crate::hints::for_worker(&e);
                    crate::hints::with_help(miette::Report::from_err(e), hint)
                }
            })
    };
    if m.imported.is_none() {
        return export_image(stores, snapshot, config, opts, keys).into_diagnostic();
    }
    if stores.remote_blobs.is_none() {
        fetch()?;
        return export_image(stores, snapshot, config, opts, keys).into_diagnostic();
    }
    match export_image(stores, snapshot, config.clone(), opts, keys) {
        Ok(image) => Ok(image),
        Err(e) => {
            tracing::debug!(error = %e, "image without the lazy blobs failed; fetching them");
            fetch()?;
            let local = ExportStores {
                remote_blobs: None,
                ..*stores
            };
            export_image(&local, snapshot, config, opts, keys).into_diagnostic()
        }
    }
}

/// Dates each history entry by when the result it describes was made, and the image by
/// the newest of them.
fn date_history(
    config: &mut kiln_oci::config::ImageConfig,
    history_vertices: &[(usize, Option<VertexRef>)],
    made_at: &std::collections::HashMap<VertexRef, u64>,
) {
    let mut newest = None;
    for (index, vertex) in history_vertices {
        let made = vertex.and_then(|v| made_at.get(&v).copied());
        if let (Some(time), Some(h)) = (made, config.history.get_mut(*index)) {
            h.created = Some(rfc3339(time as i64));
            newest = newest.max(Some(time));
        }
    }
    if let Some(time) = newest {
        config.created = Some(rfc3339(time as i64));
    }
}

/// The index over every platform's image, written to the content store.
fn write_platform_index(
    req: &BuildRequest,
    state: &StateDir,
    platform_images: &[ExportedImage],
) -> Result<Descriptor> {
    let opts = export_options(req)?;
    let manifests = platform_images.iter().map(|i| i.manifest.clone()).collect();
    write_index(
        state.content(),
        manifests,
        &ManifestOptions {
            docker_media_types: opts.docker_media_types,
            annotations: Default::default(),
        },
    )
    .into_diagnostic()
}

/// Resolves the stages for one target platform: once to learn the base
/// images, then again with their environment (`ENV PATH=$PATH:...` needs
/// the base's PATH).
fn resolve_stages(
    ast: &kiln_frontend::parser::Ast,
    req: &BuildRequest,
    target_platform: &Platform,
    named_contexts: &BTreeMap<String, NamedContext>,
    resolver: &mut Resolver,
    fail: &dyn Fn(SourceError) -> miette::Report,
) -> Result<(kiln_frontend::stages::Build, ResolveOptions)> {
    let platform = target_platform;
    let mut resolve_opts = ResolveOptions {
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        target_platform: target_platform.clone(),
        build_platform: Platform::host(),
        all_stages: false,
        base_env: BTreeMap::new(),
    };
    let first = stages::resolve(ast, &resolve_opts).map_err(fail)?;
    for stage in first.needed_stages() {
        if let Base::Image(written) = &stage.base {
            // A named context of that name replaces the image (a directory has no env).
            let reference = match named_contexts.get(&written.to_ascii_lowercase()) {
                Some(NamedContext::Local(_)) => continue,
                Some(NamedContext::Target { config, .. }) => {
                    // Another target's result: its env is that of its config.
                    resolve_opts
                        .base_env
                        .insert(written.clone(), config.config.env_pairs());
                    continue;
                }
                Some(NamedContext::Image(r)) => r,
                None => written,
            };
            let stage_platform = match &stage.platform {
                Some(p) => Platform::parse(p).unwrap_or_else(|_| platform.clone()),
                None => platform.clone(),
            };
            let resolved = resolver.resolve(reference, &stage_platform).map_err(|e| {
                let node = &ast.children[stage.node];
                let hint = e
                    .downcast_ref()
                    .and_then(crate::hints::for_registry)
                    .unwrap_or_else(|| {
                        if reference.starts_with(super::oci_layout::SCHEME) {
                            "check the layout's path and tags (`skopeo inspect oci:PATH:TAG` lists what it holds)"
                        } else {
                            "check the image name and tag, and that its registry is reachable (`kiln pull` shows the details)"
                        }
                        .into()
                    });
                fail(ast.error_at(node, ErrorKind::Stage, format!("{reference}: {e}")).with_hint(hint))
            })?;
            resolve_opts
                .base_env
                .insert(written.clone(), resolved.config.config.env_pairs());
        }
    }
    let build = stages::resolve(ast, &resolve_opts).map_err(fail)?;
    Ok((build, resolve_opts))
}

/// Refuses output settings that cannot hold several platforms, before any work.
pub(super) fn check_outputs(req: &BuildRequest, multi: bool) -> Result<()> {
    use crate::export::spec::OutputKind;
    if !multi {
        return Ok(());
    }
    for out in &req.outputs {
        if out.kind == OutputKind::Docker {
            return Err(miette!(
                help = "use --output type=oci (an index of every platform), --push, or build one --platform at a time for docker-archive",
                "a docker-archive (type=docker) holds one platform, but this build makes an index of several"
            ));
        }
    }
    Ok(())
}

/// Layer and manifest settings from the first image-producing output
/// (`compression=`, `compression-level=`, `force-compression=`,
/// `oci-mediatypes=`, `annotation.*`).
fn export_options(req: &BuildRequest) -> Result<ExportOptions> {
    use crate::export::spec::OutputKind;
    use kiln_solver::snapshot::layer::Compression;
    let mut opts = ExportOptions {
        source_date_epoch: req.source_date_epoch,
        ..ExportOptions::default()
    };
    let Some(out) = req.outputs.iter().find(|o| {
        matches!(
            o.kind,
            OutputKind::Image | OutputKind::Docker | OutputKind::Oci
        )
    }) else {
        return Ok(opts);
    };
    if let Some(c) = out.attrs.get("compression") {
        opts.compression =
            Compression::parse(c).ok_or_else(|| miette!("unknown compression {c:?}"))?;
    }
    if let Some(l) = out.attrs.get("compression-level") {
        opts.level = Some(
            l.parse()
                .map_err(|_| miette!("invalid compression-level {l:?}"))?,
        );
    }
    opts.force_compression = out.flag("force-compression", false);
    // docker-archive output is read by old Docker: Docker media types by default there.
    opts.docker_media_types = !out.flag("oci-mediatypes", out.kind != OutputKind::Docker);
    // As BuildKit: attestation manifests need OCI media types, so the image gets them too.
    if opts.docker_media_types && super::attest::wanted(req) {
        opts.docker_media_types = false;
    }
    opts.annotations = out
        .annotations()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(req.annotations.iter().cloned())
        .collect();
    Ok(opts)
}

/// One platform's solved filesystem.
pub struct PlatformResult {
    /// The target platform.
    pub platform: kiln_oci::Platform,
    /// Its final filesystem.
    pub snapshot: Snapshot,
}

pub(super) struct Solved {
    /// Each target's filesystem, in the order asked.
    snapshots: Vec<Snapshot>,
    /// When each solved vertex's result was made (seconds since the epoch).
    made_at: std::collections::HashMap<VertexRef, u64>,
    /// Every solved filesystem result: key, snapshot, description (for the cache export).
    records: Vec<(kiln_solver::cache::CacheKey, Snapshot, String)>,
    /// Every solved vertex, and whether it was executed (else from the cache).
    solved: std::collections::HashMap<VertexRef, bool>,
    executed: usize,
    cached: usize,
}

impl Solved {
    /// Each request's part, `roots` giving each request's targets in the order solved: its
    /// filesystems, and its counts over the vertices its targets need.
    pub(super) fn split(self, def: &Definition, roots: &[Vec<Option<VertexRef>>]) -> Vec<Solved> {
        let mut snapshots = self.snapshots.into_iter();
        roots
            .iter()
            .map(|targets| {
                let wanted: Vec<VertexRef> = targets.iter().flatten().copied().collect();
                let needed: Vec<bool> = def
                    .closure(&wanted)
                    .iter()
                    .filter_map(|r| self.solved.get(r).copied())
                    .collect();
                let executed = needed.iter().filter(|e| **e).count();
                Solved {
                    snapshots: snapshots.by_ref().take(targets.len()).collect(),
                    made_at: self.made_at.clone(),
                    records: self.records.clone(),
                    solved: Default::default(),
                    executed,
                    cached: needed.len() - executed,
                }
            })
            .collect()
    }
}

/// How long a failed or canceled build waits for the work it stopped to end
/// before exiting anyway (what is left is swept by the next run).
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the scheduler over every target at once, turning its events into
/// progress events; `stop` completing cancels the solve.
async fn solve(
    def: &Definition,
    targets: &[Option<VertexRef>],
    cache: &CacheStore,
    worker: Arc<LocalWorker>,
    jobs: usize,
    progress: &ProgressSender,
    stop: impl std::future::Future<Output = ()>,
) -> std::result::Result<Solved, SolveError> {
    let mut wanted: Vec<VertexRef> = targets.iter().flatten().copied().collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Solved {
            snapshots: targets.iter().map(|_| Snapshot::scratch()).collect(),
            made_at: Default::default(),
            records: Vec::new(),
            solved: Default::default(),
            executed: 0,
            cached: 0,
        });
    }
    let scheduler = Scheduler::new(Arc::new(worker), jobs.max(1)).with_progress(progress.clone());
    let outcome = scheduler.solve_until(def, &wanted, stop).await;
    drop(scheduler);
    let outcome = outcome?;
    let mut snapshots = Vec::with_capacity(targets.len());
    for target in targets {
        let Some(target) = target else {
            snapshots.push(Snapshot::scratch());
            continue;
        };
        let solved = outcome
            .results
            .get(target)
            .ok_or_else(|| SolveError::Internal("a target was not solved".into()))?;
        match &solved.output {
            Output::Snapshot(s) => snapshots.push(s.clone()),
            Output::Dir(_) => {
                return Err(SolveError::Internal(
                    "the target is a directory, not a filesystem".into(),
                ))
            }
        }
    }
    let made_at = outcome
        .results
        .iter()
        .filter_map(|(r, s)| Some((*r, cache.get(&s.key).ok()??.created_at)))
        .collect();
    let mut records: Vec<_> = outcome
        .results
        .iter()
        .filter_map(|(r, s)| match &s.output {
            Output::Snapshot(snapshot) => Some((
                s.key,
                snapshot.clone(),
                def.vertex(*r)
                    .map(|v| v.metadata().description.clone())
                    .unwrap_or_default(),
            )),
            Output::Dir(_) => None,
        })
        .collect();
    records.sort_by_key(|r| r.0);
    Ok(Solved {
        snapshots,
        made_at,
        records,
        solved: outcome
            .results
            .iter()
            .map(|(r, s)| (*r, s.executed))
            .collect(),
        executed: outcome.executed,
        cached: outcome.cached,
    })
}

/// A failed vertex's error, pointing at its Dockerfile lines.
pub(super) fn solve_error(e: SolveError, def: &Definition, df: &Dockerfile) -> miette::Report {
    let (name, source) = (df.name.as_str(), df.source.as_str());
    let SolveError::Vertex {
        digest,
        description,
        source: cause,
    } = &e
    else {
        return miette::Report::from_err(e);
    };
    let location = def
        .find(digest)
        .and_then(|r| def.vertex(r))
        .and_then(|v| v.metadata().locations.first().cloned());
    match location {
        Some(loc) => {
            let line_text = source
                .lines()
                .nth((loc.start_line as usize).saturating_sub(1))
                .unwrap_or_default();
            let col = line_text.len() - line_text.trim_start().len() + 1;
            let mut err = SourceError::new(
                ErrorKind::Instruction,
                format!("{description}: {cause}"),
                Location::new(name, loc.start_line as usize, col, line_text.trim().len()),
            )
            .with_source_line(line_text);
            if let Some(hint) = crate::hints::for_worker(cause) {
                err = err.with_hint(hint);
            }
            report(err, name, source)
        }
        None => {
            let hint = crate::hints::for_worker(cause);
            crate::hints::with_help(miette::Report::from_err(e), hint)
        }
    }
}

/// Phase 7: the build's cache to every `--cache-to type=registry|local`.
fn export_cache(
    req: &BuildRequest,
    shared: &Shared,
    m: &Machinery,
    def: &Definition,
    solved: &[(kiln_solver::cache::CacheKey, Snapshot, String)],
    results: &[PlatformResult],
) -> Result<Vec<crate::remote_cache::export::ExportReport>> {
    if req.cache_to.is_empty() {
        return Ok(Vec::new());
    }
    let finals: Vec<Snapshot> = results.iter().map(|r| r.snapshot.clone()).collect();
    let mount_ids = kiln_solver::remote_cache::mounts::cache_mount_ids(def);
    let pushed: Vec<kiln_oci::Reference> = req
        .outputs
        .iter()
        .filter(|o| o.kind == crate::export::spec::OutputKind::Image && o.push())
        .flat_map(|o| &o.names)
        .filter_map(|n| kiln_oci::Reference::parse(n).ok())
        .collect();
    let ctx = crate::remote_cache::export::ExportContext {
        state: &shared.state,
        worker: &m.worker,
        cache: &m.cache,
        store: &shared.store,
        client: &shared.client,
        runtime: shared.runtime.handle(),
        concurrency: req.registry.concurrency(),
        solved,
        finals: &finals,
        mount_ids: &mount_ids,
        imported: m.imported.as_ref(),
        pushed: &pushed,
    };
    crate::remote_cache::export_all(&ctx, &req.cache_to, &m.tx)
}

#[cfg(test)]
mod tests {
    use super::LocalNames;

    #[test]
    fn a_directory_keeps_its_local_name_and_another_gets_its_own() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut names = LocalNames::default();
        assert_eq!(names.name("context", a.path()), "context");
        // The same directory, however spelled, is the same source.
        assert_eq!(names.name("context", &a.path().join(".")), "context");
        assert_eq!(names.name("context", b.path()), "context#1");
        assert_eq!(names.name("context:x", b.path()), "context:x");
        assert_eq!(names.name("context", b.path()), "context#1");
    }
}
