//! Acceptance of issue 5's context and COPY bullets through `kiln build`:
//! every context form (tarball file, stdin, `-f -`, a git repository, a URL
//! to a tarball), `.dockerignore` rules, paths and symlinks that point out of
//! the context, and Docker's COPY rules. Results are read back with umoci.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{kiln_bin, read, Build};

/// Runs `kiln --root <state> ARGS` feeding `stdin`.
fn kiln_stdin(b: &Build, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(args)
        .env("BUILDKIT_PROGRESS", "plain")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kiln");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    pipe.write_all(stdin).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait for kiln")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "kiln failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tarball (GNU tar) of the context directory's contents.
fn tar_of(dir: &Path, dest: &Path, gzip: bool) {
    let st = Command::new("tar")
        .arg(if gzip { "-czf" } else { "-cf" })
        .arg(dest)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success());
}

/// Serves `body` for every request on a loopback port, `count` times.
fn serve(body: Vec<u8>, count: usize) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tarball_file_stdin_tarball_and_stdin_dockerfile_contexts() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch\nCOPY hello.txt /from-tar/hello.txt\n",
    );
    b.write("hello.txt", "packed\n");

    // A gzip tarball file as the context.
    let tgz = b.path("ctx.tar.gz");
    tar_of(&b.ctx(), &tgz, true);
    let out = b.kiln(&["build", "-t", "kiln-test/ctx:tgz", tgz.to_str().unwrap()]);
    ok(&out);
    let root = b.unpack("docker.io/kiln-test/ctx:tgz");
    assert_eq!(read(&root.join("from-tar/hello.txt")), "packed\n");

    // A plain tarball on stdin (`-`).
    let tar = b.path("ctx.tar");
    tar_of(&b.ctx(), &tar, false);
    let out = kiln_stdin(
        &b,
        &["build", "-t", "kiln-test/ctx:stdin", "-"],
        &std::fs::read(&tar).unwrap(),
    );
    ok(&out);
    let root = b.unpack("docker.io/kiln-test/ctx:stdin");
    assert_eq!(read(&root.join("from-tar/hello.txt")), "packed\n");

    // A lone Dockerfile on stdin (`-`): an empty context, so only heredocs work.
    let out = kiln_stdin(
        &b,
        &["build", "-t", "kiln-test/ctx:lone", "-"],
        b"FROM scratch\nCOPY <<EOF /lone.txt\nno context\nEOF\n",
    );
    ok(&out);
    let root = b.unpack("docker.io/kiln-test/ctx:lone");
    assert_eq!(read(&root.join("lone.txt")), "no context\n");

    // `-f -`: the Dockerfile from stdin, the context from the directory (whose
    // own Dockerfile is not the one used).
    let ctx = b.ctx();
    let out = kiln_stdin(
        &b,
        &[
            "build",
            "-f",
            "-",
            "-t",
            "kiln-test/ctx:dashf",
            ctx.to_str().unwrap(),
        ],
        b"FROM scratch\nCOPY hello.txt /via-stdin-dockerfile.txt\n",
    );
    ok(&out);
    let root = b.unpack("docker.io/kiln-test/ctx:dashf");
    assert_eq!(read(&root.join("via-stdin-dockerfile.txt")), "packed\n");
    assert!(
        !root.join("from-tar").exists(),
        "the directory's Dockerfile was not used"
    );

    // Both from stdin is refused.
    let out = kiln_stdin(&b, &["build", "-f", "-", "-"], b"FROM scratch\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stdin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn git_repository_with_ref_and_subdir_and_url_tarball_contexts() {
    let b = Build::new();
    // A repository whose `main` and `feature` branches differ; the build uses
    // `feature`'s `app/` subdirectory.
    let src = b.path("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(
        src.join("app/Dockerfile"),
        "FROM scratch\nCOPY which.txt /which.txt\n",
    )
    .unwrap();
    std::fs::write(src.join("app/which.txt"), "main\n").unwrap();
    std::fs::write(src.join("top.txt"), "top\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "main"]);
    git(&src, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(src.join("app/which.txt"), "feature\n").unwrap();
    git(&src, &["commit", "-q", "-a", "-m", "feature"]);
    git(&src, &["checkout", "-q", "main"]);
    let bare = b.path("repo.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&src)
        .arg(&bare)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("file://{}#feature:app", bare.display());
    ok(&b.kiln(&["build", "-t", "kiln-test/git:feature", &url]));
    let root = b.unpack("docker.io/kiln-test/git:feature");
    assert_eq!(read(&root.join("which.txt")), "feature\n");
    let url = format!("file://{}#main:app", bare.display());
    ok(&b.kiln(&["build", "-t", "kiln-test/git:main", &url]));
    let root = b.unpack("docker.io/kiln-test/git:main");
    assert_eq!(read(&root.join("which.txt")), "main\n");
    // The subdir is the context root: files above it are out of reach.
    std::fs::write(
        src.join("app/Dockerfile"),
        "FROM scratch\nCOPY top.txt /top.txt\n",
    )
    .unwrap();
    git(&src, &["commit", "-q", "-a", "-m", "reach up"]);
    git(&src, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let out = b.kiln(&["build", &format!("file://{}#main:app", bare.display())]);
    assert!(!out.status.success(), "top.txt is outside the app/ context");
    assert!(String::from_utf8_lossy(&out.stderr).contains("top.txt"));

    // A URL to a gzip tarball, served by a local HTTP server.
    let dir = b.path("urlctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY served.txt /served.txt\n",
    )
    .unwrap();
    std::fs::write(dir.join("served.txt"), "over http\n").unwrap();
    let tgz = b.path("served.tar.gz");
    tar_of(&dir, &tgz, true);
    let base = serve(std::fs::read(&tgz).unwrap(), 1);
    ok(&b.kiln(&[
        "build",
        "-t",
        "kiln-test/url:1",
        &format!("{base}/ctx.tar.gz"),
    ]));
    let root = b.unpack("docker.io/kiln-test/url:1");
    assert_eq!(read(&root.join("served.txt")), "over http\n");

    // A URL to a plain Dockerfile builds with no context, as in docker.
    let base = serve(b"FROM scratch\nLABEL from=url\n".to_vec(), 1);
    ok(&b.kiln(&[
        "build",
        "-t",
        "kiln-test/url:2",
        &format!("{base}/Dockerfile"),
    ]));
    let config = b.config("docker.io/kiln-test/url:2");
    assert_eq!(config["config"]["Labels"]["from"], "url", "{config}");
    // Fetch failures name the context.
    let missing = format!("file://{}#no-such-branch", bare.display());
    let out = b.kiln(&["build", &missing]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("git context file://"), "{err}");
    assert!(err.contains("no-such-branch"), "{err}");
}

#[test]
fn dockerignore_double_star_negation_and_dockerfile_specific_file() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY . /c/\n");
    b.write(
        ".dockerignore",
        "**/*.log\n!keep/**/important.log\nsecret*\n",
    );
    b.write("a.txt", "a");
    b.write("top.log", "x");
    b.write("deep/er/noise.log", "x");
    b.write("deep/er/kept.txt", "k");
    b.write("keep/sub/important.log", "i");
    b.write("keep/sub/other.log", "x");
    b.write("secret.key", "x");
    b.build(&["-t", "kiln-test/ignore:1"]);
    let root = b.unpack("docker.io/kiln-test/ignore:1");
    assert_eq!(read(&root.join("c/a.txt")), "a");
    assert_eq!(read(&root.join("c/deep/er/kept.txt")), "k");
    assert_eq!(read(&root.join("c/keep/sub/important.log")), "i");
    for gone in [
        "c/top.log",
        "c/deep/er/noise.log",
        "c/keep/sub/other.log",
        "c/secret.key",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is ignored");
    }

    // `<Dockerfile>.dockerignore` beside the Dockerfile wins over `.dockerignore`.
    b.write("build/app.Dockerfile", "FROM scratch\nCOPY . /c/\n");
    b.write("build/app.Dockerfile.dockerignore", "a.txt\nbuild\n");
    let df = b.ctx().join("build/app.Dockerfile");
    b.build(&["-f", df.to_str().unwrap(), "-t", "kiln-test/ignore:2"]);
    let root = b.unpack("docker.io/kiln-test/ignore:2");
    assert!(
        !root.join("c/a.txt").exists(),
        "the specific file ignores a.txt"
    );
    assert_eq!(
        read(&root.join("c/top.log")),
        "x",
        ".dockerignore is not read"
    );
    assert_eq!(read(&root.join("c/secret.key")), "x");
    assert!(!root.join("c/build").exists());
}

#[test]
fn paths_and_symlinks_never_reach_out_of_the_context() {
    let b = Build::new();
    // Beside the context (in the work dir): must never be read.
    std::fs::write(b.path("outside.txt"), "OUTSIDE-BYTES\n").unwrap();
    b.write("inside.txt", "inside\n");
    std::os::unix::fs::symlink("../outside.txt", b.ctx().join("up-link")).unwrap();
    std::os::unix::fs::symlink(b.path("outside.txt"), b.ctx().join("abs-link")).unwrap();

    // Paths are scoped to the context as in BuildKit: `..` stops at its root, so
    // `../outside.txt` names the context's own `outside.txt`.
    b.write("outside.txt", "context copy\n");
    b.write("Dockerfile", "FROM scratch\nCOPY ../outside.txt /x\n");
    b.build(&["-t", "kiln-test/escape:1"]);
    let root = b.unpack("docker.io/kiln-test/escape:1");
    assert_eq!(read(&root.join("x")), "context copy\n");

    // The whole context: the links are copied as links, with their targets as text.
    b.write("Dockerfile", "FROM scratch\nCOPY . /c/\n");
    b.build(&["-t", "kiln-test/escape:2"]);
    let root = b.unpack("docker.io/kiln-test/escape:2");
    let up = root.join("c/up-link");
    assert!(std::fs::symlink_metadata(&up)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&up).unwrap(),
        Path::new("../outside.txt")
    );
    let abs = root.join("c/abs-link");
    assert!(std::fs::symlink_metadata(&abs)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_link(&abs).unwrap(), b.path("outside.txt"));
    assert_eq!(read(&root.join("c/inside.txt")), "inside\n");

    // A named link is followed, but inside the context: `../outside.txt` from
    // the root is the context's file; the absolute target does not exist there.
    b.write("Dockerfile", "FROM scratch\nCOPY up-link /got\n");
    b.build(&["-t", "kiln-test/escape:3"]);
    let root = b.unpack("docker.io/kiln-test/escape:3");
    assert_eq!(read(&root.join("got")), "context copy\n");
    b.write("Dockerfile", "FROM scratch\nCOPY abs-link /got\n");
    let err = b.build_fails(&[]);
    assert!(
        err.contains("abs-link") && err.contains("not found"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2") || err.contains(":2:"), "{err}");
    // Nothing in the state dir holds the outside file's bytes.
    let found = Command::new("grep")
        .args(["-r", "-a", "-l", "OUTSIDE-BYTES"])
        .arg(b.root.path())
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "outside bytes in {}",
        String::from_utf8_lossy(&found.stdout)
    );
}

#[test]
fn copy_follows_dockers_rules() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch
COPY *.txt /wild/
COPY f?.md [ab].c /class/
COPY dir /contents
COPY one.txt /slash/
COPY one.txt /noslash
WORKDIR /work/deep
COPY one.txt rel/
COPY one.txt ./here.txt
COPY --parents src/**/*.rs /parents/
COPY --exclude=*.log --exclude=skip dir2 /excl/
COPY <<EOF /heredoc/first.txt
line one
EOF
COPY <<A <<B /heredoc/
a body
A
b body
B
WORKDIR /made/by/workdir
",
    );
    b.write("one.txt", "1");
    b.write("two.txt", "2");
    b.write("f1.md", "m");
    b.write("f22.md", "not matched");
    b.write("a.c", "a");
    b.write("c.c", "not matched");
    b.write("dir/inner.txt", "inner");
    b.write("dir/sub/deeper.txt", "deeper");
    b.write("src/lib.rs", "lib");
    b.write("src/x/y/mod.rs", "mod");
    b.write("src/x/y/notes.md", "not matched");
    b.write("dir2/keep.txt", "k");
    b.write("dir2/drop.log", "x");
    b.write("dir2/skip/any.txt", "x");
    b.build(&["-t", "kiln-test/copy:1"]);
    let root = b.unpack("docker.io/kiln-test/copy:1");

    // Wildcards (Go filepath.Match): `*`, `?`, character classes.
    assert_eq!(read(&root.join("wild/one.txt")), "1");
    assert_eq!(read(&root.join("wild/two.txt")), "2");
    assert!(!root.join("wild/f1.md").exists());
    assert_eq!(read(&root.join("class/f1.md")), "m");
    assert_eq!(read(&root.join("class/a.c")), "a");
    assert!(!root.join("class/f22.md").exists());
    assert!(!root.join("class/c.c").exists());
    // A directory copies its contents, not itself.
    assert_eq!(read(&root.join("contents/inner.txt")), "inner");
    assert_eq!(read(&root.join("contents/sub/deeper.txt")), "deeper");
    assert!(!root.join("contents/dir").exists());
    // A trailing `/` makes the destination a directory; without it, a file.
    assert_eq!(read(&root.join("slash/one.txt")), "1");
    assert!(root.join("noslash").is_file());
    assert_eq!(read(&root.join("noslash")), "1");
    // Relative destinations are under WORKDIR.
    assert_eq!(read(&root.join("work/deep/rel/one.txt")), "1");
    assert_eq!(read(&root.join("work/deep/here.txt")), "1");
    // --parents keeps the matched paths' directories.
    assert_eq!(read(&root.join("parents/src/lib.rs")), "lib");
    assert_eq!(read(&root.join("parents/src/x/y/mod.rs")), "mod");
    assert!(!root.join("parents/src/x/y/notes.md").exists());
    assert!(!root.join("parents/lib.rs").exists());
    // --exclude drops matching files and directories.
    assert_eq!(read(&root.join("excl/keep.txt")), "k");
    assert!(!root.join("excl/drop.log").exists());
    assert!(!root.join("excl/skip").exists());
    // Heredoc files.
    assert_eq!(read(&root.join("heredoc/first.txt")), "line one\n");
    assert_eq!(read(&root.join("heredoc/A")), "a body\n");
    assert_eq!(read(&root.join("heredoc/B")), "b body\n");
    // WORKDIR makes its directory even when nothing is copied into it.
    assert!(root.join("made/by/workdir").is_dir());
    let config = b.config("docker.io/kiln-test/copy:1");
    assert_eq!(config["config"]["WorkingDir"], "/made/by/workdir");
}

/// Serves the files under `dir` over HTTP/1.0 (GET only) on a loopback port, `count` requests.
fn serve_dir(dir: std::path::PathBuf, count: usize) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let mut line = String::new();
            let Ok(clone) = s.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let file = dir.join(path.trim_start_matches('/'));
            let reply = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let mut r = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = s.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_unpacks_every_tar_compression_and_fetches_git_and_copy_sets_modes() {
    use std::os::unix::fs::MetadataExt;
    let b = Build::new();
    // One tarball per compression, each holding a file named after it.
    let src = b.path("tarsrc");
    for (name, flag) in [
        ("plain", ""),
        ("gz", "--gzip"),
        ("bz2", "--bzip2"),
        ("xz", "--xz"),
        ("zst", "--zstd"),
    ] {
        let dir = src.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), name).unwrap();
        std::fs::create_dir_all(b.ctx()).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg("-cf").arg(b.ctx().join(format!("a.{name}.tar")));
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let st = cmd.arg("-C").arg(&dir).arg(".").status().unwrap();
        assert!(st.success(), "tar {flag}");
    }
    // A git repository served over dumb HTTP.
    let work = b.path("gitsrc");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("fromgit.txt"), "git v1\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "v1"]);
    std::fs::write(work.join("fromgit.txt"), "git v2\n").unwrap();
    git(&work, &["commit", "-q", "-a", "-m", "v2"]);
    let served = b.path("served");
    std::fs::create_dir_all(&served).unwrap();
    let bare = served.join("repo.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    git(&bare, &["update-server-info"]);
    let base = serve_dir(served, 200);

    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch
ADD a.plain.tar a.gz.tar a.bz2.tar a.xz.tar a.zst.tar /unpacked/
ADD {base}/repo.git#v1 /git-v1/
ADD {base}/repo.git /git-head/
COPY --chmod=u+x,g-r,o= x.sh /sym/x.sh
COPY --chmod=0600 x.sh /oct/x.sh
COPY --chown=4242:4343 x.sh /own/x.sh
"
        ),
    );
    b.write("x.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        b.ctx().join("x.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    b.build(&["-t", "kiln-test/add:rules"]);
    let root = b.unpack("docker.io/kiln-test/add:rules");
    for name in ["plain", "gz", "bz2", "xz", "zst"] {
        assert_eq!(
            read(&root.join(format!("unpacked/{name}.txt"))),
            name,
            "{name} tarball unpacked"
        );
    }
    assert_eq!(read(&root.join("git-v1/fromgit.txt")), "git v1\n");
    assert_eq!(read(&root.join("git-head/fromgit.txt")), "git v2\n");
    assert!(
        !root.join("git-head/.git").exists(),
        "no .git without --keep-git-dir"
    );
    let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("sym/x.sh"), 0o700, "u+x,g-r,o= over 644");
    assert_eq!(mode("oct/x.sh"), 0o600);
    let md = std::fs::symlink_metadata(root.join("own/x.sh")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (4242, 4343),
        "numeric ids need no passwd"
    );
}
