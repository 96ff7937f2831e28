//! Acceptance of issue 12 (rootless): `kiln build` run by an unprivileged user
//! (`kiln-rootless`, made by testdata/env/setup.sh with subuid/subgid ranges)
//! re-executes itself in a user namespace. COPY --chown, RUN chown, cache mounts,
//! secrets and whiteouts work with native, crun and runc; owners are read back
//! from the image's layers with GNU tar, and the layers equal a root build's. The
//! errors for what is missing (ranges, uidmap, no_new_privs, a refused namespace,
//! a masked /proc) each say what to do; `type=local` output is the user's, and
//! SIGTERM reaches the build inside.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Build, TestEnv};

/// The unprivileged user setup.sh makes, with subordinate id ranges.
const USER: &str = "kiln-rootless";

/// kiln's stderr with miette's line wrapping and gutters undone, for phrase matching.
fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .filter(|w| !matches!(*w, "│" | "╰─▶" | "├─▶"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("JSON")
}

/// The layer blobs of the single image in the OCI layout at `dir`, base first.
fn layers(dir: &Path) -> Vec<PathBuf> {
    let blob = |d: &str| dir.join("blobs").join(d.replace(':', "/"));
    let mut desc = json(&dir.join("index.json"))["manifests"][0].clone();
    loop {
        let doc = json(&blob(desc["digest"].as_str().expect("digest")));
        match doc["manifests"].get(0) {
            Some(inner) => desc = inner.clone(),
            None => {
                return doc["layers"]
                    .as_array()
                    .expect("layers")
                    .iter()
                    .map(|l| blob(l["digest"].as_str().expect("digest")))
                    .collect()
            }
        }
    }
}

fn tar(args: &[&str]) -> String {
    let out = Command::new("tar").args(args).output().expect("run tar");
    assert!(out.status.success(), "tar {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The topmost layer holding `name`.
fn holder<'a>(layers: &'a [PathBuf], name: &str) -> &'a str {
    let l = layers
        .iter()
        .rev()
        .find(|l| {
            tar(&["-tf", l.to_str().expect("utf-8")])
                .lines()
                .any(|x| x == name)
        })
        .unwrap_or_else(|| panic!("{name} is in no layer"));
    l.to_str().expect("utf-8")
}

/// `uid/gid` of `name` in the topmost layer holding it, as GNU tar lists it.
fn owner(layers: &[PathBuf], name: &str) -> String {
    let listing = tar(&["--numeric-owner", "-tvf", holder(layers, name), name]);
    listing
        .split_whitespace()
        .nth(1)
        .expect("owner column")
        .to_string()
}

/// The content of `name` in the topmost layer holding it.
fn read(layers: &[PathBuf], name: &str) -> String {
    tar(&["-xOf", holder(layers, name), name])
}

/// Builds as [`USER`] with `--executor EXECUTOR`; `tools` (when given) are the only
/// programs on PATH, to pick one OCI runtime; `selected` is the executor kiln must
/// report using (`-D`).
fn rootless_build(executor: &str, tools: &[&str], selected: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    let mut extra_env = Vec::new();
    if !tools.is_empty() {
        let bin = b.path("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for t in tools {
            let path = which(t);
            std::os::unix::fs::symlink(&path, bin.join(t)).expect("symlink");
        }
        extra_env.push(format!("PATH={}", bin.display()));
    }
    let extra_env: Vec<&str> = extra_env.iter().map(String::as_str).collect();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\n\
             COPY --chown=1000:1000 a /a\n\
             RUN --mount=type=cache,target=/cache,id=rootless echo cached > /cache/x \
             && echo b > /b && chown 123:456 /b && id -u > /uid\n\
             RUN --mount=type=cache,target=/cache,id=rootless --mount=type=secret,id=s,target=/run/s \
             cp /cache/x /from-cache && wc -c < /run/s > /secret-len\n\
             RUN rm -rf /root /var && mkdir /var && echo new > /var/new\n",
            env.registry()
        ),
    );
    b.write("a", "a\n");
    std::fs::write(b.path("s"), "SECRET\n").expect("secret file");
    let oci = b.path("out.tar");
    let out = b.kiln_as_env(
        USER,
        &[
            "build",
            "-D",
            "--executor",
            executor,
            "--secret",
            &format!("id=s,src={}", b.path("s").display()),
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            b.ctx().to_str().expect("utf-8"),
        ],
        &extra_env,
    );
    assert!(
        out.status.success(),
        "rootless build failed:\n{}",
        stderr(&out)
    );
    let log = stderr(&out);
    assert!(
        log.contains("executor selected asked=") && log.contains(&format!("executor={selected}")),
        "not run by {selected}:\n{log}"
    );
    // The state is the user's default, and owned by the user.
    let state = b.root.path().join("kiln");
    assert!(
        state.join("meta.redb").is_file(),
        "no state in {}",
        state.display()
    );
    let layout = b.path("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    tar(&[
        "-C",
        layout.to_str().expect("utf-8"),
        "-xf",
        oci.to_str().expect("utf-8"),
    ]);
    // Layers made in the user namespace (whiteouts, subordinate owners) hold together.
    support::validate_layout(&layout, kiln_oci::walk::Partial::Refuse);
    let layers = layers(&layout);
    assert_eq!(owner(&layers, "a"), "1000/1000", "COPY --chown");
    assert_eq!(owner(&layers, "b"), "123/456", "RUN chown");
    assert_eq!(owner(&layers, "uid"), "0/0");
    assert_eq!(
        read(&layers, "uid"),
        "0\n",
        "RUN is root in the user namespace"
    );
    assert_eq!(
        read(&layers, "from-cache"),
        "cached\n",
        "the cache mount is shared"
    );
    assert_eq!(
        read(&layers, "secret-len").trim(),
        "7",
        "the secret is mounted"
    );
    // Deletions in a RUN become OCI whiteouts (overlayfs' own in the namespace).
    let top = tar(&[
        "-tf",
        layers.last().expect("a layer").to_str().expect("utf-8"),
    ]);
    let entries: Vec<&str> = top.lines().collect();
    for want in [".wh.root", "var/.wh..wh..opq", "var/new"] {
        assert!(
            entries.contains(&want),
            "{want} missing from the RUN layer: {entries:?}"
        );
    }
    // Layer trees holding files of the subordinate ids are measured and removed
    // in the namespace (as the user outside, `/root` at mode 0700 could not be).
    for verb in [&["du"][..], &["prune", "--all", "--force"]] {
        let out = b.kiln_as(USER, verb);
        assert!(out.status.success(), "{verb:?}: {}", stderr(&out));
    }
}

#[test]
fn rootless_build_native_keeps_owners() {
    rootless_build("native", &[], "native");
}

#[test]
fn rootless_build_oci_keeps_owners() {
    rootless_build("oci", &[], "oci:crun");
}

#[test]
fn rootless_build_runc_keeps_owners() {
    // Only runc on PATH (crun is preferred when both are).
    rootless_build(
        "oci",
        &["runc", "newuidmap", "newgidmap", "slirp4netns"],
        "oci:runc",
    );
}

/// The path of `tool` on this PATH.
fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH (testdata/env/setup.sh installs it)"))
}

#[test]
fn rootless_without_ranges_says_what_is_missing() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    // `nobody` has no /etc/subuid or /etc/subgid range.
    let out = b.kiln_as("nobody", &["build", b.ctx().to_str().expect("utf-8")]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot create a user namespace"), "{err}");
    assert!(
        err.contains("/etc/subuid has no range for user nobody"),
        "{err}"
    );
    assert!(
        err.contains("/etc/subgid has no range for user nobody"),
        "{err}"
    );
    assert!(err.contains("usermod --add-subuids"), "{err}");
    // Verbs that unpack or mount no layer still work without a namespace.
    for verb in [&["images"][..], &["du"], &["prune", "--force"]] {
        let out = b.kiln_as("nobody", verb);
        assert!(out.status.success(), "{verb:?}: {}", stderr(&out));
    }
}

#[test]
fn no_home_to_derive_the_state_directory_from_names_root_and_kiln_root() {
    let b = Build::new();
    // Empty values count as unset (the harness sets no KILN_ROOT).
    let unset = ["HOME=", "XDG_DATA_HOME="];
    for verb in [
        &["images"][..],
        &["build", b.ctx().to_str().expect("utf-8")],
    ] {
        let out = b.kiln_as_env("nobody", verb, &unset);
        let err = stderr(&out);
        assert!(!out.status.success(), "{verb:?}: {err}");
        assert!(
            err.contains("cannot choose a state directory: neither XDG_DATA_HOME nor HOME is set"),
            "{verb:?}: {err}"
        );
        assert!(
            err.contains("--root DIR or KILN_ROOT=DIR"),
            "{verb:?}: {err}"
        );
    }
}

#[test]
fn rootless_without_uidmap_tools_says_so() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    // The user has ranges, but newuidmap/newgidmap are not on this PATH.
    let empty = b.path("empty-path");
    std::fs::create_dir(&empty).expect("mkdir");
    let path = format!("PATH={}", empty.display());
    let out = b.kiln_as_env(USER, &["build", b.ctx().to_str().expect("utf-8")], &[&path]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("newuidmap is not installed"), "{err}");
    assert!(err.contains("newgidmap is not installed"), "{err}");
    assert!(err.contains("apt-get install uidmap"), "{err}");
    assert!(!err.contains("/etc/subuid"), "the ranges are there: {err}");
}

#[test]
fn rootless_with_no_new_privs_says_so() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    // `env ... setpriv --no-new-privs kiln ...`: as Kubernetes' allowPrivilegeEscalation: false.
    let out = b.kiln_as_env(
        USER,
        &["build", b.ctx().to_str().expect("utf-8")],
        &["setpriv", "--no-new-privs"],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("kiln runs with no_new_privs"), "{err}");
    assert!(err.contains("allowPrivilegeEscalation: true"), "{err}");
}

#[test]
fn rootless_run_under_a_masked_proc_says_to_unmask_it() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}/library/busybox:latest\nRUN true\n", env.registry()),
    );
    let kiln = b.kiln_as_command(
        USER,
        &[
            "build",
            "--executor",
            "native",
            b.ctx().to_str().expect("utf-8"),
        ],
        &[],
    );
    // As container runtimes do: a mount over part of /proc, in a private mount namespace.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o ro tmpfs /proc/sys/kernel && exec \"$@\"")
        .arg("sh")
        .arg(kiln.get_program())
        .args(kiln.get_args())
        .output()
        .expect("run unshare");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("procMount: Unmasked"), "{err}");
}

#[test]
fn rootless_local_output_is_owned_by_the_user() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\n\
             COPY --chown=1000:1000 a /a\n\
             RUN chown 123:456 /a && chmod 4755 /a\n",
            env.registry()
        ),
    );
    b.write("a", "a\n");
    let dest = b.path("local");
    let out = b.kiln_as(
        USER,
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", dest.display()),
            b.ctx().to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // As buildx writes a local output: every file the caller's, modes kept.
    let user = Command::new("id").args(["-u", USER]).output().expect("id");
    let uid: u32 = String::from_utf8_lossy(&user.stdout)
        .trim()
        .parse()
        .expect("uid");
    let meta = std::fs::symlink_metadata(dest.join("a")).expect("a");
    assert_eq!(meta.uid(), uid, "owner of a");
    assert_eq!(meta.mode() & 0o7777, 0o4755, "mode of a");
    let etc = std::fs::symlink_metadata(dest.join("etc")).expect("etc");
    assert_eq!(etc.uid(), uid, "owner of etc");
}

#[test]
fn rootless_sigterm_reaches_the_build_in_the_namespace() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN echo started && sleep 60\n",
            env.registry()
        ),
    );
    let log = b.path("log");
    let mut kiln = b.kiln_as_command(
        USER,
        &[
            "build",
            "--no-cache",
            "--executor",
            "native",
            b.ctx().to_str().expect("utf-8"),
        ],
        &[],
    );
    let file = std::fs::File::create(&log).expect("log");
    let mut child = kiln
        .stderr(file.try_clone().expect("dup"))
        .stdout(file)
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(started.elapsed().as_secs() < 60, "the step never started");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "kiln ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // runuser passes SIGTERM to kiln, which passes it into its namespace.
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let canceled = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(canceled.elapsed().as_secs() < 30, "kiln did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "{out}");
    assert!(
        canceled.elapsed().as_secs() < 20,
        "SIGTERM did not stop the step: {out}"
    );
    assert!(out.contains("build canceled by SIGTERM"), "{out}");
}

#[test]
fn rootless_where_the_kernel_refuses_a_namespace_says_why() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    let kiln = b.kiln_as_command(USER, &["build", b.ctx().to_str().expect("utf-8")], &[]);
    // In a chroot the kernel refuses CLONE_NEWUSER (EPERM), as a container's
    // default seccomp profile does: the same path is seen through a bind of /.
    let jail = b.path("jail");
    std::fs::create_dir(&jail).expect("mkdir");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --rbind / \"$0\" && exec chroot \"$0\" \"$@\"")
        .arg(&jail)
        .arg(kiln.get_program())
        .args(kiln.get_args())
        .output()
        .expect("run unshare");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the kernel refused a new user namespace"),
        "{err}"
    );
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(
        err.contains("unshare(2)") && err.contains("Unconfined"),
        "{err}"
    );
}

#[test]
fn rootless_and_root_builds_make_the_same_layers() {
    let env = TestEnv::load();
    let root = Build::new();
    root.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\n\
             COPY --chown=1000:1000 a /a\n\
             COPY --chown=123:456 d /d\n",
            env.registry()
        ),
    );
    root.write("a", "a\n");
    root.write("d/x", "x\n");
    let rootless = Build::new();
    // The same context, mtimes included.
    let cp = Command::new("cp")
        .arg("-a")
        .arg(root.ctx())
        .arg(rootless.ctx())
        .status()
        .expect("cp");
    assert!(cp.success());
    let digests = |b: &Build, out: &std::process::Output| {
        assert!(out.status.success(), "{}", stderr(out));
        let layout = b.path("layout");
        std::fs::create_dir(&layout).expect("mkdir");
        let oci = b.path("out.tar");
        tar(&[
            "-C",
            layout.to_str().expect("utf-8"),
            "-xf",
            oci.to_str().expect("utf-8"),
        ]);
        layers(&layout)
            .iter()
            .map(|p| {
                p.file_name()
                    .expect("digest")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>()
    };
    let args = |b: &Build| {
        vec![
            "build".to_string(),
            "--output".into(),
            format!("type=oci,dest={}", b.path("out.tar").display()),
            b.ctx().display().to_string(),
        ]
    };
    let root_args = args(&root);
    let root_out = root.kiln(&root_args.iter().map(String::as_str).collect::<Vec<_>>());
    let rootless_args = args(&rootless);
    let rootless_out = rootless.kiln_as(
        USER,
        &rootless_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (want, got) = (digests(&root, &root_out), digests(&rootless, &rootless_out));
    assert_eq!(want.len(), 3, "{want:?}");
    assert_eq!(
        got, want,
        "the layers of a rootless build differ from root's"
    );
}
