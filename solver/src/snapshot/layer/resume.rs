//! Incremental layer blobs: a gzip layer written from a committed layer directory keeps,
//! beside its blob, the writer's state at every chunk boundary of the tar (a *resume index*:
//! tar offset, CRC, sha256 state of the tar and of the blob, blob length, and a digest of
//! the tar headers before that point). A later layer whose tar starts with the same bytes —
//! the next run of a copy step that took most files over from this one — finds that index
//! (by the inode of its first file with content, which the copy took over), checks entry by
//! entry that its tar agrees with the old one (same headers, same inodes in the old
//! directory, which never changes once committed), then copies the old blob's prefix in the
//! kernel and only tars, compresses and hashes what comes after the last agreeing boundary.
//! The blob and diffID are the bytes a cold write gives: the same chunks, compressed alone.
//!
//! A streamed copy's layer has no directory: its files are read from their sources (the
//! context). Its index is found by the source of its first file with content, and an
//! entry agrees when its source has the same device, inode and change times as the one
//! the base read (what the context check trusts to call a file unchanged); those are
//! hashed with the headers, so the boundaries' digests check them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::compression::{gzip_level, Compression};
use super::diff::{Body, DiffOptions, LayerBlob, Piece, Pieces, TarOut};
use super::pargzip::{ChunkHook, InputMark, ParallelGzEncoder, CHUNK};
use super::LayerError;
use crate::content::{ContentStore, Expected, HashState, Ingest, ThreadedWriter};

/// Entries the walking thread may be ahead of the writer.
const WALK_AHEAD: usize = 1024;

/// Version of the index format (and of the chunking it describes).
const FORMAT: u32 = 1;

/// The writer's state at one chunk boundary of the tar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Point {
    /// Tar bytes before the boundary.
    offset: u64,
    /// CRC-32 of those bytes.
    crc: u32,
    /// sha256 state after them (hex).
    tar_hash: String,
    /// Blob bytes written once the chunks before the boundary were (gzip header included).
    blob_len: u64,
    /// sha256 state of the blob after those bytes (hex).
    blob_hash: String,
    /// sha256 of the header bytes of every entry starting before the boundary (hex).
    headers: String,
}

/// What is kept beside a blob (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlobIndex {
    format: u32,
    chunk: u64,
    level: u32,
    /// The committed layer directory the tar was made from (`None`: a streamed copy's sources).
    layer_dir: Option<PathBuf>,
    points: Vec<Point>,
}

/// The entries of a layer's tar in order, each with its path below the layer's root.
pub(crate) trait Entries {
    /// The next entry, or `None` at the end.
    fn next_entry(&mut self) -> Result<Option<(PathBuf, Piece)>, LayerError>;
}

impl Entries for Pieces<'_> {
    fn next_entry(&mut self) -> Result<Option<(PathBuf, Piece)>, LayerError> {
        Pieces::next_entry(self)
    }
}

/// Makes the entries of a layer, from the start (on the thread that walks them).
pub(crate) type MakeEntries<'a> = dyn Fn() -> Box<dyn Entries + 'a> + Sync + 'a;

/// What a tar is written from, which decides how a base is known to hold the same bytes.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// A committed layer directory: a file agrees when it is the same inode in the base's.
    Layer(&'a Path),
    /// A streamed copy's sources: a file agrees when its source's identity, hashed with
    /// the headers ([`HeaderMarks::entry`]), is the same.
    Sources,
}

/// The key under which a layer's index is found: its first file with content.
fn index_key(origin: Origin<'_>, body: &Body) -> String {
    match origin {
        Origin::Layer(_) => format!("{}-{}", body.dev, body.ino),
        Origin::Sources => format!("src-{}-{}", body.dev, body.ino),
    }
}

/// An earlier blob this layer may start like.
struct Base {
    blob: Digest,
    index: BlobIndex,
}

fn find_base(store: &ContentStore, key: &str, origin: Origin<'_>, level: u32) -> Option<Base> {
    let hex = store.blob_key(key)?;
    let blob = Digest::from_hex(hex.trim())?;
    let index: BlobIndex = serde_json::from_slice(&store.blob_index(&blob)?).ok()?;
    let same_origin = match (origin, &index.layer_dir) {
        (Origin::Layer(_), Some(dir)) => dir.is_dir(),
        (Origin::Sources, None) => true,
        _ => false,
    };
    let fits = index.format == FORMAT
        && index.chunk == CHUNK as u64
        && index.level == level
        && same_origin;
    fits.then_some(Base { blob, index })
}

/// The header digests at every chunk boundary so far: `marks[k]` belongs to offset
/// `(k + 1) * CHUNK` and hashes the headers of the entries starting before it.
struct HeaderMarks {
    hash: Sha256,
    marks: Vec<[u8; 32]>,
}

impl HeaderMarks {
    /// Records the boundaries up to `pos` (where the next entry starts), then adds its
    /// header (and its source's identity, for a streamed file).
    fn entry(&mut self, pos: u64, piece: &Piece) {
        self.upto(pos);
        self.hash.update(&piece.header);
        if let Some((body, changed)) = piece.body.as_ref().and_then(|b| Some((b, b.changed?))) {
            for n in [body.dev, body.ino] {
                self.hash.update(n.to_le_bytes());
            }
            for n in [changed.ctime, changed.ctime_nsec, changed.mtime_nsec] {
                self.hash.update(n.to_le_bytes());
            }
        }
    }

    fn upto(&mut self, pos: u64) {
        while (self.marks.len() as u64 + 1) * CHUNK as u64 <= pos {
            self.marks.push(self.hash.clone().finalize().into());
        }
    }

    fn at(&self, offset: u64) -> Option<String> {
        let k = usize::try_from(offset / CHUNK as u64)
            .ok()?
            .checked_sub(1)?;
        self.marks.get(k).map(hex::encode)
    }
}

/// Walking the new tar beside the base's index until they part.
struct Probe {
    base: Option<Base>,
    /// Whether the base was looked up (at the first file with content).
    looked_up: bool,
    /// Points of the base checked so far; the last one agreeing.
    checked: usize,
    agreed: Option<usize>,
}

impl Probe {
    /// Checks the base's points before `pos` (where an entry starts, or the end);
    /// `false` once one disagrees.
    fn check_points(&mut self, pos: u64, marks: &HeaderMarks) -> bool {
        let Some(base) = &self.base else {
            return true;
        };
        while let Some(p) = base.index.points.get(self.checked) {
            if p.offset > pos {
                break;
            }
            if marks.at(p.offset).as_deref() != Some(p.headers.as_str()) {
                return false;
            }
            self.agreed = Some(self.checked);
            self.checked += 1;
        }
        true
    }

    /// Whether the walk may go on comparing after the entry `rel` starting at `pos`.
    fn agrees(
        &mut self,
        store: &ContentStore,
        origin: Origin<'_>,
        level: u32,
        rel: &Path,
        piece: &Piece,
    ) -> bool {
        let Some(body) = &piece.body else {
            return true;
        };
        if !self.looked_up {
            self.looked_up = true;
            self.base = find_base(store, &index_key(origin, body), origin, level);
        }
        let Some(base) = &self.base else {
            return false;
        };
        if self.checked >= base.index.points.len() {
            return false;
        }
        match &base.index.layer_dir {
            // The same inode in the old directory: the same bytes (a committed layer never
            // changes).
            Some(old) => std::fs::symlink_metadata(old.join(rel))
                .is_ok_and(|m| m.dev() == body.dev && m.ino() == body.ino),
            // The source's identity is in the headers' digest, which the next boundary checks.
            // A file of the upper dir has none (a new inode each time): never taken over.
            None => body.changed.is_some(),
        }
    }
}

type Sink = ThreadedWriter<Ingest>;
type Points = Arc<Mutex<Vec<(InputMark, u64, HashState)>>>;

/// The hook recording each boundary's state, the blob's read on the writer thread.
fn recorder(points: &Points) -> ChunkHook<Sink> {
    let points = points.clone();
    Box::new(move |w: &mut Sink, mark: InputMark| {
        let points = points.clone();
        w.mark(move |ingest: &mut Ingest| {
            if let Ok(mut p) = points.lock() {
                p.push((mark, ingest.written(), ingest.hash_state()));
            }
        })
    })
}

/// An encoder, the tar offset it starts at and the resume points kept from the base.
type Resumed = (ParallelGzEncoder<Sink>, u64, Vec<Point>);

/// An encoder resumed after the base's point `at`, when the base blob is still there, with
/// the offset it starts at and the base's points up to it.
fn resume_at(
    store: &ContentStore,
    level: u32,
    base: &Base,
    at: usize,
    points: &Points,
    dir: &Path,
) -> Result<Option<Resumed>, LayerError> {
    let Some(p) = base.index.points.get(at) else {
        return Ok(None);
    };
    let (Ok(tar_hash), Ok(blob_hash)) = (hex::decode(&p.tar_hash), hex::decode(&p.blob_hash))
    else {
        return Ok(None);
    };
    let Some(ingest) = store.ingest_resumed(&base.blob, p.blob_len, &blob_hash)? else {
        return Ok(None);
    };
    let mark = InputMark {
        offset: p.offset,
        crc: p.crc,
        hash: tar_hash,
    };
    let sink = sink(ingest, dir)?;
    let Some(e) = ParallelGzEncoder::resume(sink, level, &mark, recorder(points)) else {
        return Ok(None);
    };
    let kept = base.index.points.get(..=at).unwrap_or_default().to_vec();
    tracing::debug!(blob = %base.blob, offset = p.offset, "layer blob resumed");
    Ok(Some((e, p.offset, kept)))
}

fn sink(ingest: Ingest, dir: &Path) -> Result<Sink, LayerError> {
    ThreadedWriter::new(ingest).map_err(|e| LayerError::io("start the blob writer for", dir, e))
}

/// Tars committed layer directory `dir` into the content store as a gzip layer (as
/// [`super::write_layer`] does, byte for byte), resuming from an earlier blob of a layer
/// that starts alike, and keeps the resume index of the new blob.
pub fn write_layer_indexed(
    dir: &Path,
    store: &ContentStore,
    opts: &DiffOptions,
) -> Result<LayerBlob, LayerError> {
    write_indexed(dir, store, opts).map(|(made, _)| made)
}

/// [`write_layer_indexed`], also returning the tar offset it resumed at (0: from scratch).
fn write_indexed(
    dir: &Path,
    store: &ContentStore,
    opts: &DiffOptions,
) -> Result<(LayerBlob, u64), LayerError> {
    let dir = std::fs::canonicalize(dir).map_err(|e| LayerError::io("resolve", dir, e))?;
    let entries = || -> Box<dyn Entries + '_> { Box::new(Pieces::new(&dir, opts)) };
    write_resumed(
        &dir,
        Origin::Layer(&dir),
        &entries,
        store,
        gzip_level(opts.level),
    )
}

/// Writes a streamed copy's layer (its `entries`; `name` in errors) as a gzip blob at the
/// default level, as a copy into a directory and [`super::write_layer`] would, resuming
/// from an earlier streamed blob whose sources agree, and keeps the new blob's index.
pub(crate) fn write_streamed(
    name: &Path,
    entries: &MakeEntries<'_>,
    store: &ContentStore,
) -> Result<LayerBlob, LayerError> {
    write_resumed(name, Origin::Sources, entries, store, gzip_level(None)).map(|(made, _)| made)
}

/// Writes `entries` as a gzip blob at `level`, resumed from a base when one agrees; with
/// the tar offset it resumed at (0: from scratch).
fn write_resumed(
    name: &Path,
    origin: Origin<'_>,
    entries: &MakeEntries<'_>,
    store: &ContentStore,
    level: u32,
) -> Result<(LayerBlob, u64), LayerError> {
    let pass = |resume| write_pass(name, origin, entries, store, level, resume);
    match pass(true)? {
        Some(made) => Ok(made),
        // The base went away under us: from scratch.
        None => pass(false)?
            .ok_or_else(|| LayerError::io("write tar of", name, std::io::ErrorKind::Other.into())),
    }
}

/// One pass over the entries: compares with a base (when `resume`) until they part, then
/// writes. `None` when a base agreed but could not be resumed from.
fn write_pass(
    dir: &Path,
    origin: Origin<'_>,
    entries: &MakeEntries<'_>,
    store: &ContentStore,
    level: u32,
    resume: bool,
) -> Result<Option<(LayerBlob, u64)>, LayerError> {
    let points: Points = Arc::default();
    let mut marks = HeaderMarks {
        hash: Sha256::new(),
        marks: Vec::new(),
    };
    let mut probe = Probe {
        base: None,
        looked_up: !resume,
        checked: 0,
        agreed: None,
    };
    let mut first_body = None;
    // Entries read while comparing, from the one holding the last agreeing point on.
    let mut pending: Vec<(u64, Piece)> = Vec::new();
    let mut out: Option<(TarOut<ParallelGzEncoder<Sink>>, Vec<Point>)> = None;
    let mut pos = 0u64;
    // The walk (stat, xattrs, reading small files once writing started) runs on a thread
    // of its own, a bounded queue ahead: the system calls of the two halves overlap.
    let writing = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<Option<(LayerBlob, u64)>, LayerError> {
        let (tx, rx) = sync_channel::<Result<Option<(PathBuf, Piece)>, LayerError>>(WALK_AHEAD);
        let writing = &writing;
        scope.spawn(move || {
            let mut pieces = entries();
            loop {
                let mut next = pieces.next_entry();
                if let (Ok(Some((_, piece))), true) = (&mut next, writing.load(Ordering::Relaxed)) {
                    if let Some(body) = piece.body.as_mut() {
                        if let Err(e) = body.read_ahead() {
                            next = Err(e);
                        }
                    }
                }
                let done = !matches!(next, Ok(Some(_)));
                // The receiver gone: the writer stopped (an error); nothing to tell.
                if tx.send(next).is_err() || done {
                    break;
                }
            }
        });
        loop {
            let next = rx.recv().map_err(|_| {
                LayerError::io("walk", dir, std::io::Error::other("the walk stopped"))
            })?;
            let (piece, rel) = match next? {
                Some((rel, piece)) => (piece, Some(rel)),
                None => (Piece::end(), None),
            };
            if let (None, Some(b)) = (&first_body, &piece.body) {
                first_body = Some(index_key(origin, b));
            }
            marks.upto(pos);
            if out.is_none() {
                let go_on = probe.check_points(pos, &marks)
                    && rel
                        .as_deref()
                        .is_some_and(|rel| probe.agrees(store, origin, level, rel, &piece));
                if go_on {
                    let agreed = probe
                        .agreed
                        .and_then(|a| probe.base.as_ref()?.index.points.get(a))
                        .map_or(0, |p| p.offset);
                    pending.retain(|(start, p)| start + p.len() > agreed);
                    marks.entry(pos, &piece);
                    let start = pos;
                    pos += piece.len();
                    pending.push((start, piece));
                    continue;
                }
                let (enc, skip, kept) = match (&probe.base, probe.agreed) {
                    (Some(base), Some(at)) => {
                        match resume_at(store, level, base, at, &points, dir)? {
                            Some(r) => r,
                            None => return Ok(None),
                        }
                    }
                    _ => {
                        let ingest = store.ingest(Expected::default())?;
                        let e = ParallelGzEncoder::tracked(
                            sink(ingest, dir)?,
                            level,
                            recorder(&points),
                        );
                        (e, 0, Vec::new())
                    }
                };
                writing.store(true, Ordering::Relaxed);
                let from = pending.first().map_or(pos, |(start, _)| *start);
                let mut w = TarOut::new(enc, from, skip);
                for (_, p) in pending.drain(..) {
                    w.put(&p)?;
                }
                out = Some((w, kept));
            }
            let Some((w, _)) = out.as_mut() else {
                continue;
            };
            marks.entry(pos, &piece);
            pos += piece.len();
            w.put(&piece)?;
            if rel.is_none() {
                break;
            }
        }
        marks.upto(pos);
        let Some((w, kept)) = out else {
            return Ok(None);
        };
        let index = IndexOf {
            origin,
            level,
            key: first_body,
        };
        finish(dir, store, &index, w, kept, &marks, &points)
    })
}

/// What the index of a new blob is made of besides its points.
struct IndexOf<'a> {
    origin: Origin<'a>,
    level: u32,
    /// The key of its first file with content (none: nothing to find it by).
    key: Option<String>,
}

/// Ends the blob: compression, commit, the index of its resume points.
fn finish(
    dir: &Path,
    store: &ContentStore,
    index: &IndexOf<'_>,
    w: TarOut<ParallelGzEncoder<Sink>>,
    kept: Vec<Point>,
    marks: &HeaderMarks,
    points: &Points,
) -> Result<Option<(LayerBlob, u64)>, LayerError> {
    let resumed_at = kept.last().map_or(0, |p| p.offset);
    let (sink, diff_id, size) = w
        .into_inner()
        .finish_tracked()
        .map_err(|e| LayerError::io("compress", dir, e))?;
    let ingest = sink
        .finish()
        .map_err(|e| LayerError::io("compress", dir, e))?;
    let blob = ingest.commit()?;
    let diff_id =
        diff_id.ok_or_else(|| LayerError::io("hash", dir, std::io::ErrorKind::Other.into()))?;
    let recorded = std::mem::take(&mut *points.lock().map_err(|_| {
        LayerError::io(
            "index",
            dir,
            std::io::Error::other("a writer thread panicked"),
        )
    })?);
    let mut all = kept;
    for (mark, blob_len, blob_hash) in recorded {
        let Some(headers) = marks.at(mark.offset) else {
            continue;
        };
        all.push(Point {
            offset: mark.offset,
            crc: mark.crc,
            tar_hash: hex::encode(&mark.hash),
            blob_len,
            blob_hash: hex::encode(&blob_hash),
            headers,
        });
    }
    keep_index(store, &blob.digest, index, all);
    let made = LayerBlob {
        diff_id,
        uncompressed_size: size,
        blob,
        compression: Compression::Gzip,
    };
    Ok(Some((made, resumed_at)))
}

/// Stores the index of `blob` and points its first file's key at it; a failure only
/// costs the next layer its resume.
fn keep_index(store: &ContentStore, blob: &Digest, of: &IndexOf<'_>, points: Vec<Point>) {
    let (Some(key), false) = (&of.key, points.is_empty()) else {
        return;
    };
    let index = BlobIndex {
        format: FORMAT,
        chunk: CHUNK as u64,
        level: of.level,
        layer_dir: match of.origin {
            Origin::Layer(dir) => Some(dir.to_path_buf()),
            Origin::Sources => None,
        },
        points,
    };
    let kept = serde_json::to_vec(&index)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            store
                .put_blob_index(blob, &bytes)
                .map_err(|e| e.to_string())
        })
        .and_then(|()| {
            store
                .set_blob_key(key, Some(blob.hex()))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = kept {
        tracing::debug!(error = %e, %blob, "the layer's resume index was not kept");
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::snapshot::layer::write_layer;

    use crate::snapshot::layer::pargzip::tests::noise;

    /// A layer like bigcontext's: a small file, a big one (3.5 chunks of noise and text),
    /// then many small files in directories.
    fn first_layer(dir: &Path) {
        fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        let mut big = noise(2 * CHUNK + 1000, 7);
        big.extend((0..CHUNK + CHUNK / 2).map(|i| b"kiln layer "[i % 11]));
        fs::write(dir.join("big.bin"), big).unwrap();
        for d in 0..4 {
            let sub = dir.join(format!("files/{d:03}"));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..150 {
                fs::write(
                    sub.join(format!("f{f:04}.txt")),
                    format!("file {d} {f}\n").repeat(40),
                )
                .unwrap();
            }
        }
    }

    /// A copy of `from` whose files are hard links (what an incremental copy makes), except
    /// those `fresh` names, which are copied.
    fn linked_copy(from: &Path, to: &Path, fresh: &[&str]) {
        for e in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(from).unwrap();
            let dest = to.join(rel);
            let md = e.metadata().unwrap();
            if md.is_dir() {
                fs::create_dir(&dest).unwrap();
                fs::set_permissions(&dest, md.permissions()).unwrap();
            } else if fresh.iter().any(|f| Path::new(f) == rel) {
                fs::copy(e.path(), &dest).unwrap();
            } else {
                fs::hard_link(e.path(), &dest).unwrap();
            }
        }
        // Directory mtimes as in `from` (creating entries changed them).
        for e in walkdir::WalkDir::new(from).min_depth(1) {
            let e = e.unwrap();
            if e.file_type().is_dir() {
                let rel = e.path().strip_prefix(from).unwrap();
                let t = e.metadata().unwrap().modified().unwrap();
                fs::File::open(to.join(rel))
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
        }
    }

    /// Rewrites `file` in place with byte `at` changed, its size kept and its mtime set to
    /// `mtime`: only its ctime (and inode, for a copy) tells.
    fn flip_byte(file: &Path, at: usize, mtime: std::time::SystemTime) {
        let mut bytes = fs::read(file).unwrap();
        bytes[at] ^= 0x20;
        fs::write(file, bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    fn cold(dir: &Path) -> (LayerBlob, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path()).unwrap();
        let made = write_layer(dir, &s, &DiffOptions::default()).unwrap();
        let bytes = s.read_blob(&made.blob.digest).unwrap();
        (made, bytes)
    }

    #[test]
    fn a_layer_starting_like_an_earlier_one_resumes_and_matches_a_cold_write() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path().join("content")).unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir(&a).unwrap();
        first_layer(&a);
        let opts = DiffOptions::default();
        let (first, at) = write_indexed(&a, &store, &opts).unwrap();
        assert_eq!(at, 0, "nothing to resume from yet");
        assert_eq!(first, cold(&a).0);

        // One small file after the big one edited (a new inode, as a copy makes).
        fs::create_dir(&b).unwrap();
        linked_copy(&a, &b, &["files/001/f0003.txt"]);
        fs::write(
            b.join("files/001/f0003.txt"),
            "edited, and longer than before\n",
        )
        .unwrap();
        let (second, at) = write_indexed(&b, &store, &opts).unwrap();
        assert!(at >= 3 * CHUNK as u64, "resumed after the big file: {at}");
        let (want, want_bytes) = cold(&b);
        assert_eq!(second, want, "same diffID and blob as a cold write");
        assert_eq!(store.read_blob(&second.blob.digest).unwrap(), want_bytes);
        assert_ne!(second.diff_id, first.diff_id);

        // The same tree again: resumes from the last blob, up to its end.
        let c = root.path().join("c");
        fs::create_dir(&c).unwrap();
        linked_copy(&b, &c, &[]);
        let (third, at) = write_indexed(&c, &store, &opts).unwrap();
        assert!(at + (CHUNK as u64) > want.uncompressed_size, "{at}");
        assert_eq!(third, want);
    }

    #[test]
    fn an_agreeing_name_and_size_with_other_bytes_is_not_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path().join("content")).unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir(&a).unwrap();
        first_layer(&a);
        let opts = DiffOptions::default();
        write_indexed(&a, &store, &opts).unwrap();
        // big.bin rewritten in place of its copy: same size, mode and mtime, other bytes.
        fs::create_dir(&b).unwrap();
        linked_copy(&a, &b, &["big.bin"]);
        let mtime = fs::metadata(a.join("big.bin")).unwrap().modified().unwrap();
        flip_byte(&b.join("big.bin"), CHUNK + 5, mtime);
        let (made, at) = write_indexed(&b, &store, &opts).unwrap();
        assert!(
            at < CHUNK as u64,
            "not resumed inside the changed file: {at}"
        );
        assert_eq!(made, cold(&b).0);

        // A changed mode (a header) further on: resumed before it, not after. (The base is
        // the last blob made with the same first file: b's.)
        let c = root.path().join("c");
        fs::create_dir(&c).unwrap();
        linked_copy(&b, &c, &["files/002/f0100.txt"]);
        fs::set_permissions(
            c.join("files/002/f0100.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let (made, at) = write_indexed(&c, &store, &opts).unwrap();
        assert!(at >= 3 * CHUNK as u64, "{at}");
        assert_eq!(made, cold(&c).0);

        // Only a header differs (a directory's mode; no inode to tell): caught by the
        // headers' digest at the next boundary.
        let d = root.path().join("d");
        fs::create_dir(&d).unwrap();
        linked_copy(&c, &d, &[]);
        fs::set_permissions(d.join("files/001"), fs::Permissions::from_mode(0o700)).unwrap();
        let (made, at) = write_indexed(&d, &store, &opts).unwrap();
        let want = cold(&d).0;
        assert!(at + (CHUNK as u64) < want.uncompressed_size, "{at}");
        assert_eq!(made, want);
    }

    /// The files of `dir` read as a streamed copy reads its sources (each body knowing when
    /// its file last changed), but for `.1`, written as the upper dir's files are.
    struct AsSources<'a>(Pieces<'a>, &'a str);

    impl Entries for AsSources<'_> {
        fn next_entry(&mut self) -> Result<Option<(PathBuf, Piece)>, LayerError> {
            let mut next = self.0.next_entry()?;
            if let Some((
                rel,
                Piece {
                    body: Some(body), ..
                },
            )) = next.as_mut()
            {
                if rel != Path::new(self.1) {
                    let md = fs::symlink_metadata(&body.path).unwrap();
                    body.changed = Some(super::super::diff::Changed::of(&md));
                }
            }
            Ok(next)
        }
    }

    /// In `first_layer`, after the big file.
    const IN_UPPER: &str = "files/002/f0005.txt";

    fn streamed(dir: &Path, store: &ContentStore) -> (LayerBlob, u64) {
        let opts = DiffOptions::default();
        let entries =
            || -> Box<dyn Entries + '_> { Box::new(AsSources(Pieces::new(dir, &opts), IN_UPPER)) };
        write_resumed(dir, Origin::Sources, &entries, store, gzip_level(None)).unwrap()
    }

    #[test]
    fn a_streamed_layer_resumes_where_its_sources_part_and_matches_a_cold_write() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path().join("content")).unwrap();
        let ctx = root.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        first_layer(&ctx);
        let (first, at) = streamed(&ctx, &store);
        assert_eq!(at, 0, "nothing to resume from yet");
        assert_eq!(first, cold(&ctx).0);

        // A small file after the big one edited in place (same inode, new ctime).
        fs::write(
            ctx.join("files/001/f0003.txt"),
            "edited, longer than before\n",
        )
        .unwrap();
        let (second, at) = streamed(&ctx, &store);
        assert!(at >= 3 * CHUNK as u64, "resumed after the big file: {at}");
        let (want, want_bytes) = cold(&ctx);
        assert_eq!(second, want, "same diffID and blob as a cold write");
        assert_eq!(store.read_blob(&second.blob.digest).unwrap(), want_bytes);

        // The big file rewritten in place with its size and mtime kept: only its ctime
        // tells, and the blob is not resumed inside it.
        let big = ctx.join("big.bin");
        flip_byte(
            &big,
            CHUNK + 5,
            fs::metadata(&big).unwrap().modified().unwrap(),
        );
        let (third, at) = streamed(&ctx, &store);
        assert!(
            at < CHUNK as u64,
            "not resumed inside the changed file: {at}"
        );
        assert_eq!(third, cold(&ctx).0);

        // A file of the upper dir changed, its header the same: never taken from the base.
        let file = ctx.join(IN_UPPER);
        flip_byte(&file, 0, fs::metadata(&file).unwrap().modified().unwrap());
        let (fourth, at) = streamed(&ctx, &store);
        assert!(at >= 3 * CHUNK as u64, "resumed before it: {at}");
        assert_eq!(fourth, cold(&ctx).0, "its new bytes");
    }

    #[test]
    fn a_lost_base_blob_or_index_means_a_cold_write() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path().join("content")).unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir(&a).unwrap();
        first_layer(&a);
        let opts = DiffOptions::default();
        let (first, _) = write_indexed(&a, &store, &opts).unwrap();
        fs::create_dir(&b).unwrap();
        linked_copy(&a, &b, &["files/003/f0000.txt"]);
        fs::write(b.join("files/003/f0000.txt"), "x").unwrap();
        // A torn index is ignored.
        store
            .put_blob_index(&first.blob.digest, b"{\"format\":1,")
            .unwrap();
        let (made, at) = write_indexed(&b, &store, &opts).unwrap();
        assert_eq!((at, &made), (0, &cold(&b).0));
        // Deleting a blob removes its index with it.
        assert!(store.delete(&made.blob.digest).unwrap());
        assert!(store.blob_index(&made.blob.digest).is_none());
        assert!(!root
            .path()
            .join("content/.kiln/blobindex")
            .join(made.blob.digest.hex())
            .exists());
        // Its inode pointer goes at the next collection; the first blob's stays.
        let keys = root.path().join("content/.kiln/blobindex/by-key");
        let pointing = |hex: &str| {
            fs::read_dir(&keys)
                .unwrap()
                .filter(|e| fs::read_to_string(e.as_ref().unwrap().path()).unwrap() == hex)
                .count()
        };
        store
            .set_blob_key("1-2", Some(first.blob.digest.hex()))
            .unwrap();
        assert_eq!(pointing(made.blob.digest.hex()), 1);
        store.prune_blob_keys();
        assert_eq!(pointing(made.blob.digest.hex()), 0);
        assert_eq!(pointing(first.blob.digest.hex()), 1);
    }
}
