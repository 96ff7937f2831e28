//! Small fixture helpers the build tests share: the base image, reading results, and a
//! build with a chosen executor.

use super::{Build, TestEnv};
use std::path::{Path, PathBuf};

/// A file's text; panics naming the path.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The busybox image the test environment's plain registry serves.
pub fn busybox(env: &TestEnv) -> String {
    format!("{}/library/busybox:latest", env.registry())
}

/// Builds with `--executor EXECUTOR` and a tag; returns the unpacked rootfs.
pub fn build_with(b: &Build, executor: &str, tag: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--executor", executor, "-t", tag];
    args.extend_from_slice(extra);
    b.build(&args);
    b.unpack(&format!("docker.io/{tag}"))
}

/// Registers the binfmt_misc handler for `platform` with `kiln setup-binfmt` (needs root).
pub fn setup_binfmt(b: &Build, platform: &str) {
    let setup = b.kiln(&["setup-binfmt", "--platform", platform]);
    assert!(
        setup.status.success(),
        "kiln setup-binfmt: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
}
