//! Incremental copies: a copy step run again (its sources changed) takes the files it
//! copied last time from the previous result's layer instead of copying them again, when
//! their source did not change since (same [`SourceStamp`]). A taken-over file is a hard
//! link to the previous layer's file, made in the pending layer's upper dir: same bytes,
//! same metadata (the stamp covers what the copy derives them from), no data written.
//!
//! Safe because layers are immutable once committed: nothing writes into a layer's inodes
//! (steps above write through overlayfs, which copies a lower file up before changing it),
//! and the copy itself never writes into an existing file (it clears and creates), which
//! is why only ops made of copies without unpacking use this (see [`Reuse::applies_to`]).

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::llb::FileAction;
use crate::snapshot::steps::{SourceStamp, StepRecord};

/// What a copy may take over, and the record of this run being built.
#[derive(Debug)]
pub struct Reuse {
    /// The previous result's layer and what it copied, if there is one.
    prev: Option<(PathBuf, BTreeMap<String, SourceStamp>)>,
    /// The pending layer's upper dir: the files this op writes land there.
    upper: PathBuf,
    /// The record of this run: copied files by path below the layer root.
    next: Mutex<BTreeMap<String, SourceStamp>>,
    /// Files taken over.
    taken: AtomicUsize,
}

impl Reuse {
    /// Whether `actions` may take files over: copies only, none unpacking archives (other
    /// actions and unpacking may write into an existing file).
    pub fn applies_to(actions: &[FileAction]) -> bool {
        !actions.is_empty()
            && actions
                .iter()
                .all(|a| matches!(a, FileAction::Copy(c) if !c.attempt_unpack))
    }

    /// Takes over from `prev` (the previous result's layer directory and record) into the
    /// pending layer whose upper dir is `upper`.
    pub fn new(prev: Option<(PathBuf, StepRecord)>, upper: PathBuf) -> Reuse {
        Reuse {
            prev: prev.map(|(dir, rec)| (dir, rec.files)),
            upper,
            next: Mutex::new(BTreeMap::new()),
            taken: AtomicUsize::new(0),
        }
    }

    /// Notes that the regular file `rel` (below the layer root) is copied from a source
    /// stat'ed as `md`; returns the previous layer's file to link instead, when the same
    /// source made it.
    pub(crate) fn copied(&self, rel: &str, md: &Metadata) -> Option<PathBuf> {
        let stamp = SourceStamp::of(md);
        if let Ok(mut next) = self.next.lock() {
            next.insert(rel.to_string(), stamp);
        }
        let (dir, files) = self.prev.as_ref()?;
        (files.get(rel) == Some(&stamp)).then(|| dir.join(rel))
    }

    /// Notes that `rel` became something else than a copied regular file (a link, a
    /// symlink, a directory, or removed together with what is below it).
    pub(crate) fn replaced(&self, rel: &str) {
        if let Ok(mut next) = self.next.lock() {
            next.remove(rel);
            remove_below(&mut next, rel);
        }
    }

    /// Notes that what was below `rel` is gone (a directory replaced by a file).
    pub(crate) fn cleared_below(&self, rel: &str) {
        if let Ok(mut next) = self.next.lock() {
            remove_below(&mut next, rel);
        }
    }

    /// Links the previous layer's file `prev` (made from a source with `md`'s size and
    /// mtime) as `rel` of the pending layer; false when it cannot (then the file is
    /// copied): the file is not what the record says, the parent is not in the upper dir
    /// yet (it exists only in a lower layer), or something is there already.
    pub(crate) fn take_over(&self, prev: &Path, rel: &str, md: &Metadata) -> bool {
        // A record outlives a crash that may have left the layer's files short.
        let same = fs::symlink_metadata(prev).is_ok_and(|p| {
            p.is_file()
                && p.size() == md.size()
                && (p.mtime(), p.mtime_nsec()) == (md.mtime(), md.mtime_nsec())
        });
        if !same || fs::hard_link(prev, self.upper.join(rel)).is_err() {
            return false;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Files taken over so far.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }

    /// The record of this run, for the layer it made.
    pub fn finish(self) -> StepRecord {
        StepRecord {
            layer: None,
            files: self.next.into_inner().unwrap_or_default(),
        }
    }
}

/// Removes the entries below the directory `rel` (a range of the sorted keys).
fn remove_below(files: &mut BTreeMap<String, SourceStamp>, rel: &str) {
    let below = format!("{rel}/");
    let gone: Vec<String> = files
        .range(below.clone()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(&below))
        .cloned()
        .collect();
    for k in gone {
        files.remove(&k);
    }
}
