//! Directory → layer tar. The directory is an overlay upperdir (or any tree): overlay
//! whiteouts (char device 0/0) become `.wh.<name>` entries and opaque directories
//! (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a `.wh..wh..opq` entry.
//! Output is deterministic: entries sorted by name, no user/group names, mtimes clamped
//! to `SOURCE_DATE_EPOCH` when given, hard links kept as links.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
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
    let mut out = TarOut::new(HashingWriter::new(out), 0, 0);
    let mut pieces = Pieces::new(dir, opts);
    while let Some(piece) = pieces.next_piece()? {
        out.put(&piece)?;
    }
    out.put(&Piece::end())?;
    Ok(out.into_inner().finish())
}

/// One tar entry as bytes to write: its header blocks (PAX, GNU long names, the header)
/// and, for a regular file, the file whose bytes (then zero padding) follow.
pub(crate) struct Piece {
    /// Every byte of the entry before the file's content.
    pub header: Vec<u8>,
    /// The content of a regular file with bytes.
    pub body: Option<Body>,
}

/// When a streamed copy's source was last changed: with its device and inode, what tells
/// its bytes from those of another file with the same tar header (the context check
/// trusts the same to call a file unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    /// ctime, seconds.
    pub ctime: i64,
    /// ctime, nanoseconds.
    pub ctime_nsec: i64,
    /// mtime, nanoseconds (the header holds the seconds).
    pub mtime_nsec: i64,
}

impl Changed {
    /// When the file stat'ed as `md` last changed.
    pub(crate) fn of(md: &fs::Metadata) -> Changed {
        Changed {
            ctime: md.ctime(),
            ctime_nsec: md.ctime_nsec(),
            mtime_nsec: md.mtime_nsec(),
        }
    }
}

/// A regular file's content in a tar stream.
pub(crate) struct Body {
    /// The file.
    pub path: PathBuf,
    /// Its size (the header's).
    pub len: u64,
    /// Its device and inode: which file this is, not only what it is called.
    pub dev: u64,
    /// (See `dev`.)
    pub ino: u64,
    /// The content, when it was read ahead (small files, on the walking thread).
    pub data: Option<Vec<u8>>,
    /// For a streamed copy's source file: when it last changed.
    pub changed: Option<Changed>,
}

/// Files up to this size are read ahead by [`Body::read_ahead`].
const READ_AHEAD: u64 = 64 << 10;

impl Body {
    /// Reads a small file's content now (exactly `len` bytes, or an error if it shrank), so
    /// that writing the piece later makes no system call.
    pub fn read_ahead(&mut self) -> Result<(), LayerError> {
        if self.len > READ_AHEAD || self.data.is_some() {
            return Ok(());
        }
        let path = &self.path;
        let file = open_body(path)?;
        let mut data = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        file.take(self.len)
            .read_to_end(&mut data)
            .map_err(|e| LayerError::io("read", path, e))?;
        if data.len() as u64 != self.len {
            return Err(shrank(path));
        }
        self.data = Some(data);
        Ok(())
    }
}

/// Opens a file whose bytes go into the tar, never through a symlink: a file swapped for
/// one since its stat is an error, never a read of what the link points at.
fn open_body(path: &Path) -> Result<File, LayerError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| LayerError::io("open", path, e))
}

fn shrank(path: &Path) -> LayerError {
    LayerError::io(
        "read",
        path,
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while being archived",
        ),
    )
}

/// Tar blocks are 512 bytes.
const BLOCK: u64 = 512;

impl Piece {
    /// The two zero blocks ending an archive.
    pub fn end() -> Piece {
        Piece {
            header: vec![0; 2 * BLOCK as usize],
            body: None,
        }
    }

    /// Bytes of the whole entry in the stream.
    pub fn len(&self) -> u64 {
        self.header.len() as u64
            + self
                .body
                .as_ref()
                .map_or(0, |b| b.len.next_multiple_of(BLOCK))
    }
}

/// The entries of a layer directory as [`Piece`]s, in tar order (sorted by name).
pub(super) struct Pieces<'a> {
    dir: &'a Path,
    opts: &'a DiffOptions,
    walker: walkdir::IntoIter,
    links: HashMap<(u64, u64), PathBuf>,
    /// Writes headers into its vector, from which each piece takes them.
    scratch: tar::Builder<Vec<u8>>,
}

impl<'a> Pieces<'a> {
    pub fn new(dir: &'a Path, opts: &'a DiffOptions) -> Self {
        let walker = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        Pieces {
            dir,
            opts,
            walker,
            links: HashMap::new(),
            scratch: tar::Builder::new(Vec::new()),
        }
    }

    /// The next entry and its path below the directory, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(PathBuf, Piece)>, LayerError> {
        for entry in self.walker.by_ref() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(self.dir).to_path_buf();
                LayerError::io("walk", path, e.into())
            })?;
            let path = entry.path();
            let rel = path.strip_prefix(self.dir).map_err(|_| {
                LayerError::io("walk", path, std::io::ErrorKind::InvalidData.into())
            })?;
            let body = entry_piece(&mut self.scratch, path, rel, self.opts, &mut self.links)?;
            let header = std::mem::take(self.scratch.get_mut());
            if header.is_empty() {
                // Sockets: nothing in a tar.
                continue;
            }
            return Ok(Some((rel.to_path_buf(), Piece { header, body })));
        }
        Ok(None)
    }

    /// [`Self::next_entry`] without the path.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, LayerError> {
        Ok(self.next_entry()?.map(|(_, p)| p))
    }
}

/// Where pieces are written: counts the stream's offset and drops what lies before `skip`
/// without reading it (a resumed layer writes from there on).
pub(super) struct TarOut<W> {
    w: W,
    pos: u64,
    skip: u64,
    buf: Vec<u8>,
}

impl<W: Write> TarOut<W> {
    /// Writes to `w`; the next piece starts at offset `pos`; bytes before `skip` are dropped.
    pub fn new(w: W, pos: u64, skip: u64) -> Self {
        TarOut {
            w,
            pos,
            skip,
            buf: Vec::new(),
        }
    }

    /// The writer.
    pub fn into_inner(self) -> W {
        self.w
    }

    fn bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let start = self.pos;
        self.pos += bytes.len() as u64;
        let from = usize::try_from(self.skip.saturating_sub(start)).unwrap_or(usize::MAX);
        match bytes.get(from..) {
            Some(rest) if !rest.is_empty() => self.w.write_all(rest),
            _ => Ok(()),
        }
    }

    /// Writes one piece: its header, then its file's bytes (exactly the size the header
    /// gives: a file changing meanwhile cannot break the framing) and padding.
    pub fn put(&mut self, piece: &Piece) -> Result<(), LayerError> {
        let werr = |e| LayerError::io("write tar entry", PathBuf::new(), e);
        self.bytes(&piece.header).map_err(werr)?;
        let Some(body) = &piece.body else {
            return Ok(());
        };
        let padded = body.len.next_multiple_of(BLOCK);
        let start = self.pos;
        if start + padded <= self.skip {
            self.pos += padded;
            return Ok(());
        }
        let from = self.skip.saturating_sub(start);
        match (&body.data, usize::try_from(from)) {
            (Some(data), Ok(from)) => {
                if let Some(rest) = data.get(from..) {
                    self.w.write_all(rest).map_err(werr)?;
                }
            }
            _ if from < body.len => self.copy_file(body, from)?,
            _ => {}
        }
        self.pos = start + body.len;
        let pad = vec![0u8; usize::try_from(padded - body.len).unwrap_or(0)];
        self.bytes(&pad).map_err(werr)
    }

    /// The file's bytes from `from` on (the part before was skipped).
    fn copy_file(&mut self, body: &Body, from: u64) -> Result<(), LayerError> {
        let path = &body.path;
        let mut file = open_body(path)?;
        if from > 0 {
            file.seek(SeekFrom::Start(from))
                .map_err(|e| LayerError::io("seek", path, e))?;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; 256 << 10];
        }
        let mut left = body.len - from;
        while left > 0 {
            let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(0);
            let Some(buf) = self.buf.get_mut(..want) else {
                break;
            };
            let n = match file.read(buf) {
                Ok(0) => return Err(shrank(path)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io("read", path, e)),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            self.w
                .write_all(chunk)
                .map_err(|e| LayerError::io("write tar entry for", path, e))?;
            left -= n as u64;
        }
        Ok(())
    }
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

/// The tar entry of `path` (named `rel`) as [`write_tar`] writes it, `None` for what a tar
/// cannot hold (streamed copies merge these with entries of their own).
pub(crate) fn entry_of(
    path: &Path,
    rel: &Path,
    opts: &DiffOptions,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<Option<Piece>, LayerError> {
    let mut scratch = tar::Builder::new(Vec::new());
    let body = entry_piece(&mut scratch, path, rel, opts, links)?;
    let header = std::mem::take(scratch.get_mut());
    Ok((!header.is_empty()).then_some(Piece { header, body }))
}

/// The entry of a regular file named `rel` with header `h` (its size set) whose bytes are
/// read from `src` (device and inode, last `changed`) when written, as [`write_tar`] reads
/// a layer's files: exactly the size in the header, never through a symlink.
pub(crate) fn file_piece(
    h: &mut tar::Header,
    rel: &Path,
    src: &Path,
    (dev, ino): (u64, u64),
    changed: Changed,
) -> Result<Piece, LayerError> {
    let len = h
        .size()
        .map_err(|e| LayerError::io("write tar entry for", src, e))?;
    let mut scratch = tar::Builder::new(Vec::new());
    // The header only: the content is copied when the piece is written.
    scratch
        .append_data(h, rel, std::io::empty())
        .map_err(|e| LayerError::io("write tar entry for", src, e))?;
    let header = std::mem::take(scratch.get_mut());
    let body = (len > 0).then(|| Body {
        path: src.to_path_buf(),
        len,
        dev,
        ino,
        data: None,
        changed: Some(changed),
    });
    Ok(Piece { header, body })
}

/// Writes the header blocks of the entry for `path` (named `rel`) into `builder` and returns
/// the file whose content follows them, if any.
fn entry_piece(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &Path,
    rel: &Path,
    opts: &DiffOptions,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<Option<Body>, LayerError> {
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
        builder
            .append_data(&mut h, &wh, std::io::empty())
            .map_err(werr)?;
        return Ok(None);
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
                builder.append_link(&mut h, rel, first).map_err(werr)?;
                return Ok(None);
            }
            links.insert(key, rel.to_path_buf());
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        // The header only: the content is copied when the piece is written.
        builder
            .append_data(&mut h, rel, std::io::empty())
            .map_err(werr)?;
        if meta.len() > 0 {
            return Ok(Some(Body {
                path: path.to_path_buf(),
                len: meta.len(),
                dev: meta.dev(),
                ino: meta.ino(),
                data: None,
                changed: None,
            }));
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
    Ok(None)
}
