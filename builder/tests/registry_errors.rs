//! What the image commands say when a registry is unreachable, failing or silent: the cause
//! (connection refused, the 503 with its status, no data for N s) and each retry as it happens.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

/// `kiln pull` with its own state directory and Docker config.
fn pull(reference: &str, extra: &[&str]) -> (Output, Duration) {
    let dir = tempfile::tempdir().unwrap();
    pull_into(&dir.path().join("root"), reference, extra)
}

/// `kiln pull` with the state directory `root`.
fn pull_into(root: &std::path::Path, reference: &str, extra: &[&str]) -> (Output, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(support::kiln_bin())
        .arg("pull")
        .args(extra)
        .arg(reference)
        .env("KILN_ROOT", root)
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .env_remove("KILN_INSECURE_REGISTRIES")
        .env_remove("KILN_CERTS_DIR")
        .env_remove("KILN_REGISTRY_IDLE_TIMEOUT")
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// Answers every plain-HTTP request on an ephemeral loopback port with `reply` (`None`: keep
/// the connection open and say nothing); TLS handshakes are closed at once.
fn serve(reply: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if conn.peek(&mut first).is_err() || first[0] == 0x16 {
                    return;
                }
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line.trim().is_empty() => {}
                        Ok(_) => continue,
                    }
                    match reply {
                        Some(status) => {
                            let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                            let _ = w.write_all(resp.as_bytes());
                        }
                        None => std::thread::sleep(Duration::from_secs(60)),
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn pull_from_a_closed_port_says_connection_refused_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reference = format!("127.0.0.1:{port}/registry-cli-refused/x:1");
    let (out, elapsed) = pull(&reference, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains(&reference), "names the reference: {stderr}");
    assert!(
        !stderr.contains("retrying"),
        "refused is not retried: {stderr}"
    );
    // The whole cause chain is rendered, down to the OS error.
    assert!(
        stderr.contains("├─▶ tcp connect error")
            && stderr.contains("╰─▶ Connection refused (os error 111)"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn pull_from_an_unavailable_registry_announces_retries_and_reports_503() {
    let addr = serve(Some("503 Service Unavailable"));
    let reference = format!("{addr}/registry-cli-503/x:1");
    let (out, _) = pull(&reference, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("retrying GET http://{addr}/v2/ in ")))
        .collect();
    assert_eq!(retries.len(), 5, "{stderr}");
    for (i, l) in retries.iter().enumerate() {
        assert!(
            l.ends_with(&format!("(attempt {}/6): 503 Service Unavailable", i + 2)),
            "{l}"
        );
    }
    assert!(
        stderr.contains(&format!("{reference}: 503 from registry {addr}")),
        "{stderr}"
    );
}

#[test]
fn pull_from_a_silent_registry_gives_up_after_the_idle_timeout() {
    let addr = serve(None);
    let reference = format!("{addr}/registry-cli-silent/x:1");
    let (out, elapsed) = pull(&reference, &["--registry-idle-timeout", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // miette wraps the message; its parts stay whole.
    assert!(
        stderr.contains(&format!(
            "no data from {addr} for 1 s while waiting for the response to GET"
        )) && stderr.contains("(gave up after 6 attempts)"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("): no response for 1.0 s").count(),
        5,
        "{stderr}"
    );
    // Six one-second attempts and their backoff, not 6 × 300 s.
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

/// A 1 MiB tmpfs, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn pull_onto_a_full_disk_says_no_space_left_with_the_path() {
    let env = support::TestEnv::load();
    let disk = SmallDisk(tempfile::tempdir().unwrap());
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(disk.0.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (the suite runs as root)"
    );
    let reference = format!("{}/library/busybox:latest", env.registry());
    let (out, _) = pull_into(disk.0.path(), &reference, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // miette may wrap the line; the path and the OS error stay whole.
    assert!(stderr.contains("No space left"), "{stderr}");
    assert!(
        stderr.contains(&format!("writing {}/", disk.0.path().display())),
        "{stderr}"
    );
    assert!(!stderr.contains("writer stopped"), "{stderr}");
}

#[test]
fn pull_from_an_untrusted_registry_names_the_certificate_and_the_fix() {
    let env = support::TestEnv::load();
    let reference = format!("{}/registry-cli-ca/x:1", env.registry_tls());
    let (out, _) = pull(&reference, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate signed by unknown authority"),
        "{stderr}"
    );
    assert!(
        stderr.contains("╰─▶ invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("--insecure-registry {}", env.registry_tls())),
        "the hint names the flag: {stderr}"
    );
}

#[test]
fn a_build_from_a_registry_wanting_a_login_names_kiln_login_once() {
    let env = support::TestEnv::load();
    let tls = env.registry_tls();
    let b = support::Build::new();
    // Trusts the registry's CA, but holds no credentials for it.
    let docker = b.path("docker");
    let certs = docker.join("certs.d").join(tls);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(env.ca_cert(), certs.join("ca.crt")).unwrap();
    b.write(
        "Dockerfile",
        &format!("FROM {tls}/registry-cli-login/x:1\nRUN true\n"),
    );
    let out = b.kiln_env(
        &["build", b.ctx().to_str().unwrap()],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("UNAUTHORIZED"), "{stderr}");
    assert!(stderr.contains("Dockerfile:1"), "{stderr}");
    // The hint is the CLI's, given once; the registry's message no longer says it.
    assert!(
        stderr.contains(&format!("help: run `kiln login {tls}`")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("kiln login").count(), 1, "{stderr}");
}
