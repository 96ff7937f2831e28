//! `type=oci`: the image (or index) as an OCI layout tarball.

use super::dest::open_dest;
use super::{names, BuildResult, Exporter};
use crate::archive::oci::{write_tar, NamedImage};
use crate::driver::export_steps::{Counted, ExportStep};
use crate::export::spec::OutputSpec;
use miette::{IntoDiagnostic, Result};
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
        let images = [NamedImage {
            names: names(out)?,
            root: result.root()?,
        }];
        write_archive(result, out, &images, &[], step)
    }
}

/// Writes `images` (and `extra` files) from the local store as a tarball to the output.
pub fn write_archive(
    result: &BuildResult<'_>,
    out: &OutputSpec,
    images: &[NamedImage],
    extra: &[(String, Vec<u8>)],
    step: Option<&ExportStep>,
) -> Result<()> {
    let w = Counted::new(
        open_dest(out, "tarball")?,
        step.map(|s| s.item("sending tarball")),
    );
    let w = write_tar(w, &result.store.content, images, extra)?;
    w.finish().flush().into_diagnostic()
}
