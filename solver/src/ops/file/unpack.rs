//! ADD's auto-extraction: a local regular file that is a tar archive (plain,
//! gzip, bzip2, xz or zstd, detected by content) is unpacked into the
//! destination directory instead of being copied.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::FileOpError;
use super::meta::{mkdir_all, MetaPolicy};
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
/// creating it with the copy's owner and timestamp. Entries keep the owners,
/// modes and mtimes stored in the archive.
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
    Ok(())
}
