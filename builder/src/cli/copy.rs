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
use kiln_registry::pull::{pull, pull_referrers, PlatformSelection, PullOptions};
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
    /// Every platform (skopeo's flag; kiln copy always copies the whole index, with the
    /// attestations, signatures and other referrers of its images).
    #[arg(long)]
    pub all: bool,
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
        // Digests are kept, so the referrers' subjects and the image's cosign signatures
        // still hold at the destination.
        let referrers = rt
            .block_on(kiln_registry::copy::copy_referrers(
                &client,
                s,
                d,
                &digest,
                &staging.path().join("referrers"),
            ))
            .map_err(registry_failure)?;
        rt.block_on(crate::signature::transfer::copy_signatures(
            &client, s, d, &digest,
        ))
        .map_err(registry_failure)?;
        report_referrers(referrers, args.quiet);
        println!("{d}@{digest}");
        return Ok(ExitCode::SUCCESS);
    }
    // Stage the source as blobs + named roots, with the artifacts referring to them.
    let (store, image, referrers): (Box<dyn BlobStore>, oci::NamedImage, Referrers) = match &src {
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
            let referrers = rt
                .block_on(pull_referrers(
                    &client,
                    r,
                    &store,
                    &pulled.root.digest,
                    &pull_progress,
                ))
                .map_err(registry_failure)?;
            (
                Box::new(store),
                oci::NamedImage {
                    names: vec![r.clone()],
                    root: pulled.root,
                },
                referrers,
            )
        }
        Location::Oci(dir, tag) => {
            let img = layout_image(dir, tag.as_deref(), &args.source)?;
            let layout = LayoutDir::open(dir).into_diagnostic()?;
            let referrers = layout_referrers(&layout, &img.root, &args.source)?;
            (Box::new(layout), img, referrers)
        }
        Location::OciArchive(file, tag) => {
            let unpacked = unpack_archive(file, staging.path())?;
            oci::verify_layout_blobs(&unpacked)?;
            let img = layout_image(&unpacked, tag.as_deref(), &args.source)?;
            let layout = LayoutDir::open(&unpacked).into_diagnostic()?;
            let referrers = layout_referrers(&layout, &img.root, &args.source)?;
            (Box::new(layout), img, referrers)
        }
        Location::DockerArchive(file, want) => {
            let store = LayoutDir::create(staging.path().join("store")).into_diagnostic()?;
            let unpacked = unpack_archive(file, staging.path())?;
            let images = docker::import(&unpacked, &Blobs(&store))?;
            let img = archive_image(images, want.as_ref(), &args.source)?;
            (Box::new(store), img, Vec::new())
        }
    };
    // In a layout the artifacts are untagged index.json entries (as oras keeps them).
    let artifacts = referrers.iter().map(|(d, _)| oci::NamedImage {
        names: Vec::new(),
        root: d.clone(),
    });
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
            rt.block_on(client.push_referrers(&r, store.as_ref(), &referrers))
                .map_err(registry_failure)?;
            report_referrers(referrers.len(), args.quiet);
            println!("{r}@{d}");
        }
        Location::Oci(dir, tag) => {
            let images: Vec<oci::NamedImage> = std::iter::once(oci::NamedImage {
                names: tagged_names(&image, tag.as_deref())?,
                root: image.root.clone(),
            })
            .chain(artifacts)
            .collect();
            oci::write_dir(&dir, &Blobs(store.as_ref()), &images)?;
            println!("{}@{}", dir.display(), image.root.digest);
        }
        Location::OciArchive(file, tag) => {
            let images: Vec<oci::NamedImage> = std::iter::once(oci::NamedImage {
                names: tagged_names(&image, tag.as_deref())?,
                root: image.root.clone(),
            })
            .chain(artifacts)
            .collect();
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
            if !referrers.is_empty() && !args.quiet {
                eprintln!(
                    "{} referrers (attestations, signatures) not copied: a docker-archive holds none",
                    referrers.len()
                );
            }
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

/// Artifacts referring to a copied image, each with its subject, subjects first.
type Referrers = Vec<(kiln_oci::Descriptor, kiln_oci::Digest)>;

/// Says how many referrers a copy carried along (stderr: stdout is the copy's digest).
fn report_referrers(n: usize, quiet: bool) {
    if n > 0 && !quiet {
        eprintln!("copied {n} referrers (attestations, signatures)");
    }
}

/// The artifacts of a layout that refer to `root` or to a manifest of it (its index.json
/// entries whose `subject` is one of them, and theirs), subjects first.
fn layout_referrers(
    layout: &LayoutDir,
    root: &kiln_oci::Descriptor,
    what: &str,
) -> Result<Referrers> {
    use kiln_oci::store::read_verified;
    let mut subjects = vec![root.digest.clone()];
    if kiln_oci::media_type::is_index(&root.media_type) {
        let bytes = read_verified(layout, root, "index").into_diagnostic()?;
        let index: kiln_oci::ImageIndex = serde_json::from_slice(&bytes)
            .into_diagnostic()
            .wrap_err_with(|| format!("{what}: {}", root.digest))?;
        subjects.extend(index.manifests.into_iter().map(|d| d.digest));
    }
    let mut candidates = Vec::new();
    for entry in layout.index().into_diagnostic()?.manifests {
        if entry.digest == root.digest || kiln_oci::media_type::is_index(&entry.media_type) {
            continue;
        }
        let bytes = read_verified(layout, &entry, "manifest").into_diagnostic()?;
        if let Ok(m) = serde_json::from_slice::<kiln_oci::ImageManifest>(&bytes) {
            if let Some(subject) = m.subject {
                candidates.push((entry, subject.digest));
            }
        }
    }
    // Referrers of referrers (a signature of an attestation) follow their subjects.
    let mut out: Referrers = Vec::new();
    for _ in 0..2 {
        let (found, rest): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|(_, s)| subjects.contains(s));
        subjects = found.iter().map(|(d, _)| d.digest.clone()).collect();
        out.extend(found);
        candidates = rest;
    }
    Ok(out)
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
        // Artifacts (attestations, signatures kept as referrers) are not images to pick.
        None => {
            let mut candidates = images.iter().filter(|i| i.root.artifact_type.is_none());
            match (candidates.next(), candidates.next()) {
                (Some(one), None) => one.root.digest.clone(),
                _ => {
                    return Err(miette!(
                        "{what}: {} images; say which with :TAG",
                        images.len()
                    ))
                }
            }
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
