//! `kiln save`: write images to a tar (`docker load` compatible, or `--format oci`).

use crate::archive::{docker, oci};
use crate::local_store::LocalStore;
use kiln_oci::{Platform, Reference};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln save`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images (names or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output file (default: stdout, which must not be a terminal).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// `docker` (docker-archive with an OCI layout inside) or `oci` (plain OCI layout).
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    pub format: String,
    /// Platform for docker's manifest.json when an image has several (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
}

/// Runs `kiln save`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).into_diagnostic()?,
        None => Platform::host(),
    };
    let mut images: Vec<oci::NamedImage> = Vec::new();
    for what in &args.images {
        let img = store.find(what)?;
        // Saving by ID keeps the image unnamed.
        let name = Reference::parse(what)
            .ok()
            .filter(|r| r.to_string() == img.name);
        match images
            .iter_mut()
            .find(|i| i.root.digest == img.descriptor.digest)
        {
            Some(i) => i.names.extend(name),
            None => images.push(oci::NamedImage {
                names: name.into_iter().collect(),
                root: img.descriptor,
            }),
        }
    }
    // An explicit platform must be there: never another one in its place.
    if args.platform.is_some() {
        for i in &images {
            store.manifest_for(&i.root, Some(&platform))?;
        }
    }
    let extra = if args.format == "docker" {
        docker::manifest_json(&store.content, &images, &platform)?
    } else {
        Vec::new()
    };
    match &args.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("creating {}", path.display()))?;
            let w = std::io::BufWriter::with_capacity(1 << 20, tmp);
            let w = oci::write_tar(w, &store.content, &images, &extra)?;
            let tmp = w
                .into_inner()
                .into_diagnostic()
                .wrap_err_with(|| format!("writing {}", path.display()))?;
            tmp.as_file().sync_all().into_diagnostic()?;
            tmp.persist(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("writing {}", path.display()))?;
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                return Err(miette!(
                    "refusing to write an archive to a terminal; use -o FILE or redirect"
                ));
            }
            let out = std::io::stdout().lock();
            let mut w = oci::write_tar(
                std::io::BufWriter::new(out),
                &store.content,
                &images,
                &extra,
            )?;
            w.flush().into_diagnostic()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
