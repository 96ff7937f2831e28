//! `kiln copy SRC DST`: copy images (all platforms) between registries, OCI layout directories
//! (`oci:DIR[:TAG]`), OCI layout tarballs (`oci-archive:FILE[:TAG]`) and docker archives
//! (`docker-archive:FILE[:REF]`), with skopeo's transport names.

use crate::archive::{docker, oci};
use crate::registry_opts::registry_failure;
use crate::registry_opts::{runtime, RegistryArgs};
use crate::transfer_progress::{Direction, TransferProgress};
use kiln_oci::layout::LayoutDir;
use kiln_oci::media_type::ANNOTATION_REF_NAME;
use kiln_oci::{Platform, Reference};
use kiln_registry::pull::{pull, PlatformSelection, PullOptions};
use kiln_registry::push::{push, PushOptions};
use kiln_registry::store::{BlobStore, Blobs};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln copy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source: a registry reference, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:REF]`.
    pub source: String,
    /// Destination: a registry reference, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:REF]`.
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
    OciArchive(PathBuf, Option<String>),
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
    if let Some(rest) = s.strip_prefix("oci-archive:") {
        let (p, t) = split_path_tag(rest);
        return Ok(Location::OciArchive(p, t));
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
            .map_err(registry_failure)?;
        println!("{d}@{digest}");
        return Ok(ExitCode::SUCCESS);
    }
    // Stage the source as blobs + named roots.
    let (store, image): (Box<dyn BlobStore>, oci::NamedImage) = match &src {
        Location::Registry(r) => {
            let store = LayoutDir::create(staging.path()).into_diagnostic()?;
            let opts = PullOptions {
                platforms: PlatformSelection::All,
                concurrency: args.registry.concurrency(),
            };
            let pull_progress = TransferProgress::new(Direction::Pull, args.quiet);
            let pulled = rt
                .block_on(pull(&client, r, &store, &opts, &pull_progress))
                .map_err(registry_failure)?;
            (
                Box::new(store),
                oci::NamedImage {
                    names: vec![r.clone()],
                    root: pulled.root,
                },
            )
        }
        Location::Oci(dir, tag) => {
            let img = layout_image(dir, tag.as_deref(), &args.source)?;
            (Box::new(LayoutDir::open(dir).into_diagnostic()?), img)
        }
        Location::OciArchive(file, tag) => {
            let unpacked = unpack_archive(file, staging.path())?;
            oci::verify_layout_blobs(&unpacked)?;
            let img = layout_image(&unpacked, tag.as_deref(), &args.source)?;
            (Box::new(LayoutDir::open(&unpacked).into_diagnostic()?), img)
        }
        Location::DockerArchive(file, want) => {
            let store = LayoutDir::create(staging.path().join("store")).into_diagnostic()?;
            let unpacked = unpack_archive(file, staging.path())?;
            let images = docker::import(&unpacked, &Blobs(&store))?;
            let img = archive_image(images, want.as_ref(), &args.source)?;
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
                .map_err(registry_failure)?;
            println!("{r}@{d}");
        }
        Location::Oci(dir, tag) => {
            oci::write_dir(
                &dir,
                &Blobs(store.as_ref()),
                &[oci::NamedImage {
                    names: tagged_names(&image, tag.as_deref())?,
                    root: image.root.clone(),
                }],
            )?;
            println!("{}@{}", dir.display(), image.root.digest);
        }
        Location::OciArchive(file, tag) => {
            let images = [oci::NamedImage {
                names: tagged_names(&image, tag.as_deref())?,
                root: image.root.clone(),
            }];
            let f = std::fs::File::create(&file)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", file.display()))?;
            let w = oci::write_tar(
                std::io::BufWriter::new(f),
                &Blobs(store.as_ref()),
                &images,
                &[],
            )?;
            let f = w.into_inner().into_diagnostic()?;
            f.sync_all().into_diagnostic()?;
            println!("{}@{}", file.display(), image.root.digest);
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
            let extra = docker::manifest_json(&Blobs(store.as_ref()), &images, &Platform::host())?;
            let f = std::fs::File::create(&file)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", file.display()))?;
            let w = oci::write_tar(
                std::io::BufWriter::new(f),
                &Blobs(store.as_ref()),
                &images,
                &extra,
            )?;
            let f = w.into_inner().into_diagnostic()?;
            f.sync_all().into_diagnostic()?;
            println!("{}@{}", file.display(), image.root.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpacks the (maybe gzipped) tar `file` into `staging/unpacked`, returning that directory.
fn unpack_archive(file: &Path, staging: &Path) -> Result<PathBuf> {
    let unpacked = staging.join("unpacked");
    std::fs::create_dir_all(&unpacked).into_diagnostic()?;
    let f = std::fs::File::open(file)
        .into_diagnostic()
        .wrap_err_with(|| format!("{}", file.display()))?;
    oci::unpack(oci::open_maybe_gzip(Box::new(f))?, &unpacked)?;
    Ok(unpacked)
}

/// The names an image gets in a layout written with an optional `:TAG`: the source's name
/// with that tag (`localhost/image:TAG` for an unnamed source; the layout keeps the tag).
fn tagged_names(image: &oci::NamedImage, tag: Option<&str>) -> Result<Vec<Reference>> {
    Ok(match (tag, image.names.first()) {
        (Some(t), Some(n)) => vec![n.with_tag(t)],
        (Some(t), None) => {
            vec![Reference::parse(&format!("localhost/image:{t}")).into_diagnostic()?]
        }
        (None, _) => image.names.clone(),
    })
}

/// The image of a layout directory named by `tag` (its `org.opencontainers.image.ref.name`,
/// or the tag of a full name there), or its only image.
fn layout_image(dir: &Path, tag: Option<&str>, what: &str) -> Result<oci::NamedImage> {
    let images = oci::read_dir_images(dir, None)?;
    let layout_index = std::fs::read(dir.join("index.json")).unwrap_or_default();
    let idx: kiln_oci::ImageIndex = serde_json::from_slice(&layout_index)
        .into_diagnostic()
        .wrap_err_with(|| format!("{what}: index.json"))?;
    let ref_name = |d: &kiln_oci::Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
            .cloned()
    };
    let pick = match tag {
        Some(t) => idx
            .manifests
            .iter()
            .find(|d| ref_name(d).is_some_and(|n| n == t || n.ends_with(&format!(":{t}"))))
            .ok_or_else(|| {
                let tags: Vec<String> = idx.manifests.iter().filter_map(ref_name).collect();
                miette!(
                    "{what}: no image tagged {t} (the layout has: {})",
                    if tags.is_empty() {
                        "no tags".to_string()
                    } else {
                        tags.join(", ")
                    }
                )
            })?
            .digest
            .clone(),
        None if images.len() == 1 => images[0].root.digest.clone(),
        None => {
            return Err(miette!(
                "{what}: {} images; say which with :TAG",
                images.len()
            ))
        }
    };
    images
        .into_iter()
        .find(|i| i.root.digest == pick)
        .ok_or_else(|| miette!("{what}: image not found"))
}

/// The image of a docker archive named `want` (any of its RepoTags), or its only image.
fn archive_image(
    images: Vec<oci::NamedImage>,
    want: Option<&Reference>,
    what: &str,
) -> Result<oci::NamedImage> {
    let names = || {
        images
            .iter()
            .flat_map(|i| i.names.iter().map(|n| n.familiar()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(r) => {
            let found = images
                .iter()
                .position(|i| i.names.contains(r))
                .ok_or_else(|| {
                    miette!(
                        "{what}: no image named {} (the archive has: {})",
                        r.familiar(),
                        names()
                    )
                })?;
            let mut img = images
                .into_iter()
                .nth(found)
                .ok_or_else(|| miette!("{what}: image not found"))?;
            // The copy goes by the name asked for.
            img.names = vec![r.clone()];
            Ok(img)
        }
        None if images.len() == 1 => images
            .into_iter()
            .next()
            .ok_or_else(|| miette!("{what}: the archive has no image")),
        None => Err(miette!(
            "{what}: {} images ({}); say which with docker-archive:FILE:NAME",
            images.len(),
            names()
        )),
    }
}
