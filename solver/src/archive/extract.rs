//! Unpacking a (possibly compressed) tarball into a directory without letting
//! any entry escape it.

use super::compression::decompress;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an archive could not be unpacked.
#[derive(Debug, Error)]
pub enum ExtractError {
    /// Reading or writing failed.
    #[error("unpacking {archive}: {source}")]
    Io {
        /// What was being unpacked (a path or a description like "stdin").
        archive: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry tried to write outside the destination.
    #[error("unpacking {archive}: entry {entry:?} would land outside the destination")]
    Escape {
        /// What was being unpacked.
        archive: String,
        /// The entry's path as stored.
        entry: PathBuf,
    },
}

/// Unpacks the tar stream in `reader` (plain, gzip, bzip2, xz or zstd) into
/// `dest`, keeping modes, owners (when root) and mtimes. `archive` names the
/// input in errors.
pub fn extract_tar<R: Read + Send>(
    reader: R,
    dest: &Path,
    archive: &str,
) -> Result<(), ExtractError> {
    extract_tar_with(reader, dest, archive, nix::unistd::geteuid().is_root())
}

/// [`extract_tar`] leaving every file owned by the caller: files handed to a
/// rootless user (`type=local` output) stay theirs, as BuildKit's client writes them.
pub fn extract_tar_as_caller<R: Read + Send>(
    reader: R,
    dest: &Path,
    archive: &str,
) -> Result<(), ExtractError> {
    extract_tar_with(reader, dest, archive, false)
}

fn extract_tar_with<R: Read + Send>(
    reader: R,
    dest: &Path,
    archive: &str,
    preserve_owners: bool,
) -> Result<(), ExtractError> {
    let io_err = |source| ExtractError::Io {
        archive: archive.to_string(),
        source,
    };
    let (_, reader) = decompress(reader).map_err(io_err)?;
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(true);
    tar.set_preserve_ownerships(preserve_owners);
    tar.set_overwrite(true);
    std::fs::create_dir_all(dest).map_err(io_err)?;
    for entry in tar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path().map_err(io_err)?.into_owned();
        // unpack_in refuses `..` components and writes through symlinks that
        // leave `dest`; it reports those as Ok(false).
        let unpacked = match entry.unpack_in(dest) {
            // The tar crate replaces an existing file with a new file or symlink but not
            // with a hard link; BuildKit (and tar) do: the same archive added twice, or
            // two archives with the same link, must unpack.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && entry.header().entry_type().is_hard_link() =>
            {
                remove_for_link(dest, &path).map_err(io_err)?;
                entry.unpack_in(dest)
            }
            r => r,
        };
        if !unpacked.map_err(io_err)? {
            return Err(ExtractError::Escape {
                archive: archive.to_string(),
                entry: path,
            });
        }
    }
    Ok(())
}

/// Removes the non-directory at `entry` (a tar path, made relative as the tar crate
/// makes it) under `dest` so a hard link can take its place; only when its
/// directory really is inside `dest`.
fn remove_for_link(dest: &Path, entry: &Path) -> std::io::Result<()> {
    use std::path::Component;
    let mut target = dest.to_path_buf();
    for c in entry.components() {
        match c {
            Component::Normal(n) => target.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(std::io::Error::other("a link path with .. is refused"))
            }
        }
    }
    let parent = target.parent().unwrap_or(dest).canonicalize()?;
    if !parent.starts_with(dest.canonicalize()?) {
        return Err(std::io::Error::other(format!(
            "{} leaves the destination",
            entry.display()
        )));
    }
    let Some(name) = target.file_name() else {
        return Ok(());
    };
    let target = parent.join(name);
    if std::fs::symlink_metadata(&target)?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("hard link {} would replace a directory", entry.display()),
        ));
    }
    std::fs::remove_file(&target)
}

/// True when `head` (the first bytes of a file, after decompression) is a tar
/// archive: the `ustar` magic at offset 257, or an old-style header whose
/// checksum adds up.
pub fn is_tar(head: &[u8]) -> bool {
    let Some(block) = head.get(..512) else {
        return false;
    };
    if block.get(257..262) == Some(b"ustar") {
        return true;
    }
    let Some(stored) = block.get(148..156) else {
        return false;
    };
    let stored = std::str::from_utf8(stored)
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(computed) && block[0] != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compressions(raw: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(raw).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(raw).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(raw).unwrap();
        vec![
            ("plain", raw.to_vec()),
            ("gzip", gz.finish().unwrap()),
            ("bzip2", bz.finish().unwrap()),
            ("xz", xz.finish().unwrap()),
            ("zstd", zstd::encode_all(raw, 1).unwrap()),
        ]
    }

    #[test]
    fn extracts_every_compression() {
        let raw = tar_with(&[("a.txt", b"alpha"), ("dir/b.txt", b"beta")]);
        assert!(is_tar(&raw));
        for (name, data) in compressions(&raw) {
            let dir = tempfile::tempdir().unwrap();
            extract_tar(data.as_slice(), dir.path(), name).unwrap();
            assert_eq!(
                std::fs::read(dir.path().join("a.txt")).unwrap(),
                b"alpha",
                "{name}"
            );
            assert_eq!(
                std::fs::read(dir.path().join("dir/b.txt")).unwrap(),
                b"beta",
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_entries_that_escape() {
        let mut raw = tar_with(&[("ok.txt", b"x")]);
        // Rewrite the name in the header by hand: tar::Builder refuses `..`.
        let mut evil = tar_with(&[("xx/evil.txt", b"x")]);
        evil[..11].copy_from_slice(b"../evil.txt");
        let mut h = tar::Header::from_byte_slice(&evil[..512]).clone();
        h.set_cksum();
        evil[..512].copy_from_slice(h.as_bytes());
        raw.truncate(raw.len() - 1024); // drop the end-of-archive blocks
        raw.extend_from_slice(&evil);
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        let err = extract_tar(raw.as_slice(), &dest, "evil.tar").unwrap_err();
        assert!(matches!(err, ExtractError::Escape { .. }), "{err}");
        assert!(!outer.path().join("evil.txt").exists());
    }

    /// `a` (with `data`) and `b`, a hard link to it.
    fn tar_with_link(data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let header = |size: usize, kind| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(kind);
            h
        };
        b.append_data(&mut header(data.len(), tar::EntryType::Regular), "a", data)
            .unwrap();
        b.append_link(&mut header(0, tar::EntryType::Link), "b", "a")
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_hard_link_replaces_an_existing_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let first = tar_with_link(b"one");
        let second = tar_with_link(b"two");
        // The same archive twice, then another with the same link.
        for raw in [&first, &first, &second] {
            extract_tar(raw.as_slice(), dir.path(), "links.tar").unwrap();
        }
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        let (ma, mb) = (
            std::fs::metadata(&a).unwrap(),
            std::fs::metadata(&b).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino());
        assert_eq!(ma.nlink(), 2);
        // A file that was there before any archive is replaced too.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::write(fresh.path().join("b"), "old").unwrap();
        extract_tar(first.as_slice(), fresh.path(), "links.tar").unwrap();
        assert_eq!(std::fs::read(fresh.path().join("b")).unwrap(), b"one");
    }

    #[test]
    fn text_is_not_a_tar() {
        assert!(!is_tar(b"FROM scratch\n"));
        assert!(!is_tar(&[0u8; 1024]));
    }
}
