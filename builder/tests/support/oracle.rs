//! Helpers around the independent tools the end-to-end tests compare against (skopeo,
//! sha256sum) and around commands' output, shared by the image tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A registry repository name unique to this test run: `name-PID-NANOS`.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// The stdout of a command that must have succeeded; panics with `what`, stdout and stderr.
pub fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of `skopeo ARGS`, which must succeed.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    stdout_ok(&out, &format!("skopeo {args:?}"));
    out.stdout
}

/// The raw manifest (or index) of `reference` in a registry, as skopeo reads it.
pub fn skopeo_raw_json(reference: &str) -> serde_json::Value {
    let bytes = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{reference}"),
    ]);
    serde_json::from_slice(&bytes).expect("manifest JSON")
}

/// The hex SHA-256 of `data` as `sha256sum` (an independent oracle) computes it.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The `sha256:<hex>` digest of `data`, computed by `sha256sum`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}
