//! Content checksums of selected paths of a directory tree: what a COPY source or a bind
//! mount with `source=` contributes to a cache key. Each entry is hashed by its path,
//! type, mode, owner, size, link target, device numbers, `security.capability` and content —
//! never its mtime, so touching a file or re-cloning a repository keeps the cache.
//! File contents are hashed in parallel (rayon); with a [`StatCache`] an unchanged file's
//! digest comes from the cache instead of its bytes.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::dirfd::WalkError;
use super::fingerprint::{Fingerprint, Print};
use super::statcache::{Memo, StatCache};
use super::walk::{missing, Walk};
use crate::pattern::{has_wildcards, Glob, GlobFlavor, PatternMatcher};
use crate::rootfs_path::resolve_in_root;

/// A content checksum (sha256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentChecksum(pub [u8; 32]);

impl fmt::Display for ContentChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl ContentChecksum {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = hex::decode(s.strip_prefix("sha256:")?).ok()?;
        Some(ContentChecksum(bytes.try_into().ok()?))
    }
}

impl serde::Serialize for ContentChecksum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentChecksum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentChecksum::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid checksum"))
    }
}

impl fmt::Debug for ContentChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentChecksum({})", &hex::encode(self.0)[..12])
    }
}

/// Errors while checksumming.
#[derive(Debug, thiserror::Error)]
pub enum ContentHashError {
    /// Reading the tree failed.
    #[error("checksum {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A wildcard selector does not compile.
    #[error("invalid pattern {pattern:?}: {source}")]
    Pattern {
        /// The selector.
        pattern: String,
        /// The parser's error.
        #[source]
        source: crate::pattern::GlobError,
    },
}

impl From<WalkError> for ContentHashError {
    fn from(e: WalkError) -> Self {
        ContentHashError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// A selected path and how to read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Path relative to the root (`/` or empty = everything).
    pub path: String,
    /// Expand `*`, `?`, `[...]` (Go `filepath.Match`, as COPY does).
    pub wildcards: bool,
    /// Follow a symlink named by the selector (its target's content counts).
    pub follow_final_symlink: bool,
}

impl Selector {
    /// A literal path, symlinks not followed.
    pub fn path(path: impl Into<String>) -> Self {
        Selector {
            path: path.into(),
            ..Default::default()
        }
    }
}

/// Normalises a selector the way COPY does: leading `/` and `..` stay inside the root.
pub fn clean_selector(selector: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(selector).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentHashError + '_ {
    move |source| ContentHashError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a selected path starts: the host path, its metadata, and whether a final link was
/// followed to it.
struct Start {
    path: PathBuf,
    meta: fs::Metadata,
    followed: bool,
}

/// Resolves the selected path `rel` (None: nothing there, a missing path has a record of
/// its own): symlinks on the way resolve inside `root`, the final one only when `follow`.
fn resolve_start(root: &Path, rel: &str, follow: bool) -> Result<Option<Start>, ContentHashError> {
    let start = in_root(root, rel, false).map_err(io_err(&root.join(rel)))?;
    let meta = match fs::symlink_metadata(&start) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&start)(e)),
    };
    if !(follow && meta.file_type().is_symlink()) {
        return Ok(Some(Start {
            path: start,
            meta,
            followed: false,
        }));
    }
    let target = in_root(root, rel, true).map_err(io_err(&start))?;
    match fs::symlink_metadata(&target) {
        Ok(meta) => Ok(Some(Start {
            path: target,
            meta,
            followed: true,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&target)(e)),
    }
}

/// The host path of `rel` with the symlinks on the way resolved inside `root`, as the
/// files would see them (a hostile link never leads the walk out of it); the final
/// component's only when `follow`.
fn in_root(root: &Path, rel: &str, follow: bool) -> std::io::Result<PathBuf> {
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    Ok(resolve_in_root(root, rel, follow)?.host)
}

/// Paths under `root` that a wildcard selector matches (relative, sorted): the same
/// expansion as the copy's, so links in the literal part resolve inside the root here too.
fn expand(root: &Path, pattern: &str) -> Result<Vec<String>, ContentHashError> {
    Glob::new(pattern, GlobFlavor::FilepathMatch).map_err(|e| ContentHashError::Pattern {
        pattern: pattern.to_string(),
        source: e,
    })?;
    let matches = crate::ops::file::wildcard::expand(root, pattern, None).map_err(|e| {
        ContentHashError::Io {
            path: root.join(pattern),
            source: std::io::Error::other(e),
        }
    })?;
    Ok(matches
        .into_iter()
        .map(|m| m.trim_start_matches('/').to_string())
        .collect())
}

/// The checksum of the `selectors`' paths under `root`, in selector order.
pub fn checksum_paths(
    root: &Path,
    selectors: &[Selector],
) -> Result<ContentChecksum, ContentHashError> {
    checksum_paths_cached(root, selectors, None, None)
}

/// [`checksum_paths`] over what `ignore` (a `.dockerignore`) leaves visible:
/// hidden paths count as absent.
pub fn checksum_paths_filtered(
    root: &Path,
    selectors: &[Selector],
    ignore: Option<&PatternMatcher>,
) -> Result<ContentChecksum, ContentHashError> {
    checksum_paths_cached(root, selectors, ignore, None)
}

/// [`checksum_paths_filtered`] taking file digests from `stats` where it vouches for a
/// file's stat, and recording the digests it had to read there. The result is the same with
/// or without the cache. With the cache, a selection whose tree has the fingerprint of an
/// earlier pass gets that pass's checksum without a file read (see `fingerprint.rs`).
pub fn checksum_paths_cached(
    root: &Path,
    selectors: &[Selector],
    ignore: Option<&PatternMatcher>,
    stats: Option<&StatCache<'_>>,
) -> Result<ContentChecksum, ContentHashError> {
    let ignore = ignore.filter(|m| !m.is_empty());
    let walk = Walk {
        ignore,
        prune: ignore.is_some_and(|m| !m.has_exclusions()),
        stats,
    };
    let selection = select(root, selectors, ignore)?;
    let key = selection_digest(&selection, ignore);
    let stored = stats.and_then(|s| s.memo(&key));
    if let Some(stored) = stored {
        if fingerprint(&walk, root, &selection)?.digest == stored.fingerprint {
            return Ok(ContentChecksum(stored.checksum));
        }
    }
    let (sum, print) = checksum(&walk, root, &selection)?;
    let memo = Memo {
        fingerprint: print.digest,
        checksum: sum.0,
    };
    if let Some(stats) = stats.filter(|_| stored != Some(memo)) {
        stats.remember(key, memo, print.youngest_ns);
    }
    Ok(sum)
}

/// A selector with the paths it names (a wildcard's matches, visible ones only).
struct Selected {
    clean: String,
    wildcards: bool,
    follow: bool,
    targets: Vec<String>,
}

fn select(
    root: &Path,
    selectors: &[Selector],
    ignore: Option<&PatternMatcher>,
) -> Result<Vec<Selected>, ContentHashError> {
    selectors
        .iter()
        .map(|selector| {
            let clean = clean_selector(&selector.path);
            let targets = if selector.wildcards && has_wildcards(&clean) {
                expand(root, &clean)?
                    .into_iter()
                    .filter(|p| !ignore.is_some_and(|m| m.excludes(p)))
                    .collect()
            } else {
                vec![clean.clone()]
            };
            Ok(Selected {
                clean,
                wildcards: selector.wildcards,
                follow: selector.follow_final_symlink,
                targets,
            })
        })
        .collect()
}

impl Selected {
    fn flags(&self) -> [u8; 4] {
        [0, u8::from(self.wildcards), u8::from(self.follow), 0]
    }
}

/// What a memo is stored under: the selectors and the ignore rules (the tree's own state is
/// the fingerprint's part).
fn selection_digest(selection: &[Selected], ignore: Option<&PatternMatcher>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kiln-context-selection-v1\0");
    for s in selection {
        h.update((s.clean.len() as u64).to_le_bytes());
        h.update(s.clean.as_bytes());
        h.update(s.flags());
    }
    for p in ignore.map(PatternMatcher::patterns).unwrap_or_default() {
        h.update([u8::from(p.exclusion)]);
        h.update((p.pattern().len() as u64).to_le_bytes());
        h.update(p.pattern().as_bytes());
    }
    h.finalize().into()
}

/// Adds a target to a selection's print: its fingerprint, or that it is missing.
fn print_target(print: &mut Print, rel: &str, target: Option<&Fingerprint>) {
    print.label(rel.as_bytes());
    match target {
        Some(t) => print.subtree(t),
        None => print.label(b"missing"),
    }
}

fn print_selector(print: &mut Print, s: &Selected) {
    print.label(s.clean.as_bytes());
    print.label(&s.flags());
}

/// The fingerprint of the selection's tree, without reading a file.
fn fingerprint(
    walk: &Walk<'_>,
    root: &Path,
    selection: &[Selected],
) -> Result<Fingerprint, ContentHashError> {
    let mut print = Print::new(b"selection");
    for s in selection {
        print_selector(&mut print, s);
        for t in &s.targets {
            let target = match resolve_start(root, t, s.follow)? {
                None => None,
                Some(at) => Some(walk.fingerprint(&at.path, &at.meta, t, at.followed)?),
            };
            print_target(&mut print, t, target.as_ref());
        }
    }
    Ok(print.finish())
}

/// The checksum of the selection, and the fingerprint of the tree it walked.
fn checksum(
    walk: &Walk<'_>,
    root: &Path,
    selection: &[Selected],
) -> Result<(ContentChecksum, Fingerprint), ContentHashError> {
    let mut outer = Sha256::new();
    outer.update(b"kiln-contenthash-v1\0");
    let mut print = Print::new(b"selection");
    for s in selection {
        outer.update(s.clean.as_bytes());
        outer.update(s.flags());
        print_selector(&mut print, s);
        let mut records = Vec::new();
        for t in &s.targets {
            let target = match resolve_start(root, t, s.follow)? {
                None => {
                    records.push(missing(t));
                    None
                }
                Some(at) => Some(walk.collect(&at.path, &at.meta, t, at.followed, &mut records)?),
            };
            print_target(&mut print, t, target.as_ref());
        }
        // By header: the relative path and a NUL first, so this is path order (a path
        // sorts before the paths it prefixes, as NUL is below every byte of a name). The
        // walk yields each target's records in that order already: this only checks it.
        records.sort_by(|a, b| a.header.cmp(&b.header));
        for r in &records {
            outer.update((r.header.len() as u64).to_le_bytes());
            outer.update(&r.header);
            if let Some(d) = &r.digest {
                outer.update(d);
            }
        }
        outer.update(b"\0end-selector\0");
    }
    Ok((ContentChecksum(outer.finalize().into()), print.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/pkg")).unwrap();
        fs::write(r.join("src/main.go"), b"package main").unwrap();
        fs::write(r.join("src/util.go"), b"package main // util").unwrap();
        fs::write(r.join("src/pkg/lib.go"), b"package pkg").unwrap();
        fs::write(r.join("README.md"), b"docs").unwrap();
        fs::write(r.join("go.mod"), b"module x").unwrap();
        std::os::unix::fs::symlink("src/main.go", r.join("main-link")).unwrap();
        d
    }

    #[derive(Default)]
    struct ChecksumOptions {
        wildcards: bool,
        follow_final_symlink: bool,
    }

    fn sum(root: &Path, sel: &[&str], opts: &ChecksumOptions) -> ContentChecksum {
        let sel: Vec<Selector> = sel
            .iter()
            .map(|s| Selector {
                path: s.to_string(),
                wildcards: opts.wildcards,
                follow_final_symlink: opts.follow_final_symlink,
            })
            .collect();
        checksum_paths(root, &sel).unwrap()
    }

    #[test]
    fn unrelated_changes_and_mtimes_do_not_matter() {
        let d = tree();
        let o = ChecksumOptions::default();
        let before = sum(d.path(), &["src"], &o);
        fs::write(d.path().join("README.md"), b"changed docs").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("src/main.go"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            sum(d.path(), &["src"], &o),
            before,
            "README and an mtime do not count"
        );
        assert_eq!(
            sum(d.path(), &["/src/"], &o),
            before,
            "selector is normalised"
        );
        assert_eq!(
            sum(d.path(), &["../src"], &o),
            before,
            "`..` stays in the root"
        );
    }

    #[test]
    fn content_mode_owner_and_new_files_matter() {
        let d = tree();
        let o = ChecksumOptions::default();
        let base = sum(d.path(), &["src"], &o);
        fs::write(d.path().join("src/pkg/lib.go"), b"package pkg // edited").unwrap();
        let edited = sum(d.path(), &["src"], &o);
        assert_ne!(edited, base);
        fs::set_permissions(
            d.path().join("src/main.go"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let chmodded = sum(d.path(), &["src"], &o);
        assert_ne!(chmodded, edited);
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(d.path().join("src/main.go"), Some(1000), None).unwrap();
            assert_ne!(sum(d.path(), &["src"], &o), chmodded);
        }
        let before_new = sum(d.path(), &["src"], &o);
        fs::write(d.path().join("src/new.go"), b"").unwrap();
        assert_ne!(sum(d.path(), &["src"], &o), before_new);
        // Renaming changes the checksum even with equal contents.
        let a = sum(d.path(), &["src"], &o);
        fs::rename(d.path().join("src/new.go"), d.path().join("src/new2.go")).unwrap();
        assert_ne!(sum(d.path(), &["src"], &o), a);
    }

    #[test]
    fn wildcards_select_only_matching_paths() {
        let d = tree();
        let o = ChecksumOptions {
            wildcards: true,
            ..Default::default()
        };
        let go = sum(d.path(), &["src/*.go"], &o);
        fs::write(d.path().join("src/pkg/lib.go"), b"deeper file not matched").unwrap();
        fs::write(d.path().join("go.mod"), b"module y").unwrap();
        assert_eq!(sum(d.path(), &["src/*.go"], &o), go);
        fs::write(d.path().join("src/util.go"), b"changed").unwrap();
        assert_ne!(sum(d.path(), &["src/*.go"], &o), go);
        // Without wildcard expansion the pattern is a literal (missing) path.
        let literal = sum(d.path(), &["src/*.go"], &ChecksumOptions::default());
        assert_ne!(literal, go);
    }

    #[test]
    fn symlinks_count_by_target_text_unless_followed() {
        let d = tree();
        let plain = ChecksumOptions::default();
        let follow = ChecksumOptions {
            follow_final_symlink: true,
            ..Default::default()
        };
        let link = sum(d.path(), &["main-link"], &plain);
        let followed = sum(d.path(), &["main-link"], &follow);
        fs::write(d.path().join("src/main.go"), b"package main // v2").unwrap();
        assert_eq!(sum(d.path(), &["main-link"], &plain), link);
        assert_ne!(sum(d.path(), &["main-link"], &follow), followed);
    }

    #[test]
    fn missing_paths_have_a_checksum_and_appearing_changes_it() {
        let d = tree();
        let o = ChecksumOptions::default();
        let missing = sum(d.path(), &["nope"], &o);
        fs::write(d.path().join("nope"), b"").unwrap();
        assert_ne!(sum(d.path(), &["nope"], &o), missing);
    }

    #[test]
    fn links_out_of_the_root_resolve_inside_it() {
        let d = tree();
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), b"host v1").unwrap();
        std::os::unix::fs::symlink(host.path(), d.path().join("hostdir")).unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), d.path().join("hostfile")).unwrap();
        let follow = ChecksumOptions {
            follow_final_symlink: true,
            ..Default::default()
        };
        let through_dir = sum(d.path(), &["hostdir/secret"], &ChecksumOptions::default());
        let followed = sum(d.path(), &["hostfile"], &follow);
        // The host file's bytes never count: the links name missing paths in the root.
        fs::write(host.path().join("secret"), b"host v2").unwrap();
        assert_eq!(
            sum(d.path(), &["hostdir/secret"], &ChecksumOptions::default()),
            through_dir
        );
        assert_eq!(sum(d.path(), &["hostfile"], &follow), followed);
        // What the root holds at the link's target does.
        let inside = d.path().join(host.path().strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        fs::write(inside.join("secret"), b"in root").unwrap();
        assert_ne!(sum(d.path(), &["hostfile"], &follow), followed);
        assert_ne!(
            sum(d.path(), &["hostdir/secret"], &ChecksumOptions::default()),
            through_dir
        );
    }

    #[test]
    fn wildcards_through_a_linked_directory_count_its_files() {
        let d = tree();
        std::os::unix::fs::symlink("src", d.path().join("srclink")).unwrap();
        let o = ChecksumOptions {
            wildcards: true,
            ..Default::default()
        };
        let before = sum(d.path(), &["srclink/*.go"], &o);
        fs::write(d.path().join("src/main.go"), b"package main // v2").unwrap();
        assert_ne!(sum(d.path(), &["srclink/*.go"], &o), before);
    }

    #[test]
    fn selector_order_and_split_matter() {
        let d = tree();
        let o = ChecksumOptions::default();
        assert_ne!(
            sum(d.path(), &["go.mod", "README.md"], &o),
            sum(d.path(), &["README.md", "go.mod"], &o)
        );
        assert_ne!(sum(d.path(), &[""], &o), sum(d.path(), &["src"], &o));
    }
}

#[cfg(test)]
mod ignore_tests {
    use super::*;
    use crate::pattern::parse_dockerignore;

    #[test]
    fn ignored_paths_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("target/debug/big"), "1").unwrap();
        std::fs::write(dir.path().join("notes.log"), "a").unwrap();
        let ignore = parse_dockerignore("target\n*.log\n").unwrap();
        let all = [Selector::path("")];
        let before = checksum_paths_filtered(dir.path(), &all, Some(&ignore)).unwrap();
        std::fs::write(dir.path().join("target/debug/big"), "2").unwrap();
        std::fs::write(dir.path().join("notes.log"), "b").unwrap();
        assert_eq!(
            checksum_paths_filtered(dir.path(), &all, Some(&ignore)).unwrap(),
            before
        );
        assert_ne!(
            checksum_paths(dir.path(), &all).unwrap(),
            before,
            "unfiltered sees them"
        );
        std::fs::write(dir.path().join("src/main.rs"), "fn main() { }").unwrap();
        assert_ne!(
            checksum_paths_filtered(dir.path(), &all, Some(&ignore)).unwrap(),
            before
        );
        // A selector naming a hidden path sees nothing there.
        let hidden = [Selector::path("notes.log")];
        let h = checksum_paths_filtered(dir.path(), &hidden, Some(&ignore)).unwrap();
        std::fs::write(dir.path().join("notes.log"), "c").unwrap();
        assert_eq!(
            checksum_paths_filtered(dir.path(), &hidden, Some(&ignore)).unwrap(),
            h
        );
    }
}

#[cfg(test)]
mod stat_cache_tests {
    use super::*;
    use crate::cache::statcache::FileStat;
    use crate::cache::statcache::RACY_SLACK_NS;
    use crate::meta::MetaDb;

    /// As if the entries were read an hour after the files last changed.
    const SETTLED: i64 = -3_600_000_000_000;

    struct Env {
        _d: tempfile::TempDir,
        root: PathBuf,
        store: MetaDb,
    }

    fn env() -> Env {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ctx");
        fs::create_dir_all(root.join("src")).unwrap();
        fs::write(root.join("src/a.txt"), b"alpha").unwrap();
        fs::write(root.join("src/b.txt"), b"bravo").unwrap();
        fs::write(root.join("Dockerfile"), b"FROM scratch").unwrap();
        let store = MetaDb::open(&d.path().join("meta.redb")).unwrap();
        Env { root, store, _d: d }
    }

    fn all() -> Vec<Selector> {
        vec![Selector::path("")]
    }

    /// A pass with the cache: the checksum and how many files were read.
    fn cached(e: &Env, slack: i64) -> (ContentChecksum, usize) {
        let stats = StatCache::begin(&e.store, &e.root)
            .unwrap()
            .with_slack(slack);
        let sum = checksum_paths_cached(&e.root, &all(), None, Some(&stats)).unwrap();
        let read = stats.recorded();
        stats.persist().unwrap();
        (sum, read)
    }

    fn truth(e: &Env) -> ContentChecksum {
        checksum_paths(&e.root, &all()).unwrap()
    }

    /// Stores a wrong digest for `rel` under its current stat, and forgets the tree's
    /// memos (which would spare the pass any look at the entries): whether a pass uses it
    /// shows whether the file was read.
    fn poison(e: &Env, rel: &str) {
        poison_entry(e, rel);
        let w = e.store.writer().unwrap();
        w.txn
            .open_table(crate::meta::CONTEXT_MEMOS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        w.txn.commit().unwrap();
    }

    /// Stores a wrong digest for `rel` under its current stat, memos left alone.
    fn poison_entry(e: &Env, rel: &str) {
        let meta = fs::symlink_metadata(e.root.join(rel)).unwrap();
        let stats = StatCache::begin(&e.store, &e.root).unwrap();
        stats.record(rel, FileStat::of(&meta), [0xee; 32], None);
        stats.persist().unwrap();
    }

    fn memo_count(e: &Env) -> usize {
        use redb::ReadableTableMetadata;
        let txn = e.store.read().unwrap();
        let t = txn.open_table(crate::meta::CONTEXT_MEMOS).unwrap();
        t.len().unwrap() as usize
    }

    /// The store file's modification time and size: a write transaction changes them.
    fn store_state(e: &Env) -> (std::time::SystemTime, u64) {
        let m = fs::metadata(e._d.path().join("meta.redb")).unwrap();
        (m.modified().unwrap(), m.len())
    }

    #[test]
    fn an_unchanged_tree_takes_its_memo_and_writes_nothing() {
        let e = env();
        let (first, _) = cached(&e, SETTLED);
        assert_eq!(memo_count(&e), 1, "a settled pass leaves a memo");
        // Another selection of the same tree has a memo of its own.
        let stats = StatCache::begin(&e.store, &e.root)
            .unwrap()
            .with_slack(SETTLED);
        let src = [Selector::path("src")];
        let sum = checksum_paths_cached(&e.root, &src, None, Some(&stats)).unwrap();
        stats.persist().unwrap();
        assert_eq!(sum, checksum_paths(&e.root, &src).unwrap());
        assert_eq!(memo_count(&e), 2);
        // The memo answers: the poisoned file entry is never looked at.
        poison_entry(&e, "src/a.txt");
        let before = store_state(&e);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(cached(&e, SETTLED), (first, 0));
        assert_eq!(store_state(&e), before, "a memo hit writes nothing");
    }

    #[test]
    fn every_change_of_the_tree_misses_the_memo() {
        use std::os::unix::fs::PermissionsExt;
        let e = env();
        let a = e.root.join("src/a.txt");
        std::os::unix::fs::symlink("a.txt", e.root.join("src/link")).unwrap();
        let keep_mtime = |path: &Path, change: &dyn Fn()| {
            let mtime = fs::symlink_metadata(path).unwrap().modified().unwrap();
            change();
            fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        };
        type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
        let changes: Vec<Change> = vec![
            (
                "same size and mtime, new content",
                Box::new(|| keep_mtime(&a, &|| fs::write(&a, b"ALPHA").unwrap())),
            ),
            (
                "mode",
                Box::new(|| fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap()),
            ),
            (
                "new file",
                Box::new(|| fs::write(e.root.join("src/c.txt"), b"charlie").unwrap()),
            ),
            (
                "renamed file",
                Box::new(|| {
                    fs::rename(e.root.join("src/c.txt"), e.root.join("src/d.txt")).unwrap()
                }),
            ),
            (
                "link target",
                Box::new(|| {
                    fs::remove_file(e.root.join("src/link")).unwrap();
                    std::os::unix::fs::symlink("b.txt", e.root.join("src/link")).unwrap();
                }),
            ),
            (
                "empty directory",
                Box::new(|| fs::create_dir(e.root.join("src/empty")).unwrap()),
            ),
            (
                "removed file",
                Box::new(|| fs::remove_file(e.root.join("src/d.txt")).unwrap()),
            ),
        ];
        let mut seen = vec![cached(&e, SETTLED).0];
        for (what, change) in changes {
            // Past the coarse clock's tick: a change gets a ctime of its own.
            std::thread::sleep(std::time::Duration::from_millis(30));
            change();
            let (sum, _) = cached(&e, SETTLED);
            assert_eq!(sum, truth(&e), "{what}: the checksum of what is there");
            assert!(!seen.contains(&sum), "{what}: a new checksum");
            seen.push(sum);
            assert_eq!(cached(&e, SETTLED).0, sum, "{what}: then a memo hit");
        }
        // The ignore rules are part of the selection: their own memo, their own checksum.
        let ignore = crate::pattern::parse_dockerignore("src/b.txt\n").unwrap();
        let stats = StatCache::begin(&e.store, &e.root)
            .unwrap()
            .with_slack(SETTLED);
        let sum = checksum_paths_cached(&e.root, &all(), Some(&ignore), Some(&stats)).unwrap();
        assert_eq!(
            sum,
            checksum_paths_filtered(&e.root, &all(), Some(&ignore)).unwrap()
        );
        assert_ne!(sum, truth(&e));
    }

    #[test]
    fn a_racy_tree_gets_no_memo() {
        let e = env();
        // Just written: a change in the same tick as the walk's stat would go unseen.
        assert_eq!(cached(&e, RACY_SLACK_NS), (truth(&e), 3));
        assert_eq!(memo_count(&e), 0);
        assert_eq!(cached(&e, RACY_SLACK_NS), (truth(&e), 3));
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let e = env();
        let (first, read) = cached(&e, SETTLED);
        assert_eq!(first, truth(&e), "the cache does not change the checksum");
        assert_eq!(read, 3, "a first pass reads every file");
        let (second, read) = cached(&e, SETTLED);
        assert_eq!((second, read), (first, 0), "a second pass reads nothing");
        // Proof that the digest came from the cache: a poisoned entry is believed.
        poison(&e, "src/a.txt");
        let (poisoned, read) = cached(&e, SETTLED);
        assert_eq!(read, 0);
        assert_ne!(poisoned, first);
    }

    #[test]
    fn a_changed_stat_means_the_file_is_read() {
        let e = env();
        let a = e.root.join("src/a.txt");
        cached(&e, SETTLED);
        // Size change.
        poison(&e, "src/a.txt");
        fs::write(&a, b"alpha, longer").unwrap();
        assert_eq!(cached(&e, SETTLED), (truth(&e), 1));
        // Same size, new content, mtime set back to what it was: ctime still moves.
        poison(&e, "src/a.txt");
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        fs::write(&a, b"ALPHA, LONGER").unwrap();
        fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let (sum, read) = cached(&e, SETTLED);
        assert_eq!((sum, read), (truth(&e), 1));
        // mtime only (touch): read once, the checksum is unchanged, then trusted again.
        let before = truth(&e);
        poison(&e, "src/a.txt");
        fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(cached(&e, SETTLED), (before, 1));
        assert_eq!(cached(&e, SETTLED), (before, 0));
        // A new inode (the file replaced by a copy with the same bytes and times).
        poison(&e, "src/a.txt");
        let copy = e.root.join("src/a.tmp");
        fs::copy(&a, &copy).unwrap();
        fs::File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        fs::rename(&copy, &a).unwrap();
        assert_eq!(cached(&e, SETTLED), (before, 1));
    }

    #[test]
    fn racy_entries_are_read_again() {
        let e = env();
        // The files were just written: an entry recorded now cannot prove that a write in
        // the same timestamp tick did not follow, so it is not trusted.
        poison(&e, "src/a.txt");
        let (sum, read) = cached(&e, RACY_SLACK_NS);
        assert_eq!(sum, truth(&e), "the racy poisoned entry is ignored");
        assert_eq!(read, 3, "every fresh file is read");
        // The same content change under an identical stat, as a same-tick rewrite would
        // leave it: still detected while the entry is racy.
        poison(&e, "src/b.txt");
        assert_eq!(cached(&e, RACY_SLACK_NS).0, truth(&e));
    }

    #[test]
    fn re_reading_an_unchanged_racy_file_writes_nothing() {
        let e = env();
        let stored = || {
            StatCache::begin(&e.store, &e.root)
                .unwrap()
                .entry("src/a.txt")
                .unwrap()
        };
        cached(&e, RACY_SLACK_NS);
        let first = stored();
        // Still racy: read again, same bytes, and the entry is left as it was.
        assert_eq!(cached(&e, RACY_SLACK_NS), (truth(&e), 3));
        assert_eq!(stored(), first);
        // A slack that makes the stored entry racy but the new read trusted: written.
        let slack = first.recorded_ns - first.stat.ctime_ns + 1;
        assert_eq!(cached(&e, slack), (truth(&e), 3));
        assert!(stored().recorded_ns > first.recorded_ns);
        assert_eq!(cached(&e, slack).1, 0, "now trusted");
    }

    #[test]
    fn entries_are_per_root_and_per_path() {
        let e = env();
        cached(&e, SETTLED);
        // A second tree with the same relative paths and sizes shares nothing.
        let other = e.root.with_file_name("other");
        fs::create_dir_all(other.join("src")).unwrap();
        fs::write(other.join("src/a.txt"), b"ALPHA").unwrap();
        fs::write(other.join("src/b.txt"), b"BRAVO").unwrap();
        fs::write(other.join("Dockerfile"), b"FROM SCRATCH").unwrap();
        let stats = StatCache::begin(&e.store, &other)
            .unwrap()
            .with_slack(SETTLED);
        let sum = checksum_paths_cached(&other, &all(), None, Some(&stats)).unwrap();
        assert_eq!(stats.recorded(), 3);
        assert_eq!(sum, checksum_paths(&other, &all()).unwrap());
        // A selector reads only what it selects.
        let stats = StatCache::begin(&e.store, &e.root)
            .unwrap()
            .with_slack(SETTLED);
        fs::write(e.root.join("Dockerfile"), b"FROM busybox").unwrap();
        let sel = [Selector::path("src")];
        let sum = checksum_paths_cached(&e.root, &sel, None, Some(&stats)).unwrap();
        assert_eq!(stats.recorded(), 0);
        assert_eq!(sum, checksum_paths(&e.root, &sel).unwrap());
    }

    #[test]
    fn a_cached_file_keeps_its_capability() {
        let e = env();
        // VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted.
        let mut cap = Vec::new();
        for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        let a = e.root.join("src/a.txt");
        if xattr::set(&a, "security.capability", &cap).is_err() {
            eprintln!("skipped: cannot set security.capability here (needs CAP_SETFCAP)");
            return;
        }
        let with_cap = truth(&e);
        assert_eq!(cached(&e, SETTLED), (with_cap, 3));
        assert_eq!(
            cached(&e, SETTLED),
            (with_cap, 0),
            "from the cache, cap included"
        );
        xattr::remove(&a, "security.capability").unwrap();
        let without = truth(&e);
        assert_ne!(without, with_cap);
        assert_eq!(
            cached(&e, SETTLED),
            (without, 1),
            "removing it changed the ctime"
        );
    }

    #[test]
    fn entries_of_deleted_files_are_forgotten() {
        let e = env();
        cached(&e, SETTLED);
        fs::remove_file(e.root.join("src/b.txt")).unwrap();
        assert_eq!(
            crate::cache::statcache::forget_missing(&e.store).unwrap(),
            1
        );
        let stats = StatCache::begin(&e.store, &e.root).unwrap();
        assert!(stats.entry("src/b.txt").is_none());
        assert!(stats.entry("src/a.txt").is_some());
        drop(stats);
        fs::remove_dir_all(&e.root).unwrap();
        assert_eq!(
            crate::cache::statcache::forget_missing(&e.store).unwrap(),
            2
        );
        assert_eq!(crate::cache::statcache::clear(&e.store).unwrap(), 0);
    }

    #[test]
    fn clear_forgets_everything() {
        let e = env();
        cached(&e, SETTLED);
        assert_eq!(memo_count(&e), 1);
        assert_eq!(crate::cache::statcache::clear(&e.store).unwrap(), 3);
        assert_eq!(memo_count(&e), 0);
        assert_eq!(cached(&e, SETTLED).1, 3);
    }

    #[test]
    fn memos_of_deleted_trees_are_forgotten() {
        let e = env();
        cached(&e, SETTLED);
        crate::cache::statcache::forget_missing(&e.store).unwrap();
        assert_eq!(memo_count(&e), 1, "the tree is still there");
        fs::remove_dir_all(&e.root).unwrap();
        crate::cache::statcache::forget_missing(&e.store).unwrap();
        assert_eq!(memo_count(&e), 0);
    }
}

#[cfg(test)]
mod walk_tests {
    //! The fd-based walk of `walk.rs` against an independent path-based oracle.
    use super::*;
    use crate::cache::dirfd::{MAX_DEPTH, PARALLEL_STAT};
    use crate::cache::walk::Walk;
    use crate::pattern::parse_dockerignore;
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    /// The checksum as the path-based walk before this module computed it: every entry
    /// under `dir`, `fs::symlink_metadata` by full path, one global sort. An independent
    /// oracle: the fd-based walk must give the same bytes.
    fn oracle(root: &Path, ignore: Option<&PatternMatcher>) -> [u8; 32] {
        fn walk(
            root: &Path,
            rel: &str,
            ignore: Option<&PatternMatcher>,
            out: &mut Vec<(Vec<u8>, Option<[u8; 32]>)>,
        ) {
            let path = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(rel)
            };
            let hidden = !rel.is_empty() && ignore.is_some_and(|m| m.excludes(rel));
            let meta = fs::symlink_metadata(&path).unwrap();
            if !hidden {
                let ft = meta.file_type();
                let kind = if ft.is_dir() {
                    'd'
                } else if ft.is_symlink() {
                    'l'
                } else if ft.is_file() {
                    'f'
                } else if ft.is_fifo() {
                    'p'
                } else {
                    's'
                };
                let mut h = format!(
                    "{rel}\0{kind}\0{:o}\0{}\0{}\0",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                )
                .into_bytes();
                if ft.is_file() {
                    h.extend_from_slice(format!("{}\0", meta.len()).as_bytes());
                }
                if ft.is_symlink() {
                    h.extend_from_slice(fs::read_link(&path).unwrap().as_os_str().as_bytes());
                    h.push(0);
                }
                let digest = ft
                    .is_file()
                    .then(|| Sha256::digest(fs::read(&path).unwrap()).into());
                out.push((h, digest));
            }
            if meta.is_dir() {
                for e in fs::read_dir(&path).unwrap() {
                    let name = e.unwrap().file_name();
                    let name = name.to_string_lossy();
                    let child = if rel.is_empty() {
                        name.into_owned()
                    } else {
                        format!("{rel}/{name}")
                    };
                    walk(root, &child, ignore, out);
                }
            }
        }
        let mut records = Vec::new();
        walk(root, "", ignore, &mut records);
        records.sort();
        let mut outer = Sha256::new();
        outer.update(b"kiln-contenthash-v1\0");
        outer.update([0, 0, 0, 0]);
        for (h, d) in &records {
            outer.update((h.len() as u64).to_le_bytes());
            outer.update(h);
            if let Some(d) = d {
                outer.update(d);
            }
        }
        outer.update(b"\0end-selector\0");
        outer.finalize().into()
    }

    /// Names whose path order is not the walk's directory order: `a.b` and `a-c` sort
    /// between the directory `a` and `a/x` (`.` and `-` are below `/`).
    fn tricky_tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["a/x", "a/x.y/z", "a-c", "b", "b/b b", "zz/a/b/c/d"] {
            fs::create_dir_all(r.join(dir)).unwrap();
        }
        for (f, body) in [
            ("a.b", "1"),
            ("a/x.txt", "2"),
            ("a/x/in", "3"),
            ("a/x.y/z/deep", "4"),
            ("a-c/f", "5"),
            ("a0", "6"),
            ("b/b b/sp ace", "7"),
            ("b/b.c", "8"),
            ("zz/a/b/c/d/e", "9"),
            ("empty", ""),
        ] {
            fs::write(r.join(f), body).unwrap();
        }
        fs::set_permissions(r.join("a0"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("../a.b", r.join("b/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("abs-link")).unwrap();
        nix::unistd::mkfifo(
            &r.join("b/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        // Many files in one directory: its stats are spread over the pool.
        fs::create_dir(r.join("many")).unwrap();
        for i in 0..(PARALLEL_STAT + 300) {
            fs::write(r.join(format!("many/{i}")), format!("{i}")).unwrap();
        }
        d
    }

    /// The fingerprint walk prints exactly what the checksum walk walked, or no memo would
    /// ever be taken (and a looser print could take a wrong one).
    #[test]
    fn the_fingerprint_walk_prints_what_the_checksum_walk_walks() {
        let d = tricky_tree();
        let root = d.path();
        let all = [Selector::path("")];
        let selectors = [
            Selector::path(""),
            Selector::path("a"),
            Selector::path("b/link"),
            Selector {
                path: "b/link".into(),
                follow_final_symlink: true,
                ..Default::default()
            },
            Selector {
                path: "a*".into(),
                wildcards: true,
                ..Default::default()
            },
            Selector::path("missing/path"),
            Selector::path("a0"),
        ];
        let ignores = [
            None,
            Some(parse_dockerignore("b\nmany/1*\n").unwrap()),
            Some(parse_dockerignore("b\n!b/b b\nmany/1*\n").unwrap()),
        ];
        let mut prints = std::collections::HashMap::new();
        for (n, ignore) in ignores.iter().enumerate() {
            let ignore = ignore.as_ref();
            let walk = Walk {
                ignore,
                prune: ignore.is_some_and(|m| !m.has_exclusions()),
                stats: None,
            };
            for s in &selectors {
                let selection = select(root, std::slice::from_ref(s), ignore).unwrap();
                let fast = fingerprint(&walk, root, &selection).unwrap();
                let (sum, full) = checksum(&walk, root, &selection).unwrap();
                assert_eq!(fast, full, "{s:?} {ignore:?}");
                assert_eq!(
                    sum,
                    checksum_paths_filtered(root, std::slice::from_ref(s), ignore).unwrap()
                );
                prints.insert((n, s.path.clone(), s.follow_final_symlink), fast.digest);
            }
        }
        // Each selection prints differently; so do the whole tree's three sets of rules.
        let distinct = |digests: Vec<&[u8; 32]>| {
            digests
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                == digests.len()
        };
        assert!(distinct(
            selectors
                .iter()
                .map(|s| &prints[&(0, s.path.clone(), s.follow_final_symlink)])
                .collect()
        ));
        assert!(distinct(
            (0..ignores.len())
                .map(|n| &prints[&(n, String::new(), false)])
                .collect()
        ));
        // A touched file changes the print (its mtime), not the checksum.
        let whole = || {
            let walk = Walk {
                ignore: None,
                prune: false,
                stats: None,
            };
            fingerprint(&walk, root, &select(root, &all, None).unwrap()).unwrap()
        };
        let (before, sum) = (whole(), checksum_paths(root, &all).unwrap());
        fs::File::options()
            .write(true)
            .open(root.join("many/7"))
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_ne!(before.digest, whole().digest);
        assert_eq!(sum, checksum_paths(root, &all).unwrap());
    }

    #[test]
    fn the_walk_hashes_what_a_path_walk_and_a_global_sort_do() {
        let d = tricky_tree();
        let all = [Selector::path("")];
        assert_eq!(
            checksum_paths(d.path(), &all).unwrap().0,
            oracle(d.path(), None)
        );
        let ignore = parse_dockerignore("b\n!b/b b\nmany/1*\n").unwrap();
        assert_eq!(
            checksum_paths_filtered(d.path(), &all, Some(&ignore))
                .unwrap()
                .0,
            oracle(d.path(), Some(&ignore))
        );
    }

    #[test]
    fn records_come_out_in_path_order() {
        let d = tricky_tree();
        let walk = Walk {
            ignore: None,
            prune: false,
            stats: None,
        };
        let meta = fs::symlink_metadata(d.path()).unwrap();
        let mut out = Vec::new();
        walk.collect(d.path(), &meta, "", false, &mut out).unwrap();
        assert!(out.len() > PARALLEL_STAT);
        assert!(out.windows(2).all(|w| w[0].header < w[1].header));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_not_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let mut path = d.path().to_path_buf();
        for _ in 0..MAX_DEPTH {
            path.push("d");
        }
        // Made level by level: the whole path is longer than PATH_MAX.
        let mut dir = fs::File::open(d.path()).unwrap();
        for _ in 0..=MAX_DEPTH {
            rustix::fs::mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).unwrap();
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            dir = fs::File::from(
                rustix::fs::openat(dir.as_fd(), c"d", flags, Mode::empty()).unwrap(),
            );
        }
        let err = checksum_paths(d.path(), &[Selector::path("")]).unwrap_err();
        assert!(err.to_string().contains("nest more than"), "{err}");
    }
}
