//! Canceling builds end to end: the first failure stops a RUN running in a
//! parallel stage, SIGINT/SIGTERM stop `kiln build` with 130/143, and neither
//! leaves a process, a mount or a half-made layer behind; an interrupted
//! `kiln pull` leaves a consistent store. Real processes, both executors.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{executed, kiln_bin, Build, TestEnv};

/// A `sleep` duration no other test uses: the marker that finds its process.
fn marker(test: u32) -> String {
    format!("300.{}{test:02}", std::process::id())
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Not the test itself nor a kiln whose arguments hold a Dockerfile path.
        if text.contains(&format!("sleep {marker}")) {
            found.push(format!("{}: {text}", p.file_name().to_string_lossy()));
        }
    }
    found
}

/// Mount points under `dir` (kiln runs in the test's mount namespace).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Entries of a directory (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a stopped build must not leave: processes, mounts, run dirs, pending layers.
fn assert_nothing_left(b: &Build, marker: &str) {
    assert_eq!(
        processes_with(marker),
        Vec::<String>::new(),
        "step processes left"
    );
    assert_eq!(
        mounts_under(b.root.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    // Steps' scratch may live on a tmpfs (see `executor::scratch`).
    let scratch = kiln_solver::executor::ExecutorConfig {
        state_dir: b.root.path().to_path_buf(),
    };
    assert_eq!(
        mounts_under(&scratch.executor_dir()),
        Vec::<String>::new(),
        "mounts left in the steps' scratch"
    );
    assert_eq!(
        entries(&scratch.runs_dir()),
        Vec::<String>::new(),
        "run dirs left"
    );
    assert_eq!(
        entries(&b.root.path().join("layers/.tmp")),
        Vec::<String>::new(),
        "pending layers left"
    );
}

fn start_build(b: &Build, executor: &str) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(kiln_bin())
        // Its own process group, like a job a shell started: a group-wide
        // signal is what a terminal's Ctrl-C sends.
        .process_group(0)
        .arg("--root")
        .arg(b.root.path())
        .args(["build", "--progress", "plain", "--executor", executor])
        .arg(b.ctx())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln")
}

/// Waits until a process with `marker` runs (the step started).
fn wait_for_step(child: &mut Child, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_with(marker).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln ended ({status}) before the step started");
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn first_failure_stops_a_parallel_run_step(executor: &str, test: u32) {
    let env = TestEnv::load();
    let b = Build::new();
    let m = marker(test);
    b.write(
        "Dockerfile",
        &format!(
            "FROM {reg}/library/busybox:latest AS base\n\
             RUN echo base > /base\n\
             \n\
             FROM base AS slow\n\
             RUN sleep {m}\n\
             \n\
             FROM base AS bad\n\
             RUN sleep 1 && echo going down && exit 3\n\
             \n\
             FROM base\n\
             COPY --from=slow /base /slow\n\
             COPY --from=bad /base /bad\n",
            reg = env.registry()
        ),
    );
    let started = Instant::now();
    let out = start_build(&b, executor).wait_with_output().unwrap();
    let took = started.elapsed();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    // It did not wait for the sleep.
    assert!(took < Duration::from_secs(300), "took {took:?}\n{all}");
    assert_nothing_left(&b, &m);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Dockerfile:8:1"), "{all}");
    assert!(
        stderr.contains("RUN sleep 1 && echo going down && exit 3"),
        "{all}"
    );
    assert!(stderr.contains("exit code: 3"), "{all}");
    // The stopped step shows as canceled, not as a second failure.
    assert!(stderr.contains("CANCELED"), "{all}");
    assert!(!stderr.contains("killed"), "{all}");
    assert_eq!(stderr.matches("ERROR:").count(), 1, "{all}");
}

fn signal_stops_the_build_and_the_rebuild_reuses_finished_steps(
    executor: &str,
    test: u32,
    signal: libc::c_int,
    signals: usize,
    whole_group: bool,
) {
    let env = TestEnv::load();
    let b = Build::new();
    let m = marker(test);
    let dockerfile = |last: &str| {
        format!(
            "FROM {}/library/busybox:latest\nRUN echo one > /one\nRUN --mount=type=cache,id=c,target=/cache,sharing=locked {last}\n",
            env.registry()
        )
    };
    // Not `exec`ed by the shell: a SIGINT reaching the sleep would fail the step.
    b.write("Dockerfile", &dockerfile(&format!("sleep {m} || exit 7")));
    let mut child = start_build(&b, executor);
    wait_for_step(&mut child, &m);
    let pid = child.id() as i32;
    for _ in 0..signals {
        let target = if whole_group { -pid } else { pid };
        assert_eq!(unsafe { libc::kill(target, signal) }, 0);
    }
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(128 + signal), "{all}");
    assert_nothing_left(&b, &m);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    assert!(
        stderr.contains(&format!("build canceled by {name}")),
        "{all}"
    );
    assert!(stderr.contains("#3 CANCELED"), "{all}");
    assert!(!stderr.contains("ERROR"), "{all}");
    // The canceled step made no layer and no cache record: only RUN echo did.
    let built: Vec<String> = entries(&b.root.path().join("layers"))
        .into_iter()
        .filter(|l| l.starts_with("b-"))
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    let du = b.kiln(&["du", "--verbose"]);
    let du = String::from_utf8_lossy(&du.stdout);
    assert!(du.contains("RUN echo one"), "{du}");
    assert!(!du.contains("sleep"), "{du}");
    // The state lock, the locked cache mount and the cache are usable; the
    // steps that finished before the signal are reused.
    b.write("Dockerfile", &dockerfile("echo two > /two"));
    let meta = b.build(&["--executor", executor, "-t", "kiln-test/cancel:1"]);
    assert_eq!(executed(&meta), 1, "only the changed step runs: {meta}");
    let root = b.unpack("docker.io/kiln-test/cancel:1");
    assert_eq!(std::fs::read_to_string(root.join("one")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(root.join("two")).unwrap(), "two\n");
}

#[test]
fn oci_first_failure_stops_a_parallel_run_step() {
    first_failure_stops_a_parallel_run_step("oci", 1);
}

#[test]
fn native_first_failure_stops_a_parallel_run_step() {
    first_failure_stops_a_parallel_run_step("native", 2);
}

#[test]
fn oci_sigint_stops_the_build_cleanly() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps("oci", 3, libc::SIGINT, 1, false);
}

#[test]
fn native_sigint_stops_the_build_cleanly() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps(
        "native",
        4,
        libc::SIGINT,
        1,
        false,
    );
}

#[test]
fn oci_sigterm_stops_the_build_cleanly() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps("oci", 5, libc::SIGTERM, 1, false);
}

/// A second Ctrl-C while the first one's cleanup runs does not cut it short.
#[test]
fn native_double_sigint_still_cleans_up() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps(
        "native",
        6,
        libc::SIGINT,
        2,
        false,
    );
}

/// Ctrl-C in a terminal signals kiln's whole process group: the steps are
/// not in it, so they are canceled by kiln, not failed by the signal.
#[test]
fn oci_terminal_ctrl_c_cancels_rather_than_fails_the_step() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps("oci", 7, libc::SIGINT, 1, true);
}

#[test]
fn native_terminal_ctrl_c_cancels_rather_than_fails_the_step() {
    signal_stops_the_build_and_the_rebuild_reuses_finished_steps(
        "native",
        8,
        libc::SIGINT,
        1,
        true,
    );
}

/// Every blob of the store hashes to its name and index.json parses.
fn assert_store_consistent(root: &Path) {
    let blobs = root.join("content/blobs/sha256");
    for name in entries(&blobs) {
        let out = Command::new("sha256sum")
            .arg(blobs.join(&name))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            sum.split(' ').next(),
            Some(name.as_str()),
            "blob {name} is corrupt"
        );
    }
    let index = root.join("content/index.json");
    if index.exists() {
        support::read_json(&index);
    }
}

/// SIGINT at several moments of a pull: whatever it stopped, the store holds
/// only complete blobs under their digests, and pulling again completes.
#[test]
fn interrupted_pull_leaves_the_store_consistent() {
    let env = TestEnv::load();
    let image = format!("{}/library/busybox:latest", env.registry());
    let pull = ["pull", "--all-platforms", image.as_str()];
    for delay_ms in [0u64, 5, 20, 50, 100, 200] {
        let b = Build::new();
        let mut child = Command::new(kiln_bin())
            .arg("--root")
            .arg(b.root.path())
            .args(pull)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().unwrap();
        assert_store_consistent(b.root.path());
        let out = b.kiln(&pull);
        assert!(
            out.status.success(),
            "after SIGINT at {delay_ms} ms: {}",
            text(&out)
        );
        assert_store_consistent(b.root.path());
        let images = b.kiln(&["images"]);
        assert!(
            String::from_utf8_lossy(&images.stdout).contains("library/busybox"),
            "{}",
            text(&images)
        );
    }
}
