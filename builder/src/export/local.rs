//! `type=local`: the final filesystem as a directory (one per platform with the
//! `platform-split` of a multi-platform build, else platforms written over each other in order).

use super::{BuildResult, Exporter};
use crate::driver::export_steps::{Counted, ExportStep};
use crate::export::spec::{Destination, OutputSpec};
use kiln_solver::archive::{extract_tar, extract_tar_as_caller};
use kiln_solver::snapshot::layer::{write_tar, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::view::SnapshotView;
use kiln_solver::snapshot::Snapshot;
use miette::{miette, IntoDiagnostic, Result};
use std::path::Path;

/// The directory exporter.
pub struct LocalExporter;

impl Exporter for LocalExporter {
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()> {
        let Some(Destination::Path(dest)) = &out.dest else {
            return Err(miette!("type=local needs dest=<directory>"));
        };
        let split = split(result, out);
        for (i, r) in result.results.iter().enumerate() {
            let dir = if split {
                dest.join(platform_dir(&r.platform))
            } else {
                dest.to_path_buf()
            };
            write_dir(result.layers, &r.snapshot, &dir, step)?;
            write_attestation_files(result, i, &dir)?;
        }
        Ok(())
    }
}

/// The attestations of the `index`th platform (`provenance.json`, `sbom.spdx.json`) written
/// beside its files, as BuildKit's local exporter writes them.
pub fn write_attestation_files(result: &BuildResult<'_>, index: usize, dir: &Path) -> Result<()> {
    let Some(files) = result.outcome.attestation_files.get(index) else {
        return Ok(());
    };
    for (name, data) in files {
        let path = dir.join(name);
        // A file of that name from the build is replaced, never written through.
        if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
            return Err(miette!(
                "cannot write {}: the build's result has a directory or link there",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, data)
            .into_diagnostic()
            .map_err(|e| e.wrap_err(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Whether each platform gets its own top directory (several platforms, `platform-split`
/// not turned off).
pub fn split(result: &BuildResult<'_>, out: &OutputSpec) -> bool {
    result.results.len() > 1 && out.flag("platform-split", true)
}

/// buildx's directory name of a platform under `platform-split`: `linux_arm_v7`.
pub fn platform_dir(p: &kiln_oci::Platform) -> String {
    p.to_string().replace('/', "_")
}

/// Writes a snapshot's files into `dest` through a pipe (tar the view, unpack it), so owners,
/// modes, links and times come out as in the image.
pub fn write_dir(
    layers: &LayerStore,
    snapshot: &Snapshot,
    dest: &Path,
    step: Option<&ExportStep>,
) -> Result<()> {
    let view = SnapshotView::mount(layers, snapshot).into_diagnostic()?;
    let (reader, writer) = std::io::pipe().into_diagnostic()?;
    let src = view.path().to_path_buf();
    let writer = Counted::new(writer, step.map(|s| s.item("copying files")));
    let producer = std::thread::spawn(move || {
        write_tar(&src, writer, &DiffOptions::default()).map(|(w, _, _)| {
            w.finish();
        })
    });
    // Rootless, the image's owners would be subordinate ids on the host, which the
    // user could not change: the files are the user's, as BuildKit's client makes them.
    let unpacked = if kiln_solver::userns::inside() {
        extract_tar_as_caller(reader, dest, &dest.display().to_string())
    } else {
        extract_tar(reader, dest, &dest.display().to_string())
    };
    unpacked.into_diagnostic()?;
    producer
        .join()
        .map_err(|_| miette!("internal error: the tar writer panicked"))?
        .into_diagnostic()?;
    Ok(())
}
