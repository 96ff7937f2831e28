//! Acceptance of issues 11 and 12 (file ops and mounts) through `kiln build`,
//! for both executors: mount sources that are hostile symlinks resolve inside
//! their own input (the context or a stage), never on the host; relative
//! context and state paths.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{kiln_bin, Build, TestEnv};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn busybox(env: &TestEnv) -> String {
    format!("{}/library/busybox:latest", env.registry())
}

/// Builds with `--executor EXECUTOR` and a tag; returns the unpacked rootfs.
fn build_with(b: &Build, executor: &str, tag: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--executor", executor, "-t", tag];
    args.extend_from_slice(extra);
    b.build(&args);
    b.unpack(&format!("docker.io/{tag}"))
}

/// Every path under `dir`, relative and sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A host directory holding `secret`, removed on drop.
struct HostSecret(PathBuf);

impl HostSecret {
    fn new(test: &str, executor: &str) -> HostSecret {
        let dir = PathBuf::from(format!(
            "/tmp/kiln-solverfs-{test}-{}-{executor}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "HOST-SECRET\n").unwrap();
        HostSecret(dir)
    }

    /// The same path inside `root` (where a link to it must lead).
    fn inside(&self, root: &Path) -> PathBuf {
        root.join(self.0.strip_prefix("/").unwrap())
    }
}

impl Drop for HostSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A context whose links all point at the host secret: absolute to the file,
/// absolute to its directory, and relative with more `..` than the context has.
fn hostile_links(b: &Build, host: &HostSecret) {
    std::fs::create_dir_all(b.ctx()).unwrap();
    symlink(host.0.join("secret"), b.ctx().join("link")).unwrap();
    symlink(&host.0, b.ctx().join("dirlink")).unwrap();
    let up = format!(
        "{}{}/secret",
        "../".repeat(16),
        host.0.display().to_string().trim_start_matches('/')
    );
    symlink(up, b.ctx().join("uplink")).unwrap();
}

const MOUNTS: &str = "
RUN --mount=type=bind,source=link,target=/s cat /s > /bind-file
RUN --mount=type=bind,source=dirlink,target=/d cat /d/secret > /bind-dir
RUN --mount=type=bind,source=dirlink/secret,target=/s cat /s > /bind-through-dir
RUN --mount=type=bind,source=uplink,target=/s cat /s > /bind-up
RUN --mount=type=bind,source=dirlink,target=/d,rw cat /d/secret > /bind-rw
RUN --mount=type=bind,from=src,source=/link,target=/s cat /s > /stage-file
RUN --mount=type=bind,from=src,source=/dirlink,target=/d cat /d/secret > /stage-dir
RUN --mount=type=cache,target=/c,from=src,source=/dirlink cat /c/secret > /cache-seed
";

fn mount_sources_resolve_inside_their_input(executor: &str) {
    let env = TestEnv::load();
    let host = HostSecret::new("resolve", executor);
    let b = Build::new();
    hostile_links(&b, &host);
    // Where the links lead inside the context: that is what BuildKit mounts.
    let inside = host.inside(&b.ctx());
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("secret"), "in-context\n").unwrap();
    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch AS src\nCOPY . /\nFROM {}{MOUNTS}",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/solverfs-links:1", &[]);
    for f in [
        "bind-file",
        "bind-dir",
        "bind-through-dir",
        "bind-up",
        "bind-rw",
        "stage-file",
        "stage-dir",
        "cache-seed",
    ] {
        assert_eq!(read(&root.join(f)), "in-context\n", "{f}");
    }
    assert_eq!(read(&host.0.join("secret")), "HOST-SECRET\n");
}

fn mount_sources_missing_inside_their_input_fail(executor: &str) {
    let env = TestEnv::load();
    let host = HostSecret::new("missing", executor);
    let b = Build::new();
    hostile_links(&b, &host);
    b.write("Dockerfile", &format!("FROM {}\n", busybox(&env)));
    for (n, run) in MOUNTS
        .lines()
        .filter(|l| l.contains("type=bind"))
        .enumerate()
    {
        let stage = "FROM scratch AS src\nCOPY . /\n";
        b.write(
            "Dockerfile",
            &format!("{stage}FROM {}\n{run}\n", busybox(&env)),
        );
        let err = b.build_fails(&["--executor", executor]);
        assert!(err.contains("not found"), "{run}: {err}");
        assert!(!err.contains("HOST-SECRET"), "{run}: {err}");
        assert!(err.contains("Dockerfile:4"), "{run} (#{n}): {err}");
    }
    // A cache seed that is not there seeds nothing, as before.
    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch AS src\nCOPY . /\nFROM {}\nRUN --mount=type=cache,target=/c,from=src,source=/dirlink ls /c > /listing\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/solverfs-missing:1", &[]);
    assert_eq!(read(&root.join("listing")), "");
}

fn dockerignored_paths_are_not_in_context_mounts(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("kept.txt", "kept\n");
    b.write("secret.txt", "SECRET\n");
    b.write("private/key", "KEY\n");
    b.write("private/public.txt", "public\n");
    b.write(
        ".dockerignore",
        "secret.txt\nprivate\n!private/public.txt\n",
    );
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=bind,target=/ctx cd /ctx && find . -type f | sort > /listing\nRUN --mount=type=bind,source=private,target=/p,rw ls /p > /private\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/solverfs-ignore:1", &[]);
    // As COPY . sees the context (and BuildKit's context transfer).
    assert_eq!(
        read(&root.join("listing")),
        "./.dockerignore\n./Dockerfile\n./kept.txt\n./private/public.txt\n"
    );
    assert_eq!(read(&root.join("private")), "public.txt\n");
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=bind,source=secret.txt,target=/s cat /s\n",
            busybox(&env)
        ),
    );
    let err = b.build_fails(&["--executor", executor]);
    assert!(err.contains("not found"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
}

fn relative_context_and_state_paths(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("in.txt", "the context\n");
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=bind,target=/ctx cat /ctx/in.txt > /whole\nRUN --mount=type=bind,source=in.txt,target=/f cat /f > /one\nRUN --mount=type=cache,target=/c echo ok > /cache\n",
            busybox(&env)
        ),
    );
    let out = Command::new(kiln_bin())
        .current_dir(b.ctx())
        .args(["--root", "../state", "build", "--executor", executor])
        .args(["-o", "type=local,dest=../out", "."])
        .env("BUILDKIT_PROGRESS", "plain")
        .output()
        .expect("run kiln");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = b.path("out");
    assert_eq!(read(&dest.join("whole")), "the context\n");
    assert_eq!(read(&dest.join("one")), "the context\n");
    assert_eq!(read(&dest.join("cache")), "ok\n");
}

#[test]
fn wildcards_may_match_nothing_a_missing_plain_path_fails() {
    let b = Build::new();
    b.write("present.txt", "here\n");
    b.write("skipped.log", "ignored\n");
    b.write(".dockerignore", "*.log\n");
    b.write(
        "Dockerfile",
        "FROM scratch AS src\nCOPY present.txt /\nFROM scratch\nCOPY *.nomatch /x/\nCOPY present.txt *.nomatch /y/\nCOPY nodir/*.txt /z/\nCOPY *.log /ignored/\nCOPY --from=src /*.nomatch /s/\nCOPY --from=src /*.txt /s/\n",
    );
    let dest = b.path("out");
    b.build(&["-o", &format!("type=local,dest={}", dest.display())]);
    let found = tree(&dest);
    // As BuildKit: a copy that matched nothing does not even create its destination.
    assert_eq!(found, ["s", "s/present.txt", "y", "y/present.txt"]);
    assert_eq!(read(&dest.join("y/present.txt")), "here\n");

    b.write(
        "Dockerfile",
        "FROM scratch\nCOPY present.txt /\nCOPY nomatch.txt /x/\n",
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("nomatch.txt"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
}

#[test]
fn a_wildcard_copy_through_a_linked_directory_sees_its_changes() {
    let b = Build::new();
    b.write("real/a.txt", "v1\n");
    symlink("real", b.ctx().join("link")).unwrap();
    b.write("Dockerfile", "FROM scratch\nCOPY link/*.txt /x/\n");
    let dest = b.path("out");
    let out = format!("type=local,dest={}", dest.display());
    b.build(&["-o", &out]);
    assert_eq!(read(&dest.join("x/a.txt")), "v1\n");
    b.write("real/a.txt", "v2\n");
    b.build(&["-o", &out]);
    assert_eq!(
        read(&dest.join("x/a.txt")),
        "v2\n",
        "the copy was not cached"
    );
}

/// A tar of `a` (holding `data`) and `b`, a hard link to it, made by tar(1).
fn linked_tar(b: &Build, name: &str, data: &str) {
    let src = b.path(&format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), data).unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let st = Command::new("tar")
        .arg("-cf")
        .arg(b.ctx().join(name))
        .arg("-C")
        .arg(&src)
        .args(["a", "b"])
        .status()
        .expect("run tar");
    assert!(st.success());
}

#[test]
fn add_of_a_tar_whose_hard_link_replaces_a_file() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("old-b", "before\n");
    linked_tar(&b, "one.tar", "one\n");
    linked_tar(&b, "two.tar", "two\n");
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY old-b /t/b\nADD one.tar /t/\nADD one.tar /t/\nADD two.tar /t/\nRUN stat -c '%i %h' /t/a /t/b > /inodes\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, "native", "kiln-test/solverfs-hardlink:1", &[]);
    assert_eq!(read(&root.join("t/b")), "two\n");
    let inodes = read(&root.join("inodes"));
    let lines: Vec<&str> = inodes.lines().collect();
    assert_eq!(lines.len(), 2, "{inodes}");
    assert_eq!(lines[0], lines[1], "one inode: {inodes}");
    assert!(lines[0].ends_with(" 2"), "two links: {inodes}");
    // umoci's unpack of the image agrees.
    use std::os::unix::fs::MetadataExt;
    let (a, bm) = (
        std::fs::metadata(root.join("t/a")).unwrap(),
        std::fs::metadata(root.join("t/b")).unwrap(),
    );
    assert_eq!(a.ino(), bm.ino());
}

fn tmpfs_mounts_take_the_mount_points_mode(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN mkdir -m 700 /e700 && mkdir -m 2750 /e2750\nRUN --mount=type=tmpfs,target=/fresh --mount=type=tmpfs,target=/e700 --mount=type=tmpfs,target=/e2750,size=1m --mount=type=tmpfs,target=/fresh/sub --mount=type=cache,target=/fresh/c/deeper stat -c '%a %n' /fresh /e700 /e2750 /fresh/sub /fresh/c > /modes\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/solverfs-tmpfs:1", &[]);
    // What docker 20.10's BuildKit (runc) gives for the same step; mount points
    // inside a tmpfs are made there.
    let modes = read(&root.join("modes"));
    let (head, last) = modes.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(head, "1777 /fresh\n700 /e700\n2750 /e2750\n1777 /fresh/sub");
    // runc makes the directory 755; crun keeps the sticky bit of the tmpfs above.
    assert!(
        last == "755 /fresh/c" || (executor == "oci" && last == "1755 /fresh/c"),
        "{last}"
    );
}

fn cache_mounts_are_keyed_by_id_and_settings(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}
RUN --mount=type=cache,target=/c touch /c/plain && ls /c > /saw1
RUN --mount=type=cache,target=/c,mode=0700,uid=1000 touch /c/owned; ls /c > /saw2; stat -c '%a %u %g' /c > /meta2
RUN --mount=type=cache,target=/c,uid=1000,mode=0700 ls /c > /saw3
RUN --mount=type=cache,target=/c ls /c > /saw4
RUN --mount=type=cache,target=/c,mode=0755 touch /c/default-settings; ls /c > /saw5
RUN --mount=type=cache,target=/c,uid=0 ls /c > /saw6
RUN --mount=type=cache,target=/c,source=/,gid=7 ls /c > /saw7
",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/solverfs-cachekey:1", &[]);
    // What docker 20.10's BuildKit gives for the same steps (saw1..saw5).
    let saw = |n: u32| read(&root.join(format!("saw{n}")));
    assert_eq!(saw(1), "plain\n");
    assert_eq!(read(&root.join("meta2")), "700 1000 0\n");
    assert_eq!(saw(2), "owned\n", "mode/uid make another cache");
    assert_eq!(
        saw(3),
        "owned\n",
        "the same settings in another order are the same cache"
    );
    assert_eq!(saw(4), "plain\n");
    assert_eq!(
        saw(5),
        "default-settings\n",
        "explicit settings, even the defaults, are not the plain id's cache"
    );
    assert_eq!(saw(6), "default-settings\n", "mode 0755 uid 0 gid 0 both");
    assert_eq!(saw(7), "", "gid=7 is another cache");
}

macro_rules! for_both_executors {
    ($($name:ident),* $(,)?) => {
        mod native {
            $( #[test] fn $name() { super::$name("native") } )*
        }
        mod oci {
            $( #[test] fn $name() { super::$name("oci") } )*
        }
    };
}

for_both_executors!(
    mount_sources_resolve_inside_their_input,
    mount_sources_missing_inside_their_input_fail,
    relative_context_and_state_paths,
    tmpfs_mounts_take_the_mount_points_mode,
    cache_mounts_are_keyed_by_id_and_settings,
    dockerignored_paths_are_not_in_context_mounts,
);
