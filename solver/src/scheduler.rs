//! The scheduler: runs the vertices a target needs, in dependency order, with a bounded
//! number of concurrent executions. Before executing a vertex it computes its cache key
//! (see [`crate::cache::key`]) and asks the worker's cache; a hit returns the stored result
//! without executing anything. The first failure cancels everything still running
//! (so does the `stop` future of [`Scheduler::solve_until`], e.g. Ctrl-C): the
//! worker is told to stop its work, the other vertices' futures are dropped, and
//! the vertices that had started are reported canceled.
//!
//! It knows nothing about Dockerfiles or how ops run: a [`Worker`] does the work.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::{
    input_selectors, reads_only_users, vertex_cache_key, CacheKey, ContentChecksum, InputKey,
    KeyParts, Selector,
};
use crate::llb::{Definition, Op, Vertex, VertexDigest, VertexRef};
use crate::progress::{LogStream, ProgressSender, VertexProgress};

mod lookahead;
mod worker_error;
pub use worker_error::{BoxError, WorkerError};

/// What executes ops and stores their results.
pub trait Worker: Send + Sync + 'static {
    /// A vertex's result (a snapshot, a local directory, ...).
    type Output: Clone + Send + Sync + 'static;

    /// A stable identity for a root whose identifier can move (`busybox:latest` → its
    /// manifest digest); part of the cache key. `None` when the op alone is stable.
    fn pin(
        &self,
        vertex: &Vertex,
    ) -> impl Future<Output = Result<Option<String>, WorkerError>> + Send {
        let _ = vertex;
        async { Ok(None) }
    }

    /// Whether the result of `input` is keyed by its content (a local context: its files
    /// are the only identity it has) rather than by its cache key.
    fn content_keyed(&self, input: &Vertex) -> bool {
        let _ = input;
        false
    }

    /// Whether an op that reads only selected paths of `input` (COPY sources, bind mounts
    /// with `source=`) is keyed by the checksum of those paths rather than by the input's
    /// cache key. Content-keyed inputs always are; a worker able to checksum other results
    /// (e.g. a stage's snapshot) returns true for them too, so unrelated changes in that
    /// stage stop invalidating the copy.
    fn selects_by_content(&self, input: &Vertex) -> bool {
        self.content_keyed(input)
    }

    /// The checksum of `selectors` in a result (`Selector::path("")` = all of it); asked
    /// only for inputs that are [`Worker::content_keyed`] or [`Worker::selects_by_content`].
    fn checksum(
        &self,
        output: &Self::Output,
        selectors: &[Selector],
    ) -> impl Future<Output = Result<ContentChecksum, WorkerError>> + Send;

    /// A cached result for `key`, if any.
    fn cache_load(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
    ) -> impl Future<Output = Result<Option<Self::Output>, WorkerError>> + Send;

    /// Stores a fresh result under `key`.
    fn cache_save(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
        output: &Self::Output,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send;

    /// Whether the solve should compute every key before running anything, so that a
    /// step found in the cache does not need the steps below it ([`Worker::has_record`]):
    /// worth it when records may exist for a step but not for what it was made from (an
    /// imported `mode=min` cache holds the final stage but not the stages it copies from).
    fn looks_ahead(&self) -> bool {
        false
    }

    /// Whether [`Worker::cache_load`] would find a result for `key` (asked when
    /// [`Worker::looks_ahead`]). A vertex with a record whose inputs have none is loaded
    /// without solving them.
    fn has_record(&self, key: &CacheKey, vertex: &Vertex) -> bool {
        let _ = (key, vertex);
        false
    }

    /// Called with every key the solve computes and what it was made of (for a remote-cache
    /// export, which records the parts so an importer can explain its misses).
    fn key_computed(&self, vertex: &Vertex, key: &CacheKey, parts: &KeyParts) {
        let _ = (vertex, key, parts);
    }

    /// Called when `vertex` found no cached result under `key` (and the cache was not
    /// turned off for it): why, if the worker knows (an imported cache held a record of
    /// the same step made of other parts). `inputs` describe its inputs, in input order.
    /// The answer is shown in the vertex's log as `cache miss: …`.
    fn explain_miss(
        &self,
        vertex: &Vertex,
        key: &CacheKey,
        parts: &KeyParts,
        inputs: &[String],
    ) -> Option<String> {
        let _ = (vertex, key, parts, inputs);
        None
    }

    /// Called when a solve fails or is stopped, before the other vertices' futures are
    /// dropped: work that dropping cannot stop (a process started from a blocking thread)
    /// should be stopped here, so the failure is reported promptly and nothing keeps
    /// running. Results finishing after it must not be stored in the cache.
    fn cancel(&self) {}

    /// Called when a solve ends, whether it succeeded, failed or was stopped: results the
    /// worker saved in batches are committed now (what comes next, an export, reads them).
    fn solve_ended(&self) -> Result<(), WorkerError> {
        Ok(())
    }

    /// Executes the op with its inputs' results (in input order). The scheduler reports the
    /// vertex's registration, start, cache hit, end, error and cancellation on the progress
    /// sender it was given; the worker reports logs and transfers on the same vertex digest.
    /// The future is dropped when the solve is cancelled, so it must clean up on drop (e.g.
    /// kill its process).
    fn execute(
        &self,
        vertex: &Vertex,
        inputs: Vec<Self::Output>,
    ) -> impl Future<Output = Result<Self::Output, WorkerError>> + Send;
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A vertex failed.
    #[error("{description}: {source}")]
    Vertex {
        /// The vertex.
        digest: VertexDigest,
        /// Its description (or op summary).
        description: String,
        /// The worker's error.
        #[source]
        source: WorkerError,
    },
    /// A target is not in the definition.
    #[error("target vertex {0} is not in the definition")]
    UnknownTarget(usize),
    /// A task of the solve panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
    /// The solve was stopped from outside (see [`Scheduler::solve_until`]).
    #[error("the build was canceled")]
    Canceled,
    /// The results were made but their cache records could not be saved.
    #[error("saving the build's cache records: {0}")]
    Records(#[source] WorkerError),
}

/// A vertex's result and key.
#[derive(Debug, Clone)]
pub struct Solved<O> {
    /// The cache key it was computed or found under.
    pub key: CacheKey,
    /// The result.
    pub output: O,
    /// Whether it was executed (false: from the cache).
    pub executed: bool,
    /// Executed although its key may hold a record (`--no-cache`, `--no-cache-filter`),
    /// or above such a result: the record under `key` was replaced, so what depends on
    /// it must not load records made from the old one.
    pub refreshed: bool,
}

/// The result of a solve.
#[derive(Debug)]
pub struct SolveOutcome<O> {
    /// Every needed vertex's result.
    pub results: HashMap<VertexRef, Solved<O>>,
    /// How many vertices were executed.
    pub executed: usize,
    /// How many came from the cache.
    pub cached: usize,
}

/// The running vertex tasks of a solve.
type Tasks<O> = JoinSet<(VertexRef, Result<Solved<O>, SolveError>)>;

/// Runs definitions on a worker.
pub struct Scheduler<W: Worker> {
    worker: Arc<W>,
    jobs: usize,
    progress: ProgressSender,
    executed_total: Arc<AtomicUsize>,
}

impl<W: Worker> Scheduler<W> {
    /// A scheduler running at most `jobs` executions at once (at least 1).
    pub fn new(worker: Arc<W>, jobs: usize) -> Self {
        Scheduler {
            worker,
            jobs: jobs.max(1),
            progress: ProgressSender::discard(),
            executed_total: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Reports vertices (registered, cached, started, done, errored, canceled) on `progress`.
    pub fn with_progress(mut self, progress: ProgressSender) -> Self {
        self.progress = progress;
        self
    }

    /// Vertices executed by this scheduler over all solves.
    pub fn executed_total(&self) -> usize {
        self.executed_total.load(Ordering::SeqCst)
    }

    /// Solves what `targets` need.
    pub async fn solve(
        &self,
        def: &Definition,
        targets: &[VertexRef],
    ) -> Result<SolveOutcome<W::Output>, SolveError> {
        self.solve_until(def, targets, std::future::pending()).await
    }

    /// Solves what `targets` need unless `stop` completes first: then the solve is
    /// canceled as on a failure and returns [`SolveError::Canceled`].
    pub async fn solve_until(
        &self,
        def: &Definition,
        targets: &[VertexRef],
        stop: impl Future<Output = ()>,
    ) -> Result<SolveOutcome<W::Output>, SolveError> {
        let solved = self.solve_inner(def, targets, stop).await;
        let ended = self.worker.solve_ended();
        let outcome = solved?;
        // The solve's results are only as good as their records: a batch that cannot be
        // committed fails the solve that made it.
        ended.map_err(SolveError::Records)?;
        Ok(outcome)
    }

    async fn solve_inner(
        &self,
        def: &Definition,
        targets: &[VertexRef],
        stop: impl Future<Output = ()>,
    ) -> Result<SolveOutcome<W::Output>, SolveError> {
        let mut stop = std::pin::pin!(stop);
        for t in targets {
            if def.vertex(*t).is_none() {
                return Err(SolveError::UnknownTarget(t.index()));
            }
        }
        let needed = def.closure(targets);
        let plan = match self.worker.looks_ahead() {
            // Before anything runs: a stop needs nothing canceled.
            true => tokio::select! {
                biased;
                () = &mut stop => return Err(SolveError::Canceled),
                plan = lookahead::plan(&*self.worker, def, targets, &needed) => plan,
            },
            false => lookahead::Plan::all(needed),
        };
        let needed = plan.solve.clone();
        tracing::debug!(
            vertices = needed.len(),
            targets = targets.len(),
            jobs = self.jobs,
            "solve"
        );
        self.register(def, &needed);
        let mut st = SolveState::new(def, plan, self.jobs);
        loop {
            self.spawn_ready(def, &mut st);
            // A stop wins over results ready at the same moment.
            let joined = tokio::select! {
                biased;
                () = &mut stop => {
                    self.cancel_all(&st.canceled, &mut st.tasks, &st.in_flight).await;
                    return Err(SolveError::Canceled);
                }
                joined = st.tasks.join_next() => joined,
            };
            let Some(joined) = joined else {
                break;
            };
            let outcome = match joined {
                Ok((r, outcome)) => {
                    st.in_flight.remove(&r);
                    outcome.map(|s| (r, s))
                }
                Err(e) => Err(SolveError::Internal(e.to_string())),
            };
            match outcome {
                Ok((r, solved)) => st.record(r, solved),
                Err(e) => {
                    // First failure: stop what the worker runs, drop everything else.
                    self.cancel_all(&st.canceled, &mut st.tasks, &st.in_flight)
                        .await;
                    return Err(e);
                }
            }
        }
        if st.results.len() != needed.len() {
            return Err(SolveError::Internal(format!(
                "solved {} of {} vertices",
                st.results.len(),
                needed.len()
            )));
        }
        Ok(SolveOutcome {
            results: st.results,
            executed: st.executed,
            cached: st.cached,
        })
    }

    /// Announces the vertices of the solve, with their inputs, on the progress channel.
    fn register(&self, def: &Definition, needed: &[VertexRef]) {
        for r in needed {
            if let Some(v) = def.vertex(*r) {
                let inputs = v
                    .inputs()
                    .iter()
                    .filter_map(|i| def.vertex(*i).map(Vertex::digest))
                    .collect();
                self.progress
                    .vertex_with_inputs(v.digest(), v.summary(), inputs);
            }
        }
    }

    /// Spawns a task for every vertex whose inputs are all solved.
    fn spawn_ready(&self, def: &Definition, st: &mut SolveState<W::Output>) {
        for r in std::mem::take(&mut st.ready) {
            let started = Arc::new(AtomicBool::new(false));
            if let Some(v) = def.vertex(r) {
                st.in_flight.insert(r, (v.digest(), Arc::clone(&started)));
            }
            let flags = TaskFlags {
                semaphore: Arc::clone(&st.semaphore),
                started,
                canceled: Arc::clone(&st.canceled),
            };
            self.spawn_vertex(def, r, &st.results, &st.plan, flags, &mut st.tasks);
        }
    }

    /// Stops the solve: later failures count as cancellations, the worker stops
    /// its work, every task is dropped, and the vertices that had started are
    /// reported canceled.
    async fn cancel_all(
        &self,
        canceled: &AtomicBool,
        tasks: &mut Tasks<W::Output>,
        in_flight: &HashMap<VertexRef, (VertexDigest, Arc<AtomicBool>)>,
    ) {
        canceled.store(true, Ordering::SeqCst);
        self.worker.cancel();
        tasks.shutdown().await;
        for (digest, started) in in_flight.values() {
            if started.load(Ordering::SeqCst) {
                self.progress.handle(*digest).canceled();
            }
        }
    }

    /// Spawns the load of a vertex the cache holds while not holding all of its inputs:
    /// by the key computed ahead, without them.
    fn spawn_alone(
        &self,
        vertex: Vertex,
        r: VertexRef,
        ahead: Option<lookahead::Ahead>,
        flags: TaskFlags,
        tasks: &mut Tasks<W::Output>,
    ) {
        let worker = Arc::clone(&self.worker);
        let progress = self.progress.handle(vertex.digest());
        tasks.spawn(async move {
            let out = load_alone(&*worker, &vertex, ahead, &progress).await;
            if let Err(e) = &out {
                if !flags.canceled.load(Ordering::SeqCst) {
                    progress.error(e.to_string());
                }
            }
            (r, out)
        });
    }

    fn spawn_vertex(
        &self,
        def: &Definition,
        r: VertexRef,
        results: &HashMap<VertexRef, Solved<W::Output>>,
        plan: &lookahead::Plan,
        flags: TaskFlags,
        tasks: &mut Tasks<W::Output>,
    ) {
        let Some(vertex) = def.vertex(r).cloned() else {
            return;
        };
        let ahead = plan.ahead.get(&r).cloned();
        if plan.alone.contains(&r) {
            self.spawn_alone(vertex, r, ahead, flags, tasks);
            return;
        }
        // Inputs in order with their results, keys and whether they are content-keyed.
        let mut inputs = Vec::with_capacity(vertex.inputs().len());
        for i in vertex.inputs() {
            let (Some(iv), Some(solved)) = (def.vertex(*i), results.get(i)) else {
                tasks.spawn(async move {
                    (
                        r,
                        Err(SolveError::Internal("input solved out of order".into())),
                    )
                });
                return;
            };
            inputs.push(InputState {
                name: iv.summary(),
                output: solved.output.clone(),
                key: solved.key,
                refreshed: solved.refreshed,
                content_keyed: self.worker.content_keyed(iv),
                selects_by_content: self.worker.selects_by_content(iv),
            });
        }
        let worker = Arc::clone(&self.worker);
        let progress = self.progress.handle(vertex.digest());
        let total = Arc::clone(&self.executed_total);
        tasks.spawn(async move {
            let out =
                solve_vertex(&*worker, &vertex, inputs, ahead, &progress, &total, &flags).await;
            // A failure after the cancel is the cancel's doing: the solve
            // reports this vertex canceled.
            if let Err(e) = &out {
                if !flags.canceled.load(Ordering::SeqCst) {
                    progress.error(e.to_string());
                }
            }
            (r, out)
        });
    }
}

/// The state of one solve between task completions.
struct SolveState<O> {
    /// What is solved, and how.
    plan: lookahead::Plan,
    /// Distinct inputs not solved yet, per vertex.
    pending: HashMap<VertexRef, usize>,
    /// The vertices using each vertex, within the closure.
    users: HashMap<VertexRef, Vec<VertexRef>>,
    semaphore: Arc<Semaphore>,
    results: HashMap<VertexRef, Solved<O>>,
    tasks: Tasks<O>,
    /// Vertices whose inputs are all solved, to spawn.
    ready: Vec<VertexRef>,
    executed: usize,
    cached: usize,
    /// Set once the solve fails or stops: vertices failing after it were
    /// canceled, not failed, and are reported so.
    canceled: Arc<AtomicBool>,
    /// Spawned vertices not finished yet, with whether they started executing:
    /// those that did are reported canceled if the solve fails.
    in_flight: HashMap<VertexRef, (VertexDigest, Arc<AtomicBool>)>,
}

impl<O: Send + 'static> SolveState<O> {
    /// The state before anything ran: input counts and reverse edges within `needed`,
    /// and the vertices without inputs ready.
    fn new(def: &Definition, plan: lookahead::Plan, jobs: usize) -> Self {
        let mut pending: HashMap<VertexRef, usize> = HashMap::new();
        let mut users: HashMap<VertexRef, Vec<VertexRef>> = HashMap::new();
        let needed = &plan.solve;
        for r in needed {
            let Some(v) = def.vertex(*r) else { continue };
            // Loaded alone: it waits for none of its inputs.
            let mut inputs: Vec<VertexRef> = match plan.alone.contains(r) {
                true => Vec::new(),
                false => v.inputs().to_vec(),
            };
            inputs.sort();
            inputs.dedup();
            pending.insert(*r, inputs.len());
            for i in inputs {
                users.entry(i).or_default().push(*r);
            }
        }
        let ready = needed
            .iter()
            .copied()
            .filter(|r| pending.get(r) == Some(&0))
            .collect();
        SolveState {
            plan,
            pending,
            users,
            semaphore: Arc::new(Semaphore::new(jobs)),
            results: HashMap::new(),
            tasks: JoinSet::new(),
            ready,
            executed: 0,
            cached: 0,
            canceled: Arc::new(AtomicBool::new(false)),
            in_flight: HashMap::new(),
        }
    }

    /// Records a solved vertex and readies the users it was the last input of.
    fn record(&mut self, r: VertexRef, solved: Solved<O>) {
        if solved.executed {
            self.executed += 1;
        } else {
            self.cached += 1;
        }
        self.results.insert(r, solved);
        for u in self.users.get(&r).cloned().unwrap_or_default() {
            if let Some(n) = self.pending.get_mut(&u) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.ready.push(u);
                }
            }
        }
    }
}

/// A vertex task's view of the solve's state.
struct TaskFlags {
    /// The job limit.
    semaphore: Arc<Semaphore>,
    /// Set when the vertex starts executing.
    started: Arc<AtomicBool>,
    /// Set when the solve is canceled.
    canceled: Arc<AtomicBool>,
}

/// What a vertex needs from one solved input.
struct InputState<O> {
    /// Its description (for explanations of misses).
    name: String,
    output: O,
    key: CacheKey,
    refreshed: bool,
    content_keyed: bool,
    selects_by_content: bool,
}

/// Solves one vertex: its cache key from its inputs, then the cache, else an execution
/// under the job limit (saved to the cache).
async fn solve_vertex<W: Worker>(
    worker: &W,
    vertex: &Vertex,
    inputs: Vec<InputState<W::Output>>,
    ahead: Option<lookahead::Ahead>,
    progress: &VertexProgress,
    total: &AtomicUsize,
    flags: &TaskFlags,
) -> Result<Solved<W::Output>, SolveError> {
    let fail = |source: WorkerError| SolveError::Vertex {
        digest: vertex.digest(),
        description: vertex.summary(),
        source,
    };
    // Keys computed ahead were made from the same inputs: not computed twice.
    let (pin, input_keys) = match ahead {
        Some(a) => (a.pin, a.input_keys),
        None => {
            let pin = worker.pin(vertex).await.map_err(fail)?;
            (
                pin,
                input_keys(worker, vertex, &inputs).await.map_err(fail)?,
            )
        }
    };
    let key = vertex_cache_key(vertex, pin.as_deref(), &input_keys);
    let parts = KeyParts::of(vertex, pin.as_deref(), &input_keys);
    worker.key_computed(vertex, &key, &parts);
    // An input run afresh under an unchanged key (a RUN of a stage not to use the
    // cache) may differ from what this vertex's record was made from, unless this
    // vertex is keyed by that input's content.
    let input_refreshed = inputs
        .iter()
        .zip(&input_keys)
        .any(|(i, k)| i.refreshed && matches!(k, InputKey::Key(_)));
    let ignore_cache = vertex.metadata().ignore_cache;
    let name = vertex.summary();
    tracing::debug!(vertex = %name, digest = %vertex.digest(), key = %key, "cache key");
    // Sources are pinned by their key (image digest, context content); a file op's
    // result follows from its inputs: only a RUN can come out different.
    let refreshed = input_refreshed || (ignore_cache && matches!(vertex.op(), Op::Exec(_)));
    if !ignore_cache && !input_refreshed {
        if let Some(output) = worker.cache_load(&key, vertex).await.map_err(fail)? {
            tracing::debug!(vertex = %name, key = %key, "cache hit");
            progress.cached();
            return Ok(Solved {
                key,
                output,
                executed: false,
                refreshed: false,
            });
        }
    }
    let why = match (ignore_cache, input_refreshed) {
        (true, _) => "the cache is off for this step",
        (false, true) => "an input was rebuilt",
        (false, false) => "no record under the key",
    };
    tracing::debug!(vertex = %name, key = %key, reason = why, "cache miss");
    // Only a step that could have come from the cache has a miss to explain.
    let explanation = match (ignore_cache, input_refreshed) {
        (false, false) => {
            let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
            worker.explain_miss(vertex, &key, &parts, &names)
        }
        _ => None,
    };
    let _permit = flags
        .semaphore
        .acquire()
        .await
        .map_err(|e| SolveError::Internal(e.to_string()))?;
    if flags.canceled.load(Ordering::SeqCst) {
        return Err(SolveError::Canceled);
    }
    flags.started.store(true, Ordering::SeqCst);
    progress.start();
    if let Some(why) = explanation {
        tracing::debug!(vertex = %name, key = %key, "cache miss: {why}");
        progress.log(LogStream::Stderr, format!("cache miss: {why}\n"));
    }
    total.fetch_add(1, Ordering::SeqCst);
    let outputs: Vec<W::Output> = inputs.into_iter().map(|i| i.output).collect();
    let started = std::time::Instant::now();
    let output = worker.execute(vertex, outputs).await.map_err(fail)?;
    tracing::debug!(vertex = %name, elapsed = ?started.elapsed(), "executed");
    worker
        .cache_save(&key, vertex, &output)
        .await
        .map_err(fail)?;
    progress.done();
    Ok(Solved {
        key,
        output,
        executed: true,
        refreshed,
    })
}

/// Loads a vertex the cache holds by the key computed ahead, its inputs unsolved.
async fn load_alone<W: Worker>(
    worker: &W,
    vertex: &Vertex,
    ahead: Option<lookahead::Ahead>,
    progress: &VertexProgress,
) -> Result<Solved<W::Output>, SolveError> {
    let fail = |source: WorkerError| SolveError::Vertex {
        digest: vertex.digest(),
        description: vertex.summary(),
        source,
    };
    let Some(a) = ahead else {
        return Err(SolveError::Internal(format!(
            "{}: loaded from the cache without a key",
            vertex.summary()
        )));
    };
    let parts = KeyParts::of(vertex, a.pin.as_deref(), &a.input_keys);
    worker.key_computed(vertex, &a.key, &parts);
    match worker.cache_load(&a.key, vertex).await.map_err(fail)? {
        Some(output) => {
            tracing::debug!(vertex = %vertex.summary(), key = %a.key, "cache hit (inputs not needed)");
            progress.cached();
            Ok(Solved {
                key: a.key,
                output,
                executed: false,
                refreshed: false,
            })
        }
        // Its inputs were left unsolved: it cannot run. Only a prune during the build
        // removes a record the plan saw.
        None => Err(fail(WorkerError::other(
            "its cache record disappeared during the build (pruned?); build again",
        ))),
    }
}

/// What each input contributes to the vertex's cache key: the checksum of the content it
/// reads (selected paths, or the whole input when it is content-keyed), else its key.
async fn input_keys<W: Worker>(
    worker: &W,
    vertex: &Vertex,
    inputs: &[InputState<W::Output>],
) -> Result<Vec<InputKey>, WorkerError> {
    let mut input_keys = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let selectors = input_selectors(vertex.op(), index);
        let ik = match selectors {
            Some(sel)
                if input.selects_by_content
                    || input.content_keyed
                    || reads_only_users(vertex.op(), index) =>
            {
                InputKey::Content(worker.checksum(&input.output, &sel).await?)
            }
            _ if input.content_keyed => InputKey::Content(
                worker
                    .checksum(&input.output, &[Selector::path("")])
                    .await?,
            ),
            _ => InputKey::Key(input.key),
        };
        input_keys.push(ik);
    }
    Ok(input_keys)
}

#[cfg(test)]
mod tests;
