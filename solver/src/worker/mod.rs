//! The worker: executes the ops of a build graph on this machine, turning
//! inputs' results into a vertex's result (BuildKit's "worker"). The
//! scheduler decides what runs when; this decides how.

mod exec;
mod file;
mod http;
mod remote;
mod source;
mod syncer;

use crate::cache::{
    checksum_paths_cached, checksum_paths_filtered, CacheKey, CacheStore, ContentChecksum,
    Selector, StatCache,
};
use crate::content::ContentStore;
use crate::executor::Executor;
use crate::llb::{Op, Vertex, VertexDigest};
use crate::ops::source::http_cache::{HttpCache, Resolved};
use crate::pattern::PatternMatcher;
use crate::progress::ProgressSender;
use crate::scheduler::WorkerError;
use crate::snapshot::layers::LayerStore;
use crate::snapshot::{LayerId, Snapshot};
use kiln_oci::Platform;
use kiln_oci::{Descriptor, Digest};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A vertex's result.
#[derive(Debug, Clone)]
pub enum Output {
    /// A filesystem made of layers.
    Snapshot(Snapshot),
    /// A directory on the host (the build context, a named context, a
    /// downloaded file or a git checkout).
    Dir(LocalDir),
}

/// A host directory and the paths hidden in it.
#[derive(Debug, Clone)]
pub struct LocalDir {
    /// The directory.
    pub root: PathBuf,
    /// `.dockerignore` patterns; hidden paths are neither copied nor hashed.
    pub ignore: Arc<PatternMatcher>,
    /// Keeps a temporary directory (downloads, clones) alive.
    pub keep: Option<Arc<tempfile::TempDir>>,
    /// The directory outlives the build (a local context): its files' digests are kept in
    /// the stat cache so the next build reads only what changed.
    pub persistent: bool,
}

impl LocalDir {
    /// A directory with no ignore patterns.
    pub fn plain(root: PathBuf) -> LocalDir {
        LocalDir {
            root,
            ignore: Arc::new(PatternMatcher::default()),
            keep: None,
            persistent: false,
        }
    }
}

/// An image's layers, made available in the content store.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    /// Layer blobs bottom first, each with the diffID its config lists.
    pub layers: Vec<(Descriptor, Digest)>,
}

/// Brings images into the content store (the builder implements it with the
/// local store and the registry client; the solver knows neither).
pub trait ImageFetcher: Send + Sync {
    /// Makes sure the layers of `reference` (a registry reference pinned by digest, or
    /// `oci-layout://PATH@DIGEST`) for `platform`
    /// are in the content store. Blocking: called from a blocking thread.
    fn fetch(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<FetchedImage, WorkerError>;

    /// Makes fetches in progress fail soon and new ones fail at once (the build
    /// is being canceled). Writes already made must stay consistent.
    fn cancel(&self) {}
}

/// Client-side resources a build may use.
#[derive(Clone, Default)]
pub struct Session {
    /// Local directories by source name (`context`, named contexts).
    pub locals: BTreeMap<String, LocalDir>,
    /// Secret bytes by id (`--secret`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH agent sockets by id (`--ssh`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--allow network.host`.
    pub allow_network_host: bool,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--add-host` entries for every RUN.
    pub extra_hosts: Vec<crate::executor::HostEntry>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("locals", &self.locals.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("ssh", &self.ssh.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Executes ops on this machine.
pub struct LocalWorker {
    pub(crate) layers: LayerStore,
    /// The flattened bottoms of long layer chains that RUN steps mount.
    pub(crate) flats: crate::snapshot::flatten::FlatStore,
    pub(crate) content: ContentStore,
    pub(crate) cache: Arc<CacheStore>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) images: Arc<dyn ImageFetcher>,
    pub(crate) session: Session,
    pub(crate) progress: ProgressSender,
    /// Where downloads and checkouts go (HTTP and git sources).
    pub(crate) scratch: PathBuf,
    /// Downloaded HTTP content and validators, kept across builds.
    pub(crate) http: HttpCache,
    /// HTTP sources resolved by [`crate::scheduler::Worker::pin`] in this build.
    pub(crate) http_resolved: Mutex<HashMap<VertexDigest, Resolved>>,
    /// Set by [`crate::scheduler::Worker::cancel`]: nothing starts or is stored after it.
    canceled: AtomicBool,
    /// Local directories as RUN mounts see them (`.dockerignore`d paths left out),
    /// made once per build, by the directory's path.
    pub(crate) mount_views: Mutex<HashMap<PathBuf, Arc<tempfile::TempDir>>>,
    /// Copy steps' identities (their key without their sources' content), by vertex: what
    /// finds the previous result an incremental copy takes files over from.
    pub(crate) copy_steps: Mutex<HashMap<VertexDigest, [u8; 32]>>,
    /// The imported build caches, lazy layers, and what this build learnt for an export.
    pub(crate) remote: remote::RemoteState,
    /// Layers known to have a record (stored or found by this worker): a step's result
    /// then needs a lookup for its new layer only, not for its whole chain.
    recorded_layers: Mutex<std::collections::HashSet<LayerId>>,
    /// Layers this worker found on disk (or made): a record of a chain of N steps is
    /// checked for its new layers only, not N stats per step (quadratic in a no-op
    /// rebuild of a long chain). Only a prune removes layers, and never during a build.
    present_layers: Mutex<std::collections::HashSet<LayerId>>,
    /// Syncs RUN steps' layers while the next steps run.
    pub(crate) syncer: syncer::LayerSyncer,
}

impl LocalWorker {
    /// A worker over the state directory's stores.
    pub fn new(
        state: &crate::state::StateDir,
        cache: Arc<CacheStore>,
        executor: Arc<dyn Executor>,
        images: Arc<dyn ImageFetcher>,
        session: Session,
        progress: ProgressSender,
    ) -> Result<LocalWorker, WorkerError> {
        let layers = LayerStore::open(state.layers_dir())?;
        let scratch = state.root().join("tmp");
        std::fs::create_dir_all(&scratch)?;
        let http = HttpCache::open(state.http_dir())?;
        Ok(LocalWorker {
            layers,
            flats: crate::snapshot::flatten::FlatStore::new(state.flat_dir()),
            content: state.content().clone(),
            cache,
            executor,
            images,
            session,
            progress,
            scratch,
            http,
            http_resolved: Mutex::new(HashMap::new()),
            canceled: AtomicBool::new(false),
            mount_views: Mutex::new(HashMap::new()),
            copy_steps: Mutex::new(HashMap::new()),
            remote: remote::RemoteState::new(state.cache_mounts_dir()),
            recorded_layers: Mutex::new(std::collections::HashSet::new()),
            present_layers: Mutex::new(std::collections::HashSet::new()),
            syncer: syncer::LayerSyncer::default(),
        })
    }

    /// Whether every layer is unpacked here or lazily available from an import.
    fn all_present(&self, layers: &[LayerId]) -> bool {
        let mut known = self
            .present_layers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for l in layers {
            if known.contains(l) {
                continue;
            }
            if self.layers.exists(l) {
                known.insert(l.clone());
            } else if !self.is_lazy(l) {
                // Lazy layers are not remembered: they may be unpacked, or fail, later.
                return false;
            }
        }
        true
    }

    /// Remembers layers as present (a step just made them, or its record was saved).
    fn mark_present(&self, layers: &[LayerId]) {
        let mut known = self
            .present_layers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for l in layers {
            if !known.contains(l) && self.layers.exists(l) {
                known.insert(l.clone());
            }
        }
    }

    /// Stops the build's work: kills running RUN steps, makes image fetches
    /// fail, and makes every op started or finished from now on fail with
    /// "canceled" instead of storing a result. Idempotent.
    pub fn cancel(&self) {
        self.canceled.store(true, Ordering::SeqCst);
        self.executor.cancel();
        self.images.cancel();
    }

    /// Whether the build was canceled.
    pub fn is_canceled(&self) -> bool {
        self.canceled.load(Ordering::SeqCst)
    }

    /// An error when the build was canceled.
    pub(crate) fn check_canceled(&self) -> Result<(), WorkerError> {
        if self.is_canceled() {
            Err(crate::executor::ExecError::Canceled.into())
        } else {
            Ok(())
        }
    }

    /// Refuses layers over `max` bytes unpacked (see [`LayerStore::with_max_size`]).
    pub fn limit_layer_size(&mut self, max: Option<u64>) {
        self.layers = self.layers.clone().with_max_size(max);
        self.remote.restore_limit = max;
    }

    /// The layer store.
    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// The snapshot of an output that must be a filesystem of layers.
    pub(crate) fn snapshot_of(output: &Output) -> Result<Snapshot, WorkerError> {
        match output {
            Output::Snapshot(s) => Ok(s.clone()),
            Output::Dir(d) => Err(format!(
                "expected a filesystem, got the directory {}",
                d.root.display()
            )
            .into()),
        }
    }
}

/// Runs blocking work off the async threads; a panic becomes an error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkerError> + Send + 'static,
) -> Result<T, WorkerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| -> WorkerError { format!("internal error: {e}").into() })?
}

impl crate::scheduler::Worker for Arc<LocalWorker> {
    type Output = Output;

    /// An HTTP source is pinned to its content digest: revalidated against the
    /// server (or known from `--checksum`), downloaded only when it changed.
    async fn pin(&self, vertex: &Vertex) -> Result<Option<String>, WorkerError> {
        match vertex.op() {
            Op::Source(s) if matches!(s.scheme(), "http" | "https") => {
                let resolved = self.resolve_http(vertex, s).await?;
                Ok(Some(resolved.file.digest))
            }
            _ => Ok(None),
        }
    }

    fn content_keyed(&self, input: &Vertex) -> bool {
        matches!(input.op(), Op::Source(s) if s.scheme() == "local")
    }

    async fn checksum(
        &self,
        output: &Output,
        selectors: &[Selector],
    ) -> Result<ContentChecksum, WorkerError> {
        let selectors = selectors.to_vec();
        match output {
            Output::Dir(d) => {
                let dir = d.clone();
                let cache = Arc::clone(&self.cache);
                blocking(move || {
                    if !dir.persistent {
                        return Ok(checksum_paths_filtered(
                            &dir.root,
                            &selectors,
                            Some(&dir.ignore),
                        )?);
                    }
                    let stats = StatCache::begin(cache.meta(), &dir.root)?;
                    let sum = checksum_paths_cached(
                        &dir.root,
                        &selectors,
                        Some(&dir.ignore),
                        Some(&stats),
                    )?;
                    stats.persist()?;
                    Ok(sum)
                })
                .await
            }
            // What a COPY --from selects, by content: a stage rebuilt to the same
            // files keeps the steps after it cached.
            Output::Snapshot(s) => {
                let (worker, snapshot) = (Arc::clone(self), s.clone());
                blocking(move || worker.snapshot_checksum(&snapshot, &selectors)).await
            }
        }
    }

    async fn cache_load(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
    ) -> Result<Option<Output>, WorkerError> {
        match vertex.op() {
            // A local directory costs nothing to "load": its content is what keys
            // its users, so it never counts as work done.
            Op::Source(s) if s.scheme() == "local" => return self.source(vertex, s).map(Some),
            // Content that was already here (a 304 or a known checksum) is a hit; a
            // fresh download counts as work.
            Op::Source(s) if matches!(s.scheme(), "http" | "https") => {
                let resolved = self.http_resolved(vertex);
                return match resolved {
                    Some(r) if !r.downloaded && !vertex.metadata().ignore_cache => {
                        let (worker, s) = (Arc::clone(self), s.clone());
                        blocking(move || worker.materialize_http(&s, &r.file))
                            .await
                            .map(Some)
                    }
                    _ => Ok(None),
                };
            }
            Op::Source(s) if !matches!(s.scheme(), "docker-image" | "oci-layout") => {
                return Ok(None)
            }
            _ => {}
        }
        if vertex.metadata().ignore_cache {
            return Ok(None);
        }
        if let Some(found) = self.cache.lookup(key, crate::meta::now_secs())? {
            // A record whose layers were pruned is a miss (unless an import has them).
            if self.all_present(&found.snapshot.layers) {
                return Ok(Some(Output::Snapshot(found.snapshot)));
            }
        }
        if !self.has_imported_cache() {
            return Ok(None);
        }
        // Recording an imported hit writes the database: off the async threads.
        let (worker, key, vertex) = (Arc::clone(self), *key, vertex.clone());
        blocking(move || worker.load_imported(&key, &vertex))
            .await
            .map(|found| found.map(Output::Snapshot))
    }

    async fn cache_save(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
        output: &Output,
    ) -> Result<(), WorkerError> {
        let Output::Snapshot(snapshot) = output else {
            return Ok(());
        };
        // After a cancel nothing becomes a cache record, so no step that a
        // cancel cut short can ever look complete.
        self.check_canceled()?;
        let now = crate::meta::now_secs();
        let unknown: Vec<LayerId> = {
            let known = self
                .recorded_layers
                .lock()
                .map_err(|_| "recorded layers lock poisoned")?;
            snapshot
                .layers
                .iter()
                .filter(|id| !known.contains(*id))
                .cloned()
                .collect()
        };
        let mut new_layers = Vec::new();
        for id in &unknown {
            if !self.cache.has_layer_record(id)? {
                new_layers.push(id.clone());
            }
        }
        let result = crate::cache::CacheResult {
            snapshot: snapshot.clone(),
            config: None,
            created_at: now,
            description: vertex.summary(),
        };
        let durable: crate::cache::store::DurableWait = Arc::new(self.syncer.barrier());
        self.cache
            .save(key, result, new_layers, now, Some(durable))?;
        // Saved: committed with its batch, found in it until then. A batch whose commit
        // fails stays to be committed again.
        self.recorded_layers
            .lock()
            .map_err(|_| "recorded layers lock poisoned")?
            .extend(unknown);
        self.mark_present(&snapshot.layers);
        Ok(())
    }

    fn solve_ended(&self) -> Result<(), WorkerError> {
        self.cache.commit_pending()?;
        Ok(())
    }

    /// With an imported cache, records may hold a stage but not what it copies from.
    fn looks_ahead(&self) -> bool {
        self.has_imported_cache()
    }

    fn has_record(&self, key: &CacheKey, vertex: &Vertex) -> bool {
        // As `cache_load` finds results: images and steps, from here or an import.
        let cached_kind = match vertex.op() {
            Op::Source(s) => matches!(s.scheme(), "docker-image" | "oci-layout"),
            _ => true,
        };
        if !cached_kind || vertex.metadata().ignore_cache {
            return false;
        }
        let local = self
            .cache
            .get(key)
            .ok()
            .flatten()
            .is_some_and(|found| self.all_present(&found.snapshot.layers));
        local || self.can_load_imported(key)
    }

    fn key_computed(&self, vertex: &Vertex, key: &CacheKey, parts: &crate::cache::KeyParts) {
        self.remember_parts(key, parts);
        self.remember_copy_step(vertex, parts);
    }

    fn explain_miss(
        &self,
        vertex: &Vertex,
        _key: &CacheKey,
        parts: &crate::cache::KeyParts,
        inputs: &[String],
    ) -> Option<String> {
        self.explain_imported_miss(vertex, parts, inputs)
    }

    fn cancel(&self) {
        LocalWorker::cancel(self);
    }

    async fn execute(&self, vertex: &Vertex, inputs: Vec<Output>) -> Result<Output, WorkerError> {
        self.check_canceled()?;
        // The build does work: RUN steps will likely follow, so pick the
        // executor now, alongside this op.
        self.executor.warm_up();
        // The blocking thread outlives this future when it is dropped: a drop
        // before the end cancels the worker, which stops that thread's process.
        let guard = CancelOnDrop(Some(Arc::clone(self)));
        let result = self.execute_op(vertex, inputs).await;
        guard.disarm();
        result
    }
}

/// Cancels the worker when dropped armed (an `execute` future dropped midway).
struct CancelOnDrop(Option<Arc<LocalWorker>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(worker) = self.0.take() {
            worker.cancel();
        }
    }
}

impl LocalWorker {
    async fn execute_op(
        self: &Arc<Self>,
        vertex: &Vertex,
        inputs: Vec<Output>,
    ) -> Result<Output, WorkerError> {
        let worker = Arc::clone(self);
        let vertex = vertex.clone();
        match vertex.op().clone() {
            Op::Source(src) => {
                blocking(move || {
                    worker.check_canceled()?;
                    worker.source(&vertex, &src)
                })
                .await
            }
            // A step runs on its inputs' files: layers imported lazily are fetched now.
            Op::Exec(op) => {
                blocking(move || {
                    worker.materialize_inputs(&vertex, &inputs)?;
                    worker.exec(&vertex, &op, &inputs)
                })
                .await
            }
            Op::File(op) => {
                blocking(move || {
                    worker.check_canceled()?;
                    worker.materialize_inputs(&vertex, &inputs)?;
                    worker.file(&vertex, &op, &inputs)
                })
                .await
            }
            Op::Merge(_) => {
                let mut merged = Snapshot::scratch();
                for i in &inputs {
                    merged.layers.extend(LocalWorker::snapshot_of(i)?.layers);
                }
                Ok(Output::Snapshot(merged))
            }
        }
    }
}
