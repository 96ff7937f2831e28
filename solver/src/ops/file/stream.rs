//! Streamed copies: a copy whose result only an exporter needs writes its regular files
//! straight from their sources into the layer tar instead of creating them in the layer
//! directory first (80k small files are 80k inode creations, then a second walk to tar
//! them). Everything else the copy makes (directories, symlinks, hard links, files whose
//! source has xattrs, replacements of what the base holds) is still made in the upper
//! dir as before; the tar is the upper dir's tar with the streamed files merged in at
//! their place in name order, entry for entry what [`crate::snapshot::layer::write_tar`]
//! writes for the same upper dir with those files copied into it.
//!
//! A streamed file never lands where something else is or later goes: such a copy stops
//! with [`FileOpError::StreamConflict`] and the worker runs it again unstreamed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::error::FileOpError;
use super::meta::MetaPolicy;
use crate::content::ContentStore;
use crate::snapshot::blobs::BlobError;
use crate::snapshot::layer::{
    entry_of, file_piece, write_streamed, Changed, DiffOptions, Entries, LayerBlob, LayerError,
    Piece,
};

/// A regular file whose tar entry is written from its source.
#[derive(Debug, Clone)]
struct StreamedFile {
    src: PathBuf,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// The source's device and inode, and when it last changed: what tells a later build
    /// that the entry holds the same bytes (`snapshot::layer::resume`).
    id: (u64, u64),
    changed: Changed,
}

/// The files a copy streams instead of writing, by path below the destination root.
#[derive(Debug)]
pub struct Stream {
    /// Where the copy writes (the overlay mount, or the upper dir itself).
    dest_root: PathBuf,
    /// The pending layer's upper dir.
    upper: PathBuf,
    /// By path below the root (bytes: hashing a `Path` walks its components).
    files: Mutex<HashMap<Vec<u8>, StreamedFile>>,
    /// Parent directories (below the root) known to be in the upper dir.
    parents: Mutex<HashSet<Vec<u8>>>,
    /// Directories the current walk created (below the root): what is in them, it made.
    fresh: Mutex<HashSet<Vec<u8>>>,
}

impl Stream {
    /// Streams files a copy into `dest_root` would make; `upper` is the pending layer's
    /// upper dir (the same directory when there is no base).
    pub fn new(dest_root: &Path, upper: &Path) -> Stream {
        Stream {
            dest_root: dest_root.to_path_buf(),
            upper: upper.to_path_buf(),
            files: Mutex::default(),
            parents: Mutex::default(),
            fresh: Mutex::default(),
        }
    }

    /// How many files are streamed.
    pub fn len(&self) -> usize {
        self.files.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Whether no file is streamed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `target`'s path below the root, as bytes without a leading `/`.
    fn rel<'t>(&self, target: &'t Path) -> Option<&'t [u8]> {
        let root = self.dest_root.as_os_str().as_bytes();
        let rel = target.as_os_str().as_bytes().strip_prefix(root)?;
        match rel {
            [] => Some(rel),
            [b'/', rest @ ..] => Some(rest),
            _ => None,
        }
    }

    /// Notes that the walk created the directory `target` (it was not there).
    pub(crate) fn created_dir(&self, target: &Path) {
        if let (Some(rel), Ok(mut fresh)) = (self.rel(target), self.fresh.lock()) {
            fresh.insert(rel.to_vec());
        }
    }

    /// A new walk begins: names in directories an earlier one created may repeat.
    pub(crate) fn new_walk(&self) {
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.clear();
        }
    }

    /// Fails with [`FileOpError::StreamConflict`] when `target` or one of its parents is a
    /// streamed file: the copy is about to make or replace something there, which the
    /// streamed file would have to be on disk for.
    pub(crate) fn check(&self, target: &Path) -> Result<(), FileOpError> {
        let Some(rel) = self.rel(target) else {
            return Ok(());
        };
        let files = self.files.lock().map_err(|_| FileOpError::StreamConflict)?;
        if files.is_empty() {
            return Ok(());
        }
        let mut end = rel.len();
        loop {
            let head = rel.get(..end).unwrap_or_default();
            if files.contains_key(head) {
                return Err(FileOpError::StreamConflict);
            }
            match head.iter().rposition(|&b| b == b'/') {
                Some(i) => end = i,
                None => return Ok(()),
            }
        }
    }

    /// Streams the regular file copied from `src` (stat'ed as `md`) to `target` when it
    /// can be: nothing is at `target`, its parent is in the upper dir already (so the tar
    /// holds the same parent entries as when the file is written), and the source has no
    /// xattrs. False: copy it as usual.
    pub(crate) fn take(
        &self,
        policy: &MetaPolicy,
        src: &Path,
        md: &Metadata,
        target: &Path,
    ) -> Result<bool, FileOpError> {
        let Some(rel) = self.rel(target) else {
            return Ok(false);
        };
        // Its parents are directories the walk made or found (checked then); a streamed
        // file already at `target` is found by the insert below.
        let parent = rel
            .iter()
            .rposition(|&b| b == b'/')
            .and_then(|i| rel.get(..i))
            .unwrap_or_default();
        // In a directory this walk created, nothing is at `target` but what the walk put
        // there, and the walk visits each name once: no need to look.
        let fresh = self.fresh.lock().is_ok_and(|f| f.contains(parent));
        if !fresh && !self.parent_in_upper(parent) {
            return Ok(false);
        }
        if xattr::list(src).map_or(true, |mut names| names.next().is_some()) {
            return Ok(false);
        }
        if !fresh {
            match fs::symlink_metadata(target) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                _ => return Ok(false),
            }
        }
        let owner = policy
            .owner
            .map_or((md.uid(), md.gid()), |o| (o.uid, o.gid));
        let mode = match &policy.chmod {
            Some(c) => c.apply(md.mode(), false),
            None => md.mode() & 0o7777,
        };
        let file = StreamedFile {
            src: src.to_path_buf(),
            size: md.size(),
            mode,
            uid: owner.0,
            gid: owner.1,
            mtime: policy.timestamp.unwrap_or(md.mtime()),
            id: (md.dev(), md.ino()),
            changed: Changed::of(md),
        };
        let mut files = self.files.lock().map_err(|_| FileOpError::StreamConflict)?;
        if files.insert(rel.to_vec(), file).is_some() {
            return Err(FileOpError::StreamConflict);
        }
        Ok(true)
    }

    fn parent_in_upper(&self, parent: &[u8]) -> bool {
        if let Ok(known) = self.parents.lock() {
            if known.contains(parent) {
                return true;
            }
        }
        let path = self.upper.join(std::ffi::OsStr::from_bytes(parent));
        let here = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if here {
            if let Ok(mut known) = self.parents.lock() {
                known.insert(parent.to_vec());
            }
        }
        here
    }

    /// Writes the layer: the upper dir's tar with the streamed files merged in, gzip
    /// compressed into `content`, hashed in the same pass, resumed from an earlier
    /// streamed layer's blob up to where their sources part. `None` when a streamed file's
    /// name turned out to be taken in the upper dir (then copy again unstreamed).
    pub fn write_layer(self, content: &ContentStore) -> Result<Option<LayerBlob>, BlobError> {
        let files = self.files.into_inner().unwrap_or_default();
        let mut children: HashMap<PathBuf, Vec<(OsString, StreamedFile)>> = HashMap::new();
        for (rel, f) in files {
            let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => (rel.get(..i), rel.get(i + 1..)),
                None => (Some(&[][..]), Some(rel.as_slice())),
            };
            let (Some(parent), Some(name)) = (parent, name) else {
                continue;
            };
            children
                .entry(PathBuf::from(std::ffi::OsStr::from_bytes(parent)))
                .or_default()
                .push((std::ffi::OsStr::from_bytes(name).to_os_string(), f));
        }
        let upper = self.upper;
        let clash = AtomicBool::new(false);
        let entries =
            || -> Box<dyn Entries + '_> { Box::new(MergedEntries::new(&upper, &children, &clash)) };
        match write_streamed(&upper, &entries, content) {
            Err(_) if clash.load(Ordering::Relaxed) => Ok(None),
            made => Ok(Some(made?)),
        }
    }
}

/// A directory being walked: its entries in name order, the next one to give.
struct Frame<'a> {
    host: PathBuf,
    rel: PathBuf,
    names: Vec<(OsString, Option<&'a StreamedFile>, bool)>,
    next: usize,
}

/// The entries of the upper dir in `write_tar`'s order (depth first, names sorted bytewise)
/// with the streamed files among the real ones. A walk with a stack of its own: paths may
/// nest thousands of levels deep.
struct MergedEntries<'a> {
    children: &'a HashMap<PathBuf, Vec<(OsString, StreamedFile)>>,
    links: HashMap<(u64, u64), PathBuf>,
    stack: Vec<Frame<'a>>,
    /// Set when a streamed file's name is taken in the upper dir (the walk then fails).
    clash: &'a AtomicBool,
    started: bool,
    upper: &'a Path,
}

impl<'a> MergedEntries<'a> {
    fn new(
        upper: &'a Path,
        children: &'a HashMap<PathBuf, Vec<(OsString, StreamedFile)>>,
        clash: &'a AtomicBool,
    ) -> Self {
        MergedEntries {
            children,
            links: HashMap::new(),
            stack: Vec::new(),
            clash,
            started: false,
            upper,
        }
    }

    /// Reads directory `host` (`rel` below the root) into a frame.
    fn frame(&self, host: PathBuf, rel: PathBuf) -> Result<Frame<'a>, LayerError> {
        let mut names: Vec<(OsString, Option<&StreamedFile>, bool)> = Vec::new();
        for entry in fs::read_dir(&host).map_err(|e| LayerError::io("walk", &host, e))? {
            let entry = entry.map_err(|e| LayerError::io("walk", &host, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| LayerError::io("walk", entry.path(), e))?
                .is_dir();
            names.push((entry.file_name(), None, is_dir));
        }
        if let Some(streamed) = self.children.get(&rel) {
            names.extend(streamed.iter().map(|(n, f)| (n.clone(), Some(f), false)));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        if names.windows(2).any(|w| w[0].0 == w[1].0) {
            self.clash.store(true, Ordering::Relaxed);
            return Err(LayerError::io(
                "merge streamed files into",
                &host,
                io::ErrorKind::AlreadyExists.into(),
            ));
        }
        Ok(Frame {
            host,
            rel,
            names,
            next: 0,
        })
    }

    /// A streamed file's entry: the header `write_tar` makes for its copy, its bytes read
    /// from the source (exactly the size stat'ed, as a copy would have been).
    fn file(f: &StreamedFile, rel: &Path) -> Result<Piece, LayerError> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(f.mode & 0o7777);
        h.set_uid(u64::from(f.uid));
        h.set_gid(u64::from(f.gid));
        h.set_mtime(u64::try_from(f.mtime).unwrap_or(0));
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(f.size);
        file_piece(&mut h, rel, &f.src, f.id, f.changed)
    }
}

impl Entries for MergedEntries<'_> {
    fn next_entry(&mut self) -> Result<Option<(PathBuf, Piece)>, LayerError> {
        if !self.started {
            self.started = true;
            let root = self.frame(self.upper.to_path_buf(), PathBuf::new())?;
            self.stack.push(root);
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some((name, streamed, is_dir)) = top.names.get(top.next).cloned() else {
                self.stack.pop();
                continue;
            };
            top.next += 1;
            let rel = top.rel.join(&name);
            if let Some(f) = streamed {
                return Ok(Some((rel.clone(), Self::file(f, &rel)?)));
            }
            let host = top.host.join(&name);
            let piece = entry_of(&host, &rel, &DiffOptions::default(), &mut self.links)?;
            if is_dir {
                let frame = self.frame(host, rel.clone())?;
                self.stack.push(frame);
            }
            if let Some(piece) = piece {
                return Ok(Some((rel, piece)));
            }
        }
    }
}
