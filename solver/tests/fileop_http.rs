//! ADD of a URL against a small HTTP server started by the test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use kiln_solver::llb::SourceOp;
use kiln_solver::ops::source::http::{download, HttpError, HttpSource};
use sha2::{Digest, Sha256};

const BODY: &[u8] = b"hello from the server\n";

/// Serves a few fixed routes until the process ends; returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
            let (status, extra): (&str, &str) = match path.as_str() {
                "/files/app.tar.gz" => {
                    ("200 OK", "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n")
                }
                "/download?id=7" => (
                    "200 OK",
                    "Content-Disposition: attachment; filename=\"report.csv\"\r\n",
                ),
                _ => ("404 Not Found", ""),
            };
            let body: &[u8] = if status.starts_with("200") {
                BODY
            } else {
                b"nope"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    format!("http://{addr}")
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[tokio::test]
async fn downloads_with_docker_semantics() {
    let base = serve();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();

    // File name from the URL path, mode 0600, mtime from Last-Modified,
    // checksum verified.
    let op = SourceOp::http(&format!("{base}/files/app.tar.gz")).attr("http.checksum", &sha(BODY));
    let src = HttpSource::from_op(&op).unwrap();
    let got = download(&client, &src, dir.path()).await.unwrap();
    assert_eq!(got.file_name, "app.tar.gz");
    assert_eq!(got.digest, sha(BODY));
    assert_eq!(got.last_modified, Some(1_445_412_480));
    let path = dir.path().join("app.tar.gz");
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), 1_445_412_480);

    // Content-Disposition names the file when the op does not.
    let dir2 = tempfile::tempdir().unwrap();
    let src = HttpSource::new(&format!("{base}/download?id=7"));
    let got = download(&client, &src, dir2.path()).await.unwrap();
    assert_eq!(got.file_name, "report.csv");
    assert!(dir2.path().join("report.csv").is_file());
    assert_eq!(got.last_modified, None);

    // http.filename wins.
    let op = SourceOp::http(&format!("{base}/download?id=7")).attr("http.filename", "named.bin");
    let got = download(&client, &HttpSource::from_op(&op).unwrap(), dir2.path())
        .await
        .unwrap();
    assert_eq!(got.file_name, "named.bin");
}

#[tokio::test]
async fn checksum_mismatch_and_http_errors_leave_nothing() {
    let base = serve();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let wrong = sha(b"something else");
    let op = SourceOp::http(&format!("{base}/files/app.tar.gz")).attr("http.checksum", &wrong);
    let err = download(&client, &HttpSource::from_op(&op).unwrap(), dir.path())
        .await
        .unwrap_err();
    match &err {
        HttpError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha(BODY));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file left behind"
    );

    let url = format!("{base}/missing.txt");
    let err = download(&client, &HttpSource::new(&url), dir.path())
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Nothing listens on port 9 of loopback: a transport error naming the URL.
    let err = download(
        &client,
        &HttpSource::new("http://127.0.0.1:9/x"),
        dir.path(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::Request { .. }), "{err}");
}
