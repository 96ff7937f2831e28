//! Resuming an interrupted upload from the registry's reported range, against a minimal
//! in-process registry that (unlike distribution 2.8) keeps partially received data.

use kiln_oci::{Descriptor, Reference};
use kiln_registry::client::{RegistryClient, UploadOutcome};
use kiln_registry::TransportOptions;
use std::io::{BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

mod support;
use support::{blob_data, read_request, respond};

#[derive(Default)]
struct Upload {
    data: Vec<u8>,
    posts: usize,
    patches: usize,
    body_bytes: u64,
    cut_done: bool,
    completed: Option<String>,
}

/// Serves one connection; the first PATCH is cut after `cut_at` body bytes (data kept).
fn serve(stream: TcpStream, state: Arc<Mutex<Upload>>, cut_at: u64) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        let len: u64 = req
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut st = state.lock().unwrap();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v2/") => respond(&mut w, "200 OK", &[], b""),
            ("HEAD", p) if p.contains("/blobs/sha256:") => {
                if st.completed.is_some() {
                    respond(&mut w, "200 OK", &[], b"");
                } else {
                    respond(&mut w, "404 Not Found", &[], b"");
                }
            }
            ("POST", _) => {
                st.posts += 1;
                st.data.clear();
                respond(
                    &mut w,
                    "202 Accepted",
                    &[("Location", "/upload/1".into()), ("Range", "0-0".into())],
                    b"",
                );
            }
            ("PATCH", "/upload/1") => {
                st.patches += 1;
                if let Some(cr) = req.header("content-range") {
                    let start: u64 = cr
                        .split('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX);
                    if start != st.data.len() as u64 {
                        respond(&mut w, "416 Range Not Satisfiable", &[], b"");
                        return;
                    }
                }
                let take = if st.cut_done { len } else { len.min(cut_at) };
                let mut buf = vec![0u8; take as usize];
                drop(st);
                let got = read_fully(&mut r, &mut buf);
                let mut st = state.lock().unwrap();
                st.body_bytes += got as u64;
                st.data.extend_from_slice(&buf[..got]);
                if !st.cut_done {
                    st.cut_done = true;
                    // Connection cut mid-body: the client sees a broken request.
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                let end = st.data.len().saturating_sub(1);
                respond(
                    &mut w,
                    "202 Accepted",
                    &[
                        ("Location", "/upload/1".into()),
                        ("Range", format!("0-{end}")),
                    ],
                    b"",
                );
            }
            ("GET", "/upload/1") => {
                let end = st.data.len().saturating_sub(1);
                respond(
                    &mut w,
                    "204 No Content",
                    &[
                        ("Location", "/upload/1".into()),
                        ("Range", format!("0-{end}")),
                    ],
                    b"",
                );
            }
            ("PUT", p) if p.starts_with("/upload/1?") => {
                let digest = p.split("digest=").nth(1).unwrap_or("").replace("%3A", ":");
                let actual = kiln_oci::Digest::of(&st.data).to_string();
                if digest == actual {
                    st.completed = Some(digest);
                    respond(&mut w, "201 Created", &[], b"");
                } else {
                    respond(&mut w, "400 Bad Request", &[], b"");
                }
            }
            _ => respond(&mut w, "404 Not Found", &[], b""),
        }
    }
}

fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

#[test]
fn interrupted_upload_resumes_from_reported_range() {
    let size = 20 << 20;
    let cut_at = 7 << 20;
    let data = blob_data(size);
    let state = Arc::new(Mutex::new(Upload::default()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let st = st.clone();
            std::thread::spawn(move || serve(conn, st, cut_at));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let desc = Descriptor::of("application/octet-stream", &data);
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    let client = RegistryClient::new(TransportOptions {
        backoff_base: std::time::Duration::from_millis(5),
        certs_dirs: vec![],
        notices: kiln_registry::progress::Notices::new(move |n| {
            sink.lock().unwrap().push(n.to_string())
        }),
        ..TransportOptions::default()
    });
    let r = Reference::parse(&format!("{addr}/resume/test:x")).unwrap();
    let open = move || std::fs::File::open(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(client.push_blob(&r, &desc, &open, None, &|_| {}))
        .unwrap();
    assert_eq!(outcome, UploadOutcome::Pushed);
    let st = state.lock().unwrap();
    assert_eq!(
        st.completed.as_deref(),
        Some(desc.digest.to_string().as_str())
    );
    assert_eq!(st.data, data, "registry holds exactly the blob");
    assert_eq!(st.posts, 1, "one upload session: resumed, not restarted");
    assert_eq!(st.patches, 2);
    assert_eq!(st.body_bytes, size as u64, "no byte sent twice");
    let notices = notices.lock().unwrap();
    assert_eq!(notices.len(), 1, "the resume is announced: {notices:?}");
    assert!(
        notices[0].starts_with(&format!("retrying PATCH http://{addr}/upload/1 in "))
            && notices[0].contains("(attempt 2/6): connection broken"),
        "{notices:?}"
    );
}
