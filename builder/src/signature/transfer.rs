//! Carrying signatures along when an image is copied between repositories: the `.sig`
//! manifests of the copied root and, for an index, of each of its manifests (copies keep
//! digests, so the signatures stay valid). Signature referrers travel with every other
//! referrer (`kiln_registry::copy::copy_referrers`).

use super::store::{append_to_sig_manifest, signature_tag};
use kiln_oci::media_type::{is_index, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Reference};
use kiln_registry::{Error, RegistryClient, Result};

/// Manifests of one index whose signatures are looked for, at most.
const MAX_SUBJECTS: usize = 256;
/// Signature manifests hold payloads and small configs; anything larger is refused.
const MAX_BLOB: u64 = 4 << 20;

/// Copies the `.sig` signature manifests of `root` (and of its manifests when it is an
/// index) from `src`'s repository to `dst`'s; the number copied.
pub async fn copy_signatures(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    root: &Digest,
) -> Result<usize> {
    let mut copied = 0;
    for subject in subjects(client, src, root).await? {
        if copy_sig_tag(client, src, dst, &subject).await? {
            copied += 1;
        }
    }
    Ok(copied)
}

/// `root` and, for an index, the digests it lists.
async fn subjects(client: &RegistryClient, r: &Reference, root: &Digest) -> Result<Vec<Digest>> {
    let m = client.get_manifest(&r.with_digest(root.clone())).await?;
    let mut out = vec![root.clone()];
    let media_type = m.content_type.unwrap_or_default();
    if is_index(&media_type) {
        let index: ImageIndex = serde_json::from_slice(&m.bytes).map_err(|e| not_json(r, e))?;
        out.extend(
            index
                .manifests
                .into_iter()
                .take(MAX_SUBJECTS)
                .map(|d| d.digest),
        );
    }
    Ok(out)
}

/// Copies `sha256-<hex>.sig` of `subject` when the source has it: as is when the
/// destination has none, else its layers are added to the destination's.
async fn copy_sig_tag(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    subject: &Digest,
) -> Result<bool> {
    let tag = signature_tag(subject);
    let digest = match client.head_manifest(&src.with_tag(&tag)).await? {
        Some((d, _, _)) => d,
        None => return Ok(false),
    };
    let (bytes, manifest) = copy_manifest_blobs(client, src, dst, &digest).await?;
    let dst_tag = dst.with_tag(&tag);
    match client.head_manifest(&dst_tag).await? {
        None => {
            client.put_manifest(&dst_tag, &bytes, OCI_MANIFEST).await?;
        }
        Some((d, _, _)) if d == digest => {}
        Some(_) => append_to_sig_manifest(client, &dst_tag, manifest.layers).await?,
    }
    Ok(true)
}

/// Copies the config and layers of the manifest `digest` (small signature blobs); the
/// manifest's bytes, as fetched and verified, and the manifest.
async fn copy_manifest_blobs(
    client: &RegistryClient,
    src: &Reference,
    dst: &Reference,
    digest: &Digest,
) -> Result<(Vec<u8>, ImageManifest)> {
    let at = src.with_digest(digest.clone());
    let m = client.get_manifest(&at).await?;
    let manifest: ImageManifest = serde_json::from_slice(&m.bytes).map_err(|e| not_json(&at, e))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    for (i, blob) in blobs.into_iter().enumerate() {
        if blob.size > MAX_BLOB {
            return Err(Error::Protocol {
                registry: src.registry().to_string(),
                reason: format!(
                    "{at}: blob {} of {} bytes is too large for a signature",
                    blob.digest, blob.size
                ),
            });
        }
        // Tiny blobs: fetched rather than mounted, which would need pull access granted
        // across repositories.
        let path = dir.path().join(i.to_string());
        client.fetch_blob(src, blob, &path, &|_| {}).await?;
        let open = || std::fs::File::open(&path);
        client.push_blob(dst, blob, &open, None, &|_| {}).await?;
    }
    Ok((m.bytes, manifest))
}

fn not_json(at: &Reference, e: serde_json::Error) -> Error {
    Error::Protocol {
        registry: at.registry().to_string(),
        reason: format!("{at}: {e}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signature::payload::SimpleSigning;
    use crate::signature::store::{attach, find, resolve};
    use crate::signature::verify::{check, sign};
    use kiln_registry::TransportOptions;
    use p256::ecdsa::SigningKey;
    use rand_core::OsRng;

    /// The plain test registry of testdata/env/setup.sh.
    pub(crate) fn registry() -> String {
        let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
        let text = std::fs::read_to_string(std::path::Path::new(&dir).join("env"))
            .expect("the test environment (testdata/env/setup.sh start)");
        text.lines()
            .find_map(|l| l.strip_prefix("KILN_TEST_REGISTRY="))
            .expect("KILN_TEST_REGISTRY")
            .trim()
            .to_string()
    }

    fn skopeo_copy(from: &str, to: &str) {
        let out = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{from}"))
            .arg(format!("docker://{to}"))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn sign_as(
        client: &RegistryClient,
        r: &Reference,
        key: &SigningKey,
        subject: &Descriptor,
    ) {
        let payload = serde_json::to_vec(&SimpleSigning::new(r, &subject.digest)).unwrap();
        let sig = sign(key, &payload);
        let attached = attach(
            client,
            &r.with_digest(subject.digest.clone()),
            subject,
            &payload,
            &sig,
        )
        .await
        .unwrap();
        attached.referrer.unwrap();
    }

    #[test]
    fn signatures_of_an_index_and_its_manifests_follow_a_copy() {
        let reg = registry();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let base = format!("{reg}/h5-sign/transfer-{}-{nanos}", std::process::id());
        let (src, dst) = (format!("{base}-src:1"), format!("{base}-dst:1"));
        skopeo_copy(&format!("{reg}/library/busybox:latest"), &src);
        skopeo_copy(&src, &dst);
        let (src, dst) = (
            Reference::parse(&src).unwrap(),
            Reference::parse(&dst).unwrap(),
        );
        let client = RegistryClient::new(TransportOptions::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let index = resolve(&client, &src).await.unwrap().unwrap();
            let m = client.get_manifest(&src).await.unwrap();
            let child = serde_json::from_slice::<ImageIndex>(&m.bytes)
                .unwrap()
                .manifests[0]
                .clone();
            let (k1, k2, k3) = (
                SigningKey::random(&mut OsRng),
                SigningKey::random(&mut OsRng),
                SigningKey::random(&mut OsRng),
            );
            sign_as(&client, &src, &k1, &index).await;
            sign_as(&client, &src, &k2, &child).await;
            // The destination already has a signature of its own: it is kept.
            sign_as(&client, &dst, &k3, &index).await;

            let copied = copy_signatures(&client, &src, &dst, &index.digest)
                .await
                .unwrap();
            assert_eq!(copied, 2, ".sig of index and child");
            let dir = tempfile::tempdir().unwrap();
            let referrers =
                kiln_registry::copy::copy_referrers(&client, &src, &dst, &index.digest, dir.path())
                    .await
                    .unwrap();
            assert_eq!(referrers, 2, "the referrers of index and child");

            let found = find(&client, &dst, &index.digest).await.unwrap();
            assert_eq!(found.len(), 2);
            for key in [&k1, &k3] {
                assert_eq!(
                    found
                        .iter()
                        .filter(|f| check(f, key.verifying_key(), &index.digest).is_ok())
                        .count(),
                    1
                );
            }
            let found = find(&client, &dst, &child.digest).await.unwrap();
            assert_eq!(found.len(), 1);
            check(&found[0], k2.verifying_key(), &child.digest).unwrap();
            // Copying again changes nothing.
            copy_signatures(&client, &src, &dst, &index.digest)
                .await
                .unwrap();
            assert_eq!(find(&client, &dst, &index.digest).await.unwrap().len(), 2);
        });
    }
}
