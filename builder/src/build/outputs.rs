//! Writing a build's result to each `--output`: the local image store
//! (and a registry with push), OCI and docker-archive tarballs, a
//! directory, or a tarball of the filesystem.

use super::export::ExportedImage;
use super::export_steps::{Counted, ExportStep, ExportSteps, PushProgress};
use super::run::{BuildOutcome, PlatformResult};
use super::BuildRequest;
use crate::export::docker_archive;
use crate::export::oci::{self, NamedImage};
use crate::export::output::{Destination, OutputKind, OutputSpec};
use crate::local_store::LocalStore;
use kiln_oci::{Platform, Reference};
use kiln_registry::progress::{NoProgress, Progress};
use kiln_registry::push::{push, PushOptions};
use kiln_solver::archive::{extract_tar, extract_tar_as_caller};
use kiln_solver::snapshot::layer::{write_tar, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::view::SnapshotView;
use kiln_solver::snapshot::Snapshot;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::io::Write;

/// Writes every output of `req`: images name the outcome's root (the index
/// when several platforms were built), filesystems are written per platform.
/// Each output reports on its step of `steps`.
pub fn write_outputs(
    req: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
    store: &LocalStore,
    layers: &LayerStore,
    results: &[PlatformResult],
    outcome: &BuildOutcome,
    steps: &ExportSteps,
) -> Result<()> {
    let ctx = Targets {
        req,
        runtime,
        store,
        layers,
        results,
        outcome,
    };
    for (i, out) in req.outputs.iter().enumerate() {
        tracing::debug!(kind = ?out.kind, names = ?out.names, dest = ?out.dest, "writing output");
        let step = steps.get(i);
        let written = write_output(&ctx, out, step);
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

/// What the outputs are written from.
struct Targets<'a> {
    req: &'a BuildRequest,
    runtime: &'a tokio::runtime::Runtime,
    store: &'a LocalStore,
    layers: &'a LayerStore,
    results: &'a [PlatformResult],
    outcome: &'a BuildOutcome,
}

/// Writes one output.
fn write_output(t: &Targets<'_>, out: &OutputSpec, step: Option<&ExportStep>) -> Result<()> {
    let (layers, results) = (t.layers, t.results);
    match out.kind {
        OutputKind::Image => {
            let root = t
                .outcome
                .root()
                .ok_or_else(|| miette!("internal error: no image was exported"))?;
            image_output(t.req, t.runtime, t.store, out, root, step)?;
        }
        OutputKind::Oci => {
            let root = t
                .outcome
                .root()
                .ok_or_else(|| miette!("internal error: no image was exported"))?;
            archive_output(t.store, out, root, None, step)?;
        }
        OutputKind::Docker => {
            let image = t.outcome.image.as_ref().ok_or_else(|| {
                miette!("a docker-archive (type=docker) holds one platform, but this build made an index")
            })?;
            archive_output(t.store, out, &image.manifest, Some(image), step)?;
        }
        OutputKind::Local | OutputKind::Tar => {
            let tarball = out.kind == OutputKind::Tar;
            let split = results.len() > 1 && out.flag("platform-split", true);
            let dest = match &out.dest {
                Some(Destination::Path(p)) => Some(p.as_path()),
                _ => None,
            };
            if results.len() <= 1 {
                for r in results {
                    filesystem_output_to(layers, &r.snapshot, dest, out, tarball, step)?;
                }
            } else if tarball {
                // Several platforms in one tarball: staged as a tree first
                // (one top directory per platform with the split), then tarred.
                let staging = tempfile::tempdir().into_diagnostic()?;
                for r in results {
                    let dir = if split {
                        staging.path().join(platform_dir(&r.platform))
                    } else {
                        staging.path().to_path_buf()
                    };
                    filesystem_output(layers, &r.snapshot, &dir, out, false, None)?;
                }
                let w = Counted::new(
                    open_dest(out, "tarball")?,
                    step.map(|s| s.item("sending tarball")),
                );
                let (w, _, _) =
                    write_tar(staging.path(), w, &DiffOptions::default()).into_diagnostic()?;
                w.finish().flush().into_diagnostic()?;
            } else {
                let Some(dest) = dest else {
                    return Err(miette!("type=local needs dest=<directory>"));
                };
                for r in results {
                    // Without the split, platforms are written over each other in order.
                    let dir = if split {
                        dest.join(platform_dir(&r.platform))
                    } else {
                        dest.to_path_buf()
                    };
                    filesystem_output(layers, &r.snapshot, &dir, out, false, step)?;
                }
            }
        }
        OutputKind::CacheOnly => {}
    }
    Ok(())
}

/// buildx's directory name of a platform under `platform-split`: `linux_arm_v7`.
pub fn platform_dir(p: &kiln_oci::Platform) -> String {
    p.to_string().replace('/', "_")
}

fn names(out: &OutputSpec) -> Result<Vec<Reference>> {
    out.names
        .iter()
        .map(|n| {
            Reference::parse(n)
                .into_diagnostic()
                .wrap_err_with(|| format!("invalid image name {n:?}"))
        })
        .collect()
}

fn image_output(
    req: &BuildRequest,
    runtime: &tokio::runtime::Runtime,
    store: &LocalStore,
    out: &OutputSpec,
    root: &kiln_oci::Descriptor,
    step: Option<&ExportStep>,
) -> Result<()> {
    let mut root = root.clone();
    root.platform = None;
    let names = names(out)?;
    let by_digest = out.flag("push-by-digest", false);
    if out.flag("store", true) && !by_digest {
        for n in &names {
            store.tag(n, &root)?;
            if let Some(step) = step {
                step.done_item(format!("naming to {n}"));
            }
        }
        // Untagged, the image stays reachable by the ID the build prints (docker's `<none>`).
        if names.is_empty() {
            store.keep_untagged(&root)?;
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
            // push-by-digest: the manifest goes up untagged, for `imagetools create` to merge later.
            let target = if by_digest {
                n.with_digest(root.digest.clone())
            } else {
                n.clone()
            };
            tracing::debug!(target = %target, root = %root.digest, "pushing");
            // The manifest goes up last, inside the same call: the layers' phase
            // ends when the call returns, the manifest's is named then.
            let progress = step.map(|s| PushProgress::new(s.item("pushing layers")));
            let pushed = runtime.block_on(push(
                &client,
                &target,
                &root,
                store,
                &PushOptions {
                    concurrency: req.registry.concurrency(),
                    mount_from: None,
                },
                match &progress {
                    Some(p) => p as &dyn Progress,
                    None => &NoProgress,
                },
            ));
            // A failed push leaves its phase unfinished; the step reports the error.
            if let (Some(p), true) = (progress, pushed.is_ok()) {
                p.finish();
            }
            let digest = pushed
                .into_diagnostic()
                .wrap_err_with(|| format!("pushing {target}"))?;
            if let Some(step) = step {
                step.done_item(format!("pushing manifest for {}@{digest}", n));
            }
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
            let f = std::fs::File::create(p)
                .into_diagnostic()
                .wrap_err_with(|| format!("creating {}", p.display()))?;
            Ok(Box::new(std::io::BufWriter::new(f)))
        }
    }
}

fn archive_output(
    store: &LocalStore,
    out: &OutputSpec,
    root: &kiln_oci::Descriptor,
    docker: Option<&ExportedImage>,
    step: Option<&ExportStep>,
) -> Result<()> {
    let mut root = root.clone();
    root.platform = None;
    let images = vec![NamedImage {
        names: names(out)?,
        root,
    }];
    let extra = if let Some(image) = docker {
        let platform = Platform {
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            os_version: None,
            os_features: None,
            variant: image.config.variant.clone(),
        };
        docker_archive::manifest_json(&store.content, &images, &platform)?
    } else {
        Vec::new()
    };
    let w = Counted::new(
        open_dest(out, "tarball")?,
        step.map(|s| s.item("sending tarball")),
    );
    let w = oci::write_tar(w, &store.content, &images, &extra)?;
    w.finish().flush().into_diagnostic()
}

/// One platform's filesystem into `dir` (platform-split).
fn filesystem_output(
    layers: &LayerStore,
    snapshot: &Snapshot,
    dir: &std::path::Path,
    out: &OutputSpec,
    tarball: bool,
    step: Option<&ExportStep>,
) -> Result<()> {
    filesystem_output_to(layers, snapshot, Some(dir), out, tarball, step)
}

/// `type=local` (a directory) or `type=tar`: the final filesystem itself.
fn filesystem_output_to(
    layers: &LayerStore,
    snapshot: &Snapshot,
    dest: Option<&std::path::Path>,
    out: &OutputSpec,
    tarball: bool,
    step: Option<&ExportStep>,
) -> Result<()> {
    let view = SnapshotView::mount(layers, snapshot).into_diagnostic()?;
    let opts = DiffOptions::default();
    if tarball {
        let w = Counted::new(
            open_dest(out, "tarball")?,
            step.map(|s| s.item("sending tarball")),
        );
        let (w, _, _) = write_tar(view.path(), w, &opts).into_diagnostic()?;
        return w.finish().flush().into_diagnostic();
    }
    let Some(dest) = dest else {
        return Err(miette!("type=local needs dest=<directory>"));
    };
    // Through a pipe: tar the view and unpack it, so owners, modes, links and
    // times come out as in the image.
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
