//! The RUN sandbox at Docker's defaults through `kiln build`, for both
//! executors: the default seccomp profile (also for emulated arm64 steps,
//! whose qemu-user makes the host's syscalls) and `--network`, the default
//! network of RUN steps, against servers on the host's loopback and on its
//! other address; each step in cgroups of its own.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use support::{Build, TestEnv};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Builds the context with a local output; returns its directory.
fn build_local(b: &Build, executor: &str, extra: &[&str]) -> PathBuf {
    let dest = b.path("out");
    let _ = std::fs::remove_dir_all(&dest);
    let out = format!("type=local,dest={}", dest.display());
    let mut args = vec!["--executor", executor, "-o", &out];
    args.extend_from_slice(extra);
    b.build(&args);
    dest
}

/// What a step sees of seccomp: the status line, whether an unprivileged
/// user namespace (and a mount in it) can be made, and that ordinary tools work.
const SECCOMP_PROBE: &str = "grep '^Seccomp:' /proc/self/status | cut -f2 > /out/mode; \
     if unshare -U -r true 2>/out/unshare-err; then echo unshared; else echo denied; fi > /out/unshare; \
     cd /tmp && echo data > a && cp a b && tar -cf t.tar a b && mkdir x && tar -xf t.tar -C x && cat x/b > /out/tools";

fn seccomp_profile_applies_unless_insecure(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest AS s\n\
             RUN mkdir /out && {SECCOMP_PROBE}\n\
             FROM {}/library/busybox:latest AS i\n\
             RUN --security=insecure mkdir /out && {SECCOMP_PROBE}\n\
             FROM scratch\nCOPY --from=s /out /sandbox\nCOPY --from=i /out /insecure\n",
            env.registry(),
            env.registry()
        ),
    );
    let out = build_local(&b, executor, &["--allow", "security.insecure"]);
    assert_eq!(read(&out.join("sandbox/mode")), "2\n", "filter mode");
    assert_eq!(read(&out.join("sandbox/unshare")), "denied\n");
    assert!(
        read(&out.join("sandbox/unshare-err")).contains("Operation not permitted"),
        "EPERM, as Docker's profile returns"
    );
    assert_eq!(read(&out.join("sandbox/tools")), "data\n");
    assert_eq!(
        read(&out.join("insecure/mode")),
        "0\n",
        "insecure is unconfined"
    );
    assert_eq!(read(&out.join("insecure/unshare")), "unshared\n");
}

/// qemu-user translates an arm64 binary's syscalls to the host's, so the
/// host architecture's table applies and ordinary steps still work.
fn emulated_arm64_steps_run_under_the_profile(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    let setup = b.kiln(&["setup-binfmt", "--platform", "linux/arm64"]);
    assert!(
        setup.status.success(),
        "kiln setup-binfmt: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN mkdir /out && uname -m > /out/arch && {SECCOMP_PROBE}\n",
            env.registry()
        ),
    );
    let out = build_local(&b, executor, &["--platform", "linux/arm64"]);
    assert_eq!(read(&out.join("out/arch")), "aarch64\n");
    assert_eq!(read(&out.join("out/mode")), "2\n");
    assert_eq!(read(&out.join("out/unshare")), "denied\n");
    assert_eq!(read(&out.join("out/tools")), "data\n");
}

/// Says `pong` to each connection on `addr` (port 0: any), in the background.
fn pong_server(addr: &str) -> u16 {
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut s) = stream else { continue };
            let _ = s.write_all(b"pong\n");
        }
    });
    port
}

/// An IPv4 address of this host other than loopback.
fn host_global_ipv4() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .expect("the host has a non-loopback IPv4 address")
}

fn network_flag_sets_the_default_of_run_steps(executor: &str) {
    let env = TestEnv::load();
    let lo = pong_server("127.0.0.1:0");
    let ip = host_global_ipv4();
    let out_port = pong_server(&format!("{ip}:0"));
    let probe = |flag: &str, host: &str, port: u16, file: &str| {
        format!(
            "RUN {flag} if nc -w 3 {host} {port} </dev/null >/dev/null; then echo reached; else echo blocked; fi > /out/{file}\n"
        )
    };
    let dockerfile = format!(
        "FROM {}/library/busybox:latest\nRUN mkdir /out\n{}{}{}RUN ls /sys/class/net | tr '\\n' ' ' > /out/ifaces\n",
        env.registry(),
        probe("", "127.0.0.1", lo, "loopback"),
        probe("", &ip, out_port, "outbound"),
        probe("--network=host", "127.0.0.1", lo, "host-step"),
    );
    let run = |extra: &[&str]| {
        let b = Build::new();
        b.write("Dockerfile", &dockerfile);
        let mut args = vec!["--allow", "network.host"];
        args.extend_from_slice(extra);
        let out = build_local(&b, executor, &args);
        let r = |f: &str| read(&out.join("out").join(f));
        (r("loopback"), r("outbound"), r("host-step"), r("ifaces"))
    };
    // default: an own namespace with outbound access, the host's loopback out of reach.
    let (loopback, outbound, host_step, ifaces) = run(&[]);
    assert_eq!(loopback, "blocked\n");
    assert_eq!(outbound, "reached\n");
    assert_eq!(host_step, "reached\n", "RUN --network=host overrides");
    assert_eq!(ifaces, "eth0 lo ");
    let (loopback, outbound, host_step, ifaces) = run(&["--network", "none"]);
    assert_eq!(
        (loopback.as_str(), outbound.as_str()),
        ("blocked\n", "blocked\n")
    );
    assert_eq!(host_step, "reached\n");
    assert_eq!(ifaces, "lo ");
    let (loopback, ..) = run(&["--network", "host"]);
    assert_eq!(loopback, "reached\n");

    let b = Build::new();
    b.write("Dockerfile", &dockerfile);
    let err = b.build_fails(&["--executor", executor, "--network", "host"]);
    assert!(
        err.contains("--allow") && err.contains("network.host entitlement"),
        "{err}"
    );
    let err = b.build_fails(&["--executor", executor, "--network", "bridge"]);
    assert!(err.contains("expected default, none or host"), "{err}");
}

/// Each RUN step is in a memory cgroup of its own (named for the step, not
/// kiln's), removed after the step; two steps get two different ones.
fn each_step_runs_in_a_cgroup_of_its_own(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN mkdir /out && grep -E '^[0-9]+:memory:' /proc/self/cgroup > /out/first\nRUN grep -E '^[0-9]+:memory:' /proc/self/cgroup > /out/second\n",
            env.registry()
        ),
    );
    let out = build_local(&b, executor, &[]);
    let mine = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroups");
    let mine = mine
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .expect("a memory hierarchy on this host");
    let first = read(&out.join("out/first"));
    let second = read(&out.join("out/second"));
    for step in [&first, &second] {
        let path = step.trim().splitn(3, ':').nth(2).unwrap_or_default();
        let leaf = path.rsplit('/').next().unwrap_or_default();
        assert!(leaf.starts_with("kiln-"), "{step} (kiln: {mine})");
        let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        assert!(!dir.exists(), "{} is left after the build", dir.display());
    }
    assert_ne!(first, second, "one cgroup per step");
}

macro_rules! for_both_executors {
    ($($name:ident),* $(,)?) => {
        mod native {
            $( #[test] fn $name() { super::$name("native") } )*
        }
        mod oci {
            $( #[test] fn $name() { super::$name("oci") } )*
        }
    };
}

for_both_executors!(
    seccomp_profile_applies_unless_insecure,
    emulated_arm64_steps_run_under_the_profile,
    network_flag_sets_the_default_of_run_steps,
    each_step_runs_in_a_cgroup_of_its_own,
);
