//! The sandbox probe (`testdata/faults/sandbox-probe.sh`) run as a RUN step by both
//! executors under each `--network` mode, compared with Docker's defaults: its
//! capability set, seccomp in filter mode, masked and read-only paths, mount and unshare
//! denied, device access denied, ptrace of a process outside the step denied (of its own
//! child allowed, as Docker), and the interfaces of each network mode.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::{Build, Tally, TestEnv};

/// Docker's default capability set (CAP_CHOWN … CAP_AUDIT_WRITE, 14 of them).
const DOCKER_CAPS: &str = "00000000a80425fb";

/// Runs the probe in a step; returns its key=value lines.
fn probe(executor: &str, extra: &[&str]) -> BTreeMap<String, String> {
    let env = TestEnv::load();
    let b = Build::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/faults/sandbox-probe.sh");
    b.write("probe.sh", &std::fs::read_to_string(script).unwrap());
    compile_ptrace_probe(&b.ctx().join("ptrace-probe"));
    // The process outside the step that the probe tries to trace: this test (root, with
    // every capability).
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest AS p\nCOPY probe.sh ptrace-probe /\n\
             RUN sh /probe.sh {} > /report\n\
             FROM scratch\nCOPY --from=p /report /report\n",
            env.registry(),
            std::process::id()
        ),
    );
    let dest = b.path("out");
    let out = format!("type=local,dest={}", dest.display());
    let mut args = vec![
        "--executor",
        executor,
        "-o",
        &out,
        "--allow",
        "network.host",
    ];
    args.extend_from_slice(extra);
    b.build(&args);
    std::fs::read_to_string(dest.join("report"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds `testdata/faults/ptrace-probe.c` static (busybox has nothing that calls ptrace).
fn compile_ptrace_probe(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/faults/ptrace-probe.c");
    let cc = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .output()
        .expect("run cc (gcc and libc6-dev come with testdata/env/setup.sh)");
    assert!(
        cc.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&cc.stderr)
    );
}

/// The probe under each network mode, a case each.
fn sandbox_at_dockers_defaults(executor: &str) {
    let mut t = Tally::new("sandbox", 3);
    t.case(&format!("{executor} default network"), || {
        default_network(executor)
    });
    t.case(&format!("{executor} --network none"), || {
        let none = probe(executor, &["--network", "none"]);
        assert_eq!(none["ifaces"], "lo ");
        assert_eq!(none["capeff"], DOCKER_CAPS);
    });
    t.case(&format!("{executor} --network host"), || {
        let host = probe(executor, &["--network", "host"]);
        let host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for i in &host_ifaces {
            assert!(
                host["ifaces"].split(' ').any(|s| s == i),
                "{i} in {:?}",
                host["ifaces"]
            );
        }
        assert_eq!(host["seccomp"], "2", "host network keeps the profile");
    });
    t.finish();
}

/// Under the default network: Docker's capabilities, seccomp in filter mode, masked and
/// read-only paths, the denied escapes, and a namespace of its own.
fn default_network(executor: &str) {
    let r = probe(executor, &[]);
    let get = |k: &str| {
        r.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing: {r:?}"))
    };
    assert_eq!(get("capeff"), DOCKER_CAPS, "{r:?}");
    assert_eq!(get("capbnd"), DOCKER_CAPS, "{r:?}");
    assert_eq!(get("seccomp"), "2", "filter mode");
    for (k, v) in &r {
        if k.starts_with("masked:") {
            assert_eq!(v, "0", "{k} is masked: {r:?}");
        }
        if k.starts_with("readonly:") {
            assert_eq!(v, "denied", "{k}: {r:?}");
        }
    }
    // Each masked path the host has is probed (this kernel may lack /proc/kcore).
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        assert_eq!(
            r.contains_key(&format!("masked:{p}")),
            Path::new(p).exists(),
            "{p}: {r:?}"
        );
    }
    assert_eq!(get("mount"), "denied");
    assert_eq!(get("unshare-user"), "denied");
    assert_eq!(get("unshare-mount"), "denied");
    assert_eq!(get("blockdev"), "denied", "no device cgroup/mknod escape");
    // Docker's profile allows ptrace on kernels >= 4.8 (a step may debug its own
    // processes: checked against docker 20.10's RUN and `docker run`); a process outside
    // the step is out of reach: hidden by a pid namespace (ESRCH, Docker's answer) or
    // refused for want of CAP_SYS_PTRACE (EPERM).
    assert_eq!(get("ptrace-child"), "allowed", "{r:?}");
    assert!(
        ["ESRCH", "EPERM"].contains(&get("ptrace-outside")),
        "ptrace of a process outside the step: {r:?}"
    );
    assert_eq!(
        get("ifaces"),
        "eth0 lo ",
        "the default network: its own namespace"
    );
}

#[test]
fn native_sandbox_at_dockers_defaults() {
    sandbox_at_dockers_defaults("native");
}

#[test]
fn oci_sandbox_at_dockers_defaults() {
    sandbox_at_dockers_defaults("oci");
}
