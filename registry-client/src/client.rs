//! The registry client: authenticated distribution-API requests (manifests, blobs, uploads,
//! mounts) on top of the transport.

use crate::auth::challenge::{self, Challenge};
use crate::auth::config::DockerConfig;
use crate::auth::token::{self, TokenCache};
use crate::auth::Credentials;
use crate::error::{parse_error_body, Error, NetCause, Result};
use crate::transport::{Host, Transport, TransportOptions};
use futures_util::StreamExt;
use kiln_oci::media_type::MANIFEST_ACCEPT;
use kiln_oci::Descriptor;
use kiln_oci::Reference;
use kiln_oci::{Digest, Verifier};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
pub(crate) const MAX_MANIFEST: usize = 4 << 20;
/// Blobs up to this size are uploaded in one PUT.
const MONOLITHIC_MAX: u64 = 8 << 20;
/// Read size when streaming a file into an upload.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Access wanted on repositories; becomes the token `scope`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Pull access to one repository.
    pub fn pull(repo: &str) -> Self {
        Scope(vec![format!("repository:{repo}:pull")])
    }

    /// Pull and push access to one repository, plus pull on mount sources.
    pub fn push(repo: &str, mount_from: &[&str]) -> Self {
        let mut v = vec![format!("repository:{repo}:pull,push")];
        for m in mount_from {
            if *m != repo {
                v.push(format!("repository:{m}:pull"));
            }
        }
        Scope(v)
    }

    fn key(&self) -> String {
        self.0.join(" ")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: TokenCache,
    creds: Option<Option<Credentials>>,
}

/// What happened to one blob on push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The registry already had it.
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Pushed,
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Raw bytes (the digest is over these).
    pub bytes: Vec<u8>,
    /// Content-Type the registry sent.
    pub content_type: Option<String>,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// Talks to registries; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    docker_config: Mutex<Option<DockerConfig>>,
    static_creds: HashMap<String, Credentials>,
    auth: Mutex<HashMap<String, Arc<tokio::sync::Mutex<AuthState>>>>,
}

impl RegistryClient {
    /// A client reading credentials from Docker's config.json.
    pub fn new(opts: TransportOptions) -> Self {
        Self::with_credentials(opts, HashMap::new())
    }

    /// A client with explicit credentials per registry, taking precedence over config.json.
    pub fn with_credentials(opts: TransportOptions, creds: HashMap<String, Credentials>) -> Self {
        RegistryClient {
            inner: Arc::new(Inner {
                transport: Transport::new(opts),
                docker_config: Mutex::new(None),
                static_creds: creds,
                auth: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The transport (for its options).
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    fn state(&self, registry: &str) -> Arc<tokio::sync::Mutex<AuthState>> {
        let mut m = match self.inner.auth.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(registry.to_string()).or_default().clone()
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let hub = kiln_oci::reference::DOCKER_HUB;
        let alias = if registry == kiln_oci::reference::DOCKER_HUB_API {
            Some(hub)
        } else {
            None
        };
        if let Some(c) = self
            .inner
            .static_creds
            .get(registry)
            .or_else(|| alias.and_then(|a| self.inner.static_creds.get(a)))
        {
            return Ok(Some(c.clone()));
        }
        let mut cfg = match self.inner.docker_config.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if cfg.is_none() {
            *cfg = Some(DockerConfig::load_default()?);
        }
        match cfg.as_ref() {
            Some(c) => c.credentials(registry),
            None => Ok(None),
        }
    }

    /// The Authorization header for `scope`, fetching a token when needed.
    async fn authorization(
        &self,
        host: &Host,
        scope: &Scope,
        refresh: bool,
    ) -> Result<Option<String>> {
        let state = self.state(&host.name);
        let mut st = state.lock().await;
        if st.challenge.is_none() {
            st.challenge = host.probe_challenge.as_deref().and_then(challenge::parse);
        }
        let Some(ch) = st.challenge.clone() else {
            return Ok(None);
        };
        if st.creds.is_none() {
            st.creds = Some(self.credentials(&host.name)?);
        }
        let creds = st.creds.clone().flatten();
        match ch {
            Challenge::Basic => Ok(creds.map(|c| c.basic_header())),
            Challenge::Bearer { realm, service, .. } => {
                let key = scope.key();
                if refresh {
                    st.tokens.forget(&key);
                }
                if let Some(t) = st.tokens.get(&key) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                // The exchange is small: a token server that stays silent this long is stalled.
                let idle = self.inner.transport.options().idle_timeout;
                let fetch = token::fetch(
                    &host.client,
                    &host.name,
                    &realm,
                    service.as_deref(),
                    &scope.0,
                    creds.as_ref(),
                );
                let t = tokio::time::timeout(idle, fetch)
                    .await
                    .map_err(|_| Error::Stalled {
                        registry: Url::parse(&realm)
                            .map(|u| crate::transport::host_port(&u))
                            .unwrap_or_else(|_| realm.clone()),
                        idle,
                        doing: format!("fetching a token for {} from {realm}", host.name),
                        attempts: 1,
                    })??;
                let header = format!("Bearer {}", t.value);
                st.tokens.put(&key, t);
                Ok(Some(header))
            }
        }
    }

    /// Sends an authenticated request with retries; on 401 re-authenticates once.
    /// `what` names the reference for errors.
    pub(crate) async fn request(
        &self,
        registry: &str,
        what: &str,
        scope: &Scope,
        make: impl Fn(&Host) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let host = self
            .inner
            .transport
            .host(registry)
            .await
            .map_err(|e| e.about(what))?;
        let mut auth = self.authorization(&host, scope, false).await?;
        let mut scope = scope.clone();
        let scope = &mut scope;
        for round in 0..2 {
            let resp = self
                .inner
                .transport
                .send(what, || {
                    let mut rb = make(&host)?;
                    if let Some(a) = &auth {
                        rb = rb.header(AUTHORIZATION, a);
                    }
                    Ok(rb)
                })
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || round == 1 {
                return self
                    .auth_error(resp, &host, what, scope, auth.is_some())
                    .await;
            }
            // Learn the challenge (it may have changed or come with a scope) and try again.
            if let Some(ch) = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(challenge::parse)
            {
                // The registry may name a scope we did not ask for (e.g. a mount source): widen.
                if let Challenge::Bearer {
                    scope: Some(wanted),
                    ..
                } = &ch
                {
                    for s in wanted.split(' ') {
                        if !s.is_empty() && !scope.0.iter().any(|have| have == s) {
                            scope.0.push(s.to_string());
                        }
                    }
                }
                let state = self.state(&host.name);
                state.lock().await.challenge = Some(ch);
            }
            let fresh = self.authorization(&host, scope, true).await?;
            if fresh.is_none() {
                return self.auth_error(resp, &host, what, scope, false).await;
            }
            auth = fresh;
        }
        Err(Error::Protocol {
            registry: registry.to_string(),
            reason: "authentication loop".into(),
        })
    }

    /// Turns 401/403 into a clear `Error::Auth`; passes other responses through.
    async fn auth_error(
        &self,
        resp: Response,
        host: &Host,
        what: &str,
        scope: &Scope,
        had_auth: bool,
    ) -> Result<Response> {
        let status = resp.status();
        if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let entries = parse_error_body(&body);
        let code = entries
            .first()
            .map(|e| e.code.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| {
                if status == StatusCode::FORBIDDEN {
                    "DENIED"
                } else {
                    "UNAUTHORIZED"
                }
                .to_string()
            });
        let user = self
            .credentials(&host.name)
            .ok()
            .flatten()
            .map(|c| c.username);
        // How to log in is the CLI's to say (it knows its own commands): `anonymous` tells it.
        let (message, anonymous) = match (had_auth, user) {
            (false, _) => ("authentication required".to_string(), true),
            (true, Some(u)) => (
                format!(
                    "access denied for user {u:?} (wrong password, or the scope was not granted)"
                ),
                false,
            ),
            (true, None) => ("anonymous access denied".to_string(), true),
        };
        Err(Error::Auth {
            reference: what.to_string(),
            registry: host.name.clone(),
            code,
            message,
            scope: scope.to_string(),
            anonymous,
        })
    }

    pub(crate) async fn expect(
        resp: Response,
        registry: &str,
        what: &str,
        ok: &[StatusCode],
    ) -> Result<Response> {
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Registry {
            reference: what.to_string(),
            registry: registry.to_string(),
            status,
            errors: parse_error_body(&body),
        })
    }

    /// Reads a small body (manifest, tag list) whole; a body that stops for the idle
    /// timeout fails as stalled rather than waiting for the connection's read timeout.
    pub(crate) async fn read_limited(
        &self,
        resp: Response,
        limit: usize,
        registry: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        let idle = self.inner.transport.options().idle_timeout;
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(out),
                Err(_) => {
                    return Err(Error::Stalled {
                        registry: registry.to_string(),
                        idle,
                        doing: format!("reading {what}"),
                        attempts: 1,
                    })
                }
            };
            let c = chunk.map_err(|e| Error::http(format!("reading {what}"), e))?;
            if out.len() + c.len() > limit {
                return Err(Error::Protocol {
                    registry: registry.to_string(),
                    reason: format!("{what}: response larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&c);
        }
    }

    /// Checks that the configured credentials work for `registry` (what `docker login` does):
    /// `/v2/` must answer 200 once authenticated.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let host = kiln_oci::reference::api_host(registry);
        let resp = self
            .request(host, registry, &Scope(Vec::new()), |h| {
                Ok(h.client.get(h.url("/v2/")?))
            })
            .await?;
        Self::expect(resp, registry, registry, &[StatusCode::OK]).await?;
        Ok(())
    }

    /// GET a manifest (by tag or digest); verifies it against the digest when pinned.
    pub async fn get_manifest(&self, r: &Reference) -> Result<FetchedManifest> {
        self.get_manifest_as(r, &r.manifest_ref()).await
    }

    /// GET a manifest of `r`'s repository by tag or digest string.
    pub async fn get_manifest_as(&self, r: &Reference, reference: &str) -> Result<FetchedManifest> {
        let what = r.to_string();
        let path = format!("/v2/{}/manifests/{}", r.repository(), reference);
        let resp = self
            .request(r.api_host(), &what, &Scope::pull(r.repository()), |h| {
                Ok(h.client.get(h.url(&path)?).header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        let resp = Self::expect(resp, r.registry(), &what, &[StatusCode::OK]).await?;
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let bytes = self
            .read_limited(resp, MAX_MANIFEST, r.registry(), &what)
            .await?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = Digest::parse(reference) {
            if expected != digest {
                return Err(Error::Oci(kiln_oci::Error::Verification {
                    what: format!("manifest {what}"),
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                }));
            }
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// HEAD a manifest: its digest, size and media type, or `None` when unknown.
    pub async fn head_manifest(&self, r: &Reference) -> Result<Option<(Digest, u64, String)>> {
        let what = r.to_string();
        let path = format!("/v2/{}/manifests/{}", r.repository(), r.manifest_ref());
        let resp = self
            .request(r.api_host(), &what, &Scope::pull(r.repository()), |h| {
                Ok(h.client.head(h.url(&path)?).header(ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = Self::expect(resp, r.registry(), &what, &[StatusCode::OK]).await?;
        let h = resp.headers();
        let digest = header_str(h, "docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        let size = header_str(h, CONTENT_LENGTH.as_str()).and_then(|s| s.parse().ok());
        let mt = header_str(h, CONTENT_TYPE.as_str()).unwrap_or_default();
        match (digest, size) {
            (Some(d), Some(s)) => Ok(Some((d, s, mt))),
            // Some registries omit the digest on HEAD: fall back to GET.
            _ => {
                let m = self.get_manifest(r).await?;
                Ok(Some((
                    m.digest,
                    m.bytes.len() as u64,
                    m.content_type.unwrap_or_default(),
                )))
            }
        }
    }

    /// PUT a manifest under `r`'s tag (or digest). Returns the digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let what = r.to_string();
        let path = format!("/v2/{}/manifests/{}", r.repository(), r.manifest_ref());
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .request(
                r.api_host(),
                &what,
                &Scope::push(r.repository(), &[]),
                |h| {
                    Ok(h.client
                        .put(h.url(&path)?)
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone()))
                },
            )
            .await?;
        Self::expect(
            resp,
            r.registry(),
            &what,
            &[StatusCode::CREATED, StatusCode::OK],
        )
        .await?;
        Ok(Digest::of(bytes))
    }

    /// Whether the repository has a blob (HEAD).
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest, scope: &Scope) -> Result<bool> {
        let what = format!("{}@{}", r.name(), digest);
        let path = format!("/v2/{}/blobs/{}", r.repository(), digest);
        let resp = self
            .request(r.api_host(), &what, scope, |h| {
                Ok(h.client.head(h.url(&path)?))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Self::expect(resp, r.registry(), &what, &[])
                .await
                .map(|_| false),
        }
    }

    /// GETs a blob into `dest`, hashing while streaming; resumes with `Range` after a broken
    /// connection. On a digest or size mismatch `dest` is removed and an error returned, so a
    /// tampered or truncated blob never reaches the store.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let result = self.fetch_blob_inner(r, desc, dest, on_bytes).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    async fn fetch_blob_inner(
        &self,
        r: &Reference,
        desc: &Descriptor,
        dest: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let what = format!("{}@{}", r.name(), desc.digest);
        let path = format!("/v2/{}/blobs/{}", r.repository(), desc.digest);
        let file = std::fs::File::create(dest)
            .map_err(|e| Error::io(format!("writing {}", dest.display()), e))?;
        // Hashing and writing run on a blocking thread fed through a bounded channel, so the
        // network, the hash and the disk overlap; memory stays at a few chunks.
        let (tx, rx) = tokio::sync::mpsc::channel::<SinkMsg>(32);
        let writer = tokio::task::spawn_blocking(move || blob_sink(file, rx));
        let received = self
            .receive_blob(r, desc, &what, &path, &tx, on_bytes)
            .await;
        drop(tx);
        let written = writer
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        // A failed write (a full disk) stops the writer and the download then fails on the
        // closed channel: the write error is the cause worth reporting.
        let verifier = match (received, written) {
            (_, Err(e)) => return Err(Error::io(format!("writing {}", dest.display()), e)),
            (Err(e), Ok(_)) => return Err(e),
            (Ok(()), Ok(v)) => v,
        };
        Ok(verifier.verify(&format!("blob {what}"), &desc.digest, Some(desc.size))?)
    }

    /// Streams the blob into the sink, resuming with `Range` after a broken or stalled
    /// connection. Attempts that bring no new byte are bounded by `max_retries`; attempts that
    /// do are bounded by the blob's size (each one moves it forward) and a hard cap.
    async fn receive_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        what: &str,
        path: &str,
        tx: &tokio::sync::mpsc::Sender<SinkMsg>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let opts = self.inner.transport.options();
        let (max, idle) = (opts.max_retries, opts.idle_timeout);
        let most_attempts = (max + 1).saturating_mul(4);
        let mut dl = Download {
            desc,
            what,
            tx,
            on_bytes,
            received: 0,
        };
        let (mut fruitless, mut attempts) = (0u32, 0u32);
        loop {
            let offset = dl.received;
            attempts += 1;
            let resp = self.get_blob_from(r, what, path, offset).await?;
            let url = resp.url().clone();
            if offset > 0 && resp.status() == StatusCode::OK {
                // The server ignored Range: start over.
                tx.send(SinkMsg::Reset).await.map_err(|_| dl.sink_gone())?;
                dl.received = 0;
            }
            let Some(broken) = dl.stream(resp, idle).await? else {
                return Ok(());
            };
            fruitless = if dl.received > offset {
                0
            } else {
                fruitless + 1
            };
            let cause = match &broken {
                Broken::Idle => format!("no data for {:.1} s", idle.as_secs_f64()),
                Broken::Net(e) => NetCause::of(e).to_string(),
            };
            let retry = fruitless <= max
                && attempts < most_attempts
                && match &broken {
                    Broken::Idle => true,
                    Broken::Net(e) => NetCause::of(e).is_transient(),
                };
            if !retry {
                return Err(match broken {
                    Broken::Idle => Error::Stalled {
                        registry: r.registry().to_string(),
                        idle,
                        doing: format!("downloading {}", desc.digest),
                        attempts,
                    },
                    Broken::Net(e) => Error::http(format!("downloading {what}"), e),
                });
            }
            let wait = self.inner.transport.backoff(fruitless);
            self.inner.transport.notify_retry(
                &Method::GET,
                &url,
                wait,
                attempts + 1,
                attempts + 1 + max - fruitless,
                cause,
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// GETs a blob from byte `offset` on (a `Range` request past the start).
    async fn get_blob_from(
        &self,
        r: &Reference,
        what: &str,
        path: &str,
        offset: u64,
    ) -> Result<Response> {
        let resp = self
            .request(r.api_host(), what, &Scope::pull(r.repository()), |h| {
                let mut rb = h.client.get(h.url(path)?);
                if offset > 0 {
                    rb = rb.header(RANGE, format!("bytes={offset}-"));
                }
                Ok(rb)
            })
            .await?;
        Self::expect(
            resp,
            r.registry(),
            what,
            &[StatusCode::OK, StatusCode::PARTIAL_CONTENT],
        )
        .await
    }

    /// Pushes one blob read from `open()` (a fresh handle per attempt): HEAD first, then a
    /// cross-repo mount from `mount_from` when given, else a streamed upload that resumes from
    /// the registry's reported range after a broken connection.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        open: &(dyn Fn() -> std::io::Result<std::fs::File> + Send + Sync),
        mount_from: Option<&str>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<UploadOutcome> {
        let mounts: Vec<&str> = mount_from.into_iter().collect();
        let scope = Scope::push(r.repository(), &mounts);
        if self.blob_exists(r, &desc.digest, &scope).await? {
            return Ok(UploadOutcome::Exists);
        }
        let what = format!("{}@{}", r.name(), desc.digest);
        let max = self.inner.transport.options().max_retries;
        let mut restarts = 0u32;
        loop {
            // Start (or mount).
            let mut post = format!("/v2/{}/blobs/uploads/", r.repository());
            if let Some(from) = mount_from.filter(|f| *f != r.repository()) {
                post.push_str(&format!("?mount={}&from={}", desc.digest, from));
            }
            let resp = self
                .request(r.api_host(), &what, &scope, |h| {
                    Ok(h.client.post(h.url(&post)?).header(CONTENT_LENGTH, "0"))
                })
                .await?;
            let resp = Self::expect(
                resp,
                r.registry(),
                &what,
                &[StatusCode::CREATED, StatusCode::ACCEPTED],
            )
            .await?;
            if resp.status() == StatusCode::CREATED {
                on_bytes(desc.size);
                return Ok(UploadOutcome::Mounted);
            }
            let location = location(&resp, r.registry())?;
            match self
                .upload_session(r, desc, open, &scope, &what, location, on_bytes)
                .await
            {
                Ok(()) => return Ok(UploadOutcome::Pushed),
                Err(e) if restarts < max && is_transient(&e) => {
                    let wait = self.inner.transport.backoff(restarts);
                    restarts += 1;
                    let host = self.inner.transport.host(r.api_host()).await?;
                    self.inner.transport.notify_retry(
                        &Method::POST,
                        &host.url(&post)?,
                        wait,
                        restarts + 1,
                        max + 1,
                        e.to_string(),
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_session(
        &self,
        r: &Reference,
        desc: &Descriptor,
        open: &(dyn Fn() -> std::io::Result<std::fs::File> + Send + Sync),
        scope: &Scope,
        what: &str,
        location: String,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let host = self.inner.transport.host(r.api_host()).await?;
        let mut up = BlobUpload {
            r,
            desc,
            open,
            scope,
            what,
            host: &host,
            on_bytes,
            location,
            offset: 0,
            reported: 0,
            resumes: 0,
        };
        if desc.size <= MONOLITHIC_MAX {
            return self.upload_whole(&up).await;
        }
        if !self.upload_patches(&mut up).await? {
            return Ok(());
        }
        let url = with_digest(host.url(&up.location)?, &desc.digest);
        let resp = self
            .request(r.api_host(), what, scope, |_| {
                Ok(host.client.put(url.clone()).header(CONTENT_LENGTH, "0"))
            })
            .await?;
        Self::expect(resp, r.registry(), what, &[StatusCode::CREATED]).await?;
        Ok(())
    }

    /// A small blob: read whole and sent in the closing PUT.
    async fn upload_whole(&self, up: &BlobUpload<'_>) -> Result<()> {
        let (r, host, size) = (up.r, up.host, up.desc.size);
        let mut data = Vec::with_capacity(size as usize);
        up.open_at(0)?
            .read_to_end(&mut data)
            .map_err(|e| Error::io(format!("reading blob {}", up.desc.digest), e))?;
        let body = bytes::Bytes::from(data);
        let url = with_digest(host.url(&up.location)?, &up.desc.digest);
        let resp = self
            .request(r.api_host(), up.what, up.scope, |_| {
                Ok(host
                    .client
                    .put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone()))
            })
            .await?;
        Self::expect(resp, r.registry(), up.what, &[StatusCode::CREATED]).await?;
        (up.on_bytes)(size);
        Ok(())
    }

    /// A large blob: streamed in PATCH requests, each resuming from the offset the registry
    /// confirms after a stall, a transient failure or an expired token. False when the
    /// upload ended without the closing PUT.
    async fn upload_patches(&self, up: &mut BlobUpload<'_>) -> Result<bool> {
        let size = up.desc.size;
        while up.offset < size {
            let (sent, streamed, patch_url) = self.send_patch(up).await?;
            let fresh = (up.offset + streamed).saturating_sub(up.reported);
            let stalled = sent.is_none();
            let retry = match self.patch_outcome(up, sent, fresh).await? {
                PatchOutcome::Next => None,
                PatchOutcome::Retry(after, cause) => Some((after, cause)),
                PatchOutcome::Stop => return Ok(false),
            };
            if let Some((after, cause)) = retry {
                up.resumes += 1;
                let wait = after.unwrap_or_else(|| self.inner.transport.backoff(up.resumes));
                self.inner.transport.notify_retry(
                    &Method::PATCH,
                    &patch_url,
                    wait,
                    up.resumes + 1,
                    self.inner.transport.options().max_retries + 1,
                    cause,
                );
                tokio::time::sleep(wait).await;
                (up.location, up.offset) = self
                    .upload_status(up.host, up.r, up.scope, up.what, &up.location)
                    .await?;
                // After a stall the confirmed offset is reported with the next PATCH, as before.
                if stalled {
                    continue;
                }
            }
            if up.offset > up.reported && up.offset < size {
                (up.on_bytes)(up.offset - up.reported);
                up.reported = up.offset;
            }
        }
        Ok(true)
    }

    /// Sends the blob from the upload's offset in one PATCH, watched for stalls: the
    /// response (none when the registry stopped taking data), the bytes streamed and the URL.
    async fn send_patch(
        &self,
        up: &BlobUpload<'_>,
    ) -> Result<(Option<reqwest::Result<Response>>, u64, Url)> {
        let (size, offset) = (up.desc.size, up.offset);
        let idle = self.inner.transport.options().idle_timeout;
        let auth = self.authorization(up.host, up.scope, false).await?;
        let file = up.open_at(offset)?;
        let url = up.host.url(&up.location)?;
        let patch_url = url.clone();
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut rb = up
            .host
            .client
            .patch(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, (size - offset).to_string())
            .body(reqwest::Body::wrap_stream(file_stream(
                file,
                counter.clone(),
            )));
        if offset > 0 {
            rb = rb.header("Content-Range", format!("{}-{}", offset, size - 1));
        }
        if let Some(a) = &auth {
            rb = rb.header(AUTHORIZATION, a);
        }
        let sent = watch_upload(rb.send(), &counter, size - offset, idle).await;
        let streamed = counter.load(std::sync::atomic::Ordering::Relaxed);
        Ok((sent, streamed, patch_url))
    }

    /// What one PATCH's response means for the upload; `fresh` is what it streamed beyond
    /// what was reported. A retry waits the registry's Retry-After (if any) or the backoff,
    /// naming its cause.
    async fn patch_outcome(
        &self,
        up: &mut BlobUpload<'_>,
        sent: Option<reqwest::Result<Response>>,
        fresh: u64,
    ) -> Result<PatchOutcome> {
        let (r, size, what) = (up.r, up.desc.size, up.what);
        let max = self.inner.transport.options().max_retries;
        let idle = self.inner.transport.options().idle_timeout;
        Ok(match sent {
            // The registry stopped taking data: ask where it stands and go on from there.
            None if up.resumes < max => PatchOutcome::Retry(
                None,
                format!("no data taken for {:.1} s", idle.as_secs_f64()),
            ),
            None => {
                return Err(Error::Stalled {
                    registry: r.registry().to_string(),
                    idle,
                    doing: format!("uploading {} (it stopped reading)", up.desc.digest),
                    attempts: up.resumes + 1,
                })
            }
            // Report progress as the registry confirms it; bytes sent into a broken connection are re-sent.
            Some(Ok(resp))
                if resp.status() == StatusCode::ACCEPTED
                    || resp.status() == StatusCode::NO_CONTENT =>
            {
                (up.on_bytes)(fresh.min(size - up.reported));
                up.reported = size;
                up.location = location_or(&resp, &up.location);
                up.offset = size;
                PatchOutcome::Next
            }
            Some(Ok(resp)) if resp.status() == StatusCode::UNAUTHORIZED => {
                self.authorization(up.host, up.scope, true).await?;
                if up.resumes >= max {
                    self.auth_error(resp, up.host, what, up.scope, true).await?;
                    return Ok(PatchOutcome::Stop);
                }
                up.resumes += 1;
                (up.location, up.offset) = self
                    .upload_status(up.host, r, up.scope, what, &up.location)
                    .await?;
                PatchOutcome::Next
            }
            Some(Ok(resp))
                if crate::transport::is_retryable_status(resp.status()) && up.resumes < max =>
            {
                PatchOutcome::Retry(
                    crate::transport::retry_after(&resp),
                    resp.status().to_string(),
                )
            }
            Some(Ok(resp)) => {
                Self::expect(resp, r.registry(), what, &[]).await?;
                PatchOutcome::Next
            }
            Some(Err(e)) if up.resumes < max && NetCause::of(&e).is_transient() => {
                PatchOutcome::Retry(None, NetCause::of(&e).to_string())
            }
            Some(Err(e)) => return Err(Error::http(format!("uploading {what}"), e)),
        })
    }

    /// Asks where an upload stands: the new location and the next offset to send.
    async fn upload_status(
        &self,
        host: &Host,
        r: &Reference,
        scope: &Scope,
        what: &str,
        location: &str,
    ) -> Result<(String, u64)> {
        let url = host.url(location)?;
        let resp = self
            .request(r.api_host(), what, scope, |_| {
                Ok(host.client.get(url.clone()))
            })
            .await?;
        let resp = Self::expect(
            resp,
            r.registry(),
            what,
            &[StatusCode::NO_CONTENT, StatusCode::OK],
        )
        .await?;
        let next = header_str(resp.headers(), RANGE.as_str())
            .and_then(|r| parse_range_end(&r))
            .map(|end| end + 1)
            .unwrap_or(0);
        Ok((location_or(&resp, location), next))
    }

    /// Lists the tags of a repository.
    pub async fn list_tags(&self, r: &Reference) -> Result<Vec<String>> {
        let what = r.name();
        let path = format!("/v2/{}/tags/list", r.repository());
        let resp = self
            .request(r.api_host(), &what, &Scope::pull(r.repository()), |h| {
                Ok(h.client.get(h.url(&path)?))
            })
            .await?;
        let resp = Self::expect(resp, r.registry(), &what, &[StatusCode::OK]).await?;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let body = self
            .read_limited(resp, MAX_MANIFEST, r.registry(), &what)
            .await?;
        let t: Tags = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            registry: r.registry().to_string(),
            reason: format!("bad tag list: {e}"),
        })?;
        Ok(t.tags.unwrap_or_default())
    }

    /// Deletes a manifest by digest (registries with delete enabled).
    pub async fn delete_manifest(&self, r: &Reference, digest: &Digest) -> Result<()> {
        let what = r.to_string();
        let path = format!("/v2/{}/manifests/{}", r.repository(), digest);
        let resp = self
            .request(
                r.api_host(),
                &what,
                &Scope(vec![format!("repository:{}:delete", r.repository())]),
                |h| Ok(h.client.request(Method::DELETE, h.url(&path)?)),
            )
            .await?;
        Self::expect(
            resp,
            r.registry(),
            &what,
            &[StatusCode::ACCEPTED, StatusCode::OK],
        )
        .await?;
        Ok(())
    }
}

/// One blob upload session: where it goes, where the registry has it, what was reported.
struct BlobUpload<'a> {
    r: &'a Reference,
    desc: &'a Descriptor,
    /// Opens the blob's file.
    open: &'a (dyn Fn() -> std::io::Result<std::fs::File> + Send + Sync),
    scope: &'a Scope,
    what: &'a str,
    host: &'a Host,
    on_bytes: &'a (dyn Fn(u64) + Send + Sync),
    /// The session's URL, as the registry last gave it.
    location: String,
    /// The next byte to send.
    offset: u64,
    /// Bytes reported through `on_bytes` so far.
    reported: u64,
    /// Resumes so far (bounded by `max_retries`).
    resumes: u32,
}

impl BlobUpload<'_> {
    /// The blob's file, positioned at `offset`.
    fn open_at(&self, offset: u64) -> Result<std::fs::File> {
        let mut f = (self.open)()
            .map_err(|e| Error::io(format!("reading blob {}", self.desc.digest), e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(format!("reading blob {}", self.desc.digest), e))?;
        Ok(f)
    }
}

/// What to do after one PATCH of an upload.
enum PatchOutcome {
    /// Go on from the upload's (updated) offset.
    Next,
    /// Wait (the registry's Retry-After, else the backoff), ask where the upload stands,
    /// go on from there; the cause names why.
    Retry(Option<std::time::Duration>, String),
    /// End the upload without the closing PUT (what `auth_error` lets through).
    Stop,
}

/// Sends an upload, giving up (`None`) when its body stops moving for `idle` before all of
/// `body_len` bytes went out: a registry that stops reading would otherwise hold the upload
/// forever (there is no write timeout). Once the body is out, the answer is awaited under
/// the client's read timeout.
async fn watch_upload(
    send: impl std::future::Future<Output = reqwest::Result<Response>>,
    counter: &std::sync::atomic::AtomicU64,
    body_len: u64,
    idle: std::time::Duration,
) -> Option<reqwest::Result<Response>> {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(50)));
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    tokio::pin!(send);
    loop {
        tokio::select! {
            sent = &mut send => return Some(sent),
            _ = tick.tick() => {
                let now = counter.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, tokio::time::Instant::now());
                } else if now < body_len && since.elapsed() >= idle {
                    return None;
                }
            }
        }
    }
}

/// A blob download's sink: where its bytes go and what they must add up to.
struct Download<'a> {
    desc: &'a Descriptor,
    what: &'a str,
    tx: &'a tokio::sync::mpsc::Sender<SinkMsg>,
    on_bytes: &'a (dyn Fn(u64) + Send + Sync),
    /// Bytes sent to the sink so far.
    received: u64,
}

impl Download<'_> {
    /// The error when the writer has stopped taking data.
    fn sink_gone(&self) -> Error {
        Error::io(
            format!("writing blob {}", self.what),
            std::io::Error::other("writer stopped"),
        )
    }

    /// Sends a response's body to the sink until it ends (`None`) or breaks; more bytes
    /// than the descriptor's size is an error.
    async fn stream(
        &mut self,
        resp: Response,
        idle: std::time::Duration,
    ) -> Result<Option<Broken>> {
        let mut stream = resp.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Ok(Some(Broken::Idle)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Ok(Some(Broken::Net(e))),
                Ok(Some(Ok(c))) => c,
            };
            if self.received + chunk.len() as u64 > self.desc.size {
                return Err(Error::Oci(kiln_oci::Error::Verification {
                    what: format!("blob {}", self.what),
                    expected: format!("{} bytes", self.desc.size),
                    actual: "more bytes".into(),
                }));
            }
            let n = chunk.len() as u64;
            self.received += n;
            self.tx
                .send(SinkMsg::Data(chunk))
                .await
                .map_err(|_| self.sink_gone())?;
            (self.on_bytes)(n);
        }
    }
}

/// Why a download stopped before its end.
enum Broken {
    /// No bytes within the idle timeout.
    Idle,
    /// The connection failed.
    Net(reqwest::Error),
}

/// What the blob writer thread receives.
enum SinkMsg {
    /// More content.
    Data(bytes::Bytes),
    /// Discard everything so far (the server restarted from byte 0).
    Reset,
}

/// Hashes and writes chunks until the channel closes, then fsyncs; returns the verifier.
fn blob_sink(
    file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<SinkMsg>,
) -> std::io::Result<Verifier> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut verifier = Verifier::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            SinkMsg::Data(c) => {
                verifier.update(&c);
                out.write_all(&c)?;
            }
            SinkMsg::Reset => {
                out.flush()?;
                let f = out.get_mut();
                f.set_len(0)?;
                f.seek(SeekFrom::Start(0))?;
                verifier = Verifier::new();
            }
        }
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(verifier)
}

fn is_transient(e: &Error) -> bool {
    match e {
        Error::Http { cause, .. } => cause.is_transient(),
        Error::Stalled { .. } => true,
        Error::Registry { status, .. } => *status == 404 || *status == 416 || *status >= 500,
        _ => false,
    }
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn location(resp: &Response, registry: &str) -> Result<String> {
    header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| Error::Protocol {
        registry: registry.to_string(),
        reason: "upload response without Location header".into(),
    })
}

fn location_or(resp: &Response, old: &str) -> String {
    header_str(resp.headers(), LOCATION.as_str()).unwrap_or_else(|| old.to_string())
}

fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut().append_pair("digest", digest.as_ref());
    url
}

/// `Range: 0-1234` (registries omit the `bytes=` unit) -> 1234.
fn parse_range_end(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    end.trim().parse().ok()
}

/// Streams a file in 1 MiB reads on the blocking pool; memory stays bounded whatever its size.
fn file_stream(
    file: std::fs::File,
    counter: Arc<std::sync::atomic::AtomicU64>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(file), move |state| {
        let counter = counter.clone();
        async move {
            let mut file = state?;
            let res = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>((file, buf))
            })
            .await;
            match res {
                Ok(Ok((_, buf))) if buf.is_empty() => None,
                Ok(Ok((file, buf))) => {
                    counter.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                }
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_parsing() {
        assert_eq!(parse_range_end("0-1234"), Some(1234));
        assert_eq!(parse_range_end("bytes=0-9"), Some(9));
        assert_eq!(parse_range_end("garbage"), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("a/b").to_string(), "repository:a/b:pull");
        assert_eq!(
            Scope::push("a/b", &["c/d", "a/b"]).to_string(),
            "repository:a/b:pull,push repository:c/d:pull"
        );
    }
}
