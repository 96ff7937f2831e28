//! Pull/push/auth against the real registries of testdata/env/setup.sh.

use kiln_oci::layout::LayoutDir;
use kiln_oci::{Descriptor, Digest, Reference};
use kiln_oci::{Manifest, Platform};
use kiln_registry::auth::Credentials;
use kiln_registry::client::RegistryClient;
use kiln_registry::progress::NoProgress;
use kiln_registry::pull::{pull, PlatformSelection, PullOptions};
use kiln_registry::push::{push, PushOptions};
use kiln_registry::store::BlobStore;
use kiln_registry::{Error, TransportOptions};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use support::{env, unique};

mod support;

fn opts_with_ca(env: &HashMap<String, String>, tmp: &Path) -> TransportOptions {
    let host = &env["KILN_TEST_REGISTRY_TLS"];
    let dir = tmp.join("certs.d").join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&env["KILN_TEST_CA"], dir.join("ca.crt")).unwrap();
    TransportOptions {
        certs_dirs: vec![tmp.join("certs.d")],
        backoff_base: std::time::Duration::from_millis(20),
        ..TransportOptions::default()
    }
}

fn client_with(creds: &[(&str, &str, &str)], opts: TransportOptions) -> RegistryClient {
    let map = creds
        .iter()
        .map(|(h, u, p)| {
            (
                h.to_string(),
                Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                },
            )
        })
        .collect();
    RegistryClient::with_credentials(opts, map)
}

fn skopeo_raw(reference: &str, extra: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn pull_each_platform_of_busybox_index() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let r = Reference::parse(&format!("{reg}/library/busybox:latest")).unwrap();
    let index_bytes = skopeo_raw(&r.to_string(), &["--tls-verify=false"]);
    let (Manifest::Index(idx), _) = Manifest::parse("x", &index_bytes, None).unwrap() else {
        panic!("busybox:latest is not an index");
    };
    let client = RegistryClient::new(TransportOptions::default());
    for plat in ["linux/amd64", "linux/arm64"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayoutDir::create(tmp.path()).unwrap();
        let p = Platform::parse(plat).unwrap();
        let pulled = rt()
            .block_on(pull(
                &client,
                &r,
                &store,
                &PullOptions {
                    platforms: PlatformSelection::One(p.clone()),
                    concurrency: 4,
                },
                &NoProgress,
            ))
            .unwrap();
        let expected = idx.select(&p).unwrap();
        assert_eq!(pulled.root.digest, expected.digest, "{plat}");
        assert_eq!(pulled.repo_digest, Digest::of(&index_bytes));
        let (_, m) = &pulled.images[0];
        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
            let mut data = Vec::new();
            store
                .open_blob(&d.digest)
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            assert_eq!(Digest::of(&data), d.digest);
        }
        let cfg: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&m.config.digest).unwrap()).unwrap();
        assert_eq!(cfg["architecture"], p.architecture.as_str(), "{plat}");
    }
    // A platform the index lacks is a clear error listing what exists.
    let tmp = tempfile::tempdir().unwrap();
    let store = LayoutDir::create(tmp.path()).unwrap();
    let err = rt()
        .block_on(pull(
            &client,
            &r,
            &store,
            &PullOptions {
                platforms: PlatformSelection::One(Platform::parse("linux/s390x").unwrap()),
                concurrency: 2,
            },
            &NoProgress,
        ))
        .unwrap_err();
    let s = err.to_string();
    assert!(
        s.contains("linux/s390x") && s.contains("linux/amd64"),
        "{s}"
    );
}

fn pull_all(client: &RegistryClient, r: &Reference, store: &LayoutDir) -> Descriptor {
    rt().block_on(pull(
        client,
        r,
        store,
        &PullOptions {
            platforms: PlatformSelection::All,
            concurrency: 4,
        },
        &NoProgress,
    ))
    .unwrap()
    .root
}

#[test]
fn push_round_trip_is_byte_identical() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let src = Reference::parse(&format!("{reg}/library/busybox:latest")).unwrap();
    let client = RegistryClient::new(TransportOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let store = LayoutDir::create(tmp.path()).unwrap();
    let root = pull_all(&client, &src, &store);
    let dst = Reference::parse(&format!("{reg}/{}:v1", unique("roundtrip"))).unwrap();
    let digest = rt()
        .block_on(push(
            &client,
            &dst,
            &root,
            &store,
            &PushOptions::default(),
            &NoProgress,
        ))
        .unwrap();
    assert_eq!(digest, root.digest);
    let raw = skopeo_raw(&dst.to_string(), &["--tls-verify=false"]);
    assert_eq!(raw, store.read_blob(&root.digest).unwrap());
    // Each platform's manifest was pushed too.
    let (Manifest::Index(idx), _) = Manifest::parse("x", &raw, None).unwrap() else {
        panic!()
    };
    for d in &idx.manifests {
        let child = skopeo_raw(
            &format!("{}@{}", dst.name(), d.digest),
            &["--tls-verify=false"],
        );
        assert_eq!(Digest::of(&child), d.digest);
    }
    // A second push finds everything present.
    let again = rt()
        .block_on(push(
            &client,
            &dst,
            &root,
            &store,
            &PushOptions::default(),
            &NoProgress,
        ))
        .unwrap();
    assert_eq!(again, digest);
}

#[test]
fn tls_basic_auth_pull_and_wrong_password() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY_TLS"];
    let tmp = tempfile::tempdir().unwrap();
    let r = Reference::parse(&format!("{reg}/library/busybox:latest")).unwrap();
    let good = client_with(
        &[(reg, &env["KILN_TEST_TLS_USER"], &env["KILN_TEST_TLS_PASS"])],
        opts_with_ca(&env, tmp.path()),
    );
    let store = LayoutDir::create(tmp.path().join("store")).unwrap();
    let root = pull_all(&good, &r, &store);
    assert!(store.has_blob(&root.digest));
    // Push back under a new name over TLS with basic auth.
    let dst = Reference::parse(&format!("{reg}/{}:x", unique("tls"))).unwrap();
    rt().block_on(push(
        &good,
        &dst,
        &root,
        &store,
        &PushOptions::default(),
        &NoProgress,
    ))
    .unwrap();

    let bad = client_with(
        &[(reg, "kiln", "wrong-password")],
        opts_with_ca(&env, tmp.path()),
    );
    let err = rt().block_on(bad.get_manifest(&r)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Auth {
                anonymous: false,
                ..
            }
        ),
        "{err:?}"
    );
    let s = err.to_string();
    assert!(s.contains("UNAUTHORIZED") && s.contains("kiln"), "{s}");

    // Without the CA the certificate is refused rather than silently trusted.
    let no_ca = client_with(
        &[],
        TransportOptions {
            certs_dirs: vec![],
            max_retries: 0,
            ..TransportOptions::default()
        },
    );
    let err = rt().block_on(no_ca.get_manifest(&r)).unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
}

#[test]
fn bearer_token_pull_push_and_read_only_denied() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY_TOKEN"];
    let r = Reference::parse(&format!("{reg}/library/busybox:latest")).unwrap();
    let rw = client_with(
        &[(
            reg,
            &env["KILN_TEST_TOKEN_USER"],
            &env["KILN_TEST_TOKEN_PASS"],
        )],
        TransportOptions::default(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = LayoutDir::create(tmp.path()).unwrap();
    let root = pull_all(&rw, &r, &store);
    let repo = unique("token");
    let dst = Reference::parse(&format!("{reg}/{repo}:rw")).unwrap();
    let d = rt()
        .block_on(push(
            &rw,
            &dst,
            &root,
            &store,
            &PushOptions::default(),
            &NoProgress,
        ))
        .unwrap();
    assert_eq!(d, root.digest);
    // Cross-repo mount within the registry.
    let mounted = Reference::parse(&format!("{reg}/{repo}-mounted:m")).unwrap();
    rt().block_on(kiln_registry::copy::copy(
        &rw,
        &dst,
        &mounted,
        &tmp.path().join("stage"),
        4,
        &NoProgress,
    ))
    .unwrap();
    assert_eq!(
        rt().block_on(rw.get_manifest(&mounted)).unwrap().digest,
        root.digest
    );

    let ro = client_with(
        &[(
            reg,
            &env["KILN_TEST_TOKEN_RO_USER"],
            &env["KILN_TEST_TOKEN_RO_PASS"],
        )],
        TransportOptions::default(),
    );
    // Pull works for the reader...
    rt().block_on(ro.get_manifest(&r)).unwrap();
    // ...push is denied, naming the scope.
    let denied = Reference::parse(&format!("{reg}/{repo}-ro:x")).unwrap();
    let err = rt()
        .block_on(push(
            &ro,
            &denied,
            &root,
            &store,
            &PushOptions::default(),
            &NoProgress,
        ))
        .unwrap_err();
    let s = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(
        s.contains(&format!("repository:{repo}-ro:pull,push")),
        "{s}"
    );
    assert!(s.contains("reader"), "{s}");

    // Anonymous is refused, and says so: the CLI's hint to log in follows from it.
    let anon = client_with(&[], TransportOptions::default());
    let err = rt().block_on(anon.get_manifest(&r)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Auth {
                anonymous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("kiln login"), "{err}");
}

#[test]
fn unknown_manifest_names_reference_and_code() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let r = Reference::parse(&format!("{reg}/library/busybox:no-such-tag")).unwrap();
    let client = RegistryClient::new(TransportOptions::default());
    let err = rt().block_on(client.get_manifest(&r)).unwrap_err();
    let s = err.to_string();
    assert!(
        s.contains("no-such-tag") && s.contains("MANIFEST_UNKNOWN") && s.contains("404"),
        "{s}"
    );
}

/// A TCP proxy that forwards to `target`; the first connection that carries more than
/// `cut_after` bytes in the chosen direction is cut there.
struct CuttingProxy {
    addr: String,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes forwarded from kiln to the registry (all connections).
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn cutting_proxy(target: String, cut_after: u64, upstream: bool, max_cuts: usize) -> CuttingProxy {
    proxy(target, cut_after, upstream, max_cuts, false)
}

/// Like [`cutting_proxy`] but flips the byte at `at` (server to client) instead of cutting.
fn tampering_proxy(target: String, at: u64) -> CuttingProxy {
    proxy(target, at, false, 1, true)
}

fn proxy(
    target: String,
    cut_after: u64,
    upstream: bool,
    max_cuts: usize,
    flip: bool,
) -> CuttingProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cuts = Arc::new(AtomicUsize::new(0));
    let c2 = cuts.clone();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent2 = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let sent_up = sent2.clone();
            let cuts = c2.clone();
            let (c_r, s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (s_r, c_w) = (server, client);
            let pump =
                move |mut from: std::net::TcpStream,
                      mut to: std::net::TcpStream,
                      cutting: bool,
                      cuts: Arc<AtomicUsize>,
                      count: Option<Arc<std::sync::atomic::AtomicU64>>| {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cutting
                            && total + n as u64 > cut_after
                            && cuts.load(Ordering::SeqCst) < max_cuts
                        {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            if flip {
                                buf[(cut_after - total) as usize] ^= 0x55;
                                total += n as u64;
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                continue;
                            }
                            let keep = (cut_after - total) as usize;
                            if let Some(c) = &count {
                                c.fetch_add(keep as u64, Ordering::SeqCst);
                            }
                            let _ = to.write_all(&buf[..keep]);
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        total += n as u64;
                        if let Some(c) = &count {
                            c.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                };
            let cuts_a = cuts.clone();
            std::thread::spawn(move || pump(c_r, s_w, upstream, cuts_a, Some(sent_up)));
            std::thread::spawn(move || pump(s_r, c_w, !upstream, cuts, None));
        }
    });
    CuttingProxy { addr, cuts, sent }
}

fn random_blob(dir: &Path, size: usize) -> (Descriptor, PathBuf) {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ (std::process::id() as u64) ^ size as u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let d = Descriptor::of("application/vnd.oci.image.layer.v1.tar", &data);
    let p = dir.join(d.digest.hex());
    std::fs::write(&p, &data).unwrap();
    (d, p)
}

#[test]
fn push_survives_cut_connections_through_retries() {
    let env = env();
    let reg = env["KILN_TEST_REGISTRY"].clone();
    let tmp = tempfile::tempdir().unwrap();
    let (desc, path) = random_blob(tmp.path(), 24 << 20);
    let proxy = cutting_proxy(reg.clone(), 5 << 20, true, 2);
    let client = RegistryClient::new(TransportOptions {
        backoff_base: std::time::Duration::from_millis(10),
        ..TransportOptions::default()
    });
    let target = Reference::parse(&format!("{}/{}:x", proxy.addr, unique("cut"))).unwrap();
    let p2 = path.clone();
    let open = move || std::fs::File::open(&p2);
    let outcome = rt()
        .block_on(client.push_blob(&target, &desc, &open, None, &|_| {}))
        .unwrap();
    assert_eq!(outcome, kiln_registry::client::UploadOutcome::Pushed);
    assert_eq!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the proxy cut the upload twice"
    );
    // distribution 2.8 cancels an upload whose stored size disagrees with its state token, so
    // after a cut kiln asks for the upload's range, is refused and restarts the session: each
    // cut costs at most what was sent before it, never a runaway.
    let sent = proxy.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < desc.size + 2 * (5 << 20) + (2 << 20),
        "sent {sent} bytes for a {} byte blob",
        desc.size
    );
    // The registry holds exactly the right content under the digest.
    let direct = Reference::parse(&format!("{reg}/{}:x", target.repository())).unwrap();
    let out = tmp.path().join("back");
    rt().block_on(client.fetch_blob(&direct, &desc, &out, &|_| {}))
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn pull_resumes_after_cut_and_rejects_wrong_digest() {
    let env = env();
    let reg = env["KILN_TEST_REGISTRY"].clone();
    let tmp = tempfile::tempdir().unwrap();
    let (desc, path) = random_blob(tmp.path(), 12 << 20);
    let client = RegistryClient::new(TransportOptions {
        backoff_base: std::time::Duration::from_millis(10),
        ..TransportOptions::default()
    });
    let repo = unique("pullcut");
    let direct = Reference::parse(&format!("{reg}/{repo}:x")).unwrap();
    let p2 = path.clone();
    rt().block_on(client.push_blob(
        &direct,
        &desc,
        &move || std::fs::File::open(&p2),
        None,
        &|_| {},
    ))
    .unwrap();
    let proxy = cutting_proxy(reg.clone(), 3 << 20, false, 1);
    let via = Reference::parse(&format!("{}/{repo}:x", proxy.addr)).unwrap();
    let store = LayoutDir::create(tmp.path().join("store")).unwrap();
    let dl = store.temp_path().unwrap();
    rt().block_on(client.fetch_blob(&via, &desc, &dl, &|_| {}))
        .unwrap();
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(&dl).unwrap(), std::fs::read(&path).unwrap());

    // Claiming another digest for the same bytes (a tampered manifest) is rejected and leaves no file.
    let mut lie = desc.clone();
    lie.size = desc.size - 1;
    let bad = store.temp_path().unwrap();
    let err = rt()
        .block_on(client.fetch_blob(&direct, &lie, &bad, &|_| {}))
        .unwrap_err();
    assert!(
        matches!(err, Error::Oci(kiln_oci::Error::Verification { .. })),
        "{err:?}"
    );
    assert!(!bad.exists(), "rejected download removed");
    // A byte flipped on the wire: the digest check refuses it and nothing is stored.
    let tamper = tampering_proxy(reg.clone(), 3 << 20);
    let via = Reference::parse(&format!("{}/{repo}:x", tamper.addr)).unwrap();
    let fresh = LayoutDir::create(tmp.path().join("fresh")).unwrap();
    let pulled = rt().block_on(kiln_registry::pull::pull_blob(
        &client,
        &via,
        &fresh,
        &desc,
        &NoProgress,
    ));
    let err = pulled.unwrap_err();
    assert!(
        matches!(err, Error::Oci(kiln_oci::Error::Verification { .. })),
        "{err:?}"
    );
    assert_eq!(tamper.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        !fresh.has_blob(&desc.digest),
        "tampered blob never stored under its digest"
    );
    let leftovers: Vec<_> = std::fs::read_dir(fresh.root().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".kiln-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no leftovers: {leftovers:?}");
}

/// A proxy that answers the first `n` connections with 429 + Retry-After, then forwards.
fn throttling_proxy(target: String, n: usize) -> CuttingProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let refused = Arc::new(AtomicUsize::new(0));
    let r2 = refused.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            if r2.load(Ordering::SeqCst) < n {
                r2.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                let _ = client.write_all(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_r, mut c_w) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_r, &mut s_w);
                let _ = s_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_r, &mut c_w);
                let _ = c_w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    CuttingProxy {
        addr,
        cuts: refused,
        sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    }
}

#[test]
fn retries_429_honouring_retry_after() {
    let env = env();
    let reg = env["KILN_TEST_REGISTRY"].clone();
    // The first refusal hits the TLS probe (loopback tries HTTPS first), the next two are HTTP.
    let proxy = throttling_proxy(reg, 3);
    let client = RegistryClient::new(TransportOptions {
        backoff_base: std::time::Duration::from_millis(1),
        ..TransportOptions::default()
    });
    let r = Reference::parse(&format!("{}/library/busybox:latest", proxy.addr)).unwrap();
    let started = std::time::Instant::now();
    let m = rt().block_on(client.get_manifest(&r)).unwrap();
    assert!(!m.bytes.is_empty());
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Two refusals with Retry-After: 1 mean at least ~2 s of waiting (not the 1 ms backoff).
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900));
}

#[test]
fn insecure_registry_skips_tls_verification() {
    let env = env();
    let reg = env["KILN_TEST_REGISTRY_TLS"].clone();
    let r = Reference::parse(&format!("{reg}/library/busybox:latest")).unwrap();
    let creds = [(
        reg.as_str(),
        env["KILN_TEST_TLS_USER"].as_str(),
        env["KILN_TEST_TLS_PASS"].as_str(),
    )];
    // No CA anywhere: refused unless the registry is marked insecure.
    let strict = client_with(
        &creds,
        TransportOptions {
            certs_dirs: vec![],
            max_retries: 0,
            ..TransportOptions::default()
        },
    );
    assert!(rt().block_on(strict.get_manifest(&r)).is_err());
    let insecure = client_with(
        &creds,
        TransportOptions {
            certs_dirs: vec![],
            insecure_registries: vec![reg.clone()],
            ..TransportOptions::default()
        },
    );
    let m = rt().block_on(insecure.get_manifest(&r)).unwrap();
    assert!(!m.bytes.is_empty());
}
