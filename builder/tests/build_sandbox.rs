//! The RUN sandbox at Docker's defaults through `kiln build`, for both
//! executors: the default seccomp profile (also for emulated arm64 steps,
//! whose qemu-user makes the host's syscalls).

mod support;

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
);
