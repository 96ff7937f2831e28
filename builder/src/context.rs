//! The build context: where `kiln build`'s files come from (a directory, a
//! tarball file or stdin, a git repository, a URL to a tarball), which
//! Dockerfile to read, and the `.dockerignore` that filters the context.

use kiln_solver::archive::{decompress, extract_tar, is_tar};
use kiln_solver::ops::source::git::{self, GitError, GitSource};
use kiln_solver::ops::source::http::{self, HttpError, HttpSource};
use kiln_solver::pattern::{parse_dockerignore, PatternMatcher};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use tempfile::TempDir;
use thiserror::Error;

/// Why the context or the Dockerfile could not be loaded.
#[derive(Debug, Error)]
pub enum ContextError {
    /// A file or directory the user named is missing or unreadable.
    #[error("{what} {path}: {source}")]
    Io {
        /// What it was (`context`, `Dockerfile`, ...).
        what: &'static str,
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Unpacking a tarball context failed.
    #[error(transparent)]
    Extract(#[from] kiln_solver::archive::ExtractError),
    /// Fetching a git context failed (the solver's git source, as for `ADD <git URL>`).
    #[error("git context {url}")]
    Git {
        /// The URL as given.
        url: String,
        /// What git or the checkout said.
        #[source]
        source: Box<GitError>,
    },
    /// Downloading a URL context failed (the solver's HTTP source, as for `ADD <URL>`).
    #[error("URL context {url}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong, with the HTTP status where there was one.
        #[source]
        source: Box<HttpError>,
    },
    /// The `.dockerignore` has a pattern that does not compile.
    #[error("{path}:{line}: {source}")]
    Ignore {
        /// The ignore file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The pattern error.
        source: kiln_solver::pattern::GlobError,
    },
    /// Both the context and the Dockerfile were asked to come from stdin.
    #[error("the context and the Dockerfile cannot both be read from stdin (`-`)")]
    StdinTwice,
    /// `-f` points outside a context that is not a local directory.
    #[error("Dockerfile path {0} escapes the context")]
    DockerfileEscapes(String),
}

/// Where the context comes from, as parsed from the positional argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSpec {
    /// A local directory.
    Dir(PathBuf),
    /// A tarball file (any compression).
    Tarball(PathBuf),
    /// `-`: a tarball, or a lone Dockerfile with an empty context, on stdin.
    Stdin,
    /// A git repository: `URL#ref:subdir`.
    Git {
        /// The repository URL without the fragment.
        url: String,
        /// Branch, tag or commit; None for the remote's HEAD.
        reference: Option<String>,
        /// Subdirectory of the repository to use as the context.
        subdir: Option<String>,
    },
    /// An http(s) URL to a tarball (or a lone Dockerfile).
    Url(String),
}

impl ContextSpec {
    /// Classifies the context argument as buildx does: `-`, git URLs (git://,
    /// git@, github.com/, or an URL whose path ends in `.git`, with an optional
    /// `#ref:subdir`), other URLs, tarball files and directories.
    pub fn parse(arg: &str) -> ContextSpec {
        if arg == "-" {
            return ContextSpec::Stdin;
        }
        if is_git_url(arg) {
            let (url, fragment) = match arg.split_once('#') {
                Some((u, f)) => (u, Some(f)),
                None => (arg, None),
            };
            let (reference, subdir) = match fragment {
                Some(f) => {
                    let (r, s) = f.split_once(':').unwrap_or((f, ""));
                    (non_empty(r), non_empty(s))
                }
                None => (None, None),
            };
            let url = if url.starts_with("github.com/") {
                format!("https://{url}")
            } else {
                url.to_string()
            };
            return ContextSpec::Git {
                url,
                reference,
                subdir,
            };
        }
        if arg.starts_with("http://") || arg.starts_with("https://") {
            return ContextSpec::Url(arg.to_string());
        }
        let path = PathBuf::from(arg);
        if path.is_file() {
            ContextSpec::Tarball(path)
        } else {
            ContextSpec::Dir(path)
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn is_git_url(arg: &str) -> bool {
    if arg.starts_with("git://") || arg.starts_with("git@") || arg.starts_with("github.com/") {
        return true;
    }
    let is_url = ["http://", "https://", "ssh://", "file://"]
        .iter()
        .any(|p| arg.starts_with(p));
    let path = arg.split('#').next().unwrap_or(arg);
    is_url && path.trim_end_matches('/').ends_with(".git")
}

/// The Dockerfile of a build: its text and the name errors use.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The name shown in diagnostics (the path as given, or `-`).
    pub name: String,
    /// The file's path on disk, when it has one (for `<Dockerfile>.dockerignore`).
    pub path: Option<PathBuf>,
    /// The bytes.
    pub content: Vec<u8>,
}

/// A loaded context: a directory on disk (a temporary one for tarball, git
/// and URL contexts), the Dockerfile, and the ignore patterns.
#[derive(Debug)]
pub struct BuildContext {
    /// The context's root directory.
    pub root: PathBuf,
    /// The Dockerfile to build.
    pub dockerfile: Dockerfile,
    /// `.dockerignore` patterns (empty when there is none).
    pub ignore: PatternMatcher,
    /// Keeps a temporary context alive as long as the build.
    _temp: Option<TempDir>,
}

impl BuildContext {
    /// Loads the context named by `spec` and the Dockerfile named by `-f`
    /// (`dockerfile`: None for `<context>/Dockerfile`, `-` for stdin).
    /// Temporary directories are made under `scratch`.
    pub fn load(
        spec: &ContextSpec,
        dockerfile: Option<&str>,
        scratch: &Path,
    ) -> Result<BuildContext, ContextError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| ContextError::Io { what, path, source }
        };
        std::fs::create_dir_all(scratch).map_err(io("state directory", scratch))?;
        let mut stdin_dockerfile = None;
        let (root, temp, local) = match spec {
            ContextSpec::Dir(dir) => {
                let meta = std::fs::metadata(dir).map_err(io("context", dir))?;
                if !meta.is_dir() {
                    return Err(ContextError::Io {
                        what: "context",
                        path: dir.display().to_string(),
                        source: std::io::Error::other("not a directory"),
                    });
                }
                (dir.clone(), None, true)
            }
            ContextSpec::Tarball(file) => {
                let temp = temp_dir(scratch)?;
                let f = std::fs::File::open(file).map_err(io("context", file))?;
                extract_tar(f, temp.path(), &file.display().to_string())?;
                (temp.path().to_path_buf(), Some(temp), false)
            }
            ContextSpec::Stdin => {
                if dockerfile == Some("-") {
                    return Err(ContextError::StdinTwice);
                }
                let temp = temp_dir(scratch)?;
                // Only the head is held to tell a tarball from a Dockerfile: a tarball
                // streams from stdin into the directory, whatever its size.
                let mut stdin = std::io::stdin();
                let mut head = Vec::new();
                (&mut stdin)
                    .take(STDIN_PEEK)
                    .read_to_end(&mut head)
                    .map_err(io("context", Path::new("stdin")))?;
                if looks_like_tar(head.as_slice()) {
                    extract_tar(head.as_slice().chain(stdin), temp.path(), "stdin")?;
                } else {
                    // `kiln build - < Dockerfile`: the Dockerfile alone, no context.
                    stdin
                        .read_to_end(&mut head)
                        .map_err(io("context", Path::new("stdin")))?;
                    stdin_dockerfile = Some(head);
                }
                (temp.path().to_path_buf(), Some(temp), false)
            }
            ContextSpec::Git {
                url,
                reference,
                subdir,
            } => {
                let temp = temp_dir(scratch)?;
                let root = temp.path().join("context");
                let mut source = GitSource::new(url);
                source.reference = reference.clone();
                source.subdir = subdir.clone();
                git::checkout(&source, &root).map_err(|e| ContextError::Git {
                    url: url.clone(),
                    source: Box::new(e),
                })?;
                (root, Some(temp), false)
            }
            ContextSpec::Url(url) => {
                let temp = temp_dir(scratch)?;
                let root = temp.path().join("context");
                let file = download(url, &temp.path().join("download"))?;
                let looks_tar = {
                    let f = std::fs::File::open(&file).map_err(io("context", &file))?;
                    looks_like_tar(f)
                };
                if looks_tar {
                    let f = std::fs::File::open(&file).map_err(io("context", &file))?;
                    std::fs::create_dir(&root).map_err(io("context", &root))?;
                    extract_tar(f, &root, url)?;
                } else {
                    stdin_dockerfile = Some(std::fs::read(&file).map_err(io("context", &file))?);
                    std::fs::create_dir(&root).map_err(io("context", &root))?;
                }
                (root, Some(temp), false)
            }
        };

        let dockerfile = match (stdin_dockerfile, dockerfile) {
            (Some(content), _) => Dockerfile {
                name: "Dockerfile".to_string(),
                path: None,
                content,
            },
            (None, Some("-")) => {
                let mut content = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut content)
                    .map_err(io("Dockerfile", Path::new("stdin")))?;
                Dockerfile {
                    name: "-".to_string(),
                    path: None,
                    content,
                }
            }
            (None, given) => {
                // Like docker: -f is relative to the working directory for a
                // local context, to the context root for the others.
                let path = match given {
                    Some(p) if local => PathBuf::from(p),
                    Some(p) => inside(&root, p)
                        .ok_or_else(|| ContextError::DockerfileEscapes(p.to_string()))?,
                    None => root.join("Dockerfile"),
                };
                let content = std::fs::read(&path).map_err(io("Dockerfile", &path))?;
                Dockerfile {
                    name: given
                        .map(str::to_string)
                        .unwrap_or_else(|| path.display().to_string()),
                    path: Some(path),
                    content,
                }
            }
        };

        let ignore = load_ignore(&root, dockerfile.path.as_deref())?;
        Ok(BuildContext {
            root,
            dockerfile,
            ignore,
            _temp: temp,
        })
    }
}

impl BuildContext {
    /// Whether the context is a temporary copy (tarball, stdin, git, URL) that goes away
    /// with the build, rather than a directory of the user's.
    pub fn is_temporary(&self) -> bool {
        self._temp.is_some()
    }
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's
/// `.dockerignore`, as in BuildKit.
fn load_ignore(root: &Path, dockerfile: Option<&Path>) -> Result<PatternMatcher, ContextError> {
    let specific = dockerfile.and_then(|p| {
        let name = p.file_name()?.to_str()?;
        Some(p.with_file_name(format!("{name}.dockerignore")))
    });
    for candidate in specific
        .into_iter()
        .chain(std::iter::once(root.join(".dockerignore")))
    {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => {
                let matcher =
                    parse_dockerignore(&text).map_err(|(line, source)| ContextError::Ignore {
                        path: candidate.display().to_string(),
                        line,
                        source,
                    })?;
                return Ok(matcher);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ContextError::Io {
                    what: "ignore file",
                    path: candidate.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(PatternMatcher::default())
}

/// `base/rel` when `rel` stays inside `base` lexically.
fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                depth = depth.checked_sub(1)?;
                out.pop();
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// How much of stdin is read to tell a tarball from a Dockerfile: enough compressed input
/// for the first tar header of any compression.
const STDIN_PEEK: u64 = 1 << 20;

/// Whether `input` starts with a tar header, compressed or not.
fn looks_like_tar(input: impl Read + Send) -> bool {
    let Ok((_, mut reader)) = decompress(input) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    is_tar(&head[..got])
}

fn temp_dir(scratch: &Path) -> Result<TempDir, ContextError> {
    tempfile::Builder::new()
        .prefix("context-")
        .tempdir_in(scratch)
        .map_err(|source| ContextError::Io {
            what: "temporary context directory in",
            path: scratch.display().to_string(),
            source,
        })
}

/// Downloads `url` into `dir` with the solver's HTTP source and returns the file's path.
fn download(url: &str, dir: &Path) -> Result<PathBuf, ContextError> {
    let err = |e: HttpError| ContextError::Http {
        url: url.to_string(),
        source: Box::new(e),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ContextError::Io {
            what: "async runtime to download",
            path: url.to_string(),
            source,
        })?;
    let mut source = HttpSource::new(url);
    // A fixed name: the context is read from the file, whatever the server calls it.
    source.filename = Some("context".to_string());
    let got = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Request {
                url: url.to_string(),
                source: e,
            })?;
        http::download(&client, &source, dir).await
    });
    Ok(dir.join(got.map_err(err)?.file_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn classifies_context_arguments() {
        assert_eq!(ContextSpec::parse("-"), ContextSpec::Stdin);
        assert_eq!(
            ContextSpec::parse("https://example.com/r.git#v1:sub/dir"),
            ContextSpec::Git {
                url: "https://example.com/r.git".into(),
                reference: Some("v1".into()),
                subdir: Some("sub/dir".into())
            }
        );
        assert_eq!(
            ContextSpec::parse("github.com/moby/buildkit"),
            ContextSpec::Git {
                url: "https://github.com/moby/buildkit".into(),
                reference: None,
                subdir: None
            }
        );
        assert_eq!(
            ContextSpec::parse("https://example.com/ctx.tar.gz"),
            ContextSpec::Url("https://example.com/ctx.tar.gz".into())
        );
        assert_eq!(
            ContextSpec::parse("/no/such/dir"),
            ContextSpec::Dir(PathBuf::from("/no/such/dir"))
        );
    }

    #[test]
    fn inside_refuses_escapes() {
        let base = Path::new("/ctx");
        assert_eq!(inside(base, "a/../b"), Some(PathBuf::from("/ctx/b")));
        assert_eq!(inside(base, "../etc/passwd"), None);
        assert_eq!(inside(base, "a/../../x"), None);
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        std::fs::write(dir.path().join("Dockerfile.dockerignore"), "*.tmp\n").unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let ctx =
            BuildContext::load(&ContextSpec::Dir(dir.path().into()), None, scratch.path()).unwrap();
        assert!(ctx.ignore.excludes("a.tmp"));
        assert!(!ctx.ignore.excludes("a.log"));
        std::fs::remove_file(dir.path().join("Dockerfile.dockerignore")).unwrap();
        let ctx =
            BuildContext::load(&ContextSpec::Dir(dir.path().into()), None, scratch.path()).unwrap();
        assert!(ctx.ignore.excludes("a.log"));
        assert_eq!(ctx.dockerfile.content, b"FROM scratch\n");
    }

    #[test]
    fn tarball_and_git_contexts() {
        let work = tempfile::tempdir().unwrap();
        // A compressed tarball with a Dockerfile in a subdirectory.
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("Dockerfile", &b"FROM scratch\nCOPY a /\n"[..]),
            ("a", b"A"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, name, data).unwrap();
        }
        let tarball = work.path().join("ctx.tar.zst");
        std::fs::write(
            &tarball,
            zstd::encode_all(b.into_inner().unwrap().as_slice(), 1).unwrap(),
        )
        .unwrap();
        let spec = ContextSpec::parse(tarball.to_str().unwrap());
        assert_eq!(spec, ContextSpec::Tarball(tarball.clone()));
        let ctx = BuildContext::load(&spec, None, work.path()).unwrap();
        assert_eq!(std::fs::read(ctx.root.join("a")).unwrap(), b"A");

        // A local git repository with a tag and a subdirectory.
        let repo = work.path().join("repo.git");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        std::fs::write(repo.join("sub/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(repo.join("sub/file"), "v1").unwrap();
        let run = |args: &[&str]| {
            let st = Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
        };
        run(&["init", "-q"]);
        run(&["add", "."]);
        run(&["commit", "-qm", "one"]);
        run(&["tag", "v1"]);
        std::fs::write(repo.join("sub/file"), "v2").unwrap();
        run(&["commit", "-qam", "two"]);
        let spec = ContextSpec::parse(&format!("file://{}#v1:sub", repo.display()));
        assert!(matches!(spec, ContextSpec::Git { .. }), "{spec:?}");
        let ctx = BuildContext::load(&spec, None, work.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(ctx.root.join("file")).unwrap(),
            "v1"
        );
        assert!(!ctx.root.join(".git").exists());
        let spec = ContextSpec::parse(&format!("file://{}#:sub", repo.display()));
        let ctx = BuildContext::load(&spec, None, work.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(ctx.root.join("file")).unwrap(),
            "v2"
        );
    }

    #[test]
    fn missing_context_and_bad_ignore_are_clear_errors() {
        let scratch = tempfile::tempdir().unwrap();
        let err = BuildContext::load(
            &ContextSpec::Dir("/no/such/ctx".into()),
            None,
            scratch.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/ctx"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "ok\n[bad\n").unwrap();
        let err = BuildContext::load(&ContextSpec::Dir(dir.path().into()), None, scratch.path())
            .unwrap_err();
        assert!(err.to_string().contains(".dockerignore:2"), "{err}");
    }
}
