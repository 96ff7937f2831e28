//! How the client fails and retries: refused ports, failed lookups, untrusted certificates,
//! 503s, stalled downloads and full disks, against the real test registries and tiny
//! in-test servers on ephemeral loopback ports.

use kiln_oci::{Descriptor, Reference};
use kiln_registry::error::NetCause;
use kiln_registry::progress::Notices;
use kiln_registry::{Error, RegistryClient, TransportOptions};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::{blob_data, read_request, respond, Request};

/// Serves plain HTTP on an ephemeral loopback port until the test ends. A TLS handshake (the
/// client tries HTTPS first on loopback) is closed at once. `handle` answers one request and
/// returns false to close the connection.
fn serve(handle: impl Fn(&Request, &mut TcpStream) -> bool + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if conn.peek(&mut first).is_err() || first[0] == 0x16 {
                    return;
                }
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while let Some(req) = read_request(&mut r) {
                    if !handle(&req, &mut w) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Options with short waits, recording retry notices.
fn quick_opts(max_retries: u32, idle: Duration) -> (TransportOptions, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = TransportOptions {
        certs_dirs: vec![],
        max_retries,
        idle_timeout: idle,
        backoff_base: Duration::from_millis(10),
        notices: Notices::new(move |n| sink.lock().unwrap().push(n.to_string())),
        ..TransportOptions::default()
    };
    (opts, seen)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn env_var(key: &str) -> String {
    let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
    let text = std::fs::read_to_string(Path::new(&dir).join("env"))
        .expect("test environment missing; run `bash testdata/env/setup.sh start` first");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing from the test env file"))
}

#[test]
fn refused_connection_says_so_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (opts, notices) = quick_opts(5, Duration::from_secs(5));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("127.0.0.1:{port}/registry-refused/x:1")).unwrap();
    let started = Instant::now();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Http {
                cause: NetCause::Refused,
                ..
            }
        ),
        "{err:?}"
    );
    let s = err.to_string();
    assert!(s.contains("connection refused"), "{s}");
    assert!(s.contains(&r.to_string()), "names the reference: {s}");
    assert!(notices.lock().unwrap().is_empty(), "refused is not retried");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn failed_lookup_says_so() {
    let (opts, notices) = quick_opts(5, Duration::from_secs(5));
    let client = RegistryClient::new(opts);
    let r = Reference::parse("kiln-registry-test.invalid/registry-dns/x:1").unwrap();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Http {
                cause: NetCause::Dns(_),
                ..
            }
        ),
        "{err:?}"
    );
    let s = err.to_string();
    assert!(s.contains("DNS lookup failed"), "{s}");
    assert!(s.contains("kiln-registry-test.invalid"), "{s}");
    assert!(notices.lock().unwrap().is_empty(), "{:?}", notices);
}

#[test]
fn unknown_certificate_authority_says_so() {
    let reg = env_var("KILN_TEST_REGISTRY_TLS");
    let (opts, notices) = quick_opts(5, Duration::from_secs(5));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{reg}/registry-ca/x:1")).unwrap();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Http {
                cause: NetCause::Certificate(_),
                ..
            }
        ),
        "{err:?}"
    );
    let s = err.to_string();
    assert!(s.contains("certificate signed by unknown authority"), "{s}");
    assert!(notices.lock().unwrap().is_empty(), "{:?}", notices);
}

#[test]
fn plain_http_503_is_retried_aloud_and_reported_with_its_status() {
    let addr = serve(|_, w| {
        respond(w, "503 Service Unavailable", &[], b"busy");
        true
    });
    let (mut opts, notices) = quick_opts(2, Duration::from_secs(5));
    opts.insecure_registries = vec![addr.clone()];
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-503/x:1")).unwrap();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    let s = err.to_string();
    assert!(s.contains("503") && s.contains(&r.to_string()), "{s}");
    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 2, "{notices:?}");
    let url = format!("http://{addr}/v2/");
    for (i, n) in notices.iter().enumerate() {
        assert!(n.starts_with(&format!("retrying GET {url} in ")), "{n}");
        assert!(
            n.ends_with(&format!("(attempt {}/3): 503 Service Unavailable", i + 2)),
            "{n}"
        );
    }
}

/// What the blob server does with a GET of the blob.
#[derive(Clone, Copy, PartialEq)]
enum Blob {
    /// Sends headers and half the bytes, then nothing; later only headers.
    AlwaysStall,
    /// Stalls the first time; honours `Range` afterwards.
    StallThenResume,
    /// Stalls the first time; ignores `Range` afterwards (whole blob, 200).
    StallThenWhole,
    /// Serves the whole blob.
    Whole,
}

/// Serves `/v2/` and one blob; records each blob GET's `Range` header.
fn blob_server(data: Vec<u8>, mode: Blob) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let gets = Arc::new(Mutex::new(Vec::new()));
    let seen = gets.clone();
    let addr = serve(move |req, w| {
        if req.path == "/v2/" {
            respond(w, "200 OK", &[], b"{}");
            return true;
        }
        if req.method != "GET" || !req.path.contains("/blobs/sha256:") {
            respond(w, "404 Not Found", &[], b"");
            return true;
        }
        let range = req.header("range").map(str::to_string);
        let n = {
            let mut g = seen.lock().unwrap();
            g.push(range.clone());
            g.len()
        };
        let stall = mode == Blob::AlwaysStall
            || (n == 1 && matches!(mode, Blob::StallThenResume | Blob::StallThenWhole));
        if stall {
            // The first answer sends half the blob; later (ranged) ones only their headers.
            let (head, sent) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                Some(r) => {
                    let start: usize = r.trim_end_matches('-').parse().unwrap();
                    let cr = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: {cr}\r\nContent-Length: {}\r\n\r\n",
                        data.len() - start
                    );
                    (head, &data[..0])
                }
                None => (
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()),
                    &data[..data.len() / 2],
                ),
            };
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(sent);
            let _ = w.flush();
            // Hold the connection open, sending nothing, longer than any idle timeout here.
            std::thread::sleep(Duration::from_secs(20));
            return false;
        }
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok());
        match start {
            Some(s) if mode == Blob::StallThenResume => {
                let cr = format!("bytes {s}-{}/{}", data.len() - 1, data.len());
                respond(
                    w,
                    "206 Partial Content",
                    &[("Content-Range", cr)],
                    &data[s..],
                );
            }
            _ => respond(w, "200 OK", &[], &data),
        }
        true
    });
    (addr, gets)
}

#[test]
fn stalled_download_is_retried_then_reported() {
    let data = blob_data(256 << 10);
    let desc = Descriptor::of("application/octet-stream", &data);
    let (addr, gets) = blob_server(data.clone(), Blob::AlwaysStall);
    let (opts, notices) = quick_opts(1, Duration::from_secs(1));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-stall/x:1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let started = Instant::now();
    let err = rt()
        .block_on(client.fetch_blob(&r, &desc, &dest, &|_| {}))
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Stalled { .. }), "{err:?}");
    let s = err.to_string();
    assert!(
        s.starts_with(&format!(
            "no data from {addr} for 1 s while downloading {}",
            desc.digest
        )),
        "{s}"
    );
    // Three attempts of about a second each, not minutes: the first brought half the blob,
    // which earns a fresh retry; the second brought nothing; the third gives up.
    assert!(s.contains("gave up after 3 attempts"), "{s}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let resume = format!("bytes={}-", data.len() / 2);
    assert_eq!(
        *gets.lock().unwrap(),
        vec![None, Some(resume.clone()), Some(resume)],
        "retries resume where the stall began"
    );
    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices[0].contains("(attempt 2/3): no data for 1.0 s")
            && notices[1].contains("(attempt 3/3): no data for 1.0 s"),
        "{notices:?}"
    );
    assert!(!dest.exists(), "a failed download leaves no file");
}

#[test]
fn stalled_download_resumes_with_range_or_restarts() {
    for mode in [Blob::StallThenResume, Blob::StallThenWhole] {
        let data = blob_data(256 << 10);
        let desc = Descriptor::of("application/octet-stream", &data);
        let (addr, gets) = blob_server(data.clone(), mode);
        let (opts, _) = quick_opts(2, Duration::from_secs(1));
        let client = RegistryClient::new(opts);
        let r = Reference::parse(&format!("{addr}/registry-resume/x:1")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blob");
        rt().block_on(client.fetch_blob(&r, &desc, &dest, &|_| {}))
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(gets.lock().unwrap().len(), 2);
    }
}

#[test]
fn registry_that_never_answers_is_reported_as_stalled() {
    let addr = serve(|_, _| {
        std::thread::sleep(Duration::from_secs(20));
        false
    });
    let (opts, notices) = quick_opts(1, Duration::from_secs(1));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-silent/x:1")).unwrap();
    let started = Instant::now();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(8));
    let s = err.to_string();
    assert!(
        s.starts_with(&format!(
            "no data from {addr} for 1 s while waiting for the response to GET http://{addr}/v2/"
        )),
        "{s}"
    );
    assert_eq!(notices.lock().unwrap().len(), 1);
}

/// A size-limited tmpfs, unmounted on drop.
struct SmallTmpfs(tempfile::TempDir);

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the suite runs as root)"
        );
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn full_disk_is_reported_as_such_with_the_path() {
    let data = blob_data(3 << 20);
    let desc = Descriptor::of("application/octet-stream", &data);
    let (addr, _) = blob_server(data, Blob::Whole);
    let (opts, _) = quick_opts(1, Duration::from_secs(5));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-enospc/x:1")).unwrap();
    let disk = SmallTmpfs::mount("1m");
    let dest = disk.0.path().join("blob");
    let err = rt()
        .block_on(client.fetch_blob(&r, &desc, &dest, &|_| {}))
        .unwrap_err();
    let s = err.to_string();
    assert!(s.contains("No space left on device"), "{s}");
    assert!(s.contains(&dest.display().to_string()), "{s}");
    assert!(!dest.exists(), "the partial blob is removed");
}

#[test]
fn stalled_manifest_body_is_reported_as_stalled() {
    let addr = serve(|req, w| {
        if req.path == "/v2/" {
            respond(w, "200 OK", &[], b"{}");
            return true;
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 500\r\n\r\n{\"schemaVersion\":";
        let _ = w.write_all(head.as_bytes());
        let _ = w.flush();
        std::thread::sleep(Duration::from_secs(20));
        false
    });
    let (opts, _) = quick_opts(1, Duration::from_secs(1));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-manifest-stall/x:1")).unwrap();
    let started = Instant::now();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = err.to_string();
    assert!(
        s.starts_with(&format!("no data from {addr} for 1 s while reading {r}")),
        "{s}"
    );
}

#[test]
fn silent_token_server_is_reported_as_stalled() {
    let token_server = serve(|_, _| {
        std::thread::sleep(Duration::from_secs(20));
        false
    });
    let realm = format!("http://{token_server}/token");
    let addr = serve(move |_, w| {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"kiln-test\"");
        respond(
            w,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            b"",
        );
        true
    });
    let (opts, _) = quick_opts(1, Duration::from_secs(1));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-token-stall/x:1")).unwrap();
    let started = Instant::now();
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = err.to_string();
    assert!(
        s.starts_with(&format!(
            "no data from {token_server} for 1 s while fetching a token for {addr}"
        )),
        "{s}"
    );
}

#[test]
fn registry_that_stops_reading_an_upload_is_reported_as_stalled() {
    let patches = Arc::new(Mutex::new(0usize));
    let seen = patches.clone();
    let addr = serve(move |req, w| {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v2/") => respond(w, "200 OK", &[], b"{}"),
            ("HEAD", _) => respond(w, "404 Not Found", &[], b""),
            ("POST", _) => respond(
                w,
                "202 Accepted",
                &[("Location", "/upload/1".to_string())],
                b"",
            ),
            ("PATCH", _) => {
                // Take the headers, then read nothing more: the client's writes back up.
                *seen.lock().unwrap() += 1;
                std::thread::sleep(Duration::from_secs(20));
                return false;
            }
            // Upload status: nothing received.
            ("GET", "/upload/1") => respond(
                w,
                "204 No Content",
                &[("Location", "/upload/1".to_string())],
                b"",
            ),
            _ => respond(w, "404 Not Found", &[], b""),
        }
        true
    });
    let data = blob_data(24 << 20);
    let desc = Descriptor::of("application/octet-stream", &data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let (opts, notices) = quick_opts(1, Duration::from_secs(1));
    let client = RegistryClient::new(opts);
    let r = Reference::parse(&format!("{addr}/registry-upload-stall/x:1")).unwrap();
    let open = move || std::fs::File::open(&path);
    let started = Instant::now();
    let err = rt()
        .block_on(client.push_blob(&r, &desc, &open, None, &|_| {}))
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let s = err.to_string();
    assert!(
        s.starts_with(&format!(
            "no data from {addr} for 1 s while uploading {}",
            desc.digest
        )),
        "{s}"
    );
    assert!(
        *patches.lock().unwrap() >= 2,
        "the stalled upload was resumed once"
    );
    assert!(
        notices
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("retrying PATCH") && n.ends_with("no data taken for 1.0 s")),
        "{notices:?}"
    );
}
