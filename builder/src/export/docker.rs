//! `type=docker`: one platform's image as a `docker save` archive that `docker load` (old and
//! new) and OCI tools read.

use super::oci::write_archive;
use super::{names, BuildResult, Exporter};
use crate::archive::docker::manifest_json;
use crate::archive::oci::NamedImage;
use crate::driver::export_steps::ExportStep;
use crate::export::spec::OutputSpec;
use kiln_oci::Platform;
use miette::{miette, Result};

/// The docker-archive exporter.
pub struct DockerExporter;

impl Exporter for DockerExporter {
    fn export(
        &self,
        result: &BuildResult<'_>,
        out: &OutputSpec,
        step: Option<&ExportStep>,
    ) -> Result<()> {
        let image = result.outcome.image.as_ref().ok_or_else(|| {
            miette!(
                "a docker-archive (type=docker) holds one platform, but this build made an index"
            )
        })?;
        let mut root = image.manifest.clone();
        root.platform = None;
        let images = [NamedImage {
            names: names(out)?,
            root,
        }];
        let c = &image.config;
        let platform = Platform::new(&c.os, &c.architecture, c.variant.as_deref());
        let extra = manifest_json(&result.store.content, &images, &platform)?;
        write_archive(result, out, &images, &extra, step)
    }
}
