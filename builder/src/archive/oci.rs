//! OCI image layouts as tarballs or directories: writing images (with their names) from a blob
//! store, and reading them back (also Docker's `docker save` archives, see `docker`).

use kiln_oci::copy::copy_images;
use kiln_oci::layout::LayoutDir;
use kiln_oci::tarball::TarSink;
use kiln_oci::walk::Partial;
use kiln_oci::{Descriptor, Digest, ImageSink, ImageSource, Reference};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// An image (or index) and the names it goes by.
#[derive(Debug, Clone)]
pub struct NamedImage {
    /// Names, possibly none.
    pub names: Vec<Reference>,
    /// Root manifest or index.
    pub root: Descriptor,
}

/// The roots and names of `images` as a copy takes them.
fn roots(images: &[NamedImage]) -> Vec<(Descriptor, Vec<String>)> {
    images
        .iter()
        .map(|i| {
            (
                i.root.clone(),
                i.names.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect()
}

/// Writes images (every blob reachable from them that `source` holds: an index's images that
/// were not pulled are left out) as an OCI layout tar, with the names as containerd and
/// BuildKit write them, plus `extra` files.
pub fn write_tar<W: Write>(
    w: W,
    source: &dyn ImageSource,
    images: &[NamedImage],
    extra: &[(String, Vec<u8>)],
) -> Result<W> {
    let sink = TarSink::new(w).into_diagnostic()?;
    copy_images(source, &roots(images), &sink, Partial::SkipMissingImages).into_diagnostic()?;
    for i in images.iter().filter(|i| i.names.is_empty()) {
        sink.add_unnamed(&i.root);
    }
    sink.finish(extra).into_diagnostic()
}

/// Writes images into an OCI layout directory (skopeo's `oci:DIR:TAG`), replacing entries of
/// the same tag and keeping the others.
pub fn write_dir(dir: &Path, source: &dyn ImageSource, images: &[NamedImage]) -> Result<()> {
    let sink = LayoutDir::create(dir).into_diagnostic()?;
    copy_images(source, &roots(images), &sink, Partial::SkipMissingImages).into_diagnostic()?;
    for i in images.iter().filter(|i| i.names.is_empty()) {
        sink.add_unnamed(&i.root).into_diagnostic()?;
    }
    Ok(())
}

/// Copies images from `source` into `sink` (a load or an import into the local store).
pub fn import_images(
    source: &dyn ImageSource,
    images: &[NamedImage],
    sink: &dyn ImageSink,
) -> Result<()> {
    let roots: Vec<_> = images
        .iter()
        .map(|i| (i.root.clone(), Vec::new()))
        .collect();
    copy_images(source, &roots, sink, Partial::SkipMissingImages).into_diagnostic()?;
    Ok(())
}

/// Opens an archive, transparently gunzipping it.
pub fn open_maybe_gzip(mut r: Box<dyn Read>) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = r.read(&mut magic[got..]).into_diagnostic()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained: Box<dyn Read> = Box::new(head.chain(r));
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)))
    } else {
        Ok(chained)
    }
}

/// Most symbolic links an archive may hold (docker's legacy `layer.tar` links, one per layer).
const MAX_LINKS: usize = 10_000;

/// Unpacks a tar stream into `dest` (entries outside it are refused by `unpack_in`).
/// Symbolic links to files of the archive (legacy `docker save` writes `ID/layer.tar` as a
/// link to a layer another image already holds) become copies of their target, resolved
/// inside `dest` only; links that lead outside it or to nothing are left out.
pub fn unpack(r: Box<dyn Read>, dest: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in ar.entries().into_diagnostic().wrap_err("reading archive")? {
        let mut entry = entry.into_diagnostic().wrap_err("reading archive")?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let path = entry.path().into_diagnostic().wrap_err("reading archive")?;
            let target = entry
                .link_name()
                .into_diagnostic()
                .wrap_err("reading archive")?;
            if let (Some(path), Some(target)) = (inside(Path::new("."), &path), target) {
                if links.len() >= MAX_LINKS {
                    return Err(miette!(
                        "the archive has more than {MAX_LINKS} symbolic links"
                    ));
                }
                let from = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if let Some(t) = inside(&from, &target) {
                    links.push((path, t));
                }
            }
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        entry
            .unpack_in(dest)
            .into_diagnostic()
            .wrap_err("unpacking archive")?;
    }
    // A link may point at another link: resolve in rounds, each making at least one copy.
    while !links.is_empty() {
        let before = links.len();
        links.retain(|(path, target)| !copy_link(dest, path, target));
        if links.len() == before {
            break;
        }
    }
    Ok(())
}

/// `base/rel` with `.` and `..` resolved lexically; `None` when it is absolute or leaves the root.
fn inside(base: &Path, rel: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for c in base.components().chain(rel.components()) {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.is_empty()).then(|| out.iter().collect())
}

/// Copies the regular file `dest/target` to `dest/path` (a link's place); whether it was
/// done. [`unpack`] never makes symbolic links, so both paths stay inside `dest`.
fn copy_link(dest: &Path, path: &Path, target: &Path) -> bool {
    let (from, to) = (dest.join(target), dest.join(path));
    if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file())
        || std::fs::symlink_metadata(&to).is_ok()
    {
        return false;
    }
    if let Some(parent) = to.parent() {
        if std::fs::create_dir_all(parent).is_err() {
            return false;
        }
    }
    std::fs::hard_link(&from, &to)
        .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
        .is_ok()
}

/// Reads the images of an OCI layout directory with their names (from `io.containerd.image.name`,
/// else a full reference in `org.opencontainers.image.ref.name`, else `default_repo:<ref.name>`).
pub fn read_dir_images(dir: &Path, default_repo: Option<&Reference>) -> Result<Vec<NamedImage>> {
    let layout = LayoutDir::open(dir).into_diagnostic()?;
    Ok(layout
        .images()
        .into_diagnostic()?
        .into_iter()
        .map(|i| NamedImage {
            names: i
                .names
                .into_iter()
                .chain(
                    i.tags
                        .iter()
                        .filter_map(|t| default_repo.map(|r| r.with_tag(t))),
                )
                .collect(),
            root: i.root,
        })
        .collect())
}

/// Hashes every file of `blobs/sha256/` and refuses the layout if one does not match its name.
pub fn verify_layout_blobs(layout: &Path) -> Result<()> {
    let dir = layout.join("blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e.into_diagnostic()?;
        if !e.file_type().into_diagnostic()?.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        let expected = Digest::parse(&format!("sha256:{name}"))
            .map_err(|_| miette!("archive has a stray file blobs/sha256/{name}"))?;
        let actual = hash_file(&e.path())?;
        if actual != expected {
            return Err(miette!(
                "archive blob {expected} is corrupt: its content hashes to {actual}"
            ));
        }
    }
    Ok(())
}

/// sha256 of a file, streaming.
pub fn hash_file(p: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(p)
        .into_diagnostic()
        .wrap_err_with(|| format!("{}", p.display()))?;
    let mut v = kiln_oci::digest::Verifier::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .into_diagnostic()
            .wrap_err_with(|| format!("{}", p.display()))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    Ok(v.finish().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        data: &[u8],
        link: &str,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn unpack_turns_links_inside_the_archive_into_copies_and_drops_the_rest() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host file").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // A link before its target, and a link to a link.
        add(
            &mut b,
            tar::EntryType::Symlink,
            "b/layer.tar",
            b"",
            "../a/layer.tar",
        );
        add(
            &mut b,
            tar::EntryType::Regular,
            "a/layer.tar",
            b"layer bytes",
            "",
        );
        add(
            &mut b,
            tar::EntryType::Symlink,
            "c/layer.tar",
            b"",
            "../b/layer.tar",
        );
        let escape = format!("../../../../../../..{}/secret", outside.path().display());
        add(&mut b, tar::EntryType::Symlink, "d/layer.tar", b"", &escape);
        let absolute = format!("{}/secret", outside.path().display());
        add(
            &mut b,
            tar::EntryType::Symlink,
            "e/layer.tar",
            b"",
            &absolute,
        );
        add(
            &mut b,
            tar::EntryType::Symlink,
            "f/layer.tar",
            b"",
            "../missing",
        );
        let bytes = b.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        unpack(Box::new(std::io::Cursor::new(bytes)), dest.path()).unwrap();
        for copy in ["a/layer.tar", "b/layer.tar", "c/layer.tar"] {
            let p = dest.path().join(copy);
            assert!(!p.is_symlink(), "{copy}");
            assert_eq!(std::fs::read(&p).unwrap(), b"layer bytes", "{copy}");
        }
        for gone in ["d/layer.tar", "e/layer.tar", "f/layer.tar"] {
            assert!(
                std::fs::symlink_metadata(dest.path().join(gone)).is_err(),
                "{gone}"
            );
        }
    }
}
