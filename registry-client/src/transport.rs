//! HTTP transport: TLS with system roots plus per-registry CA files, plain HTTP for loopback and
//! insecure registries, and retries with exponential backoff and jitter.

use crate::error::{Error, NetCause, Result};
use crate::progress::{Notices, RetryNotice};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Environment variable with extra `certs.d`-style directories (colon separated), searched first.
pub const CERTS_DIR_ENV: &str = "KILN_CERTS_DIR";
/// Environment variable with extra insecure registries (comma separated `host:port`).
pub const INSECURE_ENV: &str = "KILN_INSECURE_REGISTRIES";
/// Environment variable with the idle timeout in seconds (`30`, `1.5`, `30s`).
pub const IDLE_TIMEOUT_ENV: &str = "KILN_REGISTRY_IDLE_TIMEOUT";
/// How long a registry may send nothing before kiln gives up on the attempt.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Registries reached without TLS verification, falling back to plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Directories laid out like `/etc/docker/certs.d` (`<host:port>/*.crt`).
    pub certs_dirs: Vec<PathBuf>,
    /// Attempts after the first on 429, 5xx, stalls and transient connection errors.
    pub max_retries: u32,
    /// How long a response may bring no data (headers of a GET, or the next bytes of a
    /// download) before the attempt counts as stalled.
    pub idle_timeout: Duration,
    /// Where "retrying GET … in 1.2 s" notices go.
    pub notices: Notices,
    /// First backoff delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// User-Agent header.
    pub user_agent: String,
}

impl Default for TransportOptions {
    fn default() -> Self {
        let mut certs_dirs: Vec<PathBuf> = std::env::var(CERTS_DIR_ENV)
            .ok()
            .map(|v| {
                v.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        certs_dirs.push(crate::auth::config::config_dir().join("certs.d"));
        certs_dirs.push(PathBuf::from("/etc/docker/certs.d"));
        certs_dirs.push(PathBuf::from("/etc/containers/certs.d"));
        let insecure_registries = std::env::var(INSECURE_ENV)
            .ok()
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        TransportOptions {
            insecure_registries,
            certs_dirs,
            max_retries: 5,
            idle_timeout: std::env::var(IDLE_TIMEOUT_ENV)
                .ok()
                .and_then(|v| parse_seconds(&v))
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
            notices: Notices::default(),
            backoff_base: Duration::from_millis(200),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// One registry host, once we know how to talk to it.
#[derive(Debug)]
pub struct Host {
    /// `host:port` as written in references.
    pub name: String,
    /// `https://host:port` or `http://host:port`.
    pub base: Url,
    /// Client with the right TLS settings for this host.
    pub client: reqwest::Client,
    /// `WWW-Authenticate` of the `/v2/` probe, if it asked for auth.
    pub probe_challenge: Option<String>,
}

impl Host {
    /// Absolute URL of a path or of a (possibly relative) `Location` header.
    pub fn url(&self, path_or_location: &str) -> Result<Url> {
        self.base
            .join(path_or_location)
            .map_err(|e| Error::Protocol {
                registry: self.name.clone(),
                reason: format!("bad URL {path_or_location:?}: {e}"),
            })
    }
}

/// Connections to registries, shared by all operations of a command.
#[derive(Debug)]
pub struct Transport {
    opts: TransportOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    probing: tokio::sync::Mutex<()>,
}

/// Loopback registries get plain HTTP like Docker's default `127.0.0.0/8` insecure range.
pub fn is_loopback(host: &str) -> bool {
    let h = host_without_port(host);
    h == "localhost" || h.starts_with("127.") || h == "::1" || h == "[::1]"
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

impl Transport {
    /// A transport with these options.
    pub fn new(opts: TransportOptions) -> Self {
        Transport {
            opts,
            hosts: Mutex::new(HashMap::new()),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &TransportOptions {
        &self.opts
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.opts.insecure_registries.iter().any(|r| r == host)
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(self.opts.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(16)
    }

    /// CA certificates for `host` from the certs.d directories (`*.crt` files, like Docker).
    fn ca_certs(&self, host: &str) -> Result<Vec<reqwest::Certificate>> {
        let mut out = Vec::new();
        for dir in &self.opts.certs_dirs {
            let d = dir.join(host);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            for f in files {
                let pem = std::fs::read(&f).map_err(|e| Error::Certificate {
                    path: f.clone(),
                    source: e.into(),
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    Error::Certificate {
                        path: f.clone(),
                        source: e.into(),
                    }
                })?;
                out.extend(certs);
            }
        }
        Ok(out)
    }

    fn tls_client(&self, host: &str, verify: bool) -> Result<reqwest::Client> {
        let certs = self.ca_certs(host)?;
        let mut b = self.builder();
        if !certs.is_empty() {
            b = b.tls_certs_merge(certs);
        }
        if !verify {
            b = b.danger_accept_invalid_certs(true);
        }
        b.build()
            .map_err(|e| Error::http(format!("TLS setup for {host}"), e))
    }

    /// The host handle for a registry, probing `/v2/` the first time to pick HTTPS or HTTP.
    pub async fn host(&self, registry: &str) -> Result<Arc<Host>> {
        if let Some(h) = self.cached(registry) {
            return Ok(h);
        }
        // One probe at a time so parallel transfers don't all probe.
        let _guard = self.probing.lock().await;
        if let Some(h) = self.cached(registry) {
            return Ok(h);
        }
        let insecure = self.is_insecure(registry);
        let may_use_http = insecure || is_loopback(registry);
        let https_client = self.tls_client(registry, !insecure)?;
        let https_base = parse_base("https", registry)?;
        // Where plain HTTP is allowed, a failed TLS attempt is not retried: HTTP is tried instead.
        let https_retries = if may_use_http {
            0
        } else {
            self.opts.max_retries
        };
        let first = self
            .probe(&https_client, &https_base, registry, https_retries)
            .await;
        let host = match first {
            Ok(challenge) => Host {
                name: registry.to_string(),
                base: https_base,
                client: https_client,
                probe_challenge: challenge,
            },
            Err(https_err) if may_use_http => {
                let http_client = self
                    .builder()
                    .build()
                    .map_err(|e| Error::http("HTTP client setup", e))?;
                let http_base = parse_base("http", registry)?;
                match self
                    .probe(&http_client, &http_base, registry, self.opts.max_retries)
                    .await
                {
                    Ok(challenge) => Host {
                        name: registry.to_string(),
                        base: http_base,
                        client: http_client,
                        probe_challenge: challenge,
                    },
                    Err(http_err) => return Err(relevant_probe_error(https_err, http_err)),
                }
            }
            Err(e) => return Err(e),
        };
        let host = Arc::new(host);
        if let Ok(mut m) = self.hosts.lock() {
            m.insert(registry.to_string(), host.clone());
        }
        Ok(host)
    }

    fn cached(&self, registry: &str) -> Option<Arc<Host>> {
        self.hosts
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
    }

    async fn probe(
        &self,
        client: &reqwest::Client,
        base: &Url,
        registry: &str,
        retries: u32,
    ) -> Result<Option<String>> {
        let url = base.join("/v2/").map_err(|e| Error::Protocol {
            registry: registry.to_string(),
            reason: e.to_string(),
        })?;
        let resp = self
            .send_with(&format!("contacting registry {registry}"), retries, || {
                Ok(client.get(url.clone()))
            })
            .await?;
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // 200 or 401 means a registry speaks this scheme (401 also says how to authenticate);
        // anything else (e.g. 400 "HTTP request to an HTTPS server") means the scheme is wrong.
        match resp.status() {
            StatusCode::OK => Ok(None),
            StatusCode::UNAUTHORIZED => Ok(challenge),
            // Still failing after the retries: say so with the status, not "not a registry".
            s if is_retryable_status(s) => Err(Error::Registry {
                reference: registry.to_string(),
                registry: registry.to_string(),
                status: s.as_u16(),
                errors: Vec::new(),
            }),
            s => Err(Error::Protocol {
                registry: registry.to_string(),
                reason: format!("{base}v2/ answered {s}; not a registry endpoint"),
            }),
        }
    }

    /// Sends a request, retrying on 429, 5xx and connection errors with backoff (honouring
    /// `Retry-After`). `make` builds a fresh request per attempt.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        self.send_with(what, self.opts.max_retries, make).await
    }

    /// [`Self::send`] with an explicit number of retries. Refused connections, failed lookups
    /// and untrusted certificates are not retried: they fail the same way until someone acts.
    pub async fn send_with(
        &self,
        what: &str,
        max_retries: u32,
        make: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        loop {
            let (client, request) = make()?.build_split();
            let request = request.map_err(|e| Error::http(what, e))?;
            let method = request.method().clone();
            let url = request.url().clone();
            let (cause, wait) = match self.execute(client, request).await {
                Sent::Response(resp)
                    if is_retryable_status(resp.status()) && attempt < max_retries =>
                {
                    let wait = retry_after(&resp).unwrap_or_else(|| self.backoff(attempt));
                    (resp.status().to_string(), wait)
                }
                Sent::Response(resp) => return Ok(resp),
                Sent::Failed(e) => {
                    let cause = NetCause::of(&e);
                    if !cause.is_transient() || attempt >= max_retries {
                        return Err(Error::Http {
                            context: what.to_string(),
                            cause,
                            source: e,
                        });
                    }
                    (cause.to_string(), self.backoff(attempt))
                }
                Sent::Idle if attempt < max_retries => (
                    format!(
                        "no response for {:.1} s",
                        self.opts.idle_timeout.as_secs_f64()
                    ),
                    self.backoff(attempt),
                ),
                Sent::Idle => {
                    return Err(Error::Stalled {
                        registry: host_port(&url),
                        idle: self.opts.idle_timeout,
                        doing: format!("waiting for the response to {method} {url}"),
                        attempts: attempt + 1,
                    })
                }
            };
            attempt += 1;
            self.notify_retry(&method, &url, wait, attempt + 1, max_retries + 1, cause);
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one request; requests without a body or with a small one (starting or
    /// mounting an upload, a manifest) must see their headers within the idle timeout
    /// (large uploads may legitimately take long before the registry answers).
    async fn execute(&self, client: reqwest::Client, request: reqwest::Request) -> Sent {
        let quick = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::DELETE
        ) || request
            .body()
            .is_none_or(|b| b.as_bytes().is_some_and(|b| b.len() <= SMALL_BODY));
        let fut = client.execute(request);
        let result = if quick {
            match tokio::time::timeout(self.opts.idle_timeout, fut).await {
                Ok(r) => r,
                Err(_) => return Sent::Idle,
            }
        } else {
            fut.await
        };
        match result {
            Ok(resp) => Sent::Response(resp),
            Err(e) => Sent::Failed(e),
        }
    }

    /// Tells the user a retry is coming (attempt numbers are 1-based).
    pub fn notify_retry(
        &self,
        method: &Method,
        url: &Url,
        wait: Duration,
        attempt: u32,
        attempts: u32,
        cause: String,
    ) {
        self.opts.notices.retry(&RetryNotice {
            method: method.to_string(),
            url: url.to_string(),
            wait,
            attempt,
            attempts,
            cause,
        });
    }

    /// Backoff before retry number `attempt` (0-based): base * 2^attempt, capped at 10 s, times
    /// a random factor in [0.5, 1.5).
    pub fn backoff(&self, attempt: u32) -> Duration {
        backoff(self.opts.backoff_base, attempt, rand::random::<f64>())
    }
}

/// What one attempt gave.
enum Sent {
    Response(Response),
    Failed(reqwest::Error),
    /// No response headers within the idle timeout.
    Idle,
}

/// `host:port` of a URL, as references write registries.
pub fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    }
}

/// Where HTTPS failed and plain HTTP failed too, the error that tells the user something:
/// the HTTPS one when the server speaks TLS (its certificate was refused, or it answered our
/// plain request with 400), else the plain-HTTP one (e.g. the 503 of an HTTP-only registry).
fn relevant_probe_error(https: Error, http: Error) -> Error {
    let server_speaks_tls = matches!(
        &https,
        Error::Http {
            cause: NetCause::Certificate(_) | NetCause::Tls(_),
            ..
        }
    );
    let plain_answered_400 =
        matches!(&http, Error::Protocol { reason, .. } if reason.contains(" answered 400 "));
    if server_speaks_tls || plain_answered_400 {
        https
    } else {
        http
    }
}

/// Seconds as `30`, `1.5` or `30s`; `None` for anything else (or zero, or over a day).
pub fn parse_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    let n: f64 = v.strip_suffix('s').unwrap_or(v).trim().parse().ok()?;
    (n > 0.0 && n <= 86_400.0).then(|| Duration::from_secs_f64(n))
}

fn parse_base(scheme: &str, registry: &str) -> Result<Url> {
    Url::parse(&format!("{scheme}://{registry}")).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: format!("bad registry address: {e}"),
    })
}

/// Pure backoff computation (`jitter` in [0,1)).
pub fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(Duration::from_secs(10));
    capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// Request bodies up to this size are sent at once, so their answer is bounded by the
/// idle timeout like a GET's (a manifest is well below it).
const SMALL_BODY: usize = 1 << 20;

/// Statuses worth retrying.
pub fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::BAD_GATEWAY
        || s == StatusCode::SERVICE_UNAVAILABLE
        || s == StatusCode::GATEWAY_TIMEOUT
        || s == StatusCode::INTERNAL_SERVER_ERROR
}

/// Transport errors worth retrying: resets and timeouts, not refused connections, failed
/// lookups or untrusted certificates.
pub fn is_retryable_error(e: &reqwest::Error) -> bool {
    NetCause::of(e).is_transient()
}

/// `Retry-After` in seconds (HTTP dates are rare from registries; capped at 60 s).
pub fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?,
    )
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 0, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(b, 3, 0.5), Duration::from_millis(800));
        assert_eq!(backoff(b, 30, 0.5), Duration::from_secs(10));
        assert!(backoff(b, 2, 0.0) < backoff(b, 2, 0.99));
    }

    #[test]
    fn retry_after_and_statuses() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("9999"), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
        assert!(!is_retryable_status(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn idle_timeout_values() {
        assert_eq!(parse_seconds("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_seconds(" 1.5s "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("0"), None);
        assert_eq!(parse_seconds("-3"), None);
        assert_eq!(parse_seconds("10m"), None);
    }

    #[test]
    fn probe_error_of_the_scheme_the_server_speaks() {
        let protocol = |status: &str| Error::Protocol {
            registry: "h:1".into(),
            reason: format!("http://h:1/v2/ answered {status}; not a registry endpoint"),
        };
        let unavailable = Error::Registry {
            reference: "h:1".into(),
            registry: "h:1".into(),
            status: 503,
            errors: vec![],
        };
        // A TLS server answers plain HTTP with 400: its HTTPS error is the one to show.
        let https = Error::Protocol {
            registry: "h:1".into(),
            reason: "https".into(),
        };
        let picked = relevant_probe_error(https, protocol("400 Bad Request"));
        assert!(picked.to_string().contains("https"), "{picked}");
        // A plain-HTTP registry that is down: its 503, not the failed TLS handshake.
        let https = Error::Protocol {
            registry: "h:1".into(),
            reason: "https".into(),
        };
        assert_eq!(relevant_probe_error(https, unavailable).status(), Some(503));
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn bad_ca_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("h:1")).unwrap();
        std::fs::write(d.path().join("h:1/ca.crt"), "not a cert").unwrap();
        let t = Transport::new(TransportOptions {
            certs_dirs: vec![d.path().to_path_buf()],
            ..TransportOptions::default()
        });
        // from_pem_bundle of garbage yields either an error or no certs; both must not panic.
        match t.ca_certs("h:1") {
            Ok(c) => assert!(c.is_empty()),
            Err(e) => assert!(e.to_string().contains("ca.crt")),
        }
    }
}
