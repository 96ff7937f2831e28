//! A build's attestations (`--provenance`, `--sbom`, `--attest`): made once the images are,
//! and stored as buildx stores them, in the image index beside each platform's manifest.

use super::commit::ExportedImage;
use super::run::{BuildOutcome, PlatformResult};
use super::BuildRequest;
use crate::attest::provenance::{self, BuildFacts};
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
    let a = &req.attest;
    if !a.any() || req.outputs.iter().any(|o| o.kind == OutputKind::Docker) {
        return false;
    }
    let explicit = a.sbom || (a.provenance.is_some() && !a.provenance_by_default);
    req.outputs.iter().any(|o| match o.kind {
        OutputKind::Oci => true,
        OutputKind::Image => explicit || o.push(),
        _ => false,
    })
}

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
) -> Result<()> {
    let req = inputs.req;
    let image_name = req
        .outputs
        .iter()
        .flat_map(|o| o.names.iter())
        .next()
        .map(String::as_str);
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
            statements.push(sbom_statement(inputs, image, result, image_name, subject)?);
        }
        let entry = write_attestation_manifest(inputs.content, &image.manifest, &statements)
            .into_diagnostic()
            .wrap_err("writing the attestation manifest")?;
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

/// The SPDX SBOM of one platform's final filesystem, scanned through a view of it.
fn sbom_statement(
    inputs: &AttestInputs<'_>,
    image: &ExportedImage,
    result: &PlatformResult,
    image_name: Option<&str>,
    subject: Subject,
) -> Result<Statement> {
    let view = SnapshotView::mount(inputs.layers, &result.snapshot)
        .into_diagnostic()
        .wrap_err("mounting the image for its SBOM")?;
    let mut opts = ScanOptions::new(image_name.unwrap_or("image"));
    if let Some(epoch) = inputs.req.source_date_epoch {
        if let Ok(t) = jiff::Timestamp::from_second(epoch as i64) {
            opts.created = t;
        }
    }
    let doc = sbom::scan(view.path(), &opts)
        .into_diagnostic()
        .wrap_err_with(|| format!("scanning the image {} for its SBOM", image.manifest.digest))?;
    for w in &doc.warnings {
        tracing::debug!(warning = %w, "SBOM scan");
    }
    Ok(Statement::new(
        vec![subject],
        SPDX_DOCUMENT,
        doc.to_spdx_json(),
    ))
}
