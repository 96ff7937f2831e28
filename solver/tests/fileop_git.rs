//! ADD of a git repository, from a local repository made by the test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kiln_solver::llb::SourceOp;
use kiln_solver::ops::source::git::{checkout, GitAuth, GitError, GitSource};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "@1577836800 +0000")
        .env("GIT_COMMITTER_DATE", "@1577836800 +0000")
        .output()
        .expect("git is installed (testdata/env/setup.sh installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits: v1 (annotated tag) and main's head.
struct Repo {
    _dir: tempfile::TempDir,
    url: String,
    v1: String,
    head: String,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    git(r, &["init", "-q", "-b", "main"]);
    std::fs::write(r.join("a.txt"), "one").unwrap();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("sub/deep")).unwrap();
    std::fs::write(r.join("bin/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("bin/run.sh"), std::fs::Permissions::from_mode(0o775)).unwrap();
    std::fs::write(r.join("sub/deep/inner.txt"), "inner").unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-q", "-m", "first"]);
    git(r, &["tag", "-a", "v1", "-m", "v1"]);
    let v1 = git(r, &["rev-parse", "HEAD"]);
    std::fs::write(r.join("a.txt"), "two").unwrap();
    git(r, &["commit", "-q", "-am", "second"]);
    let head = git(r, &["rev-parse", "HEAD"]);
    Repo {
        url: format!("file://{}", r.display()),
        _dir: dir,
        v1,
        head,
    }
}

#[test]
fn checks_out_refs_tags_and_commits() {
    let repo = repo();
    let out = tempfile::tempdir().unwrap();

    let dest = out.path().join("head");
    let c = checkout(&GitSource::new(&repo.url), &dest).unwrap();
    assert_eq!(c.commit, repo.head);
    assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "two");
    assert!(!dest.join(".git").exists());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dest.join("bin/run.sh")), 0o755);
    assert_eq!(mode(&dest.join("a.txt")), 0o644);
    assert_eq!(mode(&dest.join("sub")), 0o755);

    // The fragment form through the op, with a tag and a subdirectory.
    let mut op = SourceOp::git("placeholder");
    op.identifier = format!("git://{}#v1:sub", repo.url);
    let src = GitSource::from_op(&op).unwrap();
    let dest = out.path().join("tag");
    let c = checkout(&src, &dest).unwrap();
    assert_eq!(c.commit, repo.v1);
    assert_eq!(
        std::fs::read_to_string(dest.join("deep/inner.txt")).unwrap(),
        "inner"
    );
    assert!(!dest.join("a.txt").exists());

    // A full commit id, checked against a checksum prefix.
    let mut src = GitSource::new(&repo.url);
    src.reference = Some(repo.v1.clone());
    src.checksum = Some(repo.v1[..12].to_string());
    let dest = out.path().join("commit");
    checkout(&src, &dest).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "one");
}

#[test]
fn keep_git_dir_and_errors() {
    let repo = repo();
    let out = tempfile::tempdir().unwrap();
    let mut src = GitSource::new(&repo.url);
    src.keep_git_dir = true;
    src.reference = Some("main".into());
    let dest = out.path().join("kept");
    checkout(&src, &dest).unwrap();
    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), repo.head);

    let mut bad = GitSource::new(&repo.url);
    bad.reference = Some("v1".into());
    bad.checksum = Some(repo.head.clone());
    let dest = out.path().join("mismatch");
    let err = checkout(&bad, &dest).unwrap_err();
    assert!(matches!(err, GitError::ChecksumMismatch { .. }), "{err}");
    assert!(!dest.exists(), "a failed checkout leaves no destination");

    let mut missing = GitSource::new(&repo.url);
    missing.reference = Some("no-such-branch".into());
    let err = checkout(&missing, &out.path().join("x")).unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");

    let mut sub = GitSource::new(&repo.url);
    sub.subdir = Some("nope".into());
    let err = checkout(&sub, &out.path().join("y")).unwrap_err();
    assert!(matches!(err, GitError::SubdirNotFound { .. }), "{err}");
    // Only the destinations of successful checkouts exist; no temp dirs remain.
    let mut left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["kept"]);
}

#[test]
fn submodules_and_commit_mtime() {
    let lib = tempfile::tempdir().unwrap();
    git(lib.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(lib.path().join("lib.txt"), "library").unwrap();
    git(lib.path(), &["add", "."]);
    git(lib.path(), &["commit", "-q", "-m", "lib"]);
    let repo = repo();
    let main_dir = Path::new(repo.url.strip_prefix("file://").unwrap());
    let lib_url = format!("file://{}", lib.path().display());
    git(
        main_dir,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib_url,
            "vendor/lib",
        ],
    );
    git(main_dir, &["commit", "-q", "-m", "add submodule"]);

    let out = tempfile::tempdir().unwrap();
    let mut op = SourceOp::git("placeholder");
    op.identifier = format!("git://{}?mtime=commit", repo.url);
    let src = GitSource::from_op(&op).unwrap();
    assert!(src.mtime_from_commit && src.submodules);
    let dest = out.path().join("with");
    checkout(&src, &dest).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("vendor/lib/lib.txt")).unwrap(),
        "library"
    );
    for p in ["a.txt", "bin", "vendor/lib/lib.txt", "."] {
        let md = std::fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::mtime(&md),
            1_577_836_800,
            "{p}"
        );
    }

    let mut src = GitSource::new(&repo.url);
    src.submodules = false;
    let dest = out.path().join("without");
    checkout(&src, &dest).unwrap();
    assert!(dest.join("vendor/lib").is_dir());
    assert!(!dest.join("vendor/lib/lib.txt").exists());
}

/// Serves `root` over plain (dumb) HTTP, answering 401 to requests without
/// `Authorization: basic base64(x-access-token:secret)`.
fn serve_dumb_http(root: std::path::PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // base64("x-access-token:secret")
    let expected = "basic eC1hY2Nlc3MtdG9rZW46c2VjcmV0";
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization")
                        && v.trim().eq_ignore_ascii_case(expected)
                    {
                        authorized = true;
                    }
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = root.join(path);
            let (status, body) = if !authorized {
                ("401 Unauthorized", Vec::new())
            } else if let Ok(body) = std::fs::read(&file) {
                ("200 OK", body)
            } else {
                ("404 Not Found", Vec::new())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nWWW-Authenticate: Basic realm=\"git\"\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn http_remote_with_token_auth() {
    let repo = repo();
    let srv = tempfile::tempdir().unwrap();
    let bare = srv.path().join("repo.git");
    let src_dir = repo.url.strip_prefix("file://").unwrap();
    git(
        srv.path(),
        &["clone", "-q", "--bare", src_dir, bare.to_str().unwrap()],
    );
    git(&bare, &["update-server-info"]);
    let base = serve_dumb_http(srv.path().to_path_buf());
    let out = tempfile::tempdir().unwrap();

    let mut src = GitSource::new(&format!("{base}/repo.git"));
    src.auth = Some(GitAuth::Token("secret".into()));
    assert!(
        !format!("{src:?}").contains("secret"),
        "the token must not be printed"
    );
    let c = checkout(&src, &out.path().join("ok")).unwrap();
    assert_eq!(c.commit, repo.head);
    assert_eq!(
        std::fs::read_to_string(out.path().join("ok/a.txt")).unwrap(),
        "two"
    );

    src.auth = None;
    let err = checkout(&src, &out.path().join("denied")).unwrap_err();
    assert!(matches!(err, GitError::Command { .. }), "{err}");
    src.auth = Some(GitAuth::Token("wrong".into()));
    assert!(checkout(&src, &out.path().join("wrong")).is_err());
}
