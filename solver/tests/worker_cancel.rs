//! LocalWorker cancellation with real RUN steps (native executor, needs root):
//! a cancel or a dropped `execute` future kills the step's processes, tears
//! its sandbox down, commits no layer and stores no cache record.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::mounts_under;

use kiln_oci::Platform;
use kiln_solver::cache::{CacheKey, CacheStore};
use kiln_solver::executor::native::NativeExecutor;
use kiln_solver::executor::{Executor, ExecutorConfig};
use kiln_solver::llb::{
    Definition, ExecMeta, ExecOp, Mount, NetworkMode, Op, SecurityMode, SourceOp, Vertex,
    VertexMetadata,
};
use kiln_solver::progress::ProgressSender;
use kiln_solver::scheduler::{Worker, WorkerError};
use kiln_solver::snapshot::layers::LayerId;
use kiln_solver::snapshot::Snapshot;
use kiln_solver::state::StateDir;
use kiln_solver::worker::{FetchedImage, ImageFetcher, LocalWorker, Output, Session};

struct NoImages;

impl ImageFetcher for NoImages {
    fn fetch(&self, reference: &str, _: Option<&Platform>) -> Result<FetchedImage, WorkerError> {
        Err(format!("{reference}: no images in this test").into())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    worker: Arc<LocalWorker>,
    base: Snapshot,
}

impl Fixture {
    fn new() -> Fixture {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts and namespaces)"
        );
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let cache = Arc::new(CacheStore::open(&state.meta_db_path()).unwrap());
        let executor: Arc<dyn Executor> = Arc::new(NativeExecutor::new(ExecutorConfig {
            state_dir: dir.path().to_path_buf(),
        }));
        let worker = Arc::new(
            LocalWorker::new(
                &state,
                cache,
                executor,
                Arc::new(NoImages),
                Session::default(),
                ProgressSender::discard(),
            )
            .unwrap(),
        );
        // A one-layer busybox: /bin/busybox with the applets the steps use.
        let layer = state.layers_dir().join("b-busybox");
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", layer.join("bin/busybox"))
            .expect("tests need Debian's busybox-static at /bin/busybox");
        for applet in ["sh", "sleep", "echo"] {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
        }
        let base = Snapshot {
            layers: vec![LayerId::parse("b-busybox").unwrap()],
        };
        Fixture { dir, worker, base }
    }

    fn layers(&self) -> PathBuf {
        self.dir.path().join("layers")
    }

    /// A RUN vertex with `script` over the base.
    fn run(&self, script: &str) -> Vertex {
        let mut d = Definition::new();
        let base = d
            .add(
                Op::Source(SourceOp::image("busybox")),
                None,
                &[],
                VertexMetadata::described("base"),
            )
            .unwrap();
        let r = d
            .add(
                Op::Exec(ExecOp {
                    meta: ExecMeta {
                        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                        cwd: "/".into(),
                        ..Default::default()
                    },
                    mounts: vec![Mount::root()],
                    network: NetworkMode::Default,
                    security: SecurityMode::Sandbox,
                    secret_env: vec![],
                }),
                None,
                &[base],
                VertexMetadata::described(script),
            )
            .unwrap();
        d.vertex(r).unwrap().clone()
    }

    fn inputs(&self) -> Vec<Output> {
        vec![Output::Snapshot(self.base.clone())]
    }

    /// Waits until nothing the step made is left: processes, mounts, run
    /// dirs, pending layers. Teardown runs on the step's thread after the
    /// kill, so this polls.
    fn wait_until_clean(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = (
                processes_with(marker),
                mounts_under(self.dir.path()),
                mounts_under(&self.scratch().executor_dir()),
                entries(&self.scratch().runs_dir()),
                entries(&self.layers().join(".tmp")),
            );
            if left == Default::default() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where steps' scratch lives for this state dir (see `executor::scratch`).
    fn scratch(&self) -> ExecutorConfig {
        ExecutorConfig {
            state_dir: self.dir.path().to_path_buf(),
        }
    }

    /// Layers in the store besides the base.
    fn new_layers(&self) -> Vec<String> {
        entries(&self.layers())
            .into_iter()
            .filter(|e| e != ".tmp" && e != "b-busybox")
            .collect()
    }
}

fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&format!("sleep {marker}")))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_process(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_step_and_nothing_is_committed_or_cached() {
    let f = Fixture::new();
    let marker = format!("300.{}1", std::process::id());
    let vertex = f.run(&format!("echo x > /made; sleep {marker}"));
    let step = tokio::spawn({
        let (worker, vertex, inputs) = (Arc::clone(&f.worker), vertex.clone(), f.inputs());
        async move { worker.execute(&vertex, inputs).await }
    });
    wait_for_process(&marker).await;
    f.worker.cancel();
    let err = step.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "canceled");
    f.wait_until_clean(&marker);
    assert_eq!(
        f.new_layers(),
        Vec::<String>::new(),
        "a layer was committed"
    );
    // Nothing after the cancel runs or becomes a cache record.
    let again = f.worker.execute(&f.run("echo hi"), f.inputs()).await;
    assert_eq!(again.unwrap_err().to_string(), "canceled");
    let key = CacheKey([7; 32]);
    let saved = f
        .worker
        .cache_save(&key, &vertex, &Output::Snapshot(f.base.clone()))
        .await;
    assert!(saved.is_err());
    assert!(f.worker.cache_load(&key, &vertex).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_execute_future_stops_its_step() {
    let f = Fixture::new();
    let marker = format!("300.{}2", std::process::id());
    let vertex = f.run(&format!("sleep {marker}"));
    let step = tokio::spawn({
        let (worker, inputs) = (Arc::clone(&f.worker), f.inputs());
        async move { worker.execute(&vertex, inputs).await }
    });
    wait_for_process(&marker).await;
    step.abort();
    assert!(step.await.unwrap_err().is_cancelled());
    f.wait_until_clean(&marker);
    assert!(f.worker.is_canceled());
    assert_eq!(f.new_layers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_finishes_is_committed() {
    // The control: the same fixture without a cancel makes a layer.
    let f = Fixture::new();
    let out = f
        .worker
        .execute(&f.run("echo x > /made"), f.inputs())
        .await
        .unwrap();
    let Output::Snapshot(s) = out else {
        panic!("a RUN makes a filesystem")
    };
    assert_eq!(s.layers.len(), 2);
    assert_eq!(f.new_layers().len(), 1);
    assert!(!f.worker.is_canceled());
}
