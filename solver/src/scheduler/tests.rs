use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::llb::{
    CopyAction, ExecMeta, ExecOp, FileAction, FileOp, Mount, NetworkMode, Op, SecurityMode,
    SourceOp, VertexMetadata,
};
use crate::progress::EventKind;

/// A worker whose "filesystems" are maps of path -> content and whose exec ops are
/// scripted: `fail` fails, `block` never finishes, `barrier` waits for a partner.
struct FakeWorker {
    /// Contents of local contexts by name.
    locals: Mutex<HashMap<String, BTreeMap<String, String>>>,
    cache: Mutex<HashMap<CacheKey, Fs>>,
    executed: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    barrier: tokio::sync::Barrier,
    dropped_blocked: AtomicBool,
    /// Checksum any result, not only local contexts.
    checksums_snapshots: bool,
    /// Checksums asked for results that are not local contexts.
    snapshot_checksums: AtomicUsize,
    /// Set by `cancel`; a `block` execution returns when it sees it.
    cancelled: AtomicBool,
    /// Signalled when a `block` or `killable` execution starts.
    started: tokio::sync::Notify,
    /// Set when a `killable` execution has returned its error.
    killed_returned: AtomicBool,
    /// Every key computed: the vertex's description, the key and its parts.
    keys: Mutex<Vec<(String, CacheKey, KeyParts)>>,
    /// Every miss explained: the vertex's description and its inputs' descriptions.
    misses: Mutex<Vec<(String, Vec<String>)>>,
    /// Compute keys ahead (records are the cache's).
    looks_ahead: bool,
}

type Fs = BTreeMap<String, String>;

impl Default for FakeWorker {
    fn default() -> Self {
        FakeWorker::with_barrier(1)
    }
}

impl FakeWorker {
    fn with_barrier(n: usize) -> Self {
        FakeWorker {
            locals: Mutex::default(),
            cache: Mutex::default(),
            executed: Mutex::default(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            barrier: tokio::sync::Barrier::new(n),
            dropped_blocked: AtomicBool::new(false),
            checksums_snapshots: false,
            snapshot_checksums: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
            started: tokio::sync::Notify::new(),
            killed_returned: AtomicBool::new(false),
            keys: Mutex::default(),
            misses: Mutex::default(),
            looks_ahead: false,
        }
    }

    fn set_local(&self, name: &str, files: &[(&str, &str)]) {
        self.locals.lock().unwrap().insert(
            name.to_string(),
            files
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
    }

    fn executed(&self) -> Vec<String> {
        self.executed.lock().unwrap().clone()
    }
}

struct DropFlag<'a>(&'a AtomicBool);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Worker for FakeWorker {
    type Output = Fs;

    fn content_keyed(&self, input: &Vertex) -> bool {
        matches!(input.op(), Op::Source(s) if s.scheme() == "local")
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        // Like a process killed from here whose thread reports at once: let a
        // `killable` execution return its error before the solve drops it.
        if self.executed().iter().any(|e| e == "killable") {
            while !self.killed_returned.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn looks_ahead(&self) -> bool {
        self.looks_ahead
    }

    fn has_record(&self, key: &CacheKey, _vertex: &Vertex) -> bool {
        self.cache.lock().unwrap().contains_key(key)
    }

    fn key_computed(&self, vertex: &Vertex, key: &CacheKey, parts: &KeyParts) {
        let name = vertex.metadata().description.clone();
        self.keys.lock().unwrap().push((name, *key, parts.clone()));
    }

    fn explain_miss(
        &self,
        vertex: &Vertex,
        _key: &CacheKey,
        parts: &KeyParts,
        inputs: &[String],
    ) -> Option<String> {
        let name = vertex.metadata().description.clone();
        self.misses.lock().unwrap().push((name, inputs.to_vec()));
        Some(format!("{} inputs differ", parts.inputs.len()))
    }

    fn selects_by_content(&self, input: &Vertex) -> bool {
        self.checksums_snapshots || self.content_keyed(input)
    }

    async fn checksum(
        &self,
        output: &Fs,
        selectors: &[Selector],
    ) -> Result<ContentChecksum, WorkerError> {
        if output.contains_key("/from") {
            self.snapshot_checksums.fetch_add(1, Ordering::SeqCst);
        }
        let mut h = Sha256::new();
        for s in selectors {
            for (p, c) in output
                .iter()
                .filter(|(p, _)| s.path.is_empty() || p.starts_with(&s.path))
            {
                h.update(format!("{p}={c};"));
            }
        }
        Ok(ContentChecksum(h.finalize().into()))
    }

    async fn cache_load(&self, key: &CacheKey, _v: &Vertex) -> Result<Option<Fs>, WorkerError> {
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }

    async fn cache_save(&self, key: &CacheKey, v: &Vertex, out: &Fs) -> Result<(), WorkerError> {
        // Local contexts are not cached: their content is their key.
        if !self.content_keyed(v) {
            self.cache.lock().unwrap().insert(*key, out.clone());
        }
        Ok(())
    }

    async fn execute(&self, v: &Vertex, inputs: Vec<Fs>) -> Result<Fs, WorkerError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let _running = scopeguard(&self.running);
        let name = v.metadata().description.clone();
        self.executed.lock().unwrap().push(name.clone());
        let out = match v.op() {
            Op::Source(s) if s.scheme() == "local" => self
                .locals
                .lock()
                .unwrap()
                .get(s.location())
                .cloned()
                .ok_or("no such local")?,
            Op::Source(s) => BTreeMap::from([("/from".to_string(), s.identifier.clone())]),
            Op::Exec(e) => {
                let cmd = e.meta.args.join(" ");
                if cmd == "fail" {
                    return Err("exit status 1".into());
                }
                if cmd == "block" {
                    let _flag = DropFlag(&self.dropped_blocked);
                    self.started.notify_one();
                    std::future::pending::<()>().await;
                }
                if cmd == "killable" {
                    // A process that runs until the worker kills it.
                    self.started.notify_one();
                    while !self.cancelled.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    self.killed_returned.store(true, Ordering::SeqCst);
                    return Err("killed by signal 9".into());
                }
                if cmd == "wait-start" {
                    self.started.notified().await;
                }
                if cmd.starts_with("barrier") {
                    self.barrier.wait().await;
                }
                let mut fs = inputs.first().cloned().unwrap_or_default();
                fs.insert(format!("/ran/{cmd}"), cmd);
                fs
            }
            Op::File(f) => {
                let mut fs = f
                    .base
                    .and_then(|b| inputs.get(b).cloned())
                    .unwrap_or_default();
                for a in &f.actions {
                    if let FileAction::Copy(c) = a {
                        let src = inputs.get(c.src_input).cloned().unwrap_or_default();
                        for (p, content) in src.iter().filter(|(p, _)| p.starts_with(&c.src)) {
                            fs.insert(format!("{}{p}", c.dest), content.clone());
                        }
                    }
                }
                fs
            }
            Op::Merge(_) => inputs.into_iter().flatten().collect(),
        };
        Ok(out)
    }
}

/// Decrements the running counter when an execution ends (also when it is cancelled).
fn scopeguard(c: &AtomicUsize) -> impl Drop + '_ {
    struct G<'a>(&'a AtomicUsize);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    G(c)
}

fn meta(name: &str) -> VertexMetadata {
    VertexMetadata::described(name)
}

fn run(args: &str) -> Op {
    Op::Exec(ExecOp {
        meta: ExecMeta {
            args: vec![args.to_string()],
            ..Default::default()
        },
        mounts: vec![Mount::root()],
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        secret_env: vec![],
    })
}

fn copy(src: &str, dest: &str) -> Op {
    Op::File(FileOp {
        base: Some(0),
        users: None,
        actions: vec![FileAction::Copy(CopyAction {
            src_input: 1,
            src: src.into(),
            dest: dest.into(),
            ..Default::default()
        })],
    })
}

/// busybox -> RUN a, RUN b (parallel) -> merge -> COPY src/ from context; COPY docs/ separately.
struct Graph {
    def: Definition,
    target: VertexRef,
    docs: VertexRef,
}

fn graph() -> Graph {
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("docker.io/library/busybox:latest")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let ctx = d
        .add(
            Op::Source(SourceOp::local("context")),
            None,
            &[],
            meta("context"),
        )
        .unwrap();
    let a = d.add(run("a"), None, &[base], meta("run a")).unwrap();
    let b = d.add(run("b"), None, &[base], meta("run b")).unwrap();
    let m = d
        .add(Op::Merge(Default::default()), None, &[a, b], meta("merge"))
        .unwrap();
    let target = d
        .add(copy("src/", "/app/"), None, &[m, ctx], meta("copy src"))
        .unwrap();
    let docs = d
        .add(
            copy("docs/", "/docs/"),
            None,
            &[base, ctx],
            meta("copy docs"),
        )
        .unwrap();
    Graph {
        def: d,
        target,
        docs,
    }
}

#[tokio::test]
async fn solves_a_graph_in_dependency_order_and_a_rebuild_executes_nothing() {
    let worker = Arc::new(FakeWorker::default());
    worker.set_local(
        "context",
        &[("src/main.c", "int main;"), ("docs/readme", "hi")],
    );
    let g = graph();
    let s = Scheduler::new(Arc::clone(&worker), 4);
    let out = s.solve(&g.def, &[g.target, g.docs]).await.unwrap();
    assert_eq!(out.executed, 7);
    assert_eq!(out.cached, 0);
    let fs = &out.results[&g.target].output;
    assert_eq!(
        fs.get("/app/src/main.c").map(String::as_str),
        Some("int main;")
    );
    assert!(fs.contains_key("/ran/a") && fs.contains_key("/ran/b"));
    let order = worker.executed();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(
        pos("base") < pos("run a") && pos("run a") < pos("merge") && pos("merge") < pos("copy src")
    );

    // A new scheduler over the same cache: only the local context is read again.
    worker.executed.lock().unwrap().clear();
    let again = Scheduler::new(Arc::clone(&worker), 4)
        .solve(&g.def, &[g.target, g.docs])
        .await
        .unwrap();
    assert_eq!(
        worker.executed(),
        vec!["context".to_string()],
        "a rebuild executes nothing else"
    );
    assert_eq!(again.cached, 6);
    assert_eq!(again.results[&g.target].key, out.results[&g.target].key);
}

#[tokio::test]
async fn changing_a_selected_file_reruns_only_its_users() {
    let worker = Arc::new(FakeWorker::default());
    worker.set_local("context", &[("src/main.c", "v1"), ("docs/readme", "hi")]);
    let g = graph();
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&g.def, &[g.target, g.docs])
        .await
        .unwrap();
    worker.executed.lock().unwrap().clear();
    worker.set_local("context", &[("src/main.c", "v2"), ("docs/readme", "hi")]);
    let out = Scheduler::new(Arc::clone(&worker), 2)
        .solve(&g.def, &[g.target, g.docs])
        .await
        .unwrap();
    let mut ran = worker.executed();
    ran.sort();
    assert_eq!(
        ran,
        vec!["context".to_string(), "copy src".to_string()],
        "docs copy stays cached"
    );
    assert_eq!(
        out.results[&g.target]
            .output
            .get("/app/src/main.c")
            .map(String::as_str),
        Some("v2")
    );
}

#[tokio::test]
async fn concurrency_is_bounded_by_jobs() {
    // Four independent RUNs that each wait for a partner: with jobs=2 they run in pairs.
    let worker = Arc::new(FakeWorker::with_barrier(2));
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            d.add(
                run(&format!("barrier {i}")),
                None,
                &[base],
                meta(&format!("r{i}")),
            )
            .unwrap()
        })
        .collect();
    let s = Scheduler::new(Arc::clone(&worker), 2);
    // The timeout only turns a deadlock into a failure; nothing about speed is asserted.
    let out = tokio::time::timeout(Duration::from_secs(60), s.solve(&d, &runs))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.executed, 5);
    assert_eq!(worker.max_running.load(Ordering::SeqCst), 2);
    assert_eq!(s.executed_total(), 5);
}

#[tokio::test]
async fn first_failure_cancels_the_rest() {
    let worker = Arc::new(FakeWorker::default());
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let blocked = d.add(run("block"), None, &[base], meta("blocked")).unwrap();
    let failing = d.add(run("fail"), None, &[base], meta("failing")).unwrap();
    let after = d
        .add(run("after"), None, &[failing], meta("after"))
        .unwrap();
    let (tx, rx) = crate::progress::channel();
    let s = Scheduler::new(Arc::clone(&worker), 4).with_progress(tx);
    let err = tokio::time::timeout(Duration::from_secs(60), s.solve(&d, &[blocked, after]))
        .await
        .expect("a failure must not wait for the blocked vertex")
        .unwrap_err();
    assert!(err.to_string().contains("failing: exit status 1"), "{err}");
    assert!(
        worker.dropped_blocked.load(Ordering::SeqCst),
        "the blocked execution was cancelled"
    );
    assert!(
        worker.cancelled.load(Ordering::SeqCst),
        "the worker was told to stop its work"
    );
    assert!(!worker.executed().contains(&"after".to_string()));
    assert_eq!(worker.running.load(Ordering::SeqCst), 0);
    drop(s);
    let mut last: HashMap<VertexDigest, EventKind> = HashMap::new();
    let mut registered = 0;
    while let Some(ev) = rx.recv() {
        if matches!(ev.kind, EventKind::Registered { .. }) {
            registered += 1;
        }
        if !matches!(ev.kind, EventKind::Log { .. }) {
            last.insert(ev.vertex, ev.kind);
        }
    }
    assert_eq!(registered, 4);
    let state = |r: VertexRef| last.get(&d.vertex(r).unwrap().digest()).cloned();
    assert_eq!(state(base), Some(EventKind::Completed));
    assert!(
        matches!(state(failing), Some(EventKind::Errored { message }) if message.contains("exit status 1"))
    );
    assert_eq!(state(blocked), Some(EventKind::Canceled));
    assert!(
        matches!(state(after), Some(EventKind::Registered { .. })),
        "never started"
    );
}

/// The last non-log event of every vertex.
fn final_events(rx: crate::progress::ProgressReceiver) -> HashMap<VertexDigest, EventKind> {
    let mut last = HashMap::new();
    while let Some(ev) = rx.recv() {
        if !matches!(ev.kind, EventKind::Log { .. }) {
            last.insert(ev.vertex, ev.kind);
        }
    }
    last
}

#[tokio::test]
async fn a_stop_future_cancels_the_solve() {
    let worker = Arc::new(FakeWorker::default());
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let blocked = d.add(run("block"), None, &[base], meta("blocked")).unwrap();
    let after = d
        .add(run("after"), None, &[blocked], meta("after"))
        .unwrap();
    let (tx, rx) = crate::progress::channel();
    let s = Scheduler::new(Arc::clone(&worker), 4).with_progress(tx);
    let started = worker.started.notified();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        s.solve_until(&d, &[after], started),
    )
    .await
    .expect("stopping must not wait for the blocked vertex")
    .unwrap_err();
    assert!(matches!(err, SolveError::Canceled), "{err:?}");
    assert_eq!(err.to_string(), "the build was canceled");
    assert!(worker.cancelled.load(Ordering::SeqCst));
    assert!(worker.dropped_blocked.load(Ordering::SeqCst));
    assert_eq!(worker.running.load(Ordering::SeqCst), 0);
    assert!(!worker.executed().contains(&"after".to_string()));
    // Only the base image completed: nothing else is in the cache.
    assert_eq!(worker.cache.lock().unwrap().len(), 1);
    drop(s);
    let last = final_events(rx);
    let state = |r: VertexRef| last.get(&d.vertex(r).unwrap().digest()).cloned();
    assert_eq!(state(base), Some(EventKind::Completed));
    assert_eq!(state(blocked), Some(EventKind::Canceled));
    assert!(
        matches!(state(after), Some(EventKind::Registered { .. })),
        "a vertex that never started is not reported canceled"
    );
}

#[tokio::test]
async fn a_solve_that_completes_ignores_its_stop_future() {
    let worker = Arc::new(FakeWorker::default());
    worker.set_local("context", &[("src/main.rs", "fn main() {}")]);
    let g = graph();
    let s = Scheduler::new(Arc::clone(&worker), 4);
    let out = s
        .solve_until(&g.def, &[g.target], std::future::pending())
        .await
        .unwrap();
    assert!(out.results.contains_key(&g.target));
    assert!(!worker.cancelled.load(Ordering::SeqCst));
}

/// A vertex killed by the cancel (its worker thread returns an error before the
/// solve drops it) shows as canceled; the error reported is the first failure's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_killed_by_the_cancel_are_reported_canceled_not_failed() {
    let worker = Arc::new(FakeWorker::default());
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let killable = d
        .add(run("killable"), None, &[base], meta("killable"))
        .unwrap();
    // The failure comes only once the killable step runs (under load it could come first,
    // and the cancel would then stop the killable step before it started).
    let fail_after_start = d
        .add(run("wait-start"), None, &[base], meta("waits"))
        .unwrap();
    let failing = d
        .add(run("fail"), None, &[fail_after_start], meta("failing"))
        .unwrap();
    let (tx, rx) = crate::progress::channel();
    let s = Scheduler::new(Arc::clone(&worker), 4).with_progress(tx);
    let err = tokio::time::timeout(Duration::from_secs(60), s.solve(&d, &[killable, failing]))
        .await
        .expect("the failure cancels the killable step")
        .unwrap_err();
    assert!(err.to_string().contains("failing: exit status 1"), "{err}");
    assert!(worker.killed_returned.load(Ordering::SeqCst));
    drop(s);
    let killable_digest = d.vertex(killable).unwrap().digest();
    let mut killable_ends = Vec::new();
    let mut failing_errored = false;
    while let Some(ev) = rx.recv() {
        if ev.vertex == killable_digest && ev.kind.is_final() {
            killable_ends.push(ev.kind.clone());
        }
        if ev.vertex == d.vertex(failing).unwrap().digest() {
            failing_errored |= matches!(ev.kind, EventKind::Errored { .. });
        }
    }
    assert!(failing_errored);
    // Displays keep a vertex's first final event: it must be the cancel.
    assert_eq!(killable_ends, vec![EventKind::Canceled]);
    let cache = worker.cache.lock().unwrap();
    assert!(
        !cache.values().any(|fs| fs.contains_key("/ran/killable")),
        "a killed step is not cached"
    );
}

#[tokio::test]
async fn ignore_cache_reexecutes_and_unknown_targets_are_errors() {
    let worker = Arc::new(FakeWorker::default());
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let r = d
        .add(
            run("x"),
            None,
            &[base],
            VertexMetadata {
                description: "x".into(),
                ignore_cache: true,
                ..Default::default()
            },
        )
        .unwrap();
    let s = Scheduler::new(Arc::clone(&worker), 1);
    s.solve(&d, &[r]).await.unwrap();
    worker.misses.lock().unwrap().clear();
    let second = s.solve(&d, &[r]).await.unwrap();
    assert_eq!((second.executed, second.cached), (1, 1));
    // A step the cache is off for did not miss: nothing to explain.
    assert!(worker.misses.lock().unwrap().is_empty());
    let mut other = Definition::new();
    for i in 0..3 {
        other
            .add(
                Op::Source(SourceOp::local(&format!("c{i}"))),
                None,
                &[],
                meta("c"),
            )
            .unwrap();
    }
    let foreign = other.vertices().last().unwrap().0;
    assert!(matches!(
        s.solve(&d, &[foreign]).await,
        Err(SolveError::UnknownTarget(2))
    ));
}

/// `--no-cache-filter a`: stage a's RUN runs again; what is keyed on it (a RUN
/// above it, a COPY from it) runs again too rather than loading records made
/// from the old result; stage b, which shares only the image source, stays cached.
#[tokio::test]
async fn a_refreshed_run_reruns_what_is_keyed_on_it_but_not_other_stages() {
    let worker = Arc::new(FakeWorker::default());
    let build = |ignore_a: bool| {
        let mut d = Definition::new();
        let src = |d: &mut Definition, ignore: bool| {
            let m = VertexMetadata {
                description: "base".into(),
                ignore_cache: ignore,
                ..Default::default()
            };
            d.add(Op::Source(SourceOp::image("busybox")), None, &[], m)
                .unwrap()
        };
        let a_meta = |name: &str| VertexMetadata {
            description: name.into(),
            ignore_cache: ignore_a,
            ..Default::default()
        };
        let base_a = src(&mut d, ignore_a);
        let a1 = d.add(run("a1"), None, &[base_a], a_meta("a1")).unwrap();
        let a2 = d.add(run("a2"), None, &[a1], a_meta("a2")).unwrap();
        let base_b = src(&mut d, false);
        let b1 = d.add(run("b1"), None, &[base_b], meta("b1")).unwrap();
        let c1 = d
            .add(copy("/ran/", "/x/"), None, &[b1, a2], meta("copy a"))
            .unwrap();
        let c2 = d.add(run("after"), None, &[c1], meta("after")).unwrap();
        (d, c2)
    };
    let (d, t) = build(false);
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d, &[t])
        .await
        .unwrap();
    worker.executed.lock().unwrap().clear();
    let (d, t) = build(true);
    let out = Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d, &[t])
        .await
        .unwrap();
    let ran = worker.executed();
    for name in ["a1", "a2", "copy a", "after"] {
        assert!(
            ran.contains(&name.to_string()),
            "{name} runs again: {ran:?}"
        );
    }
    assert!(!ran.contains(&"b1".to_string()), "{ran:?}");
    assert!(out.results[&t].executed);
    // The records were replaced: a later build with the cache loads the new results.
    worker.executed.lock().unwrap().clear();
    let (d, t) = build(false);
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d, &[t])
        .await
        .unwrap();
    assert!(worker.executed().is_empty(), "{:?}", worker.executed());
}

/// `FROM busybox AS stage; RUN <cmd>` then `FROM busybox; COPY --from=stage /from /x/`.
fn copy_from_stage(cmd: &str) -> (Definition, VertexRef) {
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("busybox")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let stage = d.add(run(cmd), None, &[base], meta("stage run")).unwrap();
    let copy = d
        .add(
            copy("/from", "/x"),
            None,
            &[base, stage],
            meta("copy from stage"),
        )
        .unwrap();
    (d, copy)
}

#[tokio::test]
async fn copies_from_a_stage_use_its_key_unless_the_worker_checksums_snapshots() {
    // Default: the stage's cache key is the input key; a changed stage reruns the copy.
    let worker = Arc::new(FakeWorker::default());
    let (d1, t1) = copy_from_stage("make v1");
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d1, &[t1])
        .await
        .unwrap();
    worker.executed.lock().unwrap().clear();
    let (d2, t2) = copy_from_stage("make v2");
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d2, &[t2])
        .await
        .unwrap();
    assert_eq!(
        worker.executed(),
        vec!["stage run".to_string(), "copy from stage".to_string()]
    );
    assert_eq!(
        worker.snapshot_checksums.load(Ordering::SeqCst),
        0,
        "never asked to checksum a snapshot"
    );

    // A worker that checksums snapshots keeps the copy cached: /from did not change.
    let worker = Arc::new(FakeWorker {
        checksums_snapshots: true,
        ..Default::default()
    });
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d1, &[t1])
        .await
        .unwrap();
    worker.executed.lock().unwrap().clear();
    Scheduler::new(Arc::clone(&worker), 2)
        .solve(&d2, &[t2])
        .await
        .unwrap();
    assert_eq!(worker.executed(), vec!["stage run".to_string()]);
    assert!(worker.snapshot_checksums.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn keys_are_reported_with_their_parts_and_misses_explained_in_the_vertex_log() {
    let worker = Arc::new(FakeWorker::default());
    worker.set_local("context", &[("src/main.c", "int main;")]);
    let g = graph();
    let (tx, rx) = crate::progress::channel();
    let s = Scheduler::new(Arc::clone(&worker), 4).with_progress(tx);
    s.solve(&g.def, &[g.target]).await.unwrap();
    drop(s);

    let keys = worker.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 6, "one per vertex solved");
    for (name, key, parts) in &keys {
        // The parts are exactly what the key was made of.
        let op = hex::decode(&parts.op).unwrap().try_into().unwrap();
        assert_eq!(
            crate::cache::cache_key(&op, parts.pin.as_deref(), &parts.inputs),
            *key,
            "{name}"
        );
    }
    let parts = |n: &str| keys.iter().find(|k| k.0 == n).unwrap().2.clone();
    let copy = parts("copy src");
    assert!(matches!(
        copy.inputs[..],
        [InputKey::Key(_), InputKey::Content(_)]
    ));
    assert_eq!((copy.args, copy.env), (None, None));
    let (a, b) = (parts("run a"), parts("run b"));
    assert!(a.args.is_some() && a.args != b.args && a.env == b.env);

    // Every vertex missed (a cold cache): each explanation names its inputs and is
    // logged on the vertex once it starts.
    let misses = worker.misses.lock().unwrap().clone();
    assert!(misses.contains(&("merge".to_string(), vec!["run a".into(), "run b".into()])));
    assert!(misses.contains(&(
        "copy src".to_string(),
        vec!["merge".into(), "context".into()]
    )));
    let merge = g.def.vertex(g.target).unwrap().inputs()[0];
    let merge = g.def.vertex(merge).unwrap().digest();
    let events: Vec<EventKind> = rx.filter(|e| e.vertex == merge).map(|e| e.kind).collect();
    let started = events
        .iter()
        .position(|k| *k == EventKind::Started)
        .unwrap();
    let log = events
        .iter()
        .position(|k| {
            matches!(k, EventKind::Log { data, .. } if data == b"cache miss: 2 inputs differ\n")
        })
        .expect("the explanation is logged");
    assert!(started < log);

    // A rebuild hits: nothing to explain (the local context is never cached here).
    worker.misses.lock().unwrap().clear();
    Scheduler::new(Arc::clone(&worker), 4)
        .solve(&g.def, &[g.target])
        .await
        .unwrap();
    let misses = worker.misses.lock().unwrap().clone();
    assert_eq!(misses, vec![("context".to_string(), vec![])]);
}

/// builder: base -> RUN build; final: base -> COPY --from=builder -> RUN final.
fn two_stages() -> (Definition, VertexRef, VertexRef) {
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("docker.io/library/busybox:latest")),
            None,
            &[],
            meta("base"),
        )
        .unwrap();
    let build = d.add(run("build"), None, &[base], meta("build")).unwrap();
    let copy = d
        .add(copy("/ran/", "/app"), None, &[base, build], meta("copy"))
        .unwrap();
    let fin = d.add(run("final"), None, &[copy], meta("final")).unwrap();
    (d, fin, build)
}

#[tokio::test]
async fn looking_ahead_a_cached_step_needs_no_input_the_cache_lacks() {
    let (def, fin, build) = two_stages();
    let cold = Arc::new(FakeWorker::default());
    let out = Scheduler::new(Arc::clone(&cold), 2)
        .solve(&def, &[fin])
        .await
        .unwrap();
    assert_eq!(out.executed, 4);
    let want = out.results[&fin].output.clone();
    // Another runner imports a mode=min cache: the final stage's records, not the builder's.
    let build_key = out.results[&build].key;
    let mut records = cold.cache.lock().unwrap().clone();
    records.remove(&build_key);
    let warm = Arc::new(FakeWorker {
        looks_ahead: true,
        ..FakeWorker::default()
    });
    *warm.cache.lock().unwrap() = records.clone();
    let (tx, rx) = crate::progress::channel();
    let out = Scheduler::new(Arc::clone(&warm), 2)
        .with_progress(tx)
        .solve(&def, &[fin])
        .await
        .unwrap();
    assert_eq!(out.executed, 0, "executed {:?}", warm.executed());
    assert_eq!(out.results[&fin].output, want);
    assert!(
        !out.results.contains_key(&build),
        "the builder stage is not solved"
    );
    // Only what was solved is on the progress; each of it ends cached.
    let finals = final_events(rx);
    assert_eq!(finals.len(), 3);
    assert!(
        finals.values().all(|k| *k == EventKind::Cached),
        "{finals:?}"
    );

    // Without looking ahead, the builder stage runs again (the old behaviour).
    let plain = Arc::new(FakeWorker::default());
    *plain.cache.lock().unwrap() = records;
    let out = Scheduler::new(Arc::clone(&plain), 2)
        .solve(&def, &[fin])
        .await
        .unwrap();
    assert_eq!(plain.executed(), ["build"]);
    assert_eq!(out.executed, 1);
}

#[tokio::test]
async fn looking_ahead_solves_everything_below_a_step_the_cache_lacks() {
    let (def, fin, build) = two_stages();
    let cold = Arc::new(FakeWorker::default());
    let out = Scheduler::new(Arc::clone(&cold), 2)
        .solve(&def, &[fin])
        .await
        .unwrap();
    // The final RUN is missing: it runs on the COPY, loaded from the cache without the
    // builder stage.
    let mut records = cold.cache.lock().unwrap().clone();
    records.remove(&out.results[&fin].key);
    records.remove(&out.results[&build].key);
    let warm = Arc::new(FakeWorker {
        looks_ahead: true,
        ..FakeWorker::default()
    });
    *warm.cache.lock().unwrap() = records;
    let again = Scheduler::new(Arc::clone(&warm), 2)
        .solve(&def, &[fin])
        .await
        .unwrap();
    assert_eq!(warm.executed(), ["final"]);
    assert_eq!(again.results[&fin].output, out.results[&fin].output);
    assert_eq!(again.results[&fin].key, out.results[&fin].key);
}
