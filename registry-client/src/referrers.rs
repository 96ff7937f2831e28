//! OCI 1.1 referrers: artifacts (signatures, attestations) pointing at a manifest through
//! their `subject`. Registries with the referrers API list them; on the others (distribution
//! 2.8 among them) the distribution spec's fallback is an index under the tag
//! `<alg>-<hex>` of the subject, which the pusher maintains.

use crate::client::{RegistryClient, Scope, MAX_MANIFEST};
use crate::error::{Error, Result};
use crate::progress::NoProgress;
use crate::push::push_blob;
use crate::store::{BlobStore, Blobs};
use kiln_oci::media_type::{is_index, OCI_INDEX};
use kiln_oci::store::read_verified;
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Reference};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;

/// Header a registry with the referrers API sets on a manifest PUT that has a `subject`.
const OCI_SUBJECT: &str = "oci-subject";
/// Header saying the registry applied the `artifactType` filter itself.
const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// The fallback tag of `subject`'s referrers index: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

impl RegistryClient {
    /// The referrers of `subject` in `r`'s repository, of `artifact_type` when given: from the
    /// referrers API, else from the fallback tag. None found is an empty list.
    pub async fn referrers(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let (index, filtered) = match self.referrers_api(r, subject, artifact_type).await? {
            Some(found) => found,
            None => (self.fallback_index(r, subject).await?, false),
        };
        let mut out = index.map(|i| i.manifests).unwrap_or_default();
        if let (Some(t), false) = (artifact_type, filtered) {
            out.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(out)
    }

    /// GET `/v2/<repo>/referrers/<digest>`: `None` when the registry has no such API (404),
    /// else the index and whether the registry filtered it.
    async fn referrers_api(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<(Option<ImageIndex>, bool)>> {
        let what = format!("referrers of {}@{subject}", r.name());
        let mut path = format!("/v2/{}/referrers/{subject}", r.repository());
        if let Some(t) = artifact_type {
            path.push_str("?artifactType=");
            path.push_str(&t.replace('+', "%2B"));
        }
        let resp = self
            .request(r.api_host(), &what, &Scope::pull(r.repository()), |h| {
                Ok(h.client.get(h.url(&path)?).header(ACCEPT, OCI_INDEX))
            })
            .await?;
        // The spec's answer without the API is 404; some registries route the unknown path
        // to a 400, 405 or 501 instead.
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND
                | StatusCode::BAD_REQUEST
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok(None);
        }
        let resp = Self::expect(resp, r.registry(), &what, &[StatusCode::OK]).await?;
        // A registry without the API may answer 200 with something else (an HTML page, a
        // proxy's error): only an index counts as an answer.
        let is_index = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(OCI_INDEX));
        let filtered = resp.headers().contains_key(OCI_FILTERS_APPLIED);
        let body = self
            .read_limited(resp, MAX_MANIFEST, r.registry(), &what)
            .await?;
        if !is_index {
            return Ok(None);
        }
        let index = parse_index(&body, r.registry(), &what)?;
        Ok(Some((Some(index), filtered)))
    }

    /// The fallback tag's index, `None` when the tag does not exist.
    async fn fallback_index(&self, r: &Reference, subject: &Digest) -> Result<Option<ImageIndex>> {
        let tag = fallback_tag(subject);
        match self.get_manifest_as(r, &tag).await {
            Ok(m) => {
                let what = format!("{}:{tag}", r.name());
                parse_index(&m.bytes, r.registry(), &what).map(Some)
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUTs a manifest that has a `subject` (by its digest) and makes it findable as a
    /// referrer: registries with the referrers API index it themselves (they answer with
    /// `OCI-Subject`); for the others `descriptor` is added to the fallback tag's index.
    /// `descriptor` should carry the manifest's `artifactType` and annotations.
    pub async fn push_referrer(
        &self,
        r: &Reference,
        manifest: &[u8],
        descriptor: &Descriptor,
        subject: &Digest,
    ) -> Result<()> {
        let target = r.with_digest(descriptor.digest.clone());
        let what = target.to_string();
        let path = format!("/v2/{}/manifests/{}", r.repository(), descriptor.digest);
        let body = bytes::Bytes::copy_from_slice(manifest);
        let media_type = descriptor.media_type.clone();
        let resp = self
            .request(
                r.api_host(),
                &what,
                &Scope::push(r.repository(), &[]),
                |h| {
                    Ok(h.client
                        .put(h.url(&path)?)
                        .header(CONTENT_TYPE, media_type.as_str())
                        .body(body.clone()))
                },
            )
            .await?;
        let resp = Self::expect(
            resp,
            r.registry(),
            &what,
            &[StatusCode::CREATED, StatusCode::OK],
        )
        .await?;
        if resp.headers().contains_key(OCI_SUBJECT) {
            return Ok(());
        }
        self.add_to_fallback(r, descriptor, subject).await
    }

    /// Adds `descriptor` to the fallback index of `subject` (read, append, write back). The tag
    /// schema has no compare-and-swap: updates from this process take turns (a lock per
    /// subject); against another process writing the same index at the same moment, the
    /// index is read again and the update redone while it lacks `descriptor` (a few times),
    /// which narrows the race without closing it.
    async fn add_to_fallback(
        &self,
        r: &Reference,
        descriptor: &Descriptor,
        subject: &Digest,
    ) -> Result<()> {
        let lock = fallback_lock(&format!("{}@{subject}", r.name()));
        let _turn = lock.lock().await;
        for attempt in 0..=FALLBACK_ATTEMPTS {
            let mut index = self
                .fallback_index(r, subject)
                .await?
                .unwrap_or_else(|| ImageIndex::new(OCI_INDEX, Vec::new()));
            if index
                .manifests
                .iter()
                .any(|d| d.digest == descriptor.digest)
            {
                return Ok(());
            }
            if attempt == FALLBACK_ATTEMPTS {
                break;
            }
            index.manifests.push(descriptor.clone());
            let bytes = serde_json::to_vec(&index).map_err(|e| Error::Protocol {
                registry: r.registry().to_string(),
                reason: format!("encoding the referrers index: {e}"),
            })?;
            self.put_manifest(&r.with_tag(&fallback_tag(subject)), &bytes, OCI_INDEX)
                .await?;
        }
        Err(Error::Protocol {
            registry: r.registry().to_string(),
            reason: format!(
                "{}:{}: the referrers index kept changing under {FALLBACK_ATTEMPTS} updates \
                 (another push is writing it); {} is not listed",
                r.name(),
                fallback_tag(subject),
                descriptor.digest
            ),
        })
    }

    /// Pushes artifacts from `store`, each (manifest, subject): its config and layers, then
    /// the manifest as a referrer of its subject ([`Self::push_referrer`]). One after another,
    /// so that the fallback index of a subject with several artifacts is updated in turn.
    pub async fn push_referrers(
        &self,
        r: &Reference,
        store: &dyn BlobStore,
        artifacts: &[(Descriptor, Digest)],
    ) -> Result<()> {
        for (desc, subject) in artifacts {
            let bytes = read_verified(&Blobs(store), desc, "referrer manifest")?;
            let what = format!("{}@{}", r.name(), desc.digest);
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                    registry: r.registry().to_string(),
                    reason: format!("{what}: not an image manifest: {e}"),
                })?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                push_blob(self, r, store, blob, None, &NoProgress).await?;
            }
            self.push_referrer(r, &bytes, desc, subject).await?;
        }
        Ok(())
    }
}

/// Referrers are followed this deep from the image (2: a signature of an attestation).
const MAX_DEPTH: usize = 2;
/// Referrers gathered for one image at most (a hostile repository could list thousands).
const MAX_REFERRERS: usize = 1024;

impl RegistryClient {
    /// Every referrer of `root` and of the manifests it lists when it is an index, and their
    /// referrers in turn (to a depth of 2), each with the subject it refers to: subjects
    /// before their referrers, each once. What a copy carries along.
    pub async fn referrer_tree(
        &self,
        r: &Reference,
        root: &Digest,
    ) -> Result<Vec<(Descriptor, Digest)>> {
        let mut subjects = vec![root.clone()];
        let m = self.get_manifest(&r.with_digest(root.clone())).await?;
        if m.content_type.as_deref().is_some_and(is_index) {
            let what = format!("{}@{root}", r.name());
            let index = parse_index(&m.bytes, r.registry(), &what)?;
            subjects.extend(index.manifests.into_iter().map(|d| d.digest));
        }
        let mut seen: std::collections::HashSet<Digest> = subjects.iter().cloned().collect();
        let mut out = Vec::new();
        for _ in 0..MAX_DEPTH {
            let mut next = Vec::new();
            for subject in &subjects {
                for d in self.referrers(r, subject, None).await? {
                    if out.len() >= MAX_REFERRERS {
                        return Err(Error::Protocol {
                            registry: r.registry().to_string(),
                            reason: format!(
                                "{}@{root} has more than {MAX_REFERRERS} referrers",
                                r.name()
                            ),
                        });
                    }
                    if seen.insert(d.digest.clone()) {
                        next.push(d.digest.clone());
                        out.push((d, subject.clone()));
                    }
                }
            }
            subjects = next;
        }
        Ok(out)
    }
}

/// The lock of one fallback index (`repository@subject`) in this process.
fn fallback_lock(key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    type Locks = std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>;
    static LOCKS: std::sync::OnceLock<std::sync::Mutex<Locks>> = std::sync::OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.entry(key.to_string()).or_default().clone()
}

/// Fallback index updates tried before giving up on a racing writer.
const FALLBACK_ATTEMPTS: usize = 4;

fn parse_index(body: &[u8], registry: &str, what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: format!("{what}: not an image index: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tag_is_algorithm_dash_hex() {
        let d = Digest::of(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.hex()));
    }
}
