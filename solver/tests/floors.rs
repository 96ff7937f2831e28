//! The solver's module floors (see `solver/README.md`): every top-level module of
//! `solver/src` imports only modules on lower floors, and the files of `cache/` do not
//! import each other in a loop. Imports are read from the source text: `crate::…` paths
//! (`use` lines and paths in code, test modules included), and `super::…` chains that
//! climb to the crate root. Comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The floors, bottom first; keep in step with the table in `solver/README.md`. Modules on
/// one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &[
        "atomic_file",
        "timestamp",
        "units",
        "userns",
        "rootfs_path",
        "sysmount",
        "llb",
        "pattern",
        "archive",
        "pid",
    ],
    &["trash", "progress", "meta"],
    &["content"],
    &["snapshot"],
    &["ops"],
    &["cache"],
    &["mounts"],
    &["executor", "remote_cache"],
    &["state", "scheduler"],
    &["worker", "gc"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// One `.rs` file: its module path below the crate root (`cache/store/tests.rs` is
/// `["cache", "store", "tests"]`, `cache/mod.rs` is `["cache"]`) and its text without comments.
struct Source {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let text = fs::read_to_string(&path).unwrap();
                out.push(Source::new(&rel, &text));
            }
        }
    }
    out
}

impl Source {
    fn new(rel: &str, text: &str) -> Source {
        let mut module: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(str::to_string)
            .collect();
        if module.last().is_some_and(|m| m == "mod" || m == "lib") {
            module.pop();
        }
        Source {
            rel: rel.to_string(),
            module,
            code: strip_comments(text),
        }
    }

    /// The top-level module this file belongs to (`None` for `lib.rs`).
    fn top(&self) -> Option<&str> {
        self.module.first().map(String::as_str)
    }

    /// Every path this file names from the crate root, as its segments after `crate`
    /// (`use crate::{a::b, c}` gives `[a, b]` and `[c]`).
    fn crate_paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let code = self.code.as_str();
        let mut i = 0;
        while let Some(at) = code[i..].find("crate::").map(|p| p + i) {
            i = at + "crate::".len();
            // `$crate::` in macros and identifiers ending in `crate` are not the crate root.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c == '$' || c == '_' || c.is_alphanumeric()) {
                continue;
            }
            out.extend(expand(&code[i..]));
        }
        // `super::` chains climbing out of the file's module path reach the crate root.
        let mut i = 0;
        while let Some(at) = code[i..].find("super::").map(|p| p + i) {
            let before = code[..at].chars().next_back();
            let mut end = at;
            let mut depth = 0;
            while code[end..].starts_with("super::") {
                depth += 1;
                end += "super::".len();
            }
            i = end;
            if before.is_some_and(|c| c == ':' || c == '_' || c.is_alphanumeric()) {
                continue;
            }
            if depth >= self.module.len() {
                out.extend(expand(&code[end..]));
            }
        }
        out
    }
}

/// The paths a use-tree starting at `s` names: `a::b::c`, `a::{b, c::d}`, `{a, b}`.
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        return split_top(&rest[..end])
            .into_iter()
            .flat_map(expand)
            .collect();
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        return Vec::new();
    }
    let rest = &s[ident.len()..];
    match rest.strip_prefix("::") {
        Some(more) => {
            let tails = expand(more);
            if tails.is_empty() {
                vec![vec![ident]]
            } else {
                tails
                    .into_iter()
                    .map(|t| std::iter::once(ident.clone()).chain(t).collect())
                    .collect()
            }
        }
        None => vec![vec![ident]],
    }
}

/// `s` split at the commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `text` without `//` comments (doc comments included) and `/* */` comments; string
/// literals are kept, so `"http://…"` is not cut.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            // A char literal holding a quote must not open a string.
            ('\'', Some('"')) => {
                out.push(c);
                out.extend(chars.next());
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The imports that break the floors: `file: from -> to`.
fn floor_violations(files: &[Source]) -> Vec<String> {
    let mut bad = BTreeSet::new();
    for f in files {
        let Some(from) = f.top() else { continue };
        let Some(floor) = floor_of(from) else {
            bad.insert(format!("{}: module {from} is on no floor", f.rel));
            continue;
        };
        for path in f.crate_paths() {
            let to = path[0].as_str();
            if to == from || to == "self" || to == "*" {
                continue;
            }
            match floor_of(to) {
                Some(t) if t < floor => {}
                Some(t) => {
                    bad.insert(format!(
                        "{}: {from} (floor {floor}) imports {to} (floor {t})",
                        f.rel
                    ));
                }
                // A crate-root item that is no module (a macro, say) has no floor.
                None => {}
            }
        }
    }
    bad.into_iter().collect()
}

/// The file-level imports among the files of `dir` (a top-level module directory): each
/// file names its sibling files through `super::x` or `crate::dir::x`, or through a name
/// `dir/mod.rs` re-exports from `x`. Files below a subdirectory count as that file.
fn file_graph(files: &[Source], dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let in_dir = |f: &&Source| f.module.len() >= 2 && f.module[0] == dir;
    let siblings: BTreeSet<String> = files
        .iter()
        .filter(in_dir)
        .map(|f| f.module[1].clone())
        .collect();
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = files.iter().find(|f| f.module == [dir]) {
        let code = m.code.as_str();
        let mut i = 0;
        while let Some(at) = code[i..].find("pub use ").map(|p| p + i) {
            i = at + "pub use ".len();
            for path in expand(&code[i..]) {
                if path.len() >= 2 && siblings.contains(&path[0]) {
                    reexports.insert(path[path.len() - 1].clone(), path[0].clone());
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(in_dir) {
        let from = f.module[1].clone();
        let mut targets = Vec::new();
        for path in f.crate_paths() {
            if path[0] == dir {
                targets.extend(path.get(1).cloned());
            }
        }
        // `super::x` from `dir/y.rs` names a sibling (from deeper files and inline test
        // modules it names the file itself or below, which is not an edge).
        if f.module.len() == 2 {
            let code = f.code.as_str();
            let mut i = 0;
            while let Some(at) = code[i..].find("super::").map(|p| p + i) {
                i = at + "super::".len();
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c == ':' || c == '_' || c.is_alphanumeric()) {
                    continue;
                }
                targets.extend(expand(&code[i..]).into_iter().map(|p| p[0].clone()));
            }
        }
        let edges = graph.entry(from.clone()).or_default();
        for t in targets {
            let t = reexports.get(&t).cloned().unwrap_or(t);
            if t != from && siblings.contains(&t) {
                edges.insert(t);
            }
        }
    }
    graph
}

/// A loop in `graph`, as the files around it, if there is one.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

fn solver_sources() -> Vec<Source> {
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_module_imports_only_lower_floors() {
    let files = solver_sources();
    assert!(files.len() > 50, "read only {} files", files.len());
    let bad = floor_violations(&files);
    assert!(
        bad.is_empty(),
        "imports against the floors:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_module_of_lib_rs_is_on_a_floor_and_every_floor_module_exists() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_suffix(';'))
        .filter_map(|l| l.split_once("mod ").map(|(_, m)| m))
        .collect();
    let floored: BTreeSet<&str> = FLOORS.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(declared, floored, "lib.rs modules vs the FLOORS table");
}

#[test]
fn cache_files_import_each_other_without_a_loop() {
    let files = solver_sources();
    let graph = file_graph(&files, "cache");
    assert!(
        graph.len() >= 4,
        "expected the files of cache/, got {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    // The check sees the imports there are: the key hashes content checksums.
    assert!(graph["key"].contains("contenthash"), "{graph:?}");
    assert_eq!(find_loop(&graph), None, "{graph:?}");
}

/// The checker itself: an upward import, a `super::` climb to the root and a loop through a
/// `mod.rs` re-export are each caught.
#[test]
fn the_checker_catches_upward_imports_and_loops() {
    let files = [
        Source::new("snapshot/layers.rs", "use crate::worker::LocalWorker;\n"),
        Source::new(
            "snapshot/records.rs",
            "// use crate::gc::prune;\nconst U: &str = \"http://x\"; use crate::{content::ContentStore, scheduler::Worker};\n",
        ),
        Source::new("content/gc.rs", "fn f() { super::super::cache::key(); }\n"),
        Source::new("trash.rs", "mod tests { use super::*; }\n"),
    ];
    assert_eq!(
        floor_violations(&files),
        [
            "content/gc.rs: content (floor 2) imports cache (floor 5)",
            "snapshot/layers.rs: snapshot (floor 3) imports worker (floor 9)",
            "snapshot/records.rs: snapshot (floor 3) imports scheduler (floor 8)",
        ]
    );
    let looped = [
        Source::new("cache/mod.rs", "pub use store::{CacheStore, now};\n"),
        Source::new("cache/store.rs", "use super::key::CacheKey;\n"),
        Source::new("cache/key.rs", "use super::statcache::Stat;\n"),
        Source::new(
            "cache/statcache.rs",
            "fn f(s: &crate::cache::CacheStore) {}\n",
        ),
    ];
    let graph = file_graph(&looped, "cache");
    assert_eq!(
        find_loop(&graph),
        Some(vec![
            "key".into(),
            "statcache".into(),
            "store".into(),
            "key".into()
        ])
    );
}
