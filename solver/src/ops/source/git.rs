//! ADD of a git repository: fetch one ref with the git CLI (shallow when the
//! server allows it), check it out, optionally keep `.git`, and hand back the
//! whole tree or a subdirectory. Blocking: run it on a blocking thread.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::llb::SourceOp;
use crate::ops::file::{lutimes, resolve_in_root, Time};

/// Why a git source could not be fetched.
#[derive(Debug, Error)]
pub enum GitError {
    /// The op is not a `git://` source.
    #[error("not a git source: {0}")]
    NotGit(String),
    /// git is not installed or could not be started.
    #[error("running git: {0}")]
    Spawn(io::Error),
    /// A git command failed.
    #[error("git {args} failed for {remote}: {stderr}")]
    Command {
        /// The repository.
        remote: String,
        /// The git arguments.
        args: String,
        /// What git said.
        stderr: String,
    },
    /// The fetched commit does not match `--checksum`.
    #[error("{remote}#{reference}: expected checksum {expected}, got commit {actual}")]
    ChecksumMismatch {
        /// The repository.
        remote: String,
        /// The ref fetched.
        reference: String,
        /// The expected commit (prefix).
        expected: String,
        /// The commit fetched.
        actual: String,
    },
    /// The requested subdirectory is missing from the checkout.
    #[error("{remote}: subdirectory {subdir} not found in the checkout")]
    SubdirNotFound {
        /// The repository.
        remote: String,
        /// The subdirectory.
        subdir: String,
    },
    /// A filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError {
    let path = path.to_path_buf();
    move |source| GitError::Io { op, path, source }
}

/// A git source as the graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// URL to fetch from (`https://`, `ssh://`, `git@host:path`, `file://`).
    pub remote: String,
    /// Branch, tag, `pull/N/head` or commit; `None` = the remote's HEAD.
    pub reference: Option<String>,
    /// Subdirectory of the repository that becomes the result.
    pub subdir: Option<String>,
    /// Keep the `.git` directory.
    pub keep_git_dir: bool,
    /// Expected commit (or annotated tag object) id or a prefix of it.
    pub checksum: Option<String>,
    /// Check out submodules (default true).
    pub submodules: bool,
    /// Give every file the commit's time instead of the checkout time
    /// (`mtime=commit`), for reproducible layers.
    pub mtime_from_commit: bool,
    /// Credentials for HTTP(S) remotes (from the `GIT_AUTH_TOKEN` /
    /// `GIT_AUTH_HEADER` secrets); never part of the op or a cache key.
    pub auth: Option<GitAuth>,
}

/// How to authenticate to an HTTP(S) remote.
#[derive(Clone, PartialEq, Eq)]
pub enum GitAuth {
    /// A token sent as basic auth with user `x-access-token`, as BuildKit does.
    Token(String),
    /// A whole `Authorization` header value (`bearer ...`, `basic ...`).
    Header(String),
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        f.write_str(match self {
            GitAuth::Token(_) => "Token(<redacted>)",
            GitAuth::Header(_) => "Header(<redacted>)",
        })
    }
}

impl GitAuth {
    fn header_value(&self) -> String {
        use base64::Engine;
        match self {
            GitAuth::Token(t) => format!(
                "Authorization: basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{t}"))
            ),
            GitAuth::Header(h) => format!("Authorization: {h}"),
        }
    }
}

impl GitSource {
    /// A source for `remote` at its HEAD.
    pub fn new(remote: &str) -> GitSource {
        GitSource {
            remote: remote.to_string(),
            reference: None,
            subdir: None,
            keep_git_dir: false,
            checksum: None,
            submodules: true,
            mtime_from_commit: false,
            auth: None,
        }
    }

    /// Reads a `SourceOp`: `git://<remote>[#ref[:subdir]]` or the query form
    /// (`?ref=|tag=|branch=&subdir=&checksum=|commit=&keep-git-dir=&submodules=`),
    /// with attributes `git.fullurl`, `git.keepgitdir`, `git.checksum`,
    /// `git.subdir`, `git.skipsubmodules`, `git.mtime` taking precedence. A remote without
    /// a scheme (`github.com/o/r.git`) is fetched over https.
    pub fn from_op(op: &SourceOp) -> Result<GitSource, GitError> {
        let rest = op
            .identifier
            .strip_prefix("git://")
            .ok_or_else(|| GitError::NotGit(op.identifier.clone()))?;
        let (before_fragment, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (remote, query) = match before_fragment.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (before_fragment, None),
        };
        let remote = if remote.contains("://") || is_scp_like(remote) {
            remote.to_string()
        } else if remote.starts_with('/') {
            format!("file://{remote}")
        } else {
            format!("https://{remote}")
        };
        let mut s = GitSource::new(&remote);
        if let Some(fragment) = fragment {
            let (r, sub) = match fragment.split_once(':') {
                Some((r, sub)) => (r, Some(sub)),
                None => (fragment, None),
            };
            s.reference = Some(r).filter(|r| !r.is_empty()).map(str::to_string);
            s.subdir = sub.filter(|d| !d.is_empty()).map(str::to_string);
        }
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            match k {
                "ref" | "tag" | "branch" => s.reference = Some(v.to_string()),
                "subdir" => s.subdir = Some(v.to_string()),
                "checksum" | "commit" => s.checksum = Some(v.to_string()),
                "keep-git-dir" => s.keep_git_dir = v != "false",
                "submodules" => s.submodules = v != "false",
                "mtime" => s.mtime_from_commit = v == "commit",
                _ => {}
            }
        }
        let attr = |k: &str| op.attrs.get(k).filter(|v| !v.is_empty());
        if let Some(url) = attr("git.fullurl") {
            s.remote = url.clone();
        }
        if let Some(v) = attr("git.keepgitdir") {
            s.keep_git_dir = v == "true";
        }
        if let Some(v) = attr("git.checksum") {
            s.checksum = Some(v.clone());
        }
        if let Some(v) = attr("git.subdir") {
            s.subdir = Some(v.clone());
        }
        if attr("git.skipsubmodules").is_some_and(|v| v == "true") {
            s.submodules = false;
        }
        if let Some(v) = attr("git.mtime") {
            s.mtime_from_commit = v == "commit";
        }
        Ok(s)
    }
}

/// `user@host:path` (scp-like ssh syntax).
fn is_scp_like(remote: &str) -> bool {
    remote
        .split_once(':')
        .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'))
}

/// The result of a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The commit checked out (40 hex).
    pub commit: String,
}

struct Git<'a> {
    repo: &'a Path,
    remote: &'a str,
    /// `http.<remote>.extraheader`, passed in the environment so it never
    /// shows in process listings.
    auth_header: Option<String>,
}

impl Git<'_> {
    fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(self.repo)
            .args([
                "-c",
                "protocol.file.allow=always",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("LC_ALL", "C");
        if let Some(header) = &self.auth_header {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env(
                    "GIT_CONFIG_KEY_0",
                    format!("http.{}.extraheader", self.remote),
                )
                .env("GIT_CONFIG_VALUE_0", header);
        }
        let out = cmd.output().map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Command {
                remote: self.remote.to_string(),
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn looks_like_commit(r: &str) -> bool {
    (7..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fetches `source` into `dest`, which must not exist or be an empty
/// directory. Work happens in a temporary sibling directory that is renamed
/// into place at the end, so a failure leaves `dest` untouched.
pub fn checkout(source: &GitSource, dest: &Path) -> Result<Checkout, GitError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
    let work = tempfile::Builder::new()
        .prefix(".git-checkout-")
        .tempdir_in(parent)
        .map_err(io_err("mkdir", parent))?;
    let repo = work.path().join("repo");
    fs::create_dir(&repo).map_err(io_err("mkdir", &repo))?;
    let git = Git {
        repo: &repo,
        remote: &source.remote,
        auth_header: source.auth.as_ref().map(GitAuth::header_value),
    };
    git.run(&["init", "-q"])?;
    git.run(&["remote", "add", "origin", &source.remote])?;
    let want = source.reference.as_deref().unwrap_or("HEAD");
    let rev = fetch(&git, want)?;
    let object = git.run(&["rev-parse", "--verify", &rev])?;
    let commit = git.run(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?;
    verify_checksum(source, want, &object, &commit)?;
    let commit_time = if source.mtime_from_commit {
        Some(commit_time(&git, source, &commit)?)
    } else {
        None
    };
    check_out(&git, source, &commit)?;
    normalize_modes(&repo)?;
    if let Some(secs) = commit_time {
        set_times(&repo, secs)?;
    }
    let result = match &source.subdir {
        Some(sub) => {
            let r = resolve_in_root(&repo, sub, true).map_err(io_err("stat", &repo))?;
            if !r.host.is_dir() {
                return Err(GitError::SubdirNotFound {
                    remote: source.remote.clone(),
                    subdir: sub.clone(),
                });
            }
            r.host
        }
        None => repo.clone(),
    };
    match fs::remove_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", dest)(e)),
    }
    fs::rename(&result, dest).map_err(io_err("rename", dest))?;
    crate::atomic_file::sync_parent(dest).map_err(io_err("fsync", dest))?;
    Ok(Checkout { commit })
}

/// Fetches `want` (a ref, `HEAD` or a commit id); returns the revision to check out.
fn fetch(git: &Git, want: &str) -> Result<String, GitError> {
    let shallow = git.run(&[
        "fetch",
        "-q",
        "--depth=1",
        "--no-tags",
        "--recurse-submodules=no",
        "origin",
        want,
    ]);
    // Dumb HTTP servers cannot do shallow fetches; try a full one.
    let shallow = shallow.or_else(|_| {
        git.run(&[
            "fetch",
            "-q",
            "--no-tags",
            "--recurse-submodules=no",
            "origin",
            want,
        ])
    });
    match shallow {
        Ok(_) => Ok("FETCH_HEAD".to_string()),
        // Servers may refuse a commit id as a want: fetch everything.
        Err(_) if looks_like_commit(want) => {
            git.run(&[
                "fetch",
                "-q",
                "--recurse-submodules=no",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])?;
            Ok(want.to_string())
        }
        Err(e) => Err(e),
    }
}

/// `checksum=`: a prefix of the commit or of the fetched object (an annotated tag).
fn verify_checksum(
    source: &GitSource,
    want: &str,
    object: &str,
    commit: &str,
) -> Result<(), GitError> {
    let Some(expected) = &source.checksum else {
        return Ok(());
    };
    let expected_lc = expected.to_ascii_lowercase();
    if expected_lc.is_empty()
        || !(commit.starts_with(&expected_lc) || object.starts_with(&expected_lc))
    {
        return Err(GitError::ChecksumMismatch {
            remote: source.remote.clone(),
            reference: want.to_string(),
            expected: expected.clone(),
            actual: commit.to_string(),
        });
    }
    Ok(())
}

/// The commit's time (seconds since the epoch), for `mtime_from_commit`.
fn commit_time(git: &Git, source: &GitSource, commit: &str) -> Result<i64, GitError> {
    let secs = git.run(&["log", "-1", "--format=%ct", commit])?;
    secs.parse::<i64>().map_err(|_| GitError::Command {
        remote: source.remote.clone(),
        args: "log -1 --format=%ct".to_string(),
        stderr: format!("unexpected commit time {secs:?}"),
    })
}

/// Checks `commit` out in the work tree, with submodules when asked, and drops `.git`
/// unless it is kept.
fn check_out(git: &Git, source: &GitSource, commit: &str) -> Result<(), GitError> {
    git.run(&["checkout", "-q", "--detach", commit])?;
    if source.submodules && git.repo.join(".gitmodules").exists() {
        git.run(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ])?;
    }
    if !source.keep_git_dir {
        let dot_git = git.repo.join(".git");
        fs::remove_dir_all(&dot_git).map_err(io_err("remove", &dot_git))?;
    }
    Ok(())
}

/// Sets every path's atime and mtime to `secs` (children before their
/// directory, so directory times stick).
fn set_times(root: &Path, secs: i64) -> Result<(), GitError> {
    let t = Time::from_secs(secs);
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|e| GitError::Io {
            op: "walk",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        lutimes(entry.path(), t, t).map_err(io_err("utimes", entry.path()))?;
    }
    Ok(())
}

/// Files get 0644 or 0755 and directories 0755 whatever the umask, as in
/// BuildKit; `.git` keeps git's own modes.
fn normalize_modes(root: &Path) -> Result<(), GitError> {
    let walk = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git");
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            GitError::Io {
                op: "walk",
                path,
                source: e.into(),
            }
        })?;
        let ft = entry.file_type();
        let md = entry.metadata().map_err(|e| GitError::Io {
            op: "stat",
            path: entry.path().to_path_buf(),
            source: e.into(),
        })?;
        let mode = if ft.is_dir() {
            0o755
        } else if ft.is_file() {
            if md.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        } else {
            continue;
        };
        fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", entry.path()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_op_forms() {
        let s = GitSource::from_op(&SourceOp::git("github.com/o/r.git#v1.2:docs")).unwrap();
        assert_eq!(s.remote, "https://github.com/o/r.git");
        assert_eq!(s.reference.as_deref(), Some("v1.2"));
        assert_eq!(s.subdir.as_deref(), Some("docs"));
        let mut op = SourceOp::git("x");
        op.identifier = "git://https://h/o/r.git?branch=dev&subdir=a&keep-git-dir=true".into();
        let s = GitSource::from_op(&op).unwrap();
        assert_eq!(s.remote, "https://h/o/r.git");
        assert_eq!(
            (s.reference.as_deref(), s.subdir.as_deref()),
            (Some("dev"), Some("a"))
        );
        assert!(s.keep_git_dir);
        op.identifier = "git://git@github.com:o/r.git#main".into();
        let s = GitSource::from_op(&op.attr("git.keepgitdir", "true")).unwrap();
        assert_eq!(s.remote, "git@github.com:o/r.git");
        assert!(s.keep_git_dir);
        assert!(GitSource::from_op(&SourceOp::local("context")).is_err());
    }
}
