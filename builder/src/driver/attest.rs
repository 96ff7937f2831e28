//! A build's attestations (`--provenance`, `--sbom`, `--attest`): made once the images are,
//! and stored as buildx stores them, in the image index beside each platform's manifest
//! (and, for `referrers=true` outputs, also as OCI 1.1 referrers of each manifest).

use super::run::{BuildOutcome, PlatformResult};
use super::BuildRequest;
use crate::attest::provenance::{self, BuildFacts};
use crate::attest::referrers::to_referrers;
use crate::attest::sbom::{self, ScanOptions};
use crate::attest::statement::{Statement, Subject, SPDX_DOCUMENT};
use crate::attest::store::write_attestation_manifest;
use crate::export::spec::OutputKind;
use kiln_oci::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use kiln_oci::{Descriptor, ImageIndex};
use kiln_solver::content::ContentStore;
use kiln_solver::llb::Definition;
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::view::SnapshotView;
use miette::{IntoDiagnostic, Result, WrapErr};
use sha2::{Digest as _, Sha256};

/// Whether this build's images carry attestations. As buildx, the default provenance goes
/// only to images that leave the machine in an index-capable form (pushed, or an OCI
/// layout); asked-for attestations go to every image output. A docker-archive holds one
/// manifest, never an index: a build writing one carries none (as `--load` in buildx).
pub fn wanted(req: &BuildRequest) -> bool {
    if !req.attest.any() || req.outputs.iter().any(|o| o.kind == OutputKind::Docker) {
        return false;
    }
    req.outputs.iter().any(|o| match o.kind {
        OutputKind::Oci => true,
        OutputKind::Image => explicit(req) || o.push(),
        _ => false,
    })
}

/// What the attestations change that the user did not ask for: asked-for attestations
/// reach no image beside a docker-archive output (it holds one manifest, never the index
/// they go in); `oci-mediatypes=false` is overridden (attestation manifests are OCI ones,
/// and BuildKit turns the image's media types to OCI for them too).
pub fn warnings(req: &BuildRequest) -> Vec<&'static str> {
    let mut out = Vec::new();
    if explicit(req) && req.outputs.iter().any(|o| o.kind == OutputKind::Docker) {
        out.push(
            "attestations are not written with a type=docker output (a docker-archive holds \
             no index): use -o type=oci or --push to keep them",
        );
    }
    let docker_types = req.outputs.iter().any(|o| {
        matches!(o.kind, OutputKind::Image | OutputKind::Oci) && !o.flag("oci-mediatypes", true)
    });
    if docker_types && wanted(req) {
        out.push(
            "oci-mediatypes=false ignored: attestations need OCI media types \
             (--provenance=false keeps Docker media types)",
        );
    }
    out
}

/// Whether attestations were asked for, not only buildx's default provenance.
fn explicit(req: &BuildRequest) -> bool {
    let a = &req.attest;
    a.sbom || (a.provenance.is_some() && !a.provenance_by_default)
}

/// Whether `type=local|tar` outputs get attestation files: when asked for (the default
/// provenance is for images).
pub fn files_wanted(req: &BuildRequest) -> bool {
    explicit(req)
        && req
            .outputs
            .iter()
            .any(|o| matches!(o.kind, OutputKind::Local | OutputKind::Tar))
}

/// At most this many files are named as subjects of a filesystem's attestations.
const MAX_FILE_SUBJECTS: usize = 100_000;

/// Each platform's attestation files for `type=local|tar`, as BuildKit writes them beside the
/// files: `provenance.json` and `sbom.spdx.json`, in-toto statements whose subjects are the
/// filesystem's regular files.
pub fn files(
    inputs: &AttestInputs<'_>,
    results: &[PlatformResult],
) -> Result<Vec<AttestationFiles>> {
    let req = inputs.req;
    let facts = facts(inputs);
    let mut out = Vec::with_capacity(results.len());
    for result in results {
        let view = SnapshotView::mount(inputs.layers, &result.snapshot)
            .into_diagnostic()
            .wrap_err("mounting the result for its attestations")?;
        let subjects = file_subjects(view.path())?;
        let mut files = Vec::new();
        if let Some(opts) = &req.attest.provenance {
            let st = provenance::statement(opts, &facts, subjects.clone());
            files.push(("provenance.json".to_string(), to_json(&st)?));
        }
        if req.attest.sbom {
            let st = sbom_statement(inputs, view.path(), "the result", None, subjects)?;
            files.push(("sbom.spdx.json".to_string(), to_json(&st)?));
        }
        out.push(files);
    }
    Ok(out)
}

fn to_json(st: &Statement) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(st).into_diagnostic()
}

/// The regular files under `root` (links not followed) with their sha256, sorted.
fn file_subjects(root: &std::path::Path) -> Result<Vec<Subject>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.into_diagnostic()?;
        if !entry.file_type().is_file() {
            continue;
        }
        if out.len() >= MAX_FILE_SUBJECTS {
            return Err(miette::miette!(
                "the result has more than {MAX_FILE_SUBJECTS} files: too many to attest one by one"
            ));
        }
        let mut file = std::fs::File::open(entry.path()).into_diagnostic()?;
        let mut h = Sha256::new();
        std::io::copy(&mut file, &mut h).into_diagnostic()?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        out.push(Subject {
            name: rel.to_string_lossy().into_owned(),
            digest: std::collections::BTreeMap::from([(
                "sha256".to_string(),
                hex::encode(h.finalize()),
            )]),
        });
    }
    Ok(out)
}

/// One platform's attestation files: names (`provenance.json`) and contents.
pub type AttestationFiles = Vec<(String, Vec<u8>)>;

/// What the attestations are made from.
pub struct AttestInputs<'a> {
    /// The build's request.
    pub req: &'a BuildRequest,
    /// The Dockerfile's name in the context.
    pub dockerfile_name: &'a str,
    /// Its bytes.
    pub dockerfile: &'a [u8],
    /// The build graph.
    pub definition: &'a Definition,
    /// When the build started (seconds since the epoch).
    pub started_on: i64,
    /// Where the final filesystems are mounted from (for the SBOM).
    pub layers: &'a LayerStore,
    /// The store the attestations are written to.
    pub content: &'a ContentStore,
    /// Docker media types for the index (`oci-mediatypes=false`).
    pub docker_media_types: bool,
}

/// Makes each platform image's attestations, writes their manifests, and makes the
/// outcome's root an index listing both (a single-platform build becomes an index, as
/// buildx makes it).
pub fn attach(
    inputs: &AttestInputs<'_>,
    outcome: &mut BuildOutcome,
    results: &[PlatformResult],
    step: Option<&super::export_steps::ExportStep>,
) -> Result<()> {
    let req = inputs.req;
    let image_name = req
        .outputs
        .iter()
        .flat_map(|o| o.names.iter())
        .next()
        .map(String::as_str);
    // As `write_index` refuses it: a consumer could only ever pick the first image.
    if let Some(p) = kiln_oci::manifest::duplicate_platform(
        outcome
            .platform_images
            .iter()
            .filter_map(|i| i.manifest.platform.as_ref()),
    ) {
        return Err(super::assemble::ImageError::DuplicatePlatform(
            p.to_string(),
        ))
        .into_diagnostic();
    }
    let facts = facts(inputs);
    let mut entries: Vec<Descriptor> = outcome
        .platform_images
        .iter()
        .map(|i| i.manifest.clone())
        .collect();
    for (image, result) in outcome.platform_images.iter().zip(results) {
        let subject = Subject::for_manifest(
            image_name,
            image.manifest.platform.as_ref(),
            &image.manifest.digest,
        );
        let mut statements = Vec::new();
        if let Some(opts) = &req.attest.provenance {
            statements.push(provenance::statement(opts, &facts, vec![subject.clone()]));
        }
        if req.attest.sbom {
            let view = SnapshotView::mount(inputs.layers, &result.snapshot)
                .into_diagnostic()
                .wrap_err("mounting the image for its SBOM")?;
            let what = format!("the image {}", image.manifest.digest);
            statements.push(sbom_statement(
                inputs,
                view.path(),
                &what,
                image_name,
                vec![subject],
            )?);
        }
        let entry = write_attestation_manifest(inputs.content, &image.manifest, &statements)
            .into_diagnostic()
            .wrap_err("writing the attestation manifest")?;
        if let Some(step) = step {
            step.done_item(format!("exporting attestation manifest {}", entry.digest));
        }
        entries.push(entry);
    }
    let index_type = if inputs.docker_media_types {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let index = inputs
        .content
        .put_json(index_type, &ImageIndex::new(index_type, entries))
        .into_diagnostic()
        .wrap_err("writing the image index")?;
    if let Some(step) = step {
        step.done_item(format!("exporting manifest list {}", index.digest));
    }
    if req.outputs.iter().any(|o| o.referrers()) {
        // Without the attestation entries the build is an index only when it would be one
        // without attestations.
        let keep_index = outcome.platform_images.len() > 1 || req.multi_platform;
        let form = to_referrers(inputs.content, &index, keep_index)
            .into_diagnostic()
            .wrap_err("writing the attestations as referrers")?;
        if let Some(step) = step {
            for a in &form.artifacts {
                step.done_item(format!(
                    "exporting attestation artifact {} for {}",
                    a.manifest.digest, a.subject.digest
                ));
            }
        }
        outcome.referrers = Some(form);
    }
    outcome.index = Some(index);
    Ok(())
}

/// The build's facts for its provenance; finished now.
fn facts<'a>(inputs: &AttestInputs<'a>) -> BuildFacts<'a> {
    let req = inputs.req;
    let finished_on = jiff::Timestamp::now().as_second();
    // Unique per build: the start, this process, and what is built.
    let mut h = Sha256::new();
    h.update(inputs.started_on.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_le_bytes(),
    );
    h.update(inputs.dockerfile);
    let invocation_id = hex::encode(&h.finalize()[..16]);
    BuildFacts {
        dockerfile_path: inputs.dockerfile_name,
        dockerfile: inputs.dockerfile,
        build_args: &req.build_args,
        target: req.target.as_deref(),
        platforms: platforms(req),
        named_contexts: req
            .build_contexts
            .iter()
            .filter_map(|c| c.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        definition: inputs.definition,
        invocation_id,
        started_on: inputs.started_on,
        finished_on,
    }
}

fn platforms(req: &BuildRequest) -> Vec<String> {
    super::run::target_platforms(req)
        .map(|ps| ps.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// The SPDX SBOM of a final filesystem (mounted at `root`, `what` names it in errors).
fn sbom_statement(
    inputs: &AttestInputs<'_>,
    root: &std::path::Path,
    what: &str,
    image_name: Option<&str>,
    subjects: Vec<Subject>,
) -> Result<Statement> {
    let mut opts = ScanOptions::new(image_name.unwrap_or("image"));
    if let Some(epoch) = inputs.req.source_date_epoch {
        if let Ok(t) = jiff::Timestamp::from_second(epoch as i64) {
            opts.created = t;
        }
    }
    let doc = sbom::scan(root, &opts)
        .into_diagnostic()
        .wrap_err_with(|| format!("scanning {what} for its SBOM"))?;
    for w in &doc.warnings {
        tracing::debug!(warning = %w, "SBOM scan");
    }
    Ok(Statement::new(subjects, SPDX_DOCUMENT, doc.to_spdx_json()))
}

/// The referrers form of a build's attestations, pushed and read back from the test registry.
#[cfg(test)]
mod tests {
    use crate::attest::referrers::*;
    use crate::attest::statement::{Statement, Subject};
    use crate::attest::store::write_attestation_manifest;
    use crate::local_store::LocalStore;
    use kiln_oci::media_type::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
    use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Platform, Reference};
    use kiln_registry::push::{push, PushOptions};
    use kiln_registry::RegistryClient;
    use kiln_registry::TransportOptions;
    use kiln_solver::content::ContentStore;

    /// A config-only image of `arch` in `store`.
    fn image(store: &ContentStore, arch: &str) -> Descriptor {
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = store.put_json(OCI_CONFIG, &config).unwrap();
        let mut d = store
            .put_json(
                OCI_MANIFEST,
                &ImageManifest::new(OCI_MANIFEST, config, vec![]),
            )
            .unwrap();
        d.platform = Some(Platform::new("linux", arch, None));
        d
    }

    /// A buildx-style index over `images`, each attested by a statement of `predicate`.
    fn attested_index(store: &ContentStore, images: &[Descriptor], predicate: &str) -> Descriptor {
        let mut entries = images.to_vec();
        for i in images {
            let st = Statement::new(
                vec![Subject::for_manifest(None, None, &i.digest)],
                predicate,
                serde_json::json!({"for": i.digest.to_string()}),
            );
            entries.push(write_attestation_manifest(store, i, &[st]).unwrap());
        }
        store
            .put_json(OCI_INDEX, &ImageIndex::new(OCI_INDEX, entries))
            .unwrap()
    }

    fn predicates(found: &[FoundAttestation]) -> Vec<String> {
        let mut out: Vec<String> = found
            .iter()
            .flat_map(|f| f.statements.iter().map(|(_, s)| s.predicate_type.clone()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn attestations_are_found_in_the_index_and_as_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(Some(dir.path())).unwrap();
        let store = &local.content;
        let images = [image(store, "amd64"), image(store, "arm64")];
        let buildx = attested_index(store, &images, "https://slsa.dev/provenance/v1");
        let second = attested_index(store, &images, "https://spdx.dev/Document");
        let form = to_referrers(store, &buildx, true).unwrap();
        let form2 = to_referrers(store, &second, true).unwrap();
        assert_eq!(form.root.digest, form2.root.digest, "the same clean index");
        let clean: ImageIndex = store.read_json(&form.root.digest).unwrap();
        assert_eq!(
            clean
                .manifests
                .iter()
                .map(|d| &d.digest)
                .collect::<Vec<_>>(),
            images.iter().map(|d| &d.digest).collect::<Vec<_>>()
        );
        let one = to_referrers(store, &buildx, false).unwrap();
        assert_eq!(
            one.root.digest, form.root.digest,
            "two images keep the index"
        );

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let base = format!(
            "{}/referrers-unit/{}-{nanos}",
            crate::signature::transfer::tests::registry(),
            std::process::id()
        );
        let in_index = Reference::parse(&format!("{base}-index:1")).unwrap();
        let as_referrers = Reference::parse(&format!("{base}-referrers:1")).unwrap();
        let client = RegistryClient::new(TransportOptions::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let opts = PushOptions::default();
            let none = &kiln_registry::progress::NoProgress;
            push(&client, &in_index, &buildx, &local, &opts, none)
                .await
                .unwrap();
            push(&client, &as_referrers, &form.root, &local, &opts, none)
                .await
                .unwrap();
            // Both forms' artifacts, for the same subjects: two referrers per image.
            let artifacts: Vec<(Descriptor, Digest)> = form
                .artifacts
                .iter()
                .chain(&form2.artifacts)
                .map(|a| (a.manifest.clone(), a.subject.digest.clone()))
                .collect();
            client
                .push_referrers(&as_referrers, &local, &artifacts)
                .await
                .unwrap();
            for i in &images {
                let found = attestations_of(&client, &in_index, &i.digest)
                    .await
                    .unwrap();
                assert_eq!(predicates(&found), ["https://slsa.dev/provenance/v1"]);
                let found = attestations_of(&client, &as_referrers, &i.digest)
                    .await
                    .unwrap();
                assert_eq!(
                    predicates(&found),
                    [
                        "https://slsa.dev/provenance/v1",
                        "https://spdx.dev/Document"
                    ]
                );
                for f in &found {
                    let (_, st) = &f.statements[0];
                    assert_eq!(st.predicate["for"], i.digest.to_string());
                    assert_eq!(
                        f.manifest.artifact_type.as_deref(),
                        Some(ATTESTATION_ARTIFACT_TYPE)
                    );
                }
            }
            let all = all_attestations(&client, &as_referrers).await.unwrap();
            assert_eq!(all.len(), 2);
            assert!(all.iter().all(|(_, found)| found.len() == 2));
            // Pushing again lists nothing twice.
            client
                .push_referrers(&as_referrers, &local, &artifacts)
                .await
                .unwrap();
            let listed = client
                .referrers(&as_referrers, &images[0].digest, None)
                .await
                .unwrap();
            assert_eq!(listed.len(), 2);
        });
    }

    #[test]
    fn concurrent_pushes_of_referrers_of_one_subject_all_land_in_the_fallback_index() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(Some(dir.path())).unwrap();
        let store = &local.content;
        let subject = image(store, "amd64");
        // Four attestation artifacts of the one image pushed at once from this process (the
        // fallback index has no compare-and-swap: the updates must take turns).
        let artifacts: Vec<Descriptor> = (0..4)
            .map(|i| {
                let index = attested_index(
                    store,
                    std::slice::from_ref(&subject),
                    &format!("https://example.com/predicate/{i}"),
                );
                to_referrers(store, &index, true).unwrap().artifacts[0]
                    .manifest
                    .clone()
            })
            .collect();
        let r = Reference::parse(&format!(
            "{}/referrers-unit/race-{}:1",
            crate::signature::transfer::tests::registry(),
            std::process::id()
        ))
        .unwrap();
        let client = RegistryClient::new(TransportOptions::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let local = std::sync::Arc::new(local);
        rt.block_on(async {
            let none = &kiln_registry::progress::NoProgress;
            push(
                &client,
                &r,
                &subject,
                &*local,
                &PushOptions::default(),
                none,
            )
            .await
            .unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for a in artifacts.clone() {
                let (client, r, local, s) = (
                    client.clone(),
                    r.clone(),
                    local.clone(),
                    subject.digest.clone(),
                );
                tasks.spawn(
                    async move { client.push_referrers(&r, &*local, &[(a, s)]).await.unwrap() },
                );
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            let mut listed: Vec<Digest> = client
                .referrers(&r, &subject.digest, Some(ATTESTATION_ARTIFACT_TYPE))
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.digest)
                .collect();
            let mut expected: Vec<Digest> = artifacts.iter().map(|a| a.digest.clone()).collect();
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected);
        });
    }
}
