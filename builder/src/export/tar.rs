//! `type=tar`: the final filesystem as a tarball (several platforms: staged as a tree first,
//! one top directory per platform with the `platform-split`, then tarred).

use super::dest::open_dest;
use super::local::{platform_dir, split, write_attestation_files, write_dir};
use super::{BuildResult, Exporter};
use crate::driver::export_steps::{Counted, ExportStep};
use crate::export::spec::OutputSpec;
use kiln_solver::snapshot::layer::{write_tar, DiffOptions};
use kiln_solver::snapshot::view::SnapshotView;
use miette::{IntoDiagnostic, Result};
use std::io::Write;
use std::path::Path;

/// The filesystem tarball exporter.
pub struct TarExporter;

impl Exporter for TarExporter {
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()> {
        let attested = result
            .outcome
            .attestation_files
            .iter()
            .any(|f| !f.is_empty());
        if let ([only], false) = (result.results, attested) {
            let view = SnapshotView::mount(result.layers, &only.snapshot).into_diagnostic()?;
            return tar_tree(view.path(), out, step);
        }
        let staging = tempfile::tempdir().into_diagnostic()?;
        let split = split(result, out);
        for (i, r) in result.results.iter().enumerate() {
            let dir = if split {
                staging.path().join(platform_dir(&r.platform))
            } else {
                staging.path().to_path_buf()
            };
            write_dir(result.layers, &r.snapshot, &dir, None)?;
            write_attestation_files(result, i, &dir)?;
        }
        tar_tree(staging.path(), out, step)
    }
}

/// Tars the tree at `root` to the output.
fn tar_tree(root: &Path, out: &OutputSpec, step: Option<&ExportStep>) -> Result<()> {
    let w = Counted::new(
        open_dest(out, "tarball")?,
        step.map(|s| s.item("sending tarball")),
    );
    let (w, _, _) = write_tar(root, w, &DiffOptions::default()).into_diagnostic()?;
    w.finish().flush().into_diagnostic()
}
