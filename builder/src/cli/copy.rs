//! `kiln copy SRC DST`: copy images (all platforms) between registries, OCI layout directories
//! (`oci:DIR[:TAG]`) and docker archives (`docker-archive:FILE[:REF]`).

use crate::export::{docker_archive, oci};
use crate::registry_opts::{runtime, RegistryArgs};
use crate::transfer_progress::{Direction, TransferProgress};
use kiln_registry::pull::{pull, PlatformSelection, PullOptions};
use kiln_registry::push::{push, PushOptions};
use kiln_registry::store::{BlobDir, BlobStore};
use kiln_registry::{Platform, Reference};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln copy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source: a registry reference, `oci:DIR[:TAG]` or `docker-archive:FILE`.
    pub source: String,
    /// Destination: a registry reference, `oci:DIR[:TAG]` or `docker-archive:FILE[:REF]`.
    pub destination: String,
    /// Print less.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

enum Location {
    Registry(Reference),
    Oci(PathBuf, Option<String>),
    DockerArchive(PathBuf, Option<Reference>),
}

fn split_path_tag(rest: &str) -> (PathBuf, Option<String>) {
    // DIR:TAG where TAG has no '/'.
    match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !p.is_empty() => {
            (PathBuf::from(p), Some(t.to_string()))
        }
        _ => (PathBuf::from(rest), None),
    }
}

fn parse_location(s: &str) -> Result<Location> {
    if let Some(rest) = s.strip_prefix("oci:") {
        let (p, t) = split_path_tag(rest);
        return Ok(Location::Oci(p, t));
    }
    if let Some(rest) = s.strip_prefix("docker-archive:") {
        // FILE[:REF]: the reference part contains ':' itself, so split at the first ':' after the path.
        let (p, r) = match rest.split_once(':') {
            Some((p, r)) if !r.is_empty() => (p, Some(Reference::parse(r).into_diagnostic()?)),
            _ => (rest, None),
        };
        return Ok(Location::DockerArchive(PathBuf::from(p), r));
    }
    let s = s.strip_prefix("docker://").unwrap_or(s);
    Ok(Location::Registry(Reference::parse(s).into_diagnostic()?))
}

/// Runs `kiln copy`.
pub fn run(args: Args, _root: Option<&Path>) -> Result<ExitCode> {
    let src = parse_location(&args.source)?;
    let dst = parse_location(&args.destination)?;
    let client = args.registry.client();
    let rt = runtime()?;
    let progress = TransferProgress::new(Direction::Push, args.quiet);
    let staging = tempfile::tempdir().into_diagnostic()?;
    if let (Location::Registry(s), Location::Registry(d)) = (&src, &dst) {
        let digest = rt
            .block_on(kiln_registry::copy::copy(
                &client,
                s,
                d,
                staging.path(),
                args.registry.concurrency(),
                &progress,
            ))
            .into_diagnostic()?;
        println!("{d}@{digest}");
        return Ok(ExitCode::SUCCESS);
    }
    // Stage the source as blobs + named roots.
    let (store, image): (Box<dyn BlobStore>, oci::NamedImage) = match &src {
        Location::Registry(r) => {
            let store = BlobDir::new(staging.path()).into_diagnostic()?;
            let opts = PullOptions {
                platforms: PlatformSelection::All,
                concurrency: args.registry.concurrency(),
            };
            let pull_progress = TransferProgress::new(Direction::Pull, args.quiet);
            let pulled = rt
                .block_on(pull(&client, r, &store, &opts, &pull_progress))
                .into_diagnostic()?;
            (
                Box::new(store),
                oci::NamedImage {
                    names: vec![r.clone()],
                    root: pulled.root,
                },
            )
        }
        Location::Oci(dir, tag) => {
            let images = oci::read_dir_images(dir, None)?;
            let wanted = tag.clone();
            let layout_index = std::fs::read(dir.join("index.json")).unwrap_or_default();
            let idx: kiln_registry::ImageIndex = serde_json::from_slice(&layout_index)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", dir.display()))?;
            let pick = match &wanted {
                Some(t) => idx
                    .manifests
                    .iter()
                    .find(|d| {
                        d.annotations
                            .as_ref()
                            .and_then(|a| a.get(oci::REF_NAME_ANNOTATION))
                            .is_some_and(|n| n == t || n.ends_with(&format!(":{t}")))
                    })
                    .ok_or_else(|| miette!("{}: no image tagged {t}", dir.display()))?
                    .digest
                    .clone(),
                None if images.len() == 1 => images[0].root.digest.clone(),
                None => {
                    return Err(miette!(
                        "{}: several images; say which with oci:DIR:TAG",
                        dir.display()
                    ))
                }
            };
            let img = images
                .into_iter()
                .find(|i| i.root.digest == pick)
                .ok_or_else(|| miette!("{}: image not found", dir.display()))?;
            (Box::new(oci::LayoutBlobs { root: dir.clone() }), img)
        }
        Location::DockerArchive(file, _) => {
            let store = BlobDir::new(&staging.path().join("store")).into_diagnostic()?;
            let unpacked = staging.path().join("unpacked");
            std::fs::create_dir_all(&unpacked).into_diagnostic()?;
            let f = std::fs::File::open(file)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", file.display()))?;
            oci::unpack(oci::open_maybe_gzip(Box::new(f))?, &unpacked)?;
            let mut images = docker_archive::import(&unpacked, &store)?;
            if images.len() != 1 {
                return Err(miette!(
                    "{}: expected one image, found {}",
                    file.display(),
                    images.len()
                ));
            }
            let img = images.remove(0);
            (Box::new(store), img)
        }
    };
    match dst {
        Location::Registry(r) => {
            let opts = PushOptions {
                concurrency: args.registry.concurrency(),
                mount_from: None,
            };
            let d = rt
                .block_on(push(
                    &client,
                    &r,
                    &image.root,
                    store.as_ref(),
                    &opts,
                    &progress,
                ))
                .into_diagnostic()?;
            println!("{r}@{d}");
        }
        Location::Oci(dir, tag) => {
            let name = match (&tag, image.names.first()) {
                (Some(t), Some(n)) => vec![n.with_tag(t)],
                (Some(t), None) => {
                    vec![Reference::parse(&format!("localhost/image:{t}")).into_diagnostic()?]
                }
                (None, _) => image.names.clone(),
            };
            oci::write_dir(
                &dir,
                store.as_ref(),
                &[oci::NamedImage {
                    names: name,
                    root: image.root.clone(),
                }],
            )?;
            println!("{}@{}", dir.display(), image.root.digest);
        }
        Location::DockerArchive(file, r) => {
            let names = match r {
                Some(r) => vec![r],
                None => image.names.clone(),
            };
            let images = [oci::NamedImage {
                names,
                root: image.root.clone(),
            }];
            let extra = docker_archive::manifest_json(store.as_ref(), &images, &Platform::host())?;
            let f = std::fs::File::create(&file)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", file.display()))?;
            let w = oci::write_tar(std::io::BufWriter::new(f), store.as_ref(), &images, &extra)?;
            let f = w.into_inner().into_diagnostic()?;
            f.sync_all().into_diagnostic()?;
            println!("{}@{}", file.display(), image.root.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}
