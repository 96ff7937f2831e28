//! kill -9 at random points of build, pull, push and rmi (prune has its own loop in
//! state_safety.rs): after each kill the store checker passes, and the same verb then
//! completes in the same state dir. Transfers go through the fault proxy in slow mode so
//! the kill lands mid-download or mid-upload.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{check_store, kiln_bin, run_bounded, Build, FaultProxy, Tally, TestEnv};

/// Kills per verb (the long loop is `bench/faults.sh`).
fn kills() -> u64 {
    std::env::var("KILN_FAULTS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A pseudo-random delay below `max_ms`, different per call.
fn random_ms(max_ms: u64, i: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(i);
    Duration::from_millis(h.finish() % max_ms)
}

fn kiln_ok(root: &Path, args: &[&str]) {
    let out = run_bounded(
        Command::new(kiln_bin())
            .arg("--root")
            .arg(root)
            .args(args)
            .env("BUILDKIT_PROGRESS", "plain"),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `kiln ARGS`, kills it with SIGKILL after a random delay; true when it was
/// still running then.
fn kill_midway(root: &Path, args: &[&str], max_ms: u64, i: u64) -> bool {
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kiln");
    let deadline = Instant::now() + random_ms(max_ms, i);
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    running
}

/// The checks after a kill: any verb sweeps what the killed one left, the store is whole,
/// and `finish` (the same verb, to its end) works.
fn after_kill(root: &Path, finish: &[&str]) {
    kiln_ok(root, &["images"]);
    check_store(root);
    kiln_ok(root, finish);
    assert!(check_store(root) > 0);
}

#[test]
fn kill_9_during_pull_push_build_and_rmi_leaves_a_whole_store() {
    let env = TestEnv::load();
    let n = kills();
    // Each kill is a case, and so is the check that some landed midway.
    let mut t = Tally::new("corruptions", 4 * n as usize + 1);
    let proxy = FaultProxy::start(env.registry());
    proxy.set("slow", -1, "all");
    let source = format!("{}/library/busybox:latest", proxy.addr());
    let mut killed = 0;
    for i in 0..n {
        let b = Build::new();
        let root = b.root.path();
        // pull: the slow proxy spreads each blob over about 2 s.
        t.case(&format!("pull {i}"), || {
            killed += kill_midway(root, &["pull", &source], 3000, i) as u32;
            after_kill(root, &["pull", &source]);
        });
        // push of a fresh repository (every blob is sent again).
        let target = format!("{}/faults-kill-{}-{i}:1", proxy.addr(), std::process::id());
        t.case(&format!("push {i}"), || {
            kiln_ok(root, &["tag", &source, &target]);
            killed += kill_midway(root, &["push", &target], 3000, i + 100) as u32;
            after_kill(root, &["push", &target]);
        });
        // build: a step writing a few thousand files.
        let tag = format!("faults-kill:{i}");
        t.case(&format!("build {i}"), || {
            b.write(
                "Dockerfile",
                &format!("FROM {source}\nRUN mkdir /d && cd /d && seq 1 2000 | xargs touch && echo {i} > /i\n"),
            );
            let ctx = b.ctx();
            let ctx = ctx.to_str().unwrap();
            killed += kill_midway(root, &["build", "--tag", &tag, ctx], 4000, i + 200) as u32;
            after_kill(root, &["build", "--tag", &tag, ctx]);
        });
        // rmi of the built image and of the base.
        t.case(&format!("rmi {i}"), || {
            killed += kill_midway(root, &["rmi", &tag, &target], 60, i + 300) as u32;
            kiln_ok(root, &["images"]);
            check_store(root);
        });
    }
    // Not vacuous: some verbs were still at work when killed (how many depends on the
    // machine's speed and load: on a loaded 2-core CI machine about a third).
    t.case("some kills landed midway", || {
        assert!(killed >= 1, "none of the {} verbs was killed midway", 4 * n);
    });
    eprintln!("{killed} of {} verbs killed midway", 4 * n);
    t.finish();
}
