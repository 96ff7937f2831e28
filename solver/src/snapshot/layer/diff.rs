//! Directory → layer tar. The directory is an overlay upperdir (or any tree): overlay
//! whiteouts (char device 0/0) become `.wh.<name>` entries and opaque directories
//! (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a `.wh..wh..opq` entry.
//! Output is deterministic: entries sorted by name, no user/group names, mtimes clamped
//! to `SOURCE_DATE_EPOCH` when given, hard links kept as links.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_oci::Digest;

use super::compression::{Compression, Encoder};
use super::pax;
use super::{is_overlay_xattr, LayerError, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::content::{BlobInfo, ContentStore, Expected, ThreadedWriter};
use kiln_oci::HashingWriter;

/// How to write a layer.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Blob compression.
    pub compression: Compression,
    /// Codec level; the codec's default when `None`.
    pub level: Option<i32>,
    /// Clamp every mtime to at most this many seconds since the epoch (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<u64>,
}

/// A layer written into the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the uncompressed tar (what image configs list in `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The compressed blob in the content store.
    pub blob: BlobInfo,
    /// The blob's compression.
    pub compression: Compression,
}

/// Tars `dir` into the content store as one layer, hashing the tar (diffID) and the blob in
/// the same pass.
pub fn write_layer(
    dir: &Path,
    store: &ContentStore,
    opts: &DiffOptions,
) -> Result<LayerBlob, LayerError> {
    let ingest = store.ingest(Expected::default())?;
    // The blob's digest and file writes on a thread of their own, beside the tar walk.
    let writer = ThreadedWriter::new(ingest)
        .map_err(|e| LayerError::io("start the blob writer for", dir, e))?;
    let encoder = Encoder::new(writer, opts.compression, opts.level)
        .map_err(|e| LayerError::io("start compressor for", dir, e))?;
    let (encoder, diff_id, uncompressed_size) = write_tar(dir, encoder, opts)?;
    let ingest = encoder
        .finish()
        .and_then(ThreadedWriter::finish)
        .map_err(|e| LayerError::io("compress", dir, e))?;
    let blob = ingest.commit()?;
    Ok(LayerBlob {
        diff_id,
        uncompressed_size,
        blob,
        compression: opts.compression,
    })
}

/// Writes the uncompressed layer tar of `dir` to `out`; returns `out`, the diffID and the
/// tar's size. (`opts.compression` is not applied here.)
pub fn write_tar<W: Write>(
    dir: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<(W, Digest, u64), LayerError> {
    let mut builder = tar::Builder::new(HashingWriter::new(out));
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walker = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            LayerError::io("walk", path, e.into())
        })?;
        let path = entry.path();
        let rel = path
            .strip_prefix(dir)
            .map_err(|_| LayerError::io("walk", path, std::io::ErrorKind::InvalidData.into()))?;
        append_entry(&mut builder, path, rel, opts, &mut links)?;
    }
    let hashing = builder
        .into_inner()
        .map_err(|e| LayerError::io("write tar of", dir, e))?;
    Ok(hashing.finish())
}

fn clamp_mtime(meta: &fs::Metadata, opts: &DiffOptions) -> u64 {
    let m = u64::try_from(meta.mtime()).unwrap_or(0);
    match opts.source_date_epoch {
        Some(epoch) => m.min(epoch),
        None => m,
    }
}

fn base_header(meta: &fs::Metadata, opts: &DiffOptions) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(clamp_mtime(meta, opts));
    h.set_size(0);
    h
}

/// Sorted xattrs of `path` as PAX records, without overlayfs' private ones.
fn xattr_records(path: &Path) -> Result<Vec<u8>, LayerError> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(LayerError::io("list xattrs of", path, e)),
    };
    let mut names: Vec<_> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !is_overlay_xattr(n))
        .collect();
    names.sort();
    let mut records = Vec::new();
    for name in names {
        if let Some(value) =
            xattr::get(path, &name).map_err(|e| LayerError::io("read xattr of", path, e))?
        {
            records.extend(pax::record(&format!("{}{name}", pax::XATTR_PREFIX), &value));
        }
    }
    Ok(records)
}

fn is_opaque(path: &Path) -> Result<bool, LayerError> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        match xattr::get(path, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
            // Unprivileged processes cannot read trusted.*; that is "not opaque" for them.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(LayerError::io("read xattr of", path, e)),
        }
    }
    Ok(false)
}

/// Appends the tar entry of `path` (named `rel`) as [`write_tar`] writes it.
pub(crate) fn append_entry<W: Write>(
    builder: &mut tar::Builder<HashingWriter<W>>,
    path: &Path,
    rel: &Path,
    opts: &DiffOptions,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), LayerError> {
    let meta = fs::symlink_metadata(path).map_err(|e| LayerError::io("stat", path, e))?;
    let ft = meta.file_type();
    let werr = |e| LayerError::io("write tar entry for", path, e);

    // An overlay whiteout: a char device 0/0 becomes an empty `.wh.<name>` file.
    if ft.is_char_device() && meta.rdev() == 0 {
        let name = rel.file_name().ok_or_else(|| {
            LayerError::io("whiteout", path, std::io::ErrorKind::InvalidData.into())
        })?;
        let mut wh_name = std::ffi::OsString::from(WHITEOUT_PREFIX);
        wh_name.push(name);
        let wh = rel.with_file_name(wh_name);
        let mut h = base_header(&meta, opts);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        return builder
            .append_data(&mut h, &wh, std::io::empty())
            .map_err(werr);
    }

    let records = xattr_records(path)?;
    let mtime = clamp_mtime(&meta, opts);
    if !records.is_empty() {
        pax::append_pax_header(builder, &records, mtime).map_err(werr)?;
    }
    let mut h = base_header(&meta, opts);
    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        builder
            .append_data(&mut h, rel, std::io::empty())
            .map_err(werr)?;
        if is_opaque(path)? {
            let mut o = base_header(&meta, opts);
            o.set_entry_type(tar::EntryType::Regular);
            o.set_mode(0o644);
            o.set_uid(0);
            o.set_gid(0);
            builder
                .append_data(&mut o, rel.join(OPAQUE_MARKER), std::io::empty())
                .map_err(werr)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| LayerError::io("readlink", path, e))?;
        h.set_entry_type(tar::EntryType::Symlink);
        builder.append_link(&mut h, rel, target).map_err(werr)?;
    } else if ft.is_file() {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                return builder.append_link(&mut h, rel, first).map_err(werr);
            }
            links.insert(key, rel.to_path_buf());
        }
        let file = File::open(path).map_err(|e| LayerError::io("open", path, e))?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        // Exactly the stat'ed size: a file changing under us cannot corrupt the archive framing.
        let mut body = file.take(meta.len());
        let mut counted = CountingReader {
            inner: &mut body,
            n: 0,
        };
        builder
            .append_data(&mut h, rel, &mut counted)
            .map_err(werr)?;
        if counted.n != meta.len() {
            return Err(LayerError::io(
                "read",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while being archived",
                ),
            ));
        }
    } else if ft.is_char_device() || ft.is_block_device() {
        h.set_entry_type(if ft.is_char_device() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        });
        let rdev = meta.rdev();
        let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX);
        let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX);
        h.set_device_major(major).map_err(werr)?;
        h.set_device_minor(minor).map_err(werr)?;
        builder
            .append_data(&mut h, rel, std::io::empty())
            .map_err(werr)?;
    } else if ft.is_fifo() {
        h.set_entry_type(tar::EntryType::Fifo);
        builder
            .append_data(&mut h, rel, std::io::empty())
            .map_err(werr)?;
    }
    // Sockets cannot be represented in a tar; like Docker, they are left out.
    Ok(())
}

struct CountingReader<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
