//! OCI image layouts as tarballs or directories: writing images (with their names) from a blob
//! store, and reading them back (also Docker's `docker save` archives, see `docker_archive`).

use kiln_oci::{Descriptor, Manifest};
use kiln_oci::{Digest, Reference};
use kiln_registry::store::BlobStore;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Annotation with the full image name (containerd, Docker 25+).
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Annotation with the tag (OCI).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image (or index) and the names it goes by.
#[derive(Debug, Clone)]
pub struct NamedImage {
    /// Names, possibly none.
    pub names: Vec<Reference>,
    /// Root manifest or index.
    pub root: Descriptor,
}

/// Every blob reachable from `root` that `store` has (the root included), in a stable order.
pub fn reachable_blobs(
    store: &dyn BlobStore,
    root: &Descriptor,
    out: &mut BTreeMap<Digest, u64>,
) -> Result<()> {
    if out.contains_key(&root.digest) {
        return Ok(());
    }
    if !store.has_blob(&root.digest) {
        return Err(miette!("blob {} is missing from the store", root.digest));
    }
    out.insert(root.digest.clone(), root.size);
    let bytes = store.read_blob(&root.digest).into_diagnostic()?;
    match Manifest::parse(root.digest.as_ref(), &bytes, Some(&root.media_type))
        .into_diagnostic()?
        .0
    {
        Manifest::Image(m) => {
            for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                if !store.has_blob(&d.digest) {
                    return Err(miette!(
                        "layer {} of {} is missing from the store",
                        d.digest,
                        root.digest
                    ));
                }
                out.insert(d.digest.clone(), d.size);
            }
        }
        Manifest::Index(idx) => {
            for c in &idx.manifests {
                // Indexes may list platforms that were not pulled; only whole images are exported.
                if store.has_blob(&c.digest) {
                    reachable_blobs(store, c, out)?;
                }
            }
        }
    }
    Ok(())
}

/// index.json entries for the images: one per name, or one unnamed. As containerd and
/// BuildKit write them, `org.opencontainers.image.ref.name` is the tag (OCI's definition,
/// what `skopeo oci-archive:FILE:TAG` looks up) and `io.containerd.image.name` the full name.
pub fn index_entries(images: &[NamedImage]) -> Vec<Descriptor> {
    let mut out = Vec::new();
    for img in images {
        if img.names.is_empty() {
            out.push(img.root.clone());
        }
        for n in &img.names {
            let mut d = img.root.clone();
            let mut a = d.annotations.take().unwrap_or_default();
            a.insert(IMAGE_NAME_ANNOTATION.to_string(), n.to_string());
            a.insert(
                REF_NAME_ANNOTATION.to_string(),
                n.tag().unwrap_or("latest").to_string(),
            );
            d.annotations = Some(a);
            out.push(d);
        }
    }
    out
}

fn index_json(entries: &[Descriptor]) -> Result<Vec<u8>> {
    let idx = kiln_oci::ImageIndex::new(kiln_oci::media_type::OCI_INDEX, entries.to_vec());
    serde_json::to_vec(&idx).into_diagnostic()
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes an OCI layout tar (plus `extra` files such as Docker's manifest.json) to `w`,
/// streaming blobs from the store.
pub fn write_tar<W: Write>(
    w: W,
    store: &dyn BlobStore,
    images: &[NamedImage],
    extra: &[(String, Vec<u8>)],
) -> Result<W> {
    let mut blobs = BTreeMap::new();
    for i in images {
        reachable_blobs(store, &i.root, &mut blobs)?;
    }
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Deterministic);
    let dir = |tar: &mut tar::Builder<W>, name: &str| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, name, std::io::empty())
            .into_diagnostic()
    };
    dir(&mut tar, "blobs/")?;
    dir(&mut tar, "blobs/sha256/")?;
    for (digest, size) in &blobs {
        let f = store.open_blob(digest).into_diagnostic()?;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(*size);
        h.set_mtime(0);
        tar.append_data(
            &mut h,
            format!("blobs/sha256/{}", digest.hex()),
            f.take(*size),
        )
        .into_diagnostic()
        .wrap_err_with(|| format!("writing blob {digest}"))?;
    }
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
        (
            "index.json".to_string(),
            index_json(&index_entries(images))?,
        ),
    ];
    files.extend(extra.iter().cloned());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, &name, data.as_slice())
            .into_diagnostic()?;
    }
    tar.into_inner().into_diagnostic()
}

/// Writes images into an OCI layout directory (skopeo's `oci:DIR:TAG`), replacing entries of
/// the same tag and keeping the others. Blob files are written atomically.
pub fn write_dir(dir: &Path, store: &dyn BlobStore, images: &[NamedImage]) -> Result<()> {
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", blobs_dir.display()))?;
    let mut blobs = BTreeMap::new();
    for i in images {
        reachable_blobs(store, &i.root, &mut blobs)?;
    }
    for digest in blobs.keys() {
        let dest = blobs_dir.join(digest.hex());
        if dest.exists() {
            continue;
        }
        let tmp = blobs_dir.join(format!(".{}.tmp", digest.hex()));
        let mut src = store.open_blob(digest).into_diagnostic()?;
        let mut out = std::fs::File::create(&tmp)
            .into_diagnostic()
            .wrap_err_with(|| format!("creating {}", tmp.display()))?;
        std::io::copy(&mut src, &mut out)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing {}", tmp.display()))?;
        out.sync_all().into_diagnostic()?;
        std::fs::rename(&tmp, &dest).into_diagnostic()?;
    }
    let index_path = dir.join("index.json");
    let mut entries: Vec<Descriptor> = match std::fs::read(&index_path) {
        Ok(b) => {
            serde_json::from_slice::<kiln_oci::ImageIndex>(&b)
                .into_diagnostic()
                .wrap_err_with(|| format!("{}", index_path.display()))?
                .manifests
        }
        Err(_) => Vec::new(),
    };
    let new = index_entries(images);
    let new_names: Vec<Option<String>> = new.iter().map(ref_name).collect();
    entries.retain(|d| {
        let n = ref_name(d);
        n.is_none() || !new_names.contains(&n)
    });
    entries.extend(new);
    write_atomic(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_atomic(&index_path, &index_json(&entries)?)?;
    Ok(())
}

fn ref_name(d: &Descriptor) -> Option<String> {
    d.annotations
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .cloned()
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("kiln-tmp");
    kiln_registry::store::write_synced(&tmp, data).into_diagnostic()?;
    std::fs::rename(&tmp, path)
        .into_diagnostic()
        .wrap_err_with(|| format!("writing {}", path.display()))
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

/// A read-only view of a layout's `blobs/sha256` directory as a blob store.
pub struct LayoutBlobs {
    /// The layout directory.
    pub root: PathBuf,
}

impl BlobStore for LayoutBlobs {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.root.join("blobs/sha256").join(digest.hex()).is_file()
    }
    fn temp_path(&self) -> kiln_registry::Result<PathBuf> {
        Err(kiln_registry::Error::io(
            "layout",
            std::io::Error::other("read-only layout"),
        ))
    }
    fn commit_blob(&self, _: &Digest, _: &Path) -> kiln_registry::Result<()> {
        Err(kiln_registry::Error::io(
            "layout",
            std::io::Error::other("read-only layout"),
        ))
    }
    fn open_blob(&self, digest: &Digest) -> kiln_registry::Result<std::fs::File> {
        let p = self.root.join("blobs/sha256").join(digest.hex());
        std::fs::File::open(&p)
            .map_err(|e| kiln_registry::Error::io(format!("opening {}", p.display()), e))
    }
}

/// Reads the images of an OCI layout directory with their names (from `io.containerd.image.name`,
/// else a full reference in `org.opencontainers.image.ref.name`, else `default_repo:<ref.name>`).
pub fn read_dir_images(dir: &Path, default_repo: Option<&Reference>) -> Result<Vec<NamedImage>> {
    let p = dir.join("index.json");
    let bytes = std::fs::read(&p)
        .into_diagnostic()
        .wrap_err_with(|| format!("{}", p.display()))?;
    let idx: kiln_oci::ImageIndex = serde_json::from_slice(&bytes)
        .into_diagnostic()
        .wrap_err_with(|| format!("{}", p.display()))?;
    let mut out: Vec<NamedImage> = Vec::new();
    for mut d in idx.manifests {
        let ann = d.annotations.take().unwrap_or_default();
        let name = ann
            .get(IMAGE_NAME_ANNOTATION)
            .and_then(|n| Reference::parse(n).ok())
            .or_else(|| {
                let rn = ann.get(REF_NAME_ANNOTATION)?;
                if rn.contains('/') || rn.contains(':') {
                    Reference::parse(rn).ok()
                } else {
                    default_repo.map(|r| r.with_tag(rn))
                }
            });
        let mut rest: BTreeMap<String, String> = ann;
        rest.remove(IMAGE_NAME_ANNOTATION);
        rest.remove(REF_NAME_ANNOTATION);
        d.annotations = (!rest.is_empty()).then_some(rest);
        match out.iter_mut().find(|i| i.root.digest == d.digest) {
            Some(i) => i.names.extend(name),
            None => out.push(NamedImage {
                names: name.into_iter().collect(),
                root: d,
            }),
        }
    }
    Ok(out)
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

/// Moves blob files of a layout (verified by [`verify_layout_blobs`]) into `store`.
pub fn import_blobs(
    layout: &Path,
    store: &dyn BlobStore,
    blobs: &BTreeMap<Digest, u64>,
) -> Result<()> {
    for digest in blobs.keys() {
        if store.has_blob(digest) {
            continue;
        }
        let src = layout.join("blobs/sha256").join(digest.hex());
        store.commit_blob(digest, &src).into_diagnostic()?;
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
