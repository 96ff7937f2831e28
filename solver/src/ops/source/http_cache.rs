//! The HTTP source cache (BuildKit's http source keeps the same): downloaded
//! content by digest, and per URL the validators of its last download (ETag,
//! Last-Modified). A later build revalidates with `If-None-Match` /
//! `If-Modified-Since` and reuses the content on `304 Not Modified`; with a
//! `--checksum` whose content is already here it sends no request at all.
//! The resolved content digest is the source's cache key, so a changed
//! download re-runs only what depends on it.
//!
//! Layout under the state directory's `http/`: `content/<hex>` (read-only
//! files, written to a temporary name, fsynced and renamed) and
//! `urls/<sha256 of the URL>.json` (written atomically).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::http::{
    file_name_of, header, io_err, receive, send, set_file_meta, url_name, HttpError, HttpSource,
};
use crate::timestamp::parse_http_date;

/// Content of an HTTP source as the cache holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// The name the file is saved under.
    pub file_name: String,
    /// `Last-Modified` in seconds since the epoch, when the server sent one.
    pub last_modified: Option<i64>,
}

/// What [`HttpCache::resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The content.
    pub file: CachedFile,
    /// Whether the body was downloaded by this call (false: the cache had it).
    pub downloaded: bool,
    /// Whether a request was sent at all.
    pub requested: bool,
}

/// The validators remembered for one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UrlRecord {
    url: String,
    etag: Option<String>,
    /// The `Last-Modified` header as the server wrote it (sent back verbatim).
    last_modified_header: Option<String>,
    file: CachedFile,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct HttpCache {
    dir: PathBuf,
}

impl HttpCache {
    /// Opens (creating) the cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<HttpCache> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("content"))?;
        fs::create_dir_all(dir.join("urls"))?;
        Ok(HttpCache { dir })
    }

    fn content_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("content")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn record_path(&self, url: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(url.as_bytes()));
        self.dir.join("urls").join(format!("{key}.json"))
    }

    /// The record for `url` whose content is still present.
    fn record(&self, url: &str) -> Option<UrlRecord> {
        let bytes = fs::read(self.record_path(url)).ok()?;
        let rec: UrlRecord = serde_json::from_slice(&bytes).ok()?;
        (rec.url == url && self.content_path(&rec.file.digest).is_file()).then_some(rec)
    }

    /// Finds the content of `source`: without a request when its checksum is
    /// already here (unless `revalidate` is false, as for `--no-cache`), by a
    /// conditional request when the URL was downloaded before, else by a download.
    pub async fn resolve(
        &self,
        client: &reqwest::Client,
        source: &HttpSource,
        use_cache: bool,
    ) -> Result<Resolved, HttpError> {
        let url = source.url.as_str();
        let previous = if use_cache { self.record(url) } else { None };
        if let (true, Some(sum)) = (use_cache, &source.checksum) {
            if self.content_path(sum).is_file() {
                return Ok(known_content(source, previous, sum));
            }
        }
        let mut conditional: Vec<(&str, &str)> = Vec::new();
        if let Some(r) = &previous {
            if let Some(etag) = &r.etag {
                conditional.push(("If-None-Match", etag));
            }
            if let Some(lm) = &r.last_modified_header {
                conditional.push(("If-Modified-Since", lm));
            }
        }
        let resp = send(client, source, &conditional).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && !conditional.is_empty() {
            if let Some(r) = previous {
                return not_modified(source, r);
            }
        }
        if !status.is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        self.store(source, resp).await
    }

    /// Downloads the response's body into the content store and records the URL's
    /// validators (ETag, Last-Modified) for the next conditional request.
    async fn store(
        &self,
        source: &HttpSource,
        resp: reqwest::Response,
    ) -> Result<Resolved, HttpError> {
        let url = source.url.as_str();
        let etag = header(&resp, "etag");
        let last_modified_header = header(&resp, "last-modified");
        let last_modified = last_modified_header.as_deref().and_then(parse_http_date);
        let file_name = file_name_of(source, &resp);
        let content_dir = self.dir.join("content");
        let (tmp, digest, _size) = receive(source, resp, &content_dir).await?;
        let final_path = self.content_path(&digest);
        let tmp_path = tmp.path().to_path_buf();
        fs::set_permissions(&tmp_path, fs::Permissions::from_mode(0o444))
            .map_err(io_err(url, "chmod", &tmp_path))?;
        tmp.persist(&final_path)
            .map_err(|e| io_err(url, "rename", &final_path)(e.error))?;
        crate::atomic_file::sync_parent(&final_path).map_err(io_err(url, "fsync", &content_dir))?;
        let file = CachedFile {
            digest,
            file_name,
            last_modified,
        };
        let record = UrlRecord {
            url: url.to_string(),
            etag,
            last_modified_header,
            file: file.clone(),
        };
        let record_path = self.record_path(url);
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        crate::atomic_file::write_atomic(&record_path, &self.dir.join("urls"), &bytes)
            .map_err(io_err(url, "write", &record_path))?;
        Ok(Resolved {
            file,
            downloaded: true,
            requested: true,
        })
    }

    /// Removes every download and record with `all`, else only content no URL record
    /// names (left by an interrupted download or a re-download). Returns (files, bytes).
    /// The caller holds the state lock exclusively.
    pub fn prune(&self, all: bool) -> (usize, u64) {
        let named: std::collections::HashSet<String> = if all {
            Default::default()
        } else {
            fs::read_dir(self.dir.join("urls"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice::<UrlRecord>(&b).ok())
                .map(|r| r.file.digest.trim_start_matches("sha256:").to_string())
                .collect()
        };
        let mut removed = (0, 0);
        // URL records before the content they name.
        let sub = if all {
            &["urls", "content"][..]
        } else {
            &["content"][..]
        };
        for sub in sub {
            for e in fs::read_dir(self.dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if named.contains(&name) {
                    continue;
                }
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(e.path()).is_ok() {
                    removed.0 += 1;
                    removed.1 += size;
                }
            }
        }
        removed
    }

    /// Writes a copy of the cached content into `dest_dir` with the source's
    /// mode, owner and mtime; returns its path.
    pub fn materialize(
        &self,
        file: &CachedFile,
        source: &HttpSource,
        dest_dir: &Path,
    ) -> Result<PathBuf, HttpError> {
        let url = source.url.as_str();
        let from = self.content_path(&file.digest);
        let to = dest_dir.join(&file.file_name);
        fs::create_dir_all(dest_dir).map_err(io_err(url, "mkdir", dest_dir))?;
        fs::copy(&from, &to).map_err(io_err(url, "copy", &from))?;
        // Times are set through the descriptor, which needs ownership, not write access.
        let out = fs::File::open(&to).map_err(io_err(url, "open", &to))?;
        set_file_meta(source, &out, &to, file.last_modified)?;
        Ok(to)
    }
}

/// A checksum whose content is already here: no request; the name and mtime of its last
/// download from this URL if there was one.
fn known_content(source: &HttpSource, previous: Option<UrlRecord>, sum: &str) -> Resolved {
    let url = source.url.as_str();
    let file = match previous.filter(|r| r.file.digest == *sum) {
        Some(r) => CachedFile {
            file_name: source.filename.clone().unwrap_or(r.file.file_name),
            ..r.file
        },
        None => CachedFile {
            digest: sum.to_string(),
            file_name: source.filename.clone().unwrap_or_else(|| url_name(url)),
            last_modified: None,
        },
    };
    Resolved {
        file,
        downloaded: false,
        requested: false,
    }
}

/// A 304 to a conditional request: the previous download, if it still has the checksum.
fn not_modified(source: &HttpSource, previous: UrlRecord) -> Result<Resolved, HttpError> {
    let file = CachedFile {
        file_name: source.filename.clone().unwrap_or(previous.file.file_name),
        ..previous.file
    };
    if source.checksum.as_ref().is_some_and(|s| *s != file.digest) {
        return Err(HttpError::ChecksumMismatch {
            url: source.url.clone(),
            expected: source.checksum.clone().unwrap_or_default(),
            actual: file.digest,
        });
    }
    Ok(Resolved {
        file,
        downloaded: false,
        requested: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_need_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HttpCache::open(dir.path()).unwrap();
        let file = CachedFile {
            digest: format!("sha256:{}", "a".repeat(64)),
            file_name: "f".into(),
            last_modified: Some(5),
        };
        let rec = UrlRecord {
            url: "http://x/f".into(),
            etag: Some("\"1\"".into()),
            last_modified_header: None,
            file: file.clone(),
        };
        let path = cache.record_path("http://x/f");
        fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(cache.record("http://x/f").is_none(), "content missing");
        fs::write(cache.content_path(&file.digest), b"x").unwrap();
        assert_eq!(cache.record("http://x/f").unwrap().file, file);
        assert!(cache.record("http://x/g").is_none());

        // Content no record names goes; named content stays until `all`.
        let orphan = format!("sha256:{}", "b".repeat(64));
        fs::write(cache.content_path(&orphan), b"yy").unwrap();
        assert_eq!(cache.prune(false), (1, 2));
        assert!(cache.record("http://x/f").is_some());
        let rec_size = fs::metadata(&path).unwrap().len();
        assert_eq!(cache.prune(true), (2, 1 + rec_size));
        assert!(cache.record("http://x/f").is_none());
    }
}
