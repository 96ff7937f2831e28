//! ADD of a URL: download one file over HTTP(S) into a fresh directory, with
//! Docker's rules: mode 0600 (unless `http.perm`), `Last-Modified` as mtime,
//! an optional `sha256:` checksum verified before the file appears, and a
//! name from the `http.filename` attribute, `Content-Disposition` or the URL.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::llb::SourceOp;
use crate::timestamp::parse_http_date;

/// Why a download failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The op is not an `http://` or `https://` source.
    #[error("not an HTTP(S) source: {0}")]
    NotHttp(String),
    /// A bad `http.checksum` (only `sha256:<64 hex>` is accepted).
    #[error("invalid checksum {0:?}: expected sha256:<64 hex digits>")]
    InvalidChecksum(String),
    /// A bad numeric attribute (`http.perm`, `http.uid`, `http.gid`).
    #[error("invalid {key} {value:?}")]
    InvalidAttr {
        /// The attribute.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// The request could not be made or the body not read.
    #[error("downloading {url}: {source}")]
    Request {
        /// The URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with a non-success status.
    #[error("downloading {url}: server returned {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The content does not have the expected digest.
    #[error("downloading {url}: digest mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum` value.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// Writing the file failed.
    #[error("downloading {url}: {op} {path}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// What was being done.
        op: &'static str,
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An HTTP(S) source as the graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSource {
    /// The URL.
    pub url: String,
    /// Expected digest (`sha256:<hex>`, attribute `http.checksum`).
    pub checksum: Option<String>,
    /// File name to save under (attribute `http.filename`).
    pub filename: Option<String>,
    /// File mode (attribute `http.perm`, octal; default 0600).
    pub perm: u32,
    /// Owner uid (attribute `http.uid`; default 0).
    pub uid: u32,
    /// Owner gid (attribute `http.gid`; default 0).
    pub gid: u32,
    /// Extra request headers (authorization from `HTTP_AUTH_*` secrets);
    /// never part of the op, so never part of a cache key.
    pub headers: Vec<(String, String)>,
}

impl HttpSource {
    /// A source for `url` with the defaults.
    pub fn new(url: &str) -> HttpSource {
        HttpSource {
            url: url.to_string(),
            checksum: None,
            filename: None,
            perm: 0o600,
            uid: 0,
            gid: 0,
            headers: Vec::new(),
        }
    }

    /// Reads a `SourceOp` made by `SourceOp::http`.
    pub fn from_op(op: &SourceOp) -> Result<HttpSource, HttpError> {
        if !matches!(op.scheme(), "http" | "https") {
            return Err(HttpError::NotHttp(op.identifier.clone()));
        }
        let mut s = HttpSource::new(&op.identifier);
        if let Some(sum) = op.attrs.get("http.checksum") {
            let hex = sum
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if hex.is_none() {
                return Err(HttpError::InvalidChecksum(sum.clone()));
            }
            s.checksum = Some(sum.to_ascii_lowercase());
        }
        if let Some(name) = op.attrs.get("http.filename").filter(|f| !f.is_empty()) {
            // A file name, not a path: nothing may land outside the directory.
            if name.contains('/') || name == "." || name == ".." {
                return Err(HttpError::InvalidAttr {
                    key: "http.filename",
                    value: name.clone(),
                });
            }
            s.filename = Some(name.clone());
        }
        let num = |key: &'static str, radix: u32| -> Result<Option<u32>, HttpError> {
            op.attrs
                .get(key)
                .map(|v| {
                    u32::from_str_radix(v, radix).map_err(|_| HttpError::InvalidAttr {
                        key,
                        value: v.clone(),
                    })
                })
                .transpose()
        };
        s.perm = num("http.perm", 8)?.unwrap_or(0o600);
        s.uid = num("http.uid", 10)?.unwrap_or(0);
        s.gid = num("http.gid", 10)?.unwrap_or(0);
        Ok(s)
    }
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The file's name inside the destination directory.
    pub file_name: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// `Last-Modified` in seconds since the epoch, when the server sent one.
    pub last_modified: Option<i64>,
}

/// Builds an `HttpError::Io` for `url`.
pub(super) fn io_err(
    url: &str,
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> HttpError {
    let url = url.to_string();
    let path = path.to_path_buf();
    move |e| HttpError::Io {
        url,
        op,
        path,
        source: e,
    }
}

/// Sends the GET for `source` with extra headers (conditional ones from the cache).
pub(super) async fn send(
    client: &reqwest::Client,
    source: &HttpSource,
    extra: &[(&str, &str)],
) -> Result<reqwest::Response, HttpError> {
    let mut req = client.get(&source.url);
    for (k, v) in &source.headers {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.map_err(|e| HttpError::Request {
        url: source.url.clone(),
        source: e,
    })
}

/// A response header as text.
pub(super) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The file name of a download: `http.filename`, else `Content-Disposition`, else the URL.
pub(super) fn file_name_of(source: &HttpSource, resp: &reqwest::Response) -> String {
    source
        .filename
        .clone()
        .or_else(|| header(resp, "content-disposition").and_then(|v| disposition_name(&v)))
        .unwrap_or_else(|| url_name(&source.url))
}

/// Streams the body into a temporary file in `dir`, verifying `source.checksum`;
/// returns the fsynced file, its digest and size.
pub(super) async fn receive(
    source: &HttpSource,
    mut resp: reqwest::Response,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, String, u64), HttpError> {
    let url = source.url.as_str();
    fs::create_dir_all(dir).map_err(io_err(url, "mkdir", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io_err(url, "create", dir))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError::Request {
        url: url.to_string(),
        source: e,
    })? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        tmp.write_all(&chunk)
            .map_err(io_err(url, "write", tmp.path()))?;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = &source.checksum {
        if *expected != digest {
            return Err(HttpError::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file()
        .sync_all()
        .map_err(io_err(url, "fsync", &tmp_path))?;
    Ok((tmp, digest, size))
}

/// Gives a downloaded file Docker's metadata: `http.perm`, `http.uid`/`http.gid`,
/// `Last-Modified` as mtime.
pub(super) fn set_file_meta(
    source: &HttpSource,
    file: &fs::File,
    path: &Path,
    last_modified: Option<i64>,
) -> Result<(), HttpError> {
    let url = source.url.as_str();
    fs::set_permissions(path, fs::Permissions::from_mode(source.perm & 0o7777))
        .map_err(io_err(url, "chmod", path))?;
    if let Err(e) = std::os::unix::fs::chown(path, Some(source.uid), Some(source.gid)) {
        // Unprivileged runs keep their own ids unless asked for others.
        if e.raw_os_error() != Some(libc::EPERM) || (source.uid, source.gid) != (0, 0) {
            return Err(io_err(url, "chown", path)(e));
        }
    }
    if let Some(t) = last_modified {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
        let times = fs::FileTimes::new().set_modified(time).set_accessed(time);
        file.set_times(times).map_err(io_err(url, "utimes", path))?;
    }
    Ok(())
}

/// Downloads `source` into `dest_dir` (created if missing). The file is
/// written under a temporary name, checked, fsynced and renamed, so a failed
/// or mismatching download leaves nothing behind.
pub async fn download(
    client: &reqwest::Client,
    source: &HttpSource,
    dest_dir: &Path,
) -> Result<Downloaded, HttpError> {
    let url = source.url.as_str();
    let resp = send(client, source, &[]).await?;
    let status = resp.status();
    if !status.is_success() {
        return Err(HttpError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let last_modified = header(&resp, "last-modified").and_then(|v| parse_http_date(&v));
    let file_name = file_name_of(source, &resp);
    let (tmp, digest, size) = receive(source, resp, dest_dir).await?;
    let tmp_path = tmp.path().to_path_buf();
    set_file_meta(source, tmp.as_file(), &tmp_path, last_modified)?;
    let final_path = dest_dir.join(&file_name);
    tmp.persist(&final_path)
        .map_err(|e| io_err(url, "rename", &final_path)(e.error))?;
    crate::atomic_file::sync_parent(&final_path).map_err(io_err(url, "fsync", dest_dir))?;
    Ok(Downloaded {
        file_name,
        digest,
        size,
        last_modified,
    })
}

/// `filename` of `attachment; filename="x.tar.gz"`, reduced to a base name.
fn disposition_name(value: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (k, v) = param.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        if v.ends_with('/') {
            return None;
        }
        base_name(v)
    })
}

/// The last path segment of `url` (percent-decoded), or `index`.
pub(super) fn url_name(url: &str) -> String {
    let path = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, p)| p);
    base_name(&percent_decode(path)).unwrap_or_else(|| "index".to_string())
}

fn base_name(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?.trim();
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(url_name("https://x.org/a/b.tar.gz?x=1#f"), "b.tar.gz");
        assert_eq!(url_name("https://x.org/a%20b.txt"), "a b.txt");
        assert_eq!(url_name("https://x.org/"), "index");
        assert_eq!(url_name("https://x.org"), "index");
        assert_eq!(
            disposition_name("attachment; filename=\"../../r.csv\"").as_deref(),
            Some("r.csv")
        );
        assert_eq!(disposition_name("inline"), None);
        assert_eq!(disposition_name("attachment; filename=\"dir/\""), None);
    }

    #[test]
    fn from_op_reads_attrs() {
        let op = SourceOp::http("https://x.org/f")
            .attr("http.checksum", &format!("sha256:{}", "A".repeat(64)))
            .attr("http.filename", "g")
            .attr("http.perm", "644")
            .attr("http.uid", "10");
        let s = HttpSource::from_op(&op).unwrap();
        assert_eq!(s.checksum, Some(format!("sha256:{}", "a".repeat(64))));
        assert_eq!(
            (s.filename.as_deref(), s.perm, s.uid, s.gid),
            (Some("g"), 0o644, 10, 0)
        );
        let bad = SourceOp::http("https://x.org/f").attr("http.checksum", "md5:abc");
        assert!(matches!(
            HttpSource::from_op(&bad),
            Err(HttpError::InvalidChecksum(_))
        ));
        assert!(HttpSource::from_op(&SourceOp::local("context")).is_err());
        let escape = SourceOp::http("https://x.org/f").attr("http.filename", "../evil");
        assert!(matches!(
            HttpSource::from_op(&escape),
            Err(HttpError::InvalidAttr { .. })
        ));
    }
}
