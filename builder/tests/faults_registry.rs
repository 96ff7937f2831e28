//! Pull and push through the fault-injecting proxy (`testdata/faults/proxy.py`) in every
//! fault mode: each ends in success (a transient fault retried) or a clear error, within
//! a bound (never a hang), never a panic, and the store checker passes afterwards; the
//! same state dir then pulls cleanly (nothing half-written was kept as whole).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{check_store, kiln_bin, run_bounded, FaultProxy, Tally, TestEnv};

/// What a case must end in.
enum Expect {
    /// Exit 0: the fault was retried away (or harmless).
    Ok,
    /// Exit 1 with this text in stderr.
    Fails(&'static str),
}

/// One fault: its mode, how many requests get it (-1: all), which requests.
struct Case {
    mode: &'static str,
    times: i32,
    what: &'static str,
    expect: Expect,
}

const fn case(mode: &'static str, times: i32, what: &'static str, expect: Expect) -> Case {
    Case {
        mode,
        times,
        what,
        expect,
    }
}

/// Every verb is bounded: 6 attempts of a 1 s idle timeout and their backoff fit in this.
const LIMIT: Duration = Duration::from_secs(60);

fn kiln(root: &Path, args: &[&str]) -> Output {
    run_bounded(
        Command::new(kiln_bin())
            .arg("--root")
            .arg(root)
            .args(args)
            .env("BUILDKIT_PROGRESS", "plain")
            .env_remove("KILN_REGISTRY_IDLE_TIMEOUT"),
        LIMIT,
    )
}

/// Checks the outcome of one case: its exit, its message, no panic, a whole store.
fn judge(label: &str, c: &Case, out: &Output, root: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{label}: {stderr}");
    match c.expect {
        Expect::Ok => assert!(out.status.success(), "{label} should succeed: {stderr}"),
        Expect::Fails(text) => {
            assert_eq!(out.status.code(), Some(1), "{label} should fail: {stderr}");
            assert!(
                stderr.contains(text),
                "{label}: expected {text:?} in {stderr}"
            );
        }
    }
    check_store(root);
}

#[test]
fn pull_through_every_fault_ends_in_success_or_a_clear_error() {
    let env = TestEnv::load();
    let proxy = FaultProxy::start(env.registry());
    let reference = format!("{}/library/busybox:latest", proxy.addr());
    let cases = [
        // A corrupt blob is refused, never stored (containerd does not retry it either).
        case(
            "bitflip",
            1,
            "blobs",
            Expect::Fails("content verification failed"),
        ),
        case(
            "wrongdigest",
            1,
            "blobs",
            Expect::Fails("content verification failed"),
        ),
        // A wrong Docker-Content-Digest header is ignored: kiln hashes what it got.
        case("wrongdigest", 1, "manifests", Expect::Ok),
        case("truncate", 1, "blobs", Expect::Ok),
        case(
            "truncate",
            -1,
            "blobs",
            Expect::Fails("end of file before message length reached"),
        ),
        case("reset", 1, "all", Expect::Ok),
        case(
            "reset",
            -1,
            "all",
            Expect::Fails("Connection reset by peer"),
        ),
        case("503", 2, "blobs", Expect::Ok),
        case("503", -1, "blobs", Expect::Fails("503 from registry")),
        case("429", 2, "manifests", Expect::Ok),
        case("slow", -1, "blobs", Expect::Ok),
        case("stall", 1, "blobs", Expect::Ok),
        case("stall", -1, "manifests", Expect::Fails("no data from")),
        case("html", -1, "all", Expect::Fails("not JSON")),
        case(
            "html",
            -1,
            "blobs",
            Expect::Fails("content verification failed"),
        ),
    ];
    let mut t = Tally::new("registry", cases.len());
    for (i, c) in cases.iter().enumerate() {
        let label = format!("pull {} x{} on {}", c.mode, c.times, c.what);
        t.case(&label, || {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            proxy.set(c.mode, c.times, c.what);
            let out = kiln(&root, &["pull", "--registry-idle-timeout", "1", &reference]);
            assert!(proxy.injected() > 0, "{label}: the fault was never hit");
            judge(&label, c, &out, &root);
            // The same state dir then pulls whole: nothing kept from the faulty attempt.
            proxy.set("pass", 0, "all");
            let again = kiln(&root, &["pull", &reference]);
            assert!(
                again.status.success(),
                "case {i} {label}, pull after: {}",
                String::from_utf8_lossy(&again.stderr)
            );
            assert_eq!(check_store(&root), 1, "{label}");
        });
    }
    t.finish();
}

#[test]
fn push_through_every_fault_ends_in_success_or_a_clear_error() {
    let env = TestEnv::load();
    let proxy = FaultProxy::start(env.registry());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let source = format!("{}/library/busybox:latest", env.registry());
    let pulled = kiln(&root, &["pull", &source]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let cases = [
        case("503", 2, "uploads", Expect::Ok),
        case("429", 1, "uploads", Expect::Ok),
        case("reset", 1, "uploads", Expect::Ok),
        case("503", -1, "uploads", Expect::Fails("503")),
        case(
            "reset",
            -1,
            "uploads",
            Expect::Fails("Connection reset by peer"),
        ),
        case("stall", -1, "uploads", Expect::Fails("no data from")),
        case("html", -1, "uploads", Expect::Fails("faults-push")),
    ];
    let mut t = Tally::new("registry", cases.len());
    for (i, c) in cases.iter().enumerate() {
        let label = format!("push {} x{} on {}", c.mode, c.times, c.what);
        t.case(&label, || {
            // A fresh repository per case, so every blob is uploaded (or mounted) again.
            let target = format!(
                "{}/faults-push-{}-{i}-{}:1",
                proxy.addr(),
                c.mode,
                std::process::id()
            );
            let tagged = kiln(&root, &["tag", &source, &target]);
            assert!(
                tagged.status.success(),
                "{}",
                String::from_utf8_lossy(&tagged.stderr)
            );
            proxy.set(c.mode, c.times, c.what);
            let out = kiln(&root, &["push", "--registry-idle-timeout", "1", &target]);
            assert!(proxy.injected() > 0, "{label}: the fault was never hit");
            judge(&label, c, &out, &root);
            // What a successful push stored reads back whole, straight from the registry.
            if out.status.success() {
                proxy.set("pass", 0, "all");
                let back = tempfile::tempdir().unwrap();
                let pulled = kiln(&back.path().join("root"), &["pull", &target]);
                assert!(
                    pulled.status.success(),
                    "{label}, pull back: {}",
                    String::from_utf8_lossy(&pulled.stderr)
                );
                assert_eq!(check_store(&back.path().join("root")), 1);
            }
        });
    }
    t.finish();
}
