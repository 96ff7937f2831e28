//! ADD's auto-extraction: a local regular file that is a tar archive (plain,
//! gzip, bzip2, xz or zstd, detected by content) is unpacked into the
//! destination directory instead of being copied.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::chown::Owner;
use super::error::FileOpError;
use super::meta::{lchown, mkdir_all, MetaPolicy};
use super::resolve::resolve_in_root;
use crate::archive::{decompress, extract_tar, is_tar};

/// Whether the file at `path` decompresses to something that starts with a
/// tar header. Unreadable or garbled files are simply not archives.
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok((_, reader)) = decompress(file) else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    if reader.take(512).read_to_end(&mut head).is_err() {
        return false;
    }
    is_tar(&head)
}

/// Unpacks `archive` into `dest` (always a directory, as in BuildKit),
/// creating it with the copy's owner and timestamp. Entries keep the modes
/// and mtimes stored in the archive, and their owners unless `--chown` is given.
pub(crate) fn unpack(
    dest_root: &Path,
    archive: &Path,
    shown_src: &str,
    dest: &str,
    policy: &MetaPolicy,
) -> Result<(), FileOpError> {
    let d = resolve_in_root(dest_root, dest, true).map_err(FileOpError::io("stat", dest))?;
    mkdir_all(dest_root, &d.rel, 0o755, policy.owner, policy.timestamp)?;
    let file = File::open(archive).map_err(FileOpError::io("open", shown_src))?;
    extract_tar(file, &d.host, shown_src)?;
    if let Some(owner) = policy.owner {
        chown_entries(archive, shown_src, &d.host, owner)?;
    }
    Ok(())
}

/// `ADD --chown` owns what the archive unpacked too (BuildKit passes the
/// user as the untar's ChownOpts): a second pass over the entry names.
fn chown_entries(
    archive: &Path,
    shown_src: &str,
    dest: &Path,
    owner: Owner,
) -> Result<(), FileOpError> {
    let read_err = FileOpError::io("read", shown_src);
    let file = File::open(archive).map_err(FileOpError::io("open", shown_src))?;
    let (_, reader) = decompress(file).map_err(FileOpError::io("read", shown_src))?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(read_err)?;
    for entry in entries {
        let entry = entry.map_err(FileOpError::io("read", shown_src))?;
        let path = entry.path().map_err(FileOpError::io("read", shown_src))?;
        // extract_tar already refused entries that leave `dest`.
        let target = dest.join(&path);
        match lchown(&target, owner) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileOpError::io("chown", path.display())(e)),
        }
    }
    Ok(())
}
