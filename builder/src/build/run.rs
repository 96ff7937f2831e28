//! One `kiln build`: context and Dockerfile in, stages resolved against
//! their base images, lowered to a graph, solved with the cache, and
//! exported to every requested output.

use super::export::{export_image, ExportOptions, ExportStores, ExportedImage};
use super::images::{BuildImages, Resolver};
use super::outputs::write_outputs;
use super::session::session_from_flags;
use super::BuildRequest;
use crate::cli::dockerfile::report;
use crate::context::BuildContext;
use crate::local_store::{open_state, LocalStore};
use crate::progress::ProgressDisplay;
use kiln_frontend::error::{ErrorKind, Location, SourceError};
use kiln_frontend::lower::{llb_platform, lower, rfc3339, ImageResolver, LowerOptions, NoCache};
use kiln_frontend::stages::{self, Base, Platform, ResolveOptions};
use kiln_solver::cache::CacheStore;
use kiln_solver::executor::{select, ExecutorConfig};
use kiln_solver::llb::{Definition, VertexRef};
use kiln_solver::progress::{channel, ProgressSender};
use kiln_solver::scheduler::{Scheduler, SolveError};
use kiln_solver::snapshot::Snapshot;
use kiln_solver::worker::{LocalWorker, Output};
use miette::{miette, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image, when an output needed one.
    pub image: Option<ExportedImage>,
    /// Vertices executed (not from the cache).
    pub executed: usize,
    /// Vertices whose result came from the cache.
    pub cached: usize,
}

/// Runs a build.
pub fn run(req: BuildRequest) -> Result<BuildOutcome> {
    let state = open_state(req.root.as_deref())?;
    // Held for the whole build: prune takes it exclusively, so it never
    // removes what a running build uses.
    let _lock = state
        .lock(kiln_solver::content::LockMode::Shared)
        .map_err(|e| miette!("{e}"))?;
    let store = Arc::new(LocalStore {
        content: state.content().clone(),
    });
    let scratch = state.root().join("tmp");
    let ctx = BuildContext::load(&req.context, req.file.as_deref(), &scratch)
        .map_err(|e| miette!("{e}"))?;
    let name = ctx.dockerfile.name.clone();
    let source = String::from_utf8_lossy(&ctx.dockerfile.content).into_owned();
    let fail = |e: SourceError| report(e, &name, &source);
    let ast = kiln_frontend::parse_named(&name, &ctx.dockerfile.content).map_err(fail)?;

    let target_platform = match &req.platform {
        Some(p) => Platform::parse(p).map_err(|e| miette!("invalid --platform {p:?}: {e}"))?,
        None => Platform::host(),
    };
    let platform = llb_platform(&target_platform);
    let runtime = crate::registry_opts::runtime()?;
    let images = Arc::new(BuildImages::new(
        Arc::clone(&store),
        req.registry.client(),
        runtime.handle().clone(),
        req.pull,
        req.registry.concurrency(),
    ));

    // Resolve once to learn the base images, fetch their env, resolve again
    // with it (ENV PATH=$PATH:... needs the base's PATH).
    let mut resolve_opts = ResolveOptions {
        target: req.target.clone(),
        build_args: req.build_args.clone(),
        target_platform: target_platform.clone(),
        build_platform: Platform::host(),
        all_stages: false,
        base_env: BTreeMap::new(),
    };
    let first = stages::resolve(&ast, &resolve_opts).map_err(fail)?;
    let mut resolver = Resolver(Arc::clone(&images));
    for stage in first.needed_stages() {
        if let Base::Image(reference) = &stage.base {
            let stage_platform = match &stage.platform {
                Some(p) => Platform::parse(p)
                    .map(|p| llb_platform(&p))
                    .unwrap_or_else(|_| platform.clone()),
                None => platform.clone(),
            };
            let resolved = resolver.resolve(reference, &stage_platform).map_err(|e| {
                let node = &ast.children[stage.node];
                fail(ast.error_at(node, ErrorKind::Stage, format!("{reference}: {e}")).with_hint(
                    "check the image name and tag, and that its registry is reachable (`kiln pull` shows the details)",
                ))
            })?;
            resolve_opts
                .base_env
                .insert(reference.clone(), resolved.config.config.env_pairs());
        }
    }
    let build = stages::resolve(&ast, &resolve_opts).map_err(fail)?;
    let no_cache = if req.no_cache {
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
    };
    let lowered = lower(
        &ast,
        &build,
        &mut resolver,
        &LowerOptions {
            platform: platform.clone(),
            context: "context".to_string(),
            no_cache,
            source_date_epoch: req.source_date_epoch.map(|s| s as i64),
            named_contexts: BTreeMap::new(),
        },
    )
    .map_err(fail)?;
    let mut config = lowered.config.clone();
    for (k, v) in &req.labels {
        config.config.labels.insert(k.clone(), v.clone());
    }
    if req.print_graph {
        let targets: Vec<VertexRef> = lowered.target.into_iter().collect();
        print!("{}", lowered.definition.to_dot(&targets));
        return Ok(BuildOutcome {
            image: None,
            executed: 0,
            cached: 0,
        });
    }

    let session = session_from_flags(&req, &ctx)?;
    let executor = select(
        req.executor,
        ExecutorConfig {
            state_dir: state.root().to_path_buf(),
        },
    )
    .map_err(|e| miette!("{e}"))?;
    let cache = Arc::new(CacheStore::open(&state.meta_db_path()).map_err(|e| miette!("{e}"))?);
    let (tx, rx) = channel();
    let display = ProgressDisplay::start(req.progress, rx);
    let worker = Arc::new(
        LocalWorker::new(
            &state,
            Arc::clone(&cache),
            Arc::from(executor),
            images.clone(),
            session,
            tx.clone(),
        )
        .map_err(|e| miette!("{e}"))?,
    );
    let solved = runtime.block_on(solve(
        &lowered.definition,
        lowered.target,
        &cache,
        worker.clone(),
        req.jobs,
        &tx,
    ));
    let result = match solved {
        Ok(r) => r,
        Err(e) => {
            drop(tx);
            drop(worker);
            let _ = display.finish();
            return Err(solve_error(e, &lowered.definition, &name, &source));
        }
    };
    // A result's history entries carry the time that result was made, so a
    // rebuild from the cache gives the same image (SOURCE_DATE_EPOCH wins).
    if req.source_date_epoch.is_none() {
        let mut newest = None;
        for (index, vertex) in &lowered.history_vertices {
            let made = vertex.and_then(|v| result.made_at.get(&v).copied());
            if let (Some(t), Some(h)) = (made, config.history.get_mut(*index)) {
                h.created = Some(rfc3339(t as i64));
                newest = newest.max(Some(t));
            }
        }
        if let Some(t) = newest {
            config.created = Some(rfc3339(t as i64));
        }
    }
    let stores = ExportStores {
        layers: worker.layers(),
        content: state.content(),
        cache: &cache,
    };
    let needs_image = req.outputs.iter().any(|o| {
        use crate::export::output::OutputKind;
        matches!(
            o.kind,
            OutputKind::Image | OutputKind::Docker | OutputKind::Oci
        )
    });
    let image = if needs_image {
        let opts = export_options(&req)?;
        Some(export_image(&stores, &result.snapshot, config, &opts).map_err(|e| miette!("{e}"))?)
    } else {
        None
    };
    // The display ends when every progress sender is gone, the worker's too.
    let layers = worker.layers().clone();
    drop(tx);
    drop(worker);
    let written = write_outputs(
        &req,
        &runtime,
        &store,
        &layers,
        &result.snapshot,
        image.as_ref(),
    );
    let _ = display.finish();
    written?;
    Ok(BuildOutcome {
        image,
        executed: result.executed,
        cached: result.cached,
    })
}

/// Layer and manifest settings from the first image-producing output
/// (`compression=`, `compression-level=`, `force-compression=`,
/// `oci-mediatypes=`, `annotation.*`).
fn export_options(req: &BuildRequest) -> Result<ExportOptions> {
    use crate::export::output::OutputKind;
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
    opts.annotations = out
        .annotations()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(req.annotations.iter().cloned())
        .collect();
    Ok(opts)
}

struct Solved {
    snapshot: Snapshot,
    /// When each solved vertex's result was made (seconds since the epoch).
    made_at: std::collections::HashMap<VertexRef, u64>,
    executed: usize,
    cached: usize,
}

/// Runs the scheduler, turning its events into progress events.
async fn solve(
    def: &Definition,
    target: Option<VertexRef>,
    cache: &CacheStore,
    worker: Arc<LocalWorker>,
    jobs: usize,
    progress: &ProgressSender,
) -> std::result::Result<Solved, SolveError> {
    let Some(target) = target else {
        return Ok(Solved {
            snapshot: Snapshot::scratch(),
            made_at: Default::default(),
            executed: 0,
            cached: 0,
        });
    };
    let scheduler = Scheduler::new(Arc::new(worker), jobs.max(1)).with_progress(progress.clone());
    let outcome = scheduler.solve(def, &[target]).await;
    drop(scheduler);
    let outcome = outcome?;
    let solved = outcome
        .results
        .get(&target)
        .ok_or_else(|| SolveError::Internal("the target was not solved".into()))?;
    let snapshot = match &solved.output {
        Output::Snapshot(s) => s.clone(),
        Output::Dir(_) => {
            return Err(SolveError::Internal(
                "the target is a directory, not a filesystem".into(),
            ))
        }
    };
    let made_at = outcome
        .results
        .iter()
        .filter_map(|(r, s)| Some((*r, cache.get(&s.key).ok()??.created_at)))
        .collect();
    Ok(Solved {
        snapshot,
        made_at,
        executed: outcome.executed,
        cached: outcome.cached,
    })
}

/// A failed vertex's error, pointing at its Dockerfile lines.
fn solve_error(e: SolveError, def: &Definition, name: &str, source: &str) -> miette::Report {
    let SolveError::Vertex {
        digest,
        description,
        source: cause,
    } = &e
    else {
        return miette!("{e}");
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
            if let Some(hint) = hint_for(&cause.to_string()) {
                err = err.with_hint(hint);
            }
            report(err, name, source)
        }
        None => miette!("{e}"),
    }
}

fn hint_for(cause: &str) -> Option<&'static str> {
    if cause.contains("did not complete successfully") {
        Some("the command failed inside the build container; `--progress plain` shows its whole output")
    } else if cause.contains("not found") {
        Some("check the path against the build context and .dockerignore")
    } else {
        None
    }
}
