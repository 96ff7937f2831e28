//! The remote build cache through the worker, with real RUN steps (native executor, needs
//! root): runner A builds and exports a cache image into its content store; runner B, a
//! fresh state directory, imports it and fetches blobs from A's store through a
//! `BlobFetcher`. A hit downloads nothing, a step running on an imported result fetches and
//! unpacks its layers (verified), and a miss says why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_oci::{Descriptor, Digest, Platform};
use kiln_solver::cache::CacheStore;
use kiln_solver::content::ContentStore;
use kiln_solver::executor::native::NativeExecutor;
use kiln_solver::executor::{Executor, ExecutorConfig};
use kiln_solver::llb::{
    CacheOpt, CacheSharing, CopyAction, Definition, ExecMeta, ExecOp, FileAction, FileOp, Mount,
    MountKind, NetworkMode, Op, SecurityMode, SourceOp, VertexMetadata, VertexRef,
};
use kiln_solver::mounts::cache::CacheMounts;
use kiln_solver::progress::{self, EventKind, ProgressSender};
use kiln_solver::remote_cache::mounts::cache_mount_ids;
use kiln_solver::remote_cache::{
    export_cache, BlobFetcher, CacheConfig, CacheMode, ExportOptions, ExportStores, ImportedCache,
};
use kiln_solver::scheduler::{Scheduler, SolveError, WorkerError};
use kiln_solver::snapshot::layer::{write_layer, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::Snapshot;
use kiln_solver::state::StateDir;
use kiln_solver::worker::{FetchedImage, ImageFetcher, LocalWorker, Output, Session};

/// Serves a one-layer busybox image, made into the runner's content store.
struct Busybox {
    content: ContentStore,
    layer: tempfile::TempDir,
}

impl Busybox {
    fn new(content: ContentStore) -> Busybox {
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(layer.path().join("bin")).unwrap();
        std::fs::copy("/bin/busybox", layer.path().join("bin/busybox"))
            .expect("tests need Debian's busybox-static at /bin/busybox");
        for applet in ["sh", "cat", "echo", "cp"] {
            std::os::unix::fs::symlink("busybox", layer.path().join("bin").join(applet)).unwrap();
        }
        Busybox { content, layer }
    }
}

impl ImageFetcher for Busybox {
    fn fetch(&self, _: &str, _: Option<&Platform>) -> Result<FetchedImage, WorkerError> {
        let made = write_layer(self.layer.path(), &self.content, &DiffOptions::default())
            .map_err(WorkerError::other)?;
        let desc = Descriptor::new(
            made.compression.oci_media_type(),
            made.blob.digest,
            made.blob.size,
        );
        Ok(FetchedImage {
            layers: vec![(desc, made.diff_id)],
        })
    }
}

/// Runner B pulls nothing: its base image must come from the cache.
struct NoImages;

impl ImageFetcher for NoImages {
    fn fetch(&self, reference: &str, _: Option<&Platform>) -> Result<FetchedImage, WorkerError> {
        Err(format!("{reference}: runner B pulls no image in this test").into())
    }
}

/// Copies blobs from runner A's content store, verified by digest, counting them.
struct FromStore {
    from: ContentStore,
    to: ContentStore,
    fetched: Mutex<Vec<Digest>>,
    fail: bool,
}

impl BlobFetcher for FromStore {
    fn fetch(
        &self,
        _source: usize,
        desc: &Descriptor,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.fail {
            return Err("connection refused".into());
        }
        self.fetched.lock().unwrap().push(desc.digest.clone());
        let info = self.to.put_bytes(&self.from.read_blob(&desc.digest)?)?;
        if info.digest != desc.digest {
            return Err(format!("digest mismatch: got {}", info.digest).into());
        }
        Ok(())
    }
}

/// A state directory and a worker over it.
struct Runner {
    _dir: tempfile::TempDir,
    state: StateDir,
    cache: Arc<CacheStore>,
}

impl Runner {
    fn new() -> Runner {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts and namespaces)"
        );
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let cache = Arc::new(CacheStore::open(&state.meta_db_path()).unwrap());
        Runner {
            _dir: dir,
            state,
            cache,
        }
    }

    fn worker(&self, images: Arc<dyn ImageFetcher>, progress: ProgressSender) -> LocalWorker {
        let executor: Arc<dyn Executor> = Arc::new(NativeExecutor::new(ExecutorConfig {
            state_dir: self.state.root().to_path_buf(),
        }));
        LocalWorker::new(
            &self.state,
            Arc::clone(&self.cache),
            executor,
            images,
            Session::default(),
            progress,
        )
        .unwrap()
    }

    fn layers(&self) -> LayerStore {
        LayerStore::open(self.state.layers_dir()).unwrap()
    }
}

/// FROM busybox; RUN `scripts`… one after the other. Returns the definition and the
/// vertices, base first.
fn build(scripts: &[&str]) -> (Definition, Vec<VertexRef>) {
    build_with(scripts, &[])
}

/// [`build`] with `mounts` on every RUN besides its root.
fn build_with(scripts: &[&str], mounts: &[Mount]) -> (Definition, Vec<VertexRef>) {
    let mut d = Definition::new();
    let mut refs = vec![d
        .add(
            Op::Source(SourceOp::image("docker.io/library/busybox:latest")),
            None,
            &[],
            VertexMetadata::described("[1/3] FROM busybox"),
        )
        .unwrap()];
    for (i, script) in scripts.iter().enumerate() {
        let below = *refs.last().unwrap();
        let r = d
            .add(
                Op::Exec(ExecOp {
                    meta: ExecMeta {
                        args: vec!["/bin/sh".into(), "-c".into(), script.to_string()],
                        cwd: "/".into(),
                        ..Default::default()
                    },
                    mounts: [Mount::root()].into_iter().chain(mounts.to_vec()).collect(),
                    network: NetworkMode::None,
                    security: SecurityMode::Sandbox,
                    secret_env: vec![],
                }),
                None,
                &[below],
                VertexMetadata::described(format!("[{}/3] RUN {script}", i + 2)),
            )
            .unwrap();
        refs.push(r);
    }
    (d, refs)
}

/// What a solve did.
struct Outcome {
    executed: usize,
    /// The result of each vertex asked for, in order.
    snapshots: Vec<Snapshot>,
    /// (key, result, description) of every vertex, for an export.
    solved: Vec<(kiln_solver::cache::CacheKey, Snapshot, String)>,
    /// Each vertex's stderr log by its name.
    logs: HashMap<String, String>,
    /// The status items (transfers) each vertex completed, by its name.
    transfers: HashMap<String, Vec<String>>,
}

/// Solves `refs` of `def` on `worker` (whose progress goes to `progress`, drained here).
async fn solve(
    worker: &Arc<LocalWorker>,
    progress: (ProgressSender, progress::ProgressReceiver),
    def: &Definition,
    refs: &[VertexRef],
) -> Result<Outcome, SolveError> {
    let (tx, rx) = progress;
    let scheduler = Scheduler::new(Arc::new(Arc::clone(worker)), 2).with_progress(tx);
    let outcome = scheduler.solve(def, refs).await;
    drop(scheduler);
    let mut names = HashMap::new();
    let mut logs: HashMap<String, String> = HashMap::new();
    let mut transfers: HashMap<String, Vec<String>> = HashMap::new();
    while let progress::Received::Event(e) = rx.try_recv() {
        match e.kind {
            EventKind::Registered { name, .. } => {
                names.insert(e.vertex, name);
            }
            EventKind::Status {
                id,
                completed: true,
                ..
            } => {
                let name = names.get(&e.vertex).cloned().unwrap_or_default();
                transfers.entry(name).or_default().push(id);
            }
            EventKind::Log { data, .. } => {
                let name = names.get(&e.vertex).cloned().unwrap_or_default();
                logs.entry(name)
                    .or_default()
                    .push_str(&String::from_utf8_lossy(&data));
            }
            _ => {}
        }
    }
    let outcome = outcome?;
    let snapshot = |o: &Output| match o {
        Output::Snapshot(s) => s.clone(),
        Output::Dir(_) => panic!("a directory result"),
    };
    let solved = outcome
        .results
        .iter()
        .map(|(r, s)| {
            (
                s.key,
                snapshot(&s.output),
                def.vertex(*r).unwrap().summary(),
            )
        })
        .collect();
    Ok(Outcome {
        executed: outcome.executed,
        snapshots: refs
            .iter()
            .map(|r| snapshot(&outcome.results[r].output))
            .collect(),
        solved,
        logs,
        transfers,
    })
}

const STEPS: [&str; 2] = ["echo a > /a", "cat /a > /b; echo b >> /b"];

/// Runner A builds `STEPS` and exports a max cache; returns the runner (its content store
/// is the cache source) and the parsed cache config.
async fn runner_a() -> (Runner, CacheConfig) {
    let a = Runner::new();
    let (tx, rx) = progress::channel();
    let images = Arc::new(Busybox::new(a.state.content().clone()));
    let worker = Arc::new(a.worker(images, tx.clone()));
    let (def, refs) = build(&STEPS);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    assert_eq!(out.executed, 3);
    let records = worker.export_records(&out.solved);
    assert!(
        records.iter().all(|r| r.parts.is_some()),
        "every key's parts are known"
    );
    let layers = a.layers();
    let stores = ExportStores {
        layers: &layers,
        content: a.state.content(),
        meta: a.cache.meta(),
        mounts: None,
    };
    let opts = ExportOptions {
        mode: CacheMode::Max,
        ..Default::default()
    };
    let finals = [out.snapshots[2].clone()];
    let image = export_cache(&stores, &records, &finals, &opts).unwrap();
    assert_eq!(image.config.kiln.records.len(), 3);
    let report = kiln_oci::validate::validate(
        a.state.content(),
        &image.root,
        kiln_oci::validate::Options::default(),
    )
    .unwrap();
    assert_eq!(report.layers, 3);
    let config_desc = image.blobs.last().unwrap();
    let bytes = a.state.content().read_blob(&config_desc.digest).unwrap();
    let config = CacheConfig::parse(config_desc.digest.as_ref(), &bytes).unwrap();
    (a, config)
}

/// Runner B's worker importing `config` from runner A's store.
fn runner_b(
    a: &Runner,
    b: &Runner,
    config: &CacheConfig,
    fail: bool,
    progress: ProgressSender,
) -> (Arc<LocalWorker>, Arc<FromStore>) {
    let mut worker = b.worker(Arc::new(NoImages), progress);
    let mut imported = ImportedCache::default();
    imported.add(0, config);
    let fetcher = Arc::new(FromStore {
        from: a.state.content().clone(),
        to: b.state.content().clone(),
        fetched: Mutex::default(),
        fail,
    });
    worker.set_imported_cache(Arc::new(imported), fetcher.clone());
    (Arc::new(worker), fetcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_downloads_nothing_until_an_exporter_needs_the_blobs() {
    let (a, config) = runner_a().await;
    let b = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, fetcher) = runner_b(&a, &b, &config, false, tx.clone());
    let (def, refs) = build(&STEPS);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    assert_eq!(out.executed, 0, "everything came from the imported cache");
    assert!(
        fetcher.fetched.lock().unwrap().is_empty(),
        "nothing fetched"
    );
    let last = &out.snapshots[2];
    assert_eq!(last.layers.len(), 3);
    assert!(last.layers.iter().all(|l| !b.layers().exists(l)), "lazy");
    assert!(worker.imported_blobs().len() >= 3);
    // An exporter asks for the bytes: fetched once each and verified, not unpacked.
    worker.fetch_lazy_blobs(last).unwrap();
    worker.fetch_lazy_blobs(last).unwrap();
    let fetched = fetcher.fetched.lock().unwrap().clone();
    assert_eq!(fetched.len(), 3);
    assert!(fetched.iter().all(|d| b.state.content().exists(d).unwrap()));
    assert!(last.layers.iter().all(|l| !b.layers().exists(l)));
    // Re-exported from B, the records carry the parts A computed.
    let records = worker.export_records(&out.solved);
    assert!(records.iter().all(|r| r.parts.is_some()));
    // A step on top unpacks them without fetching again.
    let (tx, rx) = progress::channel();
    let (def, refs) = build(&[STEPS[0], STEPS[1], "cp /b /c"]);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    assert_eq!(out.executed, 1);
    assert_eq!(fetcher.fetched.lock().unwrap().len(), 3);
    let top = b.layers().path(&out.snapshots[3].layers[3]);
    assert_eq!(std::fs::read_to_string(top.join("c")).unwrap(), "a\nb\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_on_an_imported_result_fetches_and_unpacks_it_and_a_miss_says_why() {
    let (a, config) = runner_a().await;
    let b = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, fetcher) = runner_b(&a, &b, &config, false, tx.clone());
    // The second RUN changed: it runs on the first one's imported result.
    let (def, refs) = build(&[STEPS[0], "cat /a > /c"]);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    assert_eq!(out.executed, 1);
    assert_eq!(
        fetcher.fetched.lock().unwrap().len(),
        2,
        "the base and step 0"
    );
    let top = b.layers().path(&out.snapshots[2].layers[2]);
    assert_eq!(std::fs::read_to_string(top.join("c")).unwrap(), "a\n");
    // Its description changed with its command: it is compared with the imported step
    // on the same input.
    let log = &out.logs["[3/3] RUN cat /a > /c"];
    let fetched = fetcher.fetched.lock().unwrap().clone();
    let shown: Vec<String> = fetched.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        out.transfers["[3/3] RUN cat /a > /c"], shown,
        "fetches are shown"
    );
    assert!(log.contains("cache miss: the command changed"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_verify_or_cannot_be_fetched_fails_the_step() {
    let (a, mut config) = runner_a().await;
    // The cache says the base layer unpacks to another diffID than it does.
    let wrong = Digest::of(b"another tar");
    let base = config
        .kiln
        .records
        .iter()
        .find(|r| r.layers.len() == 1)
        .unwrap();
    let base_blob = base.layers[0];
    let blob_digest = config.kiln.blobs[base_blob].digest.clone();
    config.kiln.blobs[base_blob].diff_id = wrong;
    let b = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, _) = runner_b(&a, &b, &config, false, tx.clone());
    let (def, refs) = build(&[STEPS[0], "echo other > /o"]);
    let err = solve(&worker, (tx, rx), &def, &refs)
        .await
        .err()
        .expect("a wrong layer must not be used");
    let SolveError::Vertex { source, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(source, WorkerError::CacheBlob { .. }),
        "{source:?}"
    );
    let text = format!("{source} {:?}", std::error::Error::source(source));
    assert!(text.contains(blob_digest.as_ref()), "{text}");
    assert!(text.contains("diffID"), "{text}");
    // An exporter asking for the blob finds the same.
    let (tx, rx) = progress::channel();
    let (worker, _) = runner_b(&a, &Runner::new(), &config, false, tx.clone());
    let (def, refs) = build(&[]);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    let err = worker.fetch_lazy_blobs(&out.snapshots[0]).unwrap_err();
    assert!(matches!(err, WorkerError::CacheBlob { .. }), "{err:?}");

    // A source that cannot be reached: the same kind of error, naming the blob.
    let (_, config) = runner_a().await;
    let c = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, _) = runner_b(&a, &c, &config, true, tx.clone());
    let (def, refs) = build(&[STEPS[0], "echo other > /o"]);
    let err = solve(&worker, (tx, rx), &def, &refs).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains("imported cache blob sha256:"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

/// `RUN --mount=type=cache,id=pkg,target=/cache`.
fn pkg_cache() -> Mount {
    Mount {
        input: None,
        selector: None,
        dest: "/cache".into(),
        output: false,
        readonly: false,
        kind: MountKind::Cache(CacheOpt {
            id: "pkg".into(),
            sharing: CacheSharing::Shared,
            mode: 0o755,
            uid: 0,
            gid: 0,
            settings_given: false,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mounts_are_restored_where_the_local_mount_is_empty() {
    let a = Runner::new();
    let (tx, rx) = progress::channel();
    let images = Arc::new(Busybox::new(a.state.content().clone()));
    let worker = Arc::new(a.worker(images, tx.clone()));
    let (def, refs) = build_with(&["echo downloaded > /cache/pkg.tar"], &[pkg_cache()]);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    let ids = cache_mount_ids(&def);
    assert_eq!(ids, ["pkg"]);
    let layers = a.layers();
    let mounts = CacheMounts::new(a.state.cache_mounts_dir()).unwrap();
    let stores = ExportStores {
        layers: &layers,
        content: a.state.content(),
        meta: a.cache.meta(),
        mounts: Some(&mounts),
    };
    let opts = ExportOptions {
        cache_mounts: ids.clone(),
        ..Default::default()
    };
    let finals = [out.snapshots[1].clone()];
    let records = worker.export_records(&out.solved);
    let image = export_cache(&stores, &records, &finals, &opts).unwrap();
    assert_eq!(image.config.kiln.mounts.len(), 1);

    let b = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, fetcher) = runner_b(&a, &b, &image.config, false, tx.clone());
    assert_eq!(worker.restore_cache_mounts(&ids).unwrap(), ids);
    assert_eq!(fetcher.fetched.lock().unwrap().len(), 1);
    // Runner B's step reads runner A's files from the mount.
    let (def, refs) = build_with(&["cp /cache/pkg.tar /got"], &[pkg_cache()]);
    let out = solve(&worker, (tx, rx), &def, &refs).await.unwrap();
    assert_eq!(out.executed, 1, "the RUN (its base from the cache)");
    let top = b.layers().path(&out.snapshots[1].layers[1]);
    assert_eq!(
        std::fs::read_to_string(top.join("got")).unwrap(),
        "downloaded\n"
    );
    // The mount has content now: not restored, not even downloaded again.
    fetcher.fetched.lock().unwrap().clear();
    assert!(worker.restore_cache_mounts(&ids).unwrap().is_empty());
    assert!(fetcher.fetched.lock().unwrap().is_empty());
}

/// A RUN of `script` on `below`.
fn run_on(d: &mut Definition, below: VertexRef, script: &str) -> VertexRef {
    let op = Op::Exec(ExecOp {
        meta: ExecMeta {
            args: vec!["/bin/sh".into(), "-c".into(), script.to_string()],
            cwd: "/".into(),
            ..Default::default()
        },
        mounts: vec![Mount::root()],
        network: NetworkMode::None,
        security: SecurityMode::Sandbox,
        secret_env: vec![],
    });
    let meta = VertexMetadata::described(format!("RUN {script}"));
    d.add(op, None, &[below], meta).unwrap()
}

/// builder: FROM busybox, RUN make /out; final: FROM busybox, COPY --from=builder /out,
/// RUN. Returns the definition and the final vertex.
fn two_stages() -> (Definition, VertexRef) {
    let (mut d, refs) = build(&[]);
    let base = refs[0];
    let make = run_on(&mut d, base, "echo built > /out");
    let copy = Op::File(FileOp {
        base: Some(0),
        users: None,
        actions: vec![FileAction::Copy(CopyAction {
            src_input: 1,
            src: "/out".into(),
            dest: "/out".into(),
            ..Default::default()
        })],
    });
    let meta = VertexMetadata::described("COPY --from=builder /out /out");
    let copied = d.add(copy, None, &[base, make], meta).unwrap();
    let fin = run_on(&mut d, copied, "cat /out > /final");
    (d, fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_cache_of_a_multi_stage_build_runs_nothing_on_another_runner() {
    let a = Runner::new();
    let (tx, rx) = progress::channel();
    let images = Arc::new(Busybox::new(a.state.content().clone()));
    let worker = Arc::new(a.worker(images, tx.clone()));
    let (def, fin) = two_stages();
    let out = solve(&worker, (tx, rx), &def, &[fin]).await.unwrap();
    assert_eq!(
        out.executed, 4,
        "the base (shared), make, the copy, the final RUN"
    );
    let records = worker.export_records(&out.solved);
    let layers = a.layers();
    let stores = ExportStores {
        layers: &layers,
        content: a.state.content(),
        meta: a.cache.meta(),
        mounts: None,
    };
    let image = export_cache(&stores, &records, &out.snapshots, &ExportOptions::default()).unwrap();
    let kept: Vec<&str> = image
        .config
        .kiln
        .records
        .iter()
        .map(|r| r.description.as_str())
        .collect();
    assert_eq!(kept.len(), 3, "min: the final stage only: {kept:?}");
    assert!(!kept.contains(&"RUN echo built > /out"));

    let b = Runner::new();
    let (tx, rx) = progress::channel();
    let (worker, fetcher) = runner_b(&a, &b, &image.config, false, tx.clone());
    let out = solve(&worker, (tx, rx), &def, &[fin]).await.unwrap();
    assert_eq!(out.executed, 0, "the builder stage is not needed");
    assert!(fetcher.fetched.lock().unwrap().is_empty());
    assert!(!out.solved.iter().any(|(_, _, d)| d.contains("echo built")));
    // The image's bytes are there for an exporter: its three layers.
    worker.fetch_lazy_blobs(&out.snapshots[0]).unwrap();
    let fetched = fetcher.fetched.lock().unwrap().clone();
    assert_eq!(fetched.len(), 3);
    assert!(fetched.iter().all(|d| b.state.content().exists(d).unwrap()));
}
