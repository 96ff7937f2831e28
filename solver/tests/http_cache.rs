//! The HTTP source cache against a small server that knows only
//! `Last-Modified` / `If-Modified-Since` (no ETag).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_solver::llb::SourceOp;
use kiln_solver::ops::source::http::{HttpError, HttpSource};
use kiln_solver::ops::source::http_cache::HttpCache;
use sha2::{Digest, Sha256};

const BODY: &[u8] = b"cached body\n";
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// Serves BODY at any path; answers a matching `If-Modified-Since` with 304.
/// Returns the base URL, the request count and the 304 count.
fn serve() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (requests, not_modified) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, n) = (requests.clone(), not_modified.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut since = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("if-modified-since") {
                        since = Some(v.trim().to_string());
                    }
                }
            }
            r.fetch_add(1, Ordering::SeqCst);
            if since.as_deref() == Some(LAST_MODIFIED) {
                n.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                BODY.len()
            );
            let _ = stream.write_all(BODY);
        }
    });
    (base, requests, not_modified)
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[tokio::test]
async fn revalidates_with_if_modified_since_and_trusts_known_checksums() {
    let (base, requests, not_modified) = serve();
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let cache = HttpCache::open(state.path().join("http")).unwrap();
    let op = SourceOp::http(&format!("{base}/f.txt")).attr("http.filename", "f.txt");
    let source = HttpSource::from_op(&op).unwrap();

    let first = cache.resolve(&client, &source, true).await.unwrap();
    assert!(first.downloaded && first.requested);
    assert_eq!(first.file.digest, sha(BODY));
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    let second = cache.resolve(&client, &source, true).await.unwrap();
    assert!(!second.downloaded && second.requested);
    assert_eq!(second.file, first.file);
    assert_eq!(not_modified.load(Ordering::SeqCst), 1);

    // Without the cache (--no-cache) the validators are not sent.
    let fresh = cache.resolve(&client, &source, false).await.unwrap();
    assert!(fresh.downloaded);
    assert_eq!(
        (
            requests.load(Ordering::SeqCst),
            not_modified.load(Ordering::SeqCst)
        ),
        (3, 1)
    );

    // A known checksum needs no request, even for another URL with that content.
    let other = SourceOp::http(&format!("{base}/elsewhere.txt"))
        .attr("http.filename", "e.txt")
        .attr("http.checksum", &sha(BODY));
    let other = HttpSource::from_op(&other).unwrap();
    let known = cache.resolve(&client, &other, true).await.unwrap();
    assert!(!known.requested && !known.downloaded);
    assert_eq!(known.file.file_name, "e.txt");
    assert_eq!(requests.load(Ordering::SeqCst), 3);

    // The materialised copy has Docker's metadata; the cached content stays as it was.
    let out = tempfile::tempdir().unwrap();
    let path = cache
        .materialize(&second.file, &source, out.path())
        .unwrap();
    assert_eq!(path, out.path().join("f.txt"));
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), 1_445_412_480);

    // A checksum the cached content does not have is a mismatch after a 304.
    let wrong = SourceOp::http(&format!("{base}/f.txt")).attr("http.checksum", &sha(b"other"));
    let err = cache
        .resolve(&client, &HttpSource::from_op(&wrong).unwrap(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::ChecksumMismatch { .. }), "{err}");
}
