//! What the registry-client integration tests share: the test environment of
//! testdata/env/setup.sh, unique repository names, a tiny HTTP/1.1 request reader and
//! response writer for the throwaway in-test servers, and deterministic blob data.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

/// The variables of the test environment (`/tmp/kiln-testenv/env`, or `$KILN_TESTENV/env`).
pub fn env() -> HashMap<String, String> {
    let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
    let path = Path::new(&dir).join("env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test environment missing ({}: {e}); run `bash testdata/env/setup.sh start` first",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A repository name no other test (or concurrent run) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("kiln-rc-test/{name}-{}-{nanos}", std::process::id())
}

/// A request line and headers as the tiny servers see them.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header named `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request line and its headers; `None` at end of stream or on garbage.
pub fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

/// Writes a response with `headers` and `body` (ignoring write errors: the client may be gone).
pub fn respond(w: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut s = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    let _ = w.write_all(s.as_bytes());
    let _ = w.write_all(body);
}

/// `size` bytes of deterministic, poorly compressible data.
pub fn blob_data(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}
