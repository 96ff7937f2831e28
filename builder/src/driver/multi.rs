//! Several build requests (bake's targets) as one build: each request is prepared (its own
//! Dockerfile, args and platforms) into one combined graph where identical work is one
//! vertex, the graph is solved once by one scheduler under one progress display, then each
//! request is exported with its own outputs, attestations and cache.
//!
//! A failing vertex stops the solve and fails the requests that need it. With
//! `keep_going` the others are built again without them: the scheduler has no mode that
//! lets the unaffected vertices run on, but what was solved before the failure is in the
//! cache, so only the work the failure canceled is done again.

use super::cache::{ignorable_cache_blob, DropCacheSource};
use super::interrupt::Signal;
use super::run::{
    export_request, import_cache, prepare, solve_error, solve_requests, BuildOutcome, Graph,
    Linked, Machinery, Prepared, Shared, Solved,
};
use super::BuildRequest;
use kiln_solver::llb::{Definition, VertexRef};
use kiln_solver::scheduler::SolveError;
use std::collections::{BTreeMap, HashMap};

/// One request of a combined build.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its name (the bake target), shown before its vertices' names and in messages.
    pub name: String,
    /// The build.
    pub req: BuildRequest,
    /// Named contexts that are other requests' results: context name, request name. A
    /// request comes after those it names.
    pub links: Vec<(String, String)>,
    /// Exported: false for a request built only for the requests that link to it (its
    /// outputs are not written).
    pub export: bool,
}

/// What became of one request.
#[derive(Debug)]
pub enum TargetResult {
    /// Built and exported.
    Built {
        /// What the build produced.
        outcome: Box<BuildOutcome>,
        /// The image names of its outputs.
        names: Vec<String>,
    },
    /// Failed, with why.
    Failed(miette::Report),
    /// Not built: a request it needs failed, or a failure stopped the build.
    NotBuilt,
    /// Built only as another request's named context: nothing exported.
    Linked,
}

/// What became of every request, in the order given.
#[derive(Debug)]
pub struct Outcome {
    /// Each request's result, by name.
    pub results: Vec<(String, TargetResult)>,
    /// SIGINT or SIGTERM stopped the build.
    pub signal: Option<Signal>,
}

/// Builds every request in one graph (see the module doc).
pub fn run(requests: Vec<Request>, keep_going: bool) -> Outcome {
    let order: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
    let mut done: BTreeMap<String, TargetResult> = BTreeMap::new();
    let mut pending = requests;
    let mut signal = None;
    // Each attempt settles at least one request or drops a cache source: bounded.
    let mut attempts = pending.len()
        + pending
            .iter()
            .map(|r| r.req.cache_from.len())
            .sum::<usize>()
        + 1;
    while !pending.is_empty() && attempts > 0 {
        attempts -= 1;
        match attempt(&pending, keep_going) {
            Attempt::Done(results) => {
                done.extend(results);
                pending.clear();
            }
            Attempt::Signal(s) => {
                signal = Some(s);
                break;
            }
            Attempt::DropCache(drop, spec) => {
                eprintln!(
                    "WARNING: --cache-from {spec}: {} (ignored: ignore-error=true; building again without this cache)",
                    drop.message
                );
                for r in &mut pending {
                    r.req.cache_from.retain(|c| c.spec != spec);
                }
            }
            Attempt::Failed(failed) => {
                let failed_names: Vec<String> = failed.iter().map(|(n, _)| n.clone()).collect();
                done.extend(
                    failed
                        .into_iter()
                        .map(|(n, e)| (n, TargetResult::Failed(e))),
                );
                if !keep_going {
                    break;
                }
                // What needs a failed request cannot be built; the rest is tried again.
                let mut blocked = failed_names;
                loop {
                    let more: Vec<String> = pending
                        .iter()
                        .filter(|r| !blocked.contains(&r.name))
                        .filter(|r| r.links.iter().any(|(_, d)| blocked.contains(d)))
                        .map(|r| r.name.clone())
                        .collect();
                    if more.is_empty() {
                        break;
                    }
                    blocked.extend(more);
                }
                pending.retain(|r| !blocked.contains(&r.name));
            }
        }
    }
    let mut results = Vec::with_capacity(order.len());
    for name in order {
        let result = done.remove(&name).unwrap_or(TargetResult::NotBuilt);
        results.push((name, result));
    }
    Outcome { results, signal }
}

/// Requests that failed, by name, with their errors.
type Failures = Vec<(String, miette::Report)>;

/// How one attempt at building the pending requests ended.
enum Attempt {
    /// Every request built or failed in export; nothing to try again.
    Done(Vec<(String, TargetResult)>),
    /// These requests failed (the others were stopped).
    Failed(Failures),
    /// A `--cache-from` source with `ignore-error=true` proved unusable (by its spec).
    DropCache(DropCacheSource, String),
    /// A signal stopped the build.
    Signal(Signal),
}

/// The request every request shares the machinery of: the first, with every request's
/// `--cache-from` (once each) and `--pull` when any has it.
fn combined(requests: &[Request]) -> BuildRequest {
    let mut req = requests[0].req.clone();
    req.cache_from.clear();
    for r in requests {
        req.pull |= r.req.pull;
        for c in &r.req.cache_from {
            if !req.cache_from.contains(c) {
                req.cache_from.push(c.clone());
            }
        }
    }
    req
}

/// One attempt: prepare, solve, export every pending request.
fn attempt(requests: &[Request], keep_going: bool) -> Attempt {
    let mut failed = Vec::new();
    for r in requests {
        // Bad flags fail here, before anything is opened.
        if let Err(e) = super::validate::check(&r.req) {
            failed.push((r.name.clone(), e));
        }
    }
    if !failed.is_empty() {
        return Attempt::Failed(failed);
    }
    let all = combined(requests);
    let shared = match Shared::open(&all) {
        Ok(s) => s,
        Err(e) => return fail_all(requests, e),
    };
    let mut graph = Graph::default();
    let prepared = match prepare_all(requests, &shared, &mut graph) {
        Ok(p) => p,
        Err(failed) => return Attempt::Failed(failed),
    };
    let platforms: Vec<kiln_oci::Platform> = prepared
        .iter()
        .flat_map(|(_, p)| p.roots_platforms())
        .fold(Vec::new(), |mut acc, p| {
            if !acc.contains(&p) {
                acc.push(p);
            }
            acc
        });
    let imported = match import_cache(&shared, &all, &platforms) {
        Ok(i) => i,
        Err(e) => return fail_all(requests, e),
    };
    let parts: Vec<&Prepared> = prepared.iter().map(|(_, p)| p).collect();
    // As buildx: prefixed when several targets are asked for; a linked target's work is
    // shown as that of the targets using it.
    let asked: Vec<&(String, Prepared)> = prepared
        .iter()
        .zip(requests)
        .filter(|(_, r)| r.export)
        .map(|(p, _)| p)
        .collect();
    let several = asked.len() > 1;
    let prefixes = if several {
        prefixes(&graph.definition, &asked)
    } else {
        Default::default()
    };
    let m = match Machinery::start_prefixed(&shared, &parts, &graph.definition, imported, prefixes)
    {
        Ok(m) => m,
        Err(e) => return fail_all(requests, e),
    };
    let (armed, solved) = solve_requests(&shared, &m, &graph.definition, &parts);
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            let drop = match &e {
                SolveError::Vertex { source, .. } => ignorable_cache_blob(&all, source).map(|d| {
                    let spec = all.cache_from[d.index].spec.clone();
                    (d, spec)
                }),
                _ => None,
            };
            let needing = needing_failed(&graph.definition, &prepared, &e);
            if let Some(stop) = m.fail(shared, armed) {
                return Attempt::Signal(stop.signal);
            }
            if let Some((d, spec)) = drop {
                return Attempt::DropCache(d, spec);
            }
            return Attempt::Failed(failed_reports(e, &graph.definition, &prepared, &needing));
        }
    };
    drop(armed);
    if let Some(signal) = shared.interrupts.signal() {
        m.finish();
        return Attempt::Signal(signal);
    }
    let roots: Vec<Vec<Option<VertexRef>>> = prepared.iter().map(|(_, p)| p.roots()).collect();
    let parts = solved.split(&graph.definition, &roots);
    let results = export_all(
        requests,
        prepared,
        parts,
        (&shared, &m, &graph.definition),
        (several, keep_going),
    );
    m.finish();
    Attempt::Done(results)
}

/// Phases 1–2 for every request, in build order: each lowered into `graph`, its `target:`
/// contexts linked to the results of the requests before it. Fails with every request
/// that could not be prepared.
fn prepare_all(
    requests: &[Request],
    shared: &Shared,
    graph: &mut Graph,
) -> Result<Vec<(String, Prepared)>, Failures> {
    let mut failed = Vec::new();
    let mut prepared: Vec<(String, Prepared)> = Vec::with_capacity(requests.len());
    'requests: for r in requests {
        let mut links: BTreeMap<String, Vec<Linked>> = BTreeMap::new();
        for (ctx, dep) in &r.links {
            match prepared.iter().find(|(n, _)| n == dep) {
                Some((_, p)) => links.insert(ctx.to_ascii_lowercase(), p.linked()),
                // Its dependency failed: not built (nor failed itself).
                None => continue 'requests,
            };
        }
        match prepare(r.req.clone(), shared, graph, &links) {
            Ok(p) => prepared.push((r.name.clone(), p)),
            Err(e) => failed.push((r.name.clone(), e)),
        }
    }
    if failed.is_empty() {
        Ok(prepared)
    } else {
        Err(failed)
    }
}

/// Phases 5–7 for every request asked for, in order; a failed export stops the ones after
/// it unless `keep_going`.
fn export_all(
    requests: &[Request],
    prepared: Vec<(String, Prepared)>,
    parts: Vec<Solved>,
    (shared, m, def): (&Shared, &Machinery, &Definition),
    (several, keep_going): (bool, bool),
) -> Vec<(String, TargetResult)> {
    let mut results = Vec::with_capacity(prepared.len());
    let mut stopped = false;
    for (((name, p), solved), r) in prepared.into_iter().zip(parts).zip(requests) {
        if !r.export {
            results.push((name, TargetResult::Linked));
            continue;
        }
        if stopped {
            results.push((name, TargetResult::NotBuilt));
            continue;
        }
        let names = p
            .req
            .outputs
            .iter()
            .flat_map(|o| o.names.iter().cloned())
            .collect();
        let target = several.then_some(name.as_str());
        match export_request(shared, m, def, p, solved, target) {
            Ok(outcome) => results.push((
                name,
                TargetResult::Built {
                    outcome: Box::new(outcome),
                    names,
                },
            )),
            Err(e) => {
                results.push((name, TargetResult::Failed(e)));
                stopped = !keep_going;
            }
        }
    }
    results
}

/// Every request failed by one error that is no single request's (the state directory, the
/// cache import): reported on the first, the others not built.
fn fail_all(requests: &[Request], e: miette::Report) -> Attempt {
    Attempt::Failed(vec![(requests[0].name.clone(), e)])
}

/// The requests whose targets need the vertex that failed (every one when the failure is
/// not a vertex's).
fn needing_failed(def: &Definition, prepared: &[(String, Prepared)], e: &SolveError) -> Vec<bool> {
    let failed = match e {
        SolveError::Vertex { digest, .. } => def.find(digest),
        _ => None,
    };
    prepared
        .iter()
        .map(|(_, p)| match failed {
            Some(f) => {
                let roots: Vec<VertexRef> = p.roots().into_iter().flatten().collect();
                def.closure(&roots).binary_search(&f).is_ok()
            }
            None => true,
        })
        .collect()
}

/// The failed requests' errors: the first with the failed step pointed at in its
/// Dockerfile, the others naming it.
fn failed_reports(
    e: SolveError,
    def: &Definition,
    prepared: &[(String, Prepared)],
    needing: &[bool],
) -> Vec<(String, miette::Report)> {
    let mut names = prepared
        .iter()
        .zip(needing)
        .filter(|(_, n)| **n)
        .map(|((name, p), _)| (name, p));
    let Some((first, p)) = names.next() else {
        return vec![(prepared[0].0.clone(), miette::Report::from_err(e))];
    };
    let mut out = vec![(first.clone(), solve_error(e, def, p.dockerfile()))];
    for (name, _) in names {
        out.push((
            name.clone(),
            miette::miette!("a step it shares with target {first:?} failed"),
        ));
    }
    out
}

/// The display's name prefix of each vertex: the requests that need it, as buildx prefixes
/// a bake target's vertices (`[app 2/4] RUN …`); work several share names them all.
fn prefixes(def: &Definition, prepared: &[&(String, Prepared)]) -> crate::progress::Prefixes {
    let mut names: HashMap<VertexRef, Vec<&str>> = HashMap::new();
    for (name, p) in prepared.iter().copied() {
        let roots: Vec<VertexRef> = p.roots().into_iter().flatten().collect();
        for r in def.closure(&roots) {
            let v = names.entry(r).or_default();
            if !v.contains(&name.as_str()) {
                v.push(name);
            }
        }
    }
    names
        .into_iter()
        .filter_map(|(r, n)| def.vertex(r).map(|v| (v.digest(), n.join(","))))
        .collect()
}
