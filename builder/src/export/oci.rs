//! `type=oci`: the image (or index) as an OCI layout tarball, or with `tar=false` as an OCI
//! layout directory at `dest` (BuildKit's forms).

use super::dest::open_dest;
use super::{names, BuildResult, Exporter};
use crate::archive::oci::{write_dir, write_tar, NamedImage};
use crate::driver::export_steps::{Counted, ExportStep};
use crate::export::spec::{Destination, OutputSpec};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::io::Write;

/// The OCI layout tarball exporter.
pub struct OciExporter;

impl Exporter for OciExporter {
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()> {
        let (root, artifacts) = result.root_for(out)?;
        // As oras keeps referrers in a layout: each artifact an untagged entry of
        // index.json, found by its `subject`; the image itself stays clean.
        let images: Vec<NamedImage> = std::iter::once(NamedImage {
            names: names(out)?,
            root,
        })
        .chain(artifacts.iter().map(|a| NamedImage {
            names: Vec::new(),
            root: a.manifest.clone(),
        }))
        .collect();
        write_archive(result, out, &images, &[], step)
    }
}

/// Writes `images` (and `extra` files) from the local store as a tarball to the output, or
/// with `tar=false` into the layout directory `dest`.
pub fn write_archive(
    result: &BuildResult<'_>,
    out: &OutputSpec,
    images: &[NamedImage],
    extra: &[(String, Vec<u8>)],
    step: Option<&ExportStep>,
) -> Result<()> {
    if !out.flag("tar", true) {
        let Some(Destination::Path(dir)) = &out.dest else {
            return Err(miette!("tar=false needs dest=<directory>"));
        };
        write_dir(dir, &result.store.content, images)?;
        for (name, data) in extra {
            let path = dir.join(name);
            std::fs::write(&path, data)
                .into_diagnostic()
                .wrap_err_with(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let w = Counted::new(
        open_dest(out, "tarball")?,
        step.map(|s| s.item("sending tarball")),
    );
    let w = write_tar(w, &result.store.content, images, extra)?;
    w.finish().flush().into_diagnostic()
}
