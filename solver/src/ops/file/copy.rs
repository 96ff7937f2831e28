//! COPY/ADD of one source path (or each match of a wildcard) from a source
//! root into the destination root, with `cp -a`-like metadata and BuildKit's
//! rules for where things land.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chmod::Chmod;
use super::chown::resolve_owner;
use super::error::FileOpError;
use super::include::{IncludeMatcher, Inclusion};
use super::meta::{mkdir_all, MetaPolicy};
use super::resolve::{clean_abs, resolve_in_root, split_last, Resolved};
use super::reuse::Reuse;
use super::stream::Stream;
use super::unpack::{is_archive, unpack};
use super::wildcard::{expand, has_wildcard};
use super::{FileOpOptions, SourceRoot};
use rayon::prelude::*;

use crate::llb::CopyAction;
use crate::pattern::PatternMatcher;

/// Stack of the thread that walks a copied tree.
const WALK_STACK: usize = 256 << 20;

/// Whether a destination as written names a directory to copy into.
pub(crate) fn dest_names_dir(dest: &str) -> bool {
    dest.is_empty() || dest.ends_with('/') || dest == "." || dest.ends_with("/.")
}

/// How a missing source's root is named in errors.
fn origin(source: &SourceRoot<'_>) -> &'static str {
    if source.ignore.is_some() {
        "build context or excluded by .dockerignore"
    } else {
        "the copied stage or image"
    }
}

/// Runs one copy action.
pub(crate) fn apply_copy(
    dest_root: &Path,
    users_root: &Path,
    source: &SourceRoot<'_>,
    action: &CopyAction,
    opts: &FileOpOptions<'_>,
) -> Result<(), FileOpError> {
    let policy = MetaPolicy {
        owner: action
            .owner
            .as_ref()
            .map(|o| resolve_owner(users_root, o))
            .transpose()?,
        chmod: action.mode.as_ref().map(Chmod::from_opt).transpose()?,
        timestamp: action.timestamp,
    };
    let (src, includes, copy_contents) = copy_parents(source, action)?;
    let dest = action.dest.as_str();
    if !action.create_dest_path {
        check_dest_parent(dest_root, dest)?;
    }
    let matches = if action.allow_wildcard {
        expand(source.path, &src, source.ignore)?
    } else {
        vec![clean_abs(&src)]
    };
    if matches.is_empty() {
        if action.allow_empty_wildcard {
            return Ok(());
        }
        return Err(FileOpError::NoMatch {
            pattern: action.src.clone(),
        });
    }
    let mut walker = Walker::new(dest_root, policy, source, action, &includes)?;
    walker.reuse = opts.reuse;
    walker.stream = opts.stream;
    for m in &matches {
        walker.copy_match(source, action, m, copy_contents)?;
    }
    Ok(())
}

/// The source path, include patterns and whether a directory's contents are copied, after
/// `--parents`: `dir/./rest` keeps `rest` under the destination; without a pivot the whole
/// path is kept. The lowering may already have done this (then include_patterns is set
/// and src is the pivot).
fn copy_parents(
    source: &SourceRoot<'_>,
    action: &CopyAction,
) -> Result<(String, Vec<String>, bool), FileOpError> {
    let src = action.src.clone();
    let includes = action.include_patterns.clone();
    if !action.parents || !includes.is_empty() {
        return Ok((src, includes, action.dir_copy_contents));
    }
    let (pivot, rest) = match src.split_once("/./") {
        Some((p, r)) => (p.to_string(), r.to_string()),
        None => ("/".to_string(), src.clone()),
    };
    let rest = clean_abs(&rest).trim_start_matches('/').to_string();
    if !has_wildcard(&pivot) && !has_wildcard(&rest) {
        let required = resolve_in_root(source.path, &format!("{pivot}/{rest}"), true)
            .map_err(FileOpError::io("stat", &action.src))?;
        if fs::symlink_metadata(&required.host).is_err() {
            return Err(FileOpError::RequiredPathMissing {
                path: action.src.clone(),
            });
        }
    }
    Ok((pivot, vec![rest], true))
}

/// Without `create_dest_path`, the destination's parent must be a directory already.
fn check_dest_parent(dest_root: &Path, dest: &str) -> Result<(), FileOpError> {
    if let Some((parent, _)) = split_last(dest) {
        let p = resolve_in_root(dest_root, &parent, true).map_err(FileOpError::io("stat", dest))?;
        if !p.host.is_dir() {
            return Err(FileOpError::DestParentMissing {
                path: dest.to_string(),
            });
        }
    }
    Ok(())
}

/// A directory whose creation waits until something inside it is copied
/// (include patterns, or an excluded directory with `!` re-inclusions).
struct Pending {
    target: PathBuf,
    /// Set once created (or found existing) because a descendant was copied.
    made: Option<bool>,
}

struct Walker<'a> {
    dest_root: &'a Path,
    policy: MetaPolicy,
    include: Option<IncludeMatcher>,
    exclude: Option<PatternMatcher>,
    ignore: Option<&'a PatternMatcher>,
    always_replace: bool,
    /// (dev, ino) of multiply-linked sources -> their first copy.
    inodes: HashMap<(u64, u64), PathBuf>,
    pending: Vec<Pending>,
    /// Regular files found by the walk, copied in parallel in batches.
    jobs: Vec<FileJob>,
    /// Directory metadata to apply once everything inside is in place, innermost first.
    dir_meta: Vec<DirMeta>,
    /// Files of the previous run of this step to take over (incremental copy).
    reuse: Option<&'a Reuse>,
    /// Regular files streamed into the layer tar instead of written.
    stream: Option<&'a Stream>,
}

/// Files queued before a batch is copied: bounds the memory of a huge walk.
const JOB_BATCH: usize = 4096;

/// A regular file to copy.
struct FileJob {
    src: PathBuf,
    src_rel: String,
    md: Metadata,
    target: PathBuf,
    shown: String,
    /// With a reuse record: the path below the layer root, and the previous result's
    /// file to link instead of copying when the record allows (see [`Reuse`]).
    reuse: Option<(String, Option<PathBuf>)>,
}

/// A directory's metadata, applied after its contents: creating entries changes a
/// directory's mtime, and a read-only mode would stop them being created.
struct DirMeta {
    src: PathBuf,
    md: Metadata,
    target: PathBuf,
    shown: String,
    /// Owner, mode, xattrs and times; only times when false.
    full: bool,
}

/// Decision for one path during the walk.
enum Decision {
    Skip,
    Copy { deferred: bool, skip_include: bool },
}

/// One path of the walk: the source, its path below the copied root (what include and
/// exclude patterns match), its path below the source root, and where it lands.
struct WalkPath<'p> {
    src: &'p Path,
    comps: &'p str,
    src_rel: &'p str,
    target: &'p Path,
}

/// How a directory is copied.
struct DirCopy {
    /// Give it the source's full metadata even if it already existed (nested directories).
    overwrite_meta: bool,
    /// Made only once something inside it is copied.
    deferred: bool,
    /// Its entries are included without matching the include patterns.
    skip_include: bool,
}

impl<'a> Walker<'a> {
    /// A walker copying into `dest_root` with the action's patterns.
    fn new(
        dest_root: &'a Path,
        policy: MetaPolicy,
        source: &SourceRoot<'a>,
        action: &CopyAction,
        includes: &[String],
    ) -> Result<Self, FileOpError> {
        let include = if includes.is_empty() {
            None
        } else {
            Some(IncludeMatcher::new(includes)?)
        };
        let exclude = if action.exclude_patterns.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&action.exclude_patterns)?)
        };
        Ok(Walker {
            dest_root,
            policy,
            include,
            exclude,
            ignore: source.ignore,
            always_replace: action.always_replace_existing_dest_paths,
            inodes: HashMap::new(),
            pending: Vec::new(),
            jobs: Vec::new(),
            dir_meta: Vec::new(),
            reuse: None,
            stream: None,
        })
    }

    /// Copies (or unpacks) one match of the source path; errors name the source as written
    /// unless it was a wildcard.
    fn copy_match(
        &mut self,
        source: &SourceRoot<'_>,
        action: &CopyAction,
        m: &str,
        copy_contents: bool,
    ) -> Result<(), FileOpError> {
        let dest = action.dest.as_str();
        let shown_src = if action.allow_wildcard && has_wildcard(&action.src) {
            m
        } else {
            action.src.as_str()
        };
        let resolved = resolve_in_root(source.path, m, action.follow_symlinks)
            .map_err(FileOpError::io("stat", shown_src))?;
        let md = match fs::symlink_metadata(&resolved.host) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileOpError::SourceNotFound {
                    path: shown_src.to_string(),
                    origin: origin(source),
                })
            }
            Err(e) => return Err(FileOpError::io("stat", shown_src)(e)),
        };
        let rel = resolved.rel_str();
        if let Some(ig) = source.ignore {
            if !rel.is_empty() && ig.excludes(&rel) && !(md.is_dir() && ig.has_exclusions()) {
                return Err(FileOpError::SourceNotFound {
                    path: shown_src.to_string(),
                    origin: origin(source),
                });
            }
        }
        if action.attempt_unpack && md.is_file() && is_archive(&resolved.host) {
            unpack(
                self.dest_root,
                &resolved.host,
                shown_src,
                dest,
                &self.policy,
            )?;
            return Ok(());
        }
        self.copy_top(&resolved, &md, m, dest, copy_contents)
    }
}

impl Walker<'_> {
    /// `target`'s path below the destination root, when it is valid UTF-8 (else it is
    /// neither taken over nor recorded).
    fn rel<'t>(&self, target: &'t Path) -> Option<&'t str> {
        target.strip_prefix(self.dest_root).ok()?.to_str()
    }

    /// Stops a streamed copy that is about to make something at or below a streamed file.
    fn check_stream(&self, target: &Path) -> Result<(), FileOpError> {
        self.stream.map_or(Ok(()), |s| s.check(target))
    }

    /// Tells the reuse record that `target` is no longer a copied regular file.
    fn replaced(&self, target: &Path) {
        if let (Some(r), Some(rel)) = (self.reuse, self.rel(target)) {
            r.replaced(rel);
        }
    }

    fn shown(&self, target: &Path) -> String {
        match target.strip_prefix(self.dest_root) {
            Ok(rel) => format!("/{}", rel.to_string_lossy()),
            Err(_) => target.to_string_lossy().into_owned(),
        }
    }

    /// Where `src` lands under `dest` (fsutil's prepareTargetDir), creating
    /// what must exist first, then copies it.
    fn copy_top(
        &mut self,
        src: &Resolved,
        md: &Metadata,
        matched: &str,
        dest: &str,
        copy_contents: bool,
    ) -> Result<(), FileOpError> {
        let ensure = if dest_names_dir(dest) {
            Some(dest.to_string())
        } else {
            split_last(dest).map(|(parent, _)| parent)
        };
        if let Some(ensure) = ensure {
            let e = resolve_in_root(self.dest_root, &ensure, true)
                .map_err(FileOpError::io("stat", dest))?;
            self.check_stream(&e.host)?;
            mkdir_all(
                self.dest_root,
                &e.rel,
                0o755,
                self.policy.owner,
                self.policy.timestamp,
            )?;
        }
        let dst =
            resolve_in_root(self.dest_root, dest, true).map_err(FileOpError::io("stat", dest))?;
        self.check_stream(&dst.host)?;
        let dest_md = fs::symlink_metadata(&dst.host).ok();
        let src_is_dir = md.is_dir();
        let base = split_last(matched).map(|(_, b)| b);
        let into = match &dest_md {
            Some(d) => (!copy_contents && src_is_dir) || (!src_is_dir && d.is_dir()),
            None => false,
        };
        let (target, target_rel) = match (&base, into) {
            (Some(b), true) => (dst.host.join(b), dst.rel.join(b)),
            _ => (dst.host.clone(), dst.rel.clone()),
        };
        let make = if copy_contents && src_is_dir && dest_md.is_none() {
            Some(target_rel.as_path())
        } else {
            target_rel.parent()
        };
        if let Some(make) = make {
            self.check_stream(&self.dest_root.join(make))?;
            mkdir_all(
                self.dest_root,
                make,
                0o755,
                self.policy.owner,
                self.policy.timestamp,
            )?;
        }
        let skip_include = self.include.is_none();
        let src_rel = src.rel_str();
        if let Some(s) = self.stream {
            s.new_walk();
        }
        // The walk recurses once per directory level, and paths may nest
        // ~2000 levels deep: run it on a thread whose stack cannot run out
        // (only the pages actually touched are committed).
        std::thread::scope(|scope| {
            let walk = std::thread::Builder::new()
                .name("kiln-copy".into())
                .stack_size(WALK_STACK)
                .spawn_scoped(scope, || {
                    self.copy(&src.host, "", &src_rel, &target, false, skip_include)
                })
                .map_err(FileOpError::io("spawn copier for", &src_rel))?;
            walk.join().unwrap_or_else(|_| {
                Err(FileOpError::Io {
                    op: "copy",
                    path: src_rel.clone(),
                    source: io::Error::other("the copier thread panicked"),
                })
            })
        })?;
        self.run_jobs()?;
        for d in std::mem::take(&mut self.dir_meta) {
            if d.full {
                self.policy.apply(&d.src, &d.md, &d.target, &d.shown)?;
            } else {
                self.policy.apply_times(&d.md, &d.target, &d.shown)?;
            }
        }
        Ok(())
    }

    /// Copies the queued files on the rayon pool (file creation, data and metadata are
    /// mostly kernel work, which two threads do nearly twice as fast); the first error in
    /// walk order wins.
    fn run_jobs(&mut self) -> Result<(), FileOpError> {
        let jobs = std::mem::take(&mut self.jobs);
        let (policy, always_replace) = (&self.policy, self.always_replace);
        let (reuse, stream) = (self.reuse, self.stream);
        let results: Vec<Result<(), FileOpError>> = jobs
            .par_iter()
            .map(|j| place_file(policy, always_replace, reuse, stream, j))
            .collect();
        results.into_iter().collect()
    }

    fn decide(
        &self,
        comps: &str,
        src_rel: &str,
        md: &Metadata,
        mut skip_include: bool,
    ) -> Decision {
        let mut deferred = false;
        if !comps.is_empty() {
            if let (Some(inc), false) = (&self.include, skip_include) {
                match inc.matches(comps) {
                    Inclusion::None => return Decision::Skip,
                    Inclusion::Partial if !md.is_dir() => return Decision::Skip,
                    Inclusion::Partial => deferred = true,
                    Inclusion::Full => skip_include = true,
                }
            }
            if let Some(ex) = &self.exclude {
                if ex.excludes(comps) {
                    if md.is_dir() && ex.has_exclusions() {
                        deferred = true;
                    } else {
                        return Decision::Skip;
                    }
                }
            }
        }
        if let Some(ig) = self.ignore {
            if !src_rel.is_empty() && ig.excludes(src_rel) {
                if md.is_dir() && ig.has_exclusions() {
                    deferred = true;
                } else {
                    return Decision::Skip;
                }
            }
        }
        Decision::Copy {
            deferred,
            skip_include,
        }
    }

    /// Copies `src` (and what is below it) to `target`, as the patterns decide.
    fn copy(
        &mut self,
        src: &Path,
        comps: &str,
        src_rel: &str,
        target: &Path,
        overwrite_meta: bool,
        skip_include: bool,
    ) -> Result<(), FileOpError> {
        let md = fs::symlink_metadata(src).map_err(FileOpError::io("stat", src_rel))?;
        let (deferred, skip_include) = match self.decide(comps, src_rel, &md, skip_include) {
            Decision::Skip => return Ok(()),
            Decision::Copy {
                deferred,
                skip_include,
            } => (deferred, skip_include),
        };
        let path = WalkPath {
            src,
            comps,
            src_rel,
            target,
        };
        if md.is_dir() {
            let how = DirCopy {
                overwrite_meta,
                deferred,
                skip_include,
            };
            return self.copy_dir(path, md, how);
        }
        self.flush()?;
        self.copy_entry(path, md)
    }

    /// Copies a directory: made now (or when something inside is copied, if deferred), its
    /// entries in name order, its metadata queued for after its contents.
    fn copy_dir(&mut self, p: WalkPath<'_>, md: Metadata, how: DirCopy) -> Result<(), FileOpError> {
        let WalkPath {
            src,
            comps,
            src_rel,
            target,
        } = p;
        let made = if how.deferred {
            self.pending.push(Pending {
                target: target.to_path_buf(),
                made: None,
            });
            None
        } else {
            self.flush()?;
            Some(self.make_dir(target)?)
        };
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(FileOpError::io("read", src_rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(FileOpError::io("read", src_rel))?;
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            let child_comps = if comps.is_empty() {
                n.to_string()
            } else {
                format!("{comps}/{n}")
            };
            let child_rel = if src_rel.is_empty() {
                n.to_string()
            } else {
                format!("{src_rel}/{n}")
            };
            self.copy(
                &src.join(&name),
                &child_comps,
                &child_rel,
                &target.join(&name),
                true,
                how.skip_include,
            )?;
        }
        let made = if how.deferred {
            self.pending.pop().and_then(|p| p.made)
        } else {
            made
        };
        // A directory gets the source's metadata when it was created
        // here, or when it is nested (not the destination itself).
        // The destination directory itself, when it already existed,
        // only takes the source's times (fsutil restores them).
        if let Some(created) = made {
            self.dir_meta.push(DirMeta {
                src: src.to_path_buf(),
                shown: self.shown(target),
                md,
                target: target.to_path_buf(),
                full: created || how.overwrite_meta,
            });
        }
        Ok(())
    }

    /// Copies a non-directory: a singly linked file is queued for the parallel batch, the
    /// first of several links copied now (the others link to it), anything else made here.
    fn copy_entry(&mut self, p: WalkPath<'_>, md: Metadata) -> Result<(), FileOpError> {
        let WalkPath {
            src,
            src_rel,
            target,
            ..
        } = p;
        let shown = self.shown(target);
        let ft = md.file_type();
        let key = (md.dev(), md.ino());
        if ft.is_file() && md.nlink() == 1 {
            let reuse = match (self.reuse, self.rel(target)) {
                (Some(r), Some(rel)) => Some((rel.to_string(), r.copied(rel, &md))),
                _ => None,
            };
            self.jobs.push(FileJob {
                src: src.to_path_buf(),
                src_rel: src_rel.to_string(),
                md,
                target: target.to_path_buf(),
                shown,
                reuse,
            });
            if self.jobs.len() >= JOB_BATCH {
                self.run_jobs()?;
            }
            return Ok(());
        }
        self.check_stream(target)?;
        if ft.is_file() && !self.inodes.contains_key(&key) {
            // The first of several links: copied now, so the others can link to it.
            self.replaced(target);
            let job = FileJob {
                src: src.to_path_buf(),
                src_rel: src_rel.to_string(),
                md,
                target: target.to_path_buf(),
                shown,
                reuse: None,
            };
            copy_file(&self.policy, self.always_replace, None, &job)?;
            self.inodes.insert(key, job.target);
            return Ok(());
        }
        self.replaced(target);
        clear_file_target(self.always_replace, target, &shown)?;
        if ft.is_file() {
            if let Some(first) = self.inodes.get(&key) {
                fs::hard_link(first, target).map_err(FileOpError::io("link", &shown))?;
            }
        } else if ft.is_symlink() {
            let link = fs::read_link(src).map_err(FileOpError::io("readlink", src_rel))?;
            symlink(&link, target).map_err(FileOpError::io("symlink", &shown))?;
        } else if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
            mknod(target, md.mode(), md.rdev()).map_err(FileOpError::io("mknod", &shown))?;
        } else {
            return Err(FileOpError::UnsupportedFileType {
                path: src_rel.to_string(),
            });
        }
        self.policy.apply(src, &md, target, &shown)
    }

    /// Creates the deferred parents of what is about to be copied.
    fn flush(&mut self) -> Result<(), FileOpError> {
        for i in 0..self.pending.len() {
            if self.pending.get(i).is_some_and(|p| p.made.is_none()) {
                let Some(target) = self.pending.get(i).map(|p| p.target.clone()) else {
                    continue;
                };
                let created = self.make_dir(&target)?;
                if let Some(p) = self.pending.get_mut(i) {
                    p.made = Some(created);
                }
            }
        }
        Ok(())
    }

    /// Makes `target` a directory; true when it was created.
    fn make_dir(&self, target: &Path) -> Result<bool, FileOpError> {
        self.check_stream(target)?;
        let shown = self.shown(target);
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => Ok(false),
            Ok(_) if self.always_replace => {
                self.replaced(target);
                fs::remove_file(target).map_err(FileOpError::io("remove", &shown))?;
                fs::create_dir(target).map_err(FileOpError::io("mkdir", &shown))?;
                Ok(true)
            }
            Ok(_) => Err(FileOpError::NotADirectory { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(target).map_err(FileOpError::io("mkdir", &shown))?;
                if let Some(s) = self.stream {
                    s.created_dir(target);
                }
                Ok(true)
            }
            Err(e) => Err(FileOpError::io("stat", shown)(e)),
        }
    }
}

/// Places a regular file: streamed into the layer tar when the copy streams and nothing is
/// in the way, taken over from the previous result when the reuse record allows, else
/// copied.
fn place_file(
    policy: &MetaPolicy,
    always_replace: bool,
    reuse: Option<&Reuse>,
    stream: Option<&Stream>,
    job: &FileJob,
) -> Result<(), FileOpError> {
    if let Some(s) = stream {
        if s.take(policy, &job.src, &job.md, &job.target)? {
            return Ok(());
        }
    }
    let mut record = None;
    if let (Some(r), Some((rel, prev))) = (reuse, &job.reuse) {
        if let Some(prev) = prev {
            if r.take_over(prev, rel, &job.md) {
                return Ok(());
            }
        }
        record = Some((r, rel.as_str()));
    }
    copy_file(policy, always_replace, record, job)
}

/// Copies a regular file with its metadata through open descriptors: the target is
/// created exclusively (whatever was in the way is cleared first, as for other types),
/// so the common case costs no extra stat of the target.
/// With `record`, a directory cleared out of the way is forgotten by the reuse record.
fn copy_file(
    policy: &MetaPolicy,
    always_replace: bool,
    record: Option<(&Reuse, &str)>,
    job: &FileJob,
) -> Result<(), FileOpError> {
    let FileJob {
        src,
        src_rel,
        md,
        target,
        shown,
        ..
    } = job;
    let mut from = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(FileOpError::io("open", src_rel))?;
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Owner-only until fchmod gives the final mode.
            .mode(0o600)
            .open(target)
    };
    let mut to = match create() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if let Some((r, rel)) = record {
                r.cleared_below(rel);
            }
            clear_file_target(always_replace, target, shown)?;
            create().map_err(FileOpError::io("create", shown))?
        }
        Err(e) => return Err(FileOpError::io("create", shown)(e)),
    };
    // File to file: copy_file_range or sendfile, in the kernel.
    io::copy(&mut from, &mut to).map_err(FileOpError::io("copy", shown))?;
    policy.apply_fd(&from, md, &to, shown)
}

/// Removes a non-directory in the way of a file copy.
fn clear_file_target(always_replace: bool, target: &Path, shown: &str) -> Result<(), FileOpError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            if always_replace {
                fs::remove_dir_all(target).map_err(FileOpError::io("remove", shown))
            } else {
                Err(FileOpError::ReplaceDirWithFile {
                    path: shown.to_string(),
                })
            }
        }
        Ok(_) => fs::remove_file(target).map_err(FileOpError::io("remove", shown)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileOpError::io("stat", shown)(e)),
    }
}

fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
