//! Writing a build's result to each `--output`: the local image store
//! (and a registry with push), OCI and docker-archive tarballs, a
//! directory, or a tarball of the filesystem.

use super::export::ExportedImage;
use super::BuildRequest;
use crate::export::docker_archive;
use crate::export::oci::{self, NamedImage};
use crate::export::output::{Destination, OutputKind, OutputSpec};
use crate::local_store::{from_oci, LocalStore};
use kiln_registry::progress::NoProgress;
use kiln_registry::push::{push, PushOptions};
use kiln_registry::{Platform, Reference};
use kiln_solver::archive::extract_tar;
use kiln_solver::snapshot::layer::{write_tar, DiffOptions};
use kiln_solver::snapshot::Snapshot;
use kiln_solver::worker::layers::LayerStore;
use kiln_solver::worker::rootfs::SnapshotView;
use miette::{miette, IntoDiagnostic, Result};
use std::io::Write;

/// Writes every output of `req`.
pub fn write_outputs(
    req: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
    store: &LocalStore,
    layers: &LayerStore,
    snapshot: &Snapshot,
    image: Option<&ExportedImage>,
) -> Result<()> {
    for out in &req.outputs {
        match out.kind {
            OutputKind::Image => {
                let image =
                    image.ok_or_else(|| miette!("internal error: no image was exported"))?;
                image_output(req, runtime, store, out, image)?;
            }
            OutputKind::Oci | OutputKind::Docker => {
                let image =
                    image.ok_or_else(|| miette!("internal error: no image was exported"))?;
                archive_output(store, out, image)?;
            }
            OutputKind::Local => filesystem_output(layers, snapshot, out, false)?,
            OutputKind::Tar => filesystem_output(layers, snapshot, out, true)?,
            OutputKind::CacheOnly => {}
        }
    }
    Ok(())
}

fn names(out: &OutputSpec) -> Result<Vec<Reference>> {
    out.names
        .iter()
        .map(|n| Reference::parse(n).map_err(|e| miette!("invalid image name {n:?}: {e}")))
        .collect()
}

fn image_output(
    req: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
    store: &LocalStore,
    out: &OutputSpec,
    image: &ExportedImage,
) -> Result<()> {
    let mut root = from_oci(&image.manifest)?;
    root.platform = None;
    let names = names(out)?;
    if out.flag("store", true) {
        for n in &names {
            store.tag(n, &root)?;
        }
    }
    if out.push() {
        if names.is_empty() {
            return Err(miette!(
                "push=true needs an image name: add -t NAME or name= to the output"
            ));
        }
        let client = req.registry.client();
        for n in &names {
            let digest = runtime
                .block_on(push(
                    &client,
                    n,
                    &root,
                    store,
                    &PushOptions {
                        concurrency: req.registry.concurrency(),
                        mount_from: None,
                    },
                    &NoProgress,
                ))
                .map_err(|e| miette!("pushing {n}: {e}"))?;
            eprintln!("pushed {n}@{digest}");
        }
    }
    Ok(())
}

fn open_dest(out: &OutputSpec, what: &str) -> Result<Box<dyn Write>> {
    match &out.dest {
        Some(Destination::Stdout) | None => {
            if out.dest.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(miette!(
                    "refusing to write a {what} to a terminal: give dest=<file> or redirect stdout"
                ));
            }
            Ok(Box::new(std::io::stdout()))
        }
        Some(Destination::Path(p)) => {
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).into_diagnostic()?;
            }
            let f =
                std::fs::File::create(p).map_err(|e| miette!("creating {}: {e}", p.display()))?;
            Ok(Box::new(std::io::BufWriter::new(f)))
        }
    }
}

fn archive_output(store: &LocalStore, out: &OutputSpec, image: &ExportedImage) -> Result<()> {
    let mut root = from_oci(&image.manifest)?;
    root.platform = None;
    let images = vec![NamedImage {
        names: names(out)?,
        root,
    }];
    let extra = if out.kind == OutputKind::Docker {
        let platform = Platform {
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            os_version: None,
            os_features: None,
            variant: image.config.variant.clone(),
        };
        docker_archive::manifest_json(store, &images, &platform)?
    } else {
        Vec::new()
    };
    let w = open_dest(out, "tarball")?;
    let mut w = oci::write_tar(w, store, &images, &extra)?;
    w.flush().into_diagnostic()
}

/// `type=local` (a directory) or `type=tar`: the final filesystem itself.
fn filesystem_output(
    layers: &LayerStore,
    snapshot: &Snapshot,
    out: &OutputSpec,
    tarball: bool,
) -> Result<()> {
    let view = SnapshotView::mount(layers, snapshot).map_err(|e| miette!("{e}"))?;
    let opts = DiffOptions::default();
    if tarball {
        let w = open_dest(out, "tarball")?;
        let (mut w, _, _) = write_tar(view.path(), w, &opts).map_err(|e| miette!("{e}"))?;
        return w.flush().into_diagnostic();
    }
    let Some(Destination::Path(dest)) = &out.dest else {
        return Err(miette!("type=local needs dest=<directory>"));
    };
    // Through a pipe: tar the view and unpack it, so owners, modes, links and
    // times come out as in the image.
    let (reader, writer) = std::io::pipe().into_diagnostic()?;
    let src = view.path().to_path_buf();
    let producer =
        std::thread::spawn(move || write_tar(&src, writer, &DiffOptions::default()).map(|_| ()));
    extract_tar(reader, dest, &dest.display().to_string()).map_err(|e| miette!("{e}"))?;
    producer
        .join()
        .map_err(|_| miette!("internal error: the tar writer panicked"))?
        .map_err(|e| miette!("{e}"))?;
    Ok(())
}
