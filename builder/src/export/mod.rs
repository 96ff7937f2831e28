//! Exporters: where a build's result goes (`-o/--output`), one module per output type behind
//! [`Exporter`]; [`spec`] parses `-o` into [`spec::OutputSpec`]s, apart from writing.

mod dest;
mod docker;
mod image;
mod local;
mod oci;
pub mod spec;
mod tar;

use crate::driver::export_steps::{ExportStep, ExportSteps};
use crate::driver::run::{BuildOutcome, PlatformResult};
use crate::driver::BuildRequest;
use crate::local_store::LocalStore;
use kiln_solver::snapshot::layers::LayerStore;
use miette::{miette, Result};
use spec::{OutputKind, OutputSpec};

/// A build's result, as every exporter reads it.
pub struct BuildResult<'a> {
    /// The build's request (registry settings for pushes).
    pub req: &'a BuildRequest,
    /// The runtime pushes run on.
    pub runtime: &'a tokio::runtime::Runtime,
    /// The local image store holding the exported images.
    pub store: &'a LocalStore,
    /// The layers the filesystems are mounted from.
    pub layers: &'a LayerStore,
    /// Each platform's final filesystem.
    pub results: &'a [PlatformResult],
    /// The images made from them (one, or an index).
    pub outcome: &'a BuildOutcome,
    /// Repositories holding blobs of the image (imported caches): a push to their registry
    /// mounts from them.
    pub mount_from: &'a [kiln_oci::Reference],
    /// Blobs the image lists that are not in the store (lazily imported; only pushed).
    pub remote_blobs: Option<&'a std::collections::BTreeSet<kiln_oci::Digest>>,
}

impl BuildResult<'_> {
    /// The root of the exported image: the index when several platforms were built.
    fn root(&self) -> Result<kiln_oci::Descriptor> {
        let mut root = self
            .outcome
            .root()
            .ok_or_else(|| miette!("internal error: no image was exported"))?
            .clone();
        root.platform = None;
        Ok(root)
    }

    /// What `out` writes: the root ([`Self::root`], or with `referrers=true` the images
    /// without attestation entries) and the attestation artifacts to store as referrers.
    fn root_for(
        &self,
        out: &OutputSpec,
    ) -> Result<(kiln_oci::Descriptor, &[crate::attest::referrers::Artifact])> {
        match (&self.outcome.referrers, out.referrers()) {
            (Some(form), true) => {
                let mut root = form.root.clone();
                root.platform = None;
                Ok((root, &form.artifacts))
            }
            _ => Ok((self.root()?, &[])),
        }
    }
}

/// Writes a build's result to one kind of output.
pub trait Exporter {
    /// Writes `result` as `out` asks, reporting on `step`.
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()>;
}

/// The exporter of an output type (`type=cacheonly` has none).
fn exporter(kind: OutputKind) -> Option<&'static dyn Exporter> {
    match kind {
        OutputKind::Image => Some(&image::ImageExporter),
        OutputKind::Oci => Some(&oci::OciExporter),
        OutputKind::Docker => Some(&docker::DockerExporter),
        OutputKind::Local => Some(&local::LocalExporter),
        OutputKind::Tar => Some(&tar::TarExporter),
        OutputKind::CacheOnly => None,
    }
}

/// Writes every output of the build, each reporting on its step of `steps`.
pub fn write_outputs(result: &BuildResult<'_>, steps: &ExportSteps) -> Result<()> {
    for (i, out) in result.req.outputs.iter().enumerate() {
        tracing::debug!(kind = ?out.kind, names = ?out.names, dest = ?out.dest, "writing output");
        let step = steps.get(i);
        let written = match exporter(out.kind) {
            Some(e) => e.export(result, out, step),
            None => Ok(()),
        };
        if let Some(step) = step {
            match &written {
                Ok(()) => step.done(),
                Err(e) => step.error(&e.to_string()),
            }
        }
        written?;
    }
    Ok(())
}

/// The names of an image output, parsed.
fn names(out: &OutputSpec) -> Result<Vec<kiln_oci::Reference>> {
    use miette::{IntoDiagnostic, WrapErr};
    out.names
        .iter()
        .map(|n| {
            kiln_oci::Reference::parse(n)
                .into_diagnostic()
                .wrap_err_with(|| format!("invalid image name {n:?}"))
        })
        .collect()
}
