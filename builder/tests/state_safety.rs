//! The state directory is safe against other local users and interrupted processes:
//! nothing in it is reachable by another user (set-uid binaries and world-writable
//! directories of pulled layers live there), and a build killed with SIGKILL leaves
//! no secret behind once any verb ran.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{check_store, files_holding, kiln_bin, Build, TestEnv};

/// Every path below `dir` (not `dir` itself), not following symlinks.
fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The paths of `paths` that user 65534 (nobody) can see (`test -e` or `test -L`).
fn reachable_by_nobody(paths: &[PathBuf]) -> Vec<String> {
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args([
            "sh",
            "-c",
            r#"while IFS= read -r p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let list: String = paths
        .iter()
        .map(|p| format!("{}\n", p.to_str().expect("utf-8 path")))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, list.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn other_users_reach_nothing_in_the_state_dir_and_an_old_0755_one_is_repaired() {
    let env = TestEnv::load();
    let b = Build::new();
    let root = b.root.path();
    // A state dir as an older kiln left it: world-traversable, layers too.
    std::fs::create_dir(root.join("layers")).unwrap();
    for p in [root.to_path_buf(), root.join("layers")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The check is only meaningful when the parent lets nobody through.
    assert_ne!(mode(root.parent().unwrap()) & 0o001, 0);
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN --mount=type=cache,target=/c echo hi > /c/f && chmod 4755 /bin/busybox && mkdir -m 1777 /drop\n",
            env.registry()
        ),
    );
    b.build(&["--tag", "store-modes:1"]);
    assert_eq!(mode(root), 0o700);
    assert_eq!(mode(&root.join("layers")), 0o700);

    let paths = paths_under(root);
    let setuid: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o4000 != 0)
        })
        .collect();
    assert!(
        !setuid.is_empty(),
        "the build made a set-uid busybox in a layer"
    );
    assert!(
        paths.len() > 100,
        "a busybox layer is in there: {}",
        paths.len()
    );
    let seen = reachable_by_nobody(&paths);
    assert!(
        seen.is_empty(),
        "nobody can reach {} paths: {:?}",
        seen.len(),
        &seen[..seen.len().min(10)]
    );
    // Not vacuous: the same check sees what nobody may see.
    let control = reachable_by_nobody(&[PathBuf::from("/bin/sh"), root.to_path_buf()]);
    assert_eq!(control.len(), 2, "{control:?}");

    // Any verb repairs a directory loosened meanwhile.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = b.kiln(&["images"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(root), 0o700);
}

/// Pids of the processes running `sleep <marker>`.
fn sleepers(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim_end()
            == format!("sleep {marker}")
        {
            if let Ok(pid) = p.file_name().to_string_lossy().parse() {
                found.push(pid);
            }
        }
    }
    found
}

/// Where the secret may still be on the host: the state dir and every tmpfs mount
/// under /tmp, /run, /dev/shm or /var (the work dir holding its source excepted).
fn secret_on_host(b: &Build, secret: &[u8]) -> Vec<PathBuf> {
    let mut found = files_holding(b.root.path(), secret, b.work.path());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(&"tmpfs")) = (f.get(1), f.get(2)) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if ["/tmp", "/run", "/dev/shm", "/var"]
            .iter()
            .any(|p| Path::new(&point).starts_with(p))
        {
            found.extend(files_holding(Path::new(&point), secret, b.work.path()));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A PATH on which the oci executor finds runc, not crun (which it prefers), and
/// still every other tool a step needs (slirp4netns, nsenter, umount in /usr/bin).
fn path_without_crun(b: &Build) -> PathBuf {
    let bin = b.path("bin-without-crun");
    std::fs::create_dir_all(&bin).unwrap();
    for e in std::fs::read_dir("/usr/bin").unwrap().flatten() {
        if e.file_name() != "crun" {
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(e.file_name()));
        }
    }
    let path = format!("{}:/usr/sbin:/sbin", bin.display());
    PathBuf::from(path)
}

fn start_build(b: &Build, executor: &str, secret: &Path) -> Child {
    let mut cmd = Command::new(kiln_bin());
    if executor == "runc" {
        cmd.env("PATH", path_without_crun(b));
    }
    let executor = if executor == "runc" { "oci" } else { executor };
    cmd.arg("--root")
        .arg(b.root.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--executor",
            executor,
            "--secret",
        ])
        .arg(format!("id=s,src={}", secret.display()))
        .arg(b.ctx())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kiln")
}

/// Even when the test fails: stops the step's processes and sweeps their mounts.
struct StepCleanup<'a> {
    b: &'a Build,
    marker: String,
}

impl Drop for StepCleanup<'_> {
    fn drop(&mut self) {
        for pid in sleepers(&self.marker) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.b.kiln(&["images"]);
    }
}

fn a_killed_build_leaves_no_secret_once_any_verb_ran(executor: &str, test: u32) {
    let env = TestEnv::load();
    let b = Build::new();
    let marker = format!("300.{}{test:02}", std::process::id());
    let value = format!("store-secret-{}-{executor}-{test}", std::process::id());
    let secret = b.path("secret");
    std::fs::write(&secret, &value).unwrap();
    // The step still reads its secret a second after it started (the host's view
    // of it may be gone by then), then holds the mount.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN --mount=type=secret,id=s sleep 1 && cat /run/secrets/s > /dev/null && sleep {marker}\n",
            env.registry()
        ),
    );
    let mut child = start_build(&b, executor, &secret);
    let _cleanup = StepCleanup {
        b: &b,
        marker: marker.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sleepers(&marker).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln ended ({status}) before the step held its secret");
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    if executor == "runc" {
        // Steps' scratch may live on a tmpfs (see `executor::scratch`).
        let scratch = kiln_solver::executor::ExecutorConfig {
            state_dir: b.root.path().to_path_buf(),
        };
        assert!(
            scratch.executor_dir().join("runc-state").is_dir(),
            "runc ran the step"
        );
    }
    // The step's own mount namespace holds the secret; the host's view went when it started.
    assert_eq!(secret_on_host(&b, value.as_bytes()), Vec::<PathBuf>::new());
    let out = b.kiln(&["images"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = secret_on_host(&b, value.as_bytes());
    // An OCI step outlives kiln (the native one dies with it): the sweep did not
    // depend on it ending.
    let running = sleepers(&marker);
    for pid in &running {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert_eq!(running.is_empty(), executor == "native");
    assert_eq!(left, Vec::<PathBuf>::new());
    // Not vacuous: the sweep finds the secret where it is.
    assert_eq!(
        files_holding(b.work.path(), value.as_bytes(), Path::new("/nonexistent")),
        vec![secret]
    );
}

#[test]
fn a_killed_native_build_leaves_no_secret() {
    a_killed_build_leaves_no_secret_once_any_verb_ran("native", 1);
}

#[test]
fn a_killed_oci_build_leaves_no_secret() {
    a_killed_build_leaves_no_secret_once_any_verb_ran("oci", 2);
}

#[test]
fn a_killed_runc_build_leaves_no_secret() {
    assert!(
        Path::new("/usr/sbin/runc").is_file(),
        "setup.sh installs runc"
    );
    a_killed_build_leaves_no_secret_once_any_verb_ran("runc", 3);
}

/// A pseudo-random number below `n` (no rand crate for one test).
fn random_below(n: u64, i: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(i);
    h.finish() % n
}

/// The base image's unpacked layer (`sha256-<diffID>`) and how many entries its /bin has.
fn base_layer(root: &Path) -> (PathBuf, usize) {
    let dir = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sha256-")
        })
        .expect("the base layer is unpacked");
    let bin = std::fs::read_dir(dir.join("bin")).unwrap().count();
    (dir, bin)
}

/// Waits until the layer at `dir` starts going (its /bin shrinks or it is gone), at most 10s.
fn until_layer_goes(dir: &Path, bin: usize, prune: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && prune.try_wait().unwrap().is_none() {
        let left = std::fs::read_dir(dir.join("bin"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left < bin {
            return;
        }
    }
}

#[test]
fn prune_killed_at_random_points_never_breaks_the_next_build() {
    let env = TestEnv::load();
    let b = Build::new();
    let image = format!("{}/library/busybox:latest", env.registry());
    let mut killed_midway = 0;
    for i in 0..10u64 {
        // Something to prune: a base layer and a layer of a few thousand files.
        b.write(
            "Dockerfile",
            &format!("FROM {image}\nRUN mkdir /d && cd /d && seq 1 3000 | xargs touch && echo {i} > /i\n"),
        );
        b.build(&["--tag", &format!("store-prune:{i}")]);
        let (base, bin) = base_layer(b.root.path());
        let mut prune = Command::new(kiln_bin())
            .arg("--root")
            .arg(b.root.path())
            .args(["prune", "-a", "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(random_below(150, i)));
        } else {
            // The moment that used to leave a half-deleted base layer behind.
            until_layer_goes(&base, bin, &mut prune);
        }
        if prune.try_wait().unwrap().is_none() {
            prune.kill().unwrap();
            killed_midway += 1;
        }
        prune.wait().unwrap();
        assert!(check_store(b.root.path()) > 0);
        // A RUN on the base image: a half-deleted busybox layer would lack some of /bin.
        b.write(
            "Dockerfile",
            &format!(
                "FROM {image}\nRUN echo after {i} > /after && test $(ls /bin | wc -l) -eq {bin}\n"
            ),
        );
        b.build(&["--tag", &format!("store-after:{i}")]);
        assert!(check_store(b.root.path()) > 0);
    }
    // Not vacuous: most prunes were still at work when killed.
    assert!(
        killed_midway >= 5,
        "only {killed_midway} of 10 prunes were killed midway"
    );
}

/// The digest of the (only) layer of the test registry's busybox for this host.
fn busybox_layer(env: &TestEnv) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/library/busybox:latest",
            env.registry()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{v}");
    layers[0].as_str().unwrap().to_string()
}

#[test]
fn max_layer_size_refuses_a_large_base_layer_and_a_large_step_layer() {
    let env = TestEnv::load();
    let b = Build::new();
    let image = format!("{}/library/busybox:latest", env.registry());
    // busybox unpacks to about a megabyte.
    b.write("Dockerfile", &format!("FROM {image}\nRUN echo hi > /hi\n"));
    let err = b.build_fails(&["--max-layer-size", "100kB"]);
    let layer = busybox_layer(&env);
    assert!(
        err.contains(&format!(
            "layer {layer} unpacks to more than 102400 bytes, the layer size limit"
        )),
        "{err}"
    );
    assert!(
        err.contains("--max-layer-size"),
        "the hint names the flag: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(entries_of(&b.root.path().join("layers/.tmp")), 0);

    // A step writing 8 MiB under a 5 MiB limit (sizes are 1024-based, as docker reads them);
    // the base layer is within it.
    b.write(
        "Dockerfile",
        &format!("FROM {image}\nRUN dd if=/dev/zero of=/big bs=1M count=8\n"),
    );
    let err = b.build_fails(&["--max-layer-size", "5MB"]);
    assert!(
        err.contains(
            "the step's layer holds 8388608 bytes, more than the layer size limit of 5242880 bytes"
        ),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert_eq!(entries_of(&b.root.path().join("layers/.tmp")), 0);
    // Without the limit the same build works (the refusal was not cached).
    b.build(&[]);
    let out = b.kiln(&[
        "build",
        "--max-layer-size",
        "lots",
        b.ctx().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --max-layer-size \"lots\""));
}

fn entries_of(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs at {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_step_cleanly_and_the_state_stays_usable() {
    let env = TestEnv::load();
    let b = Build::new();
    let root = b.path("small-state");
    let _disk = SmallDisk::mount(&root, "24m");
    let image = format!("{}/library/busybox:latest", env.registry());
    let kiln = |args: &[&str]| {
        Command::new(kiln_bin())
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("BUILDKIT_PROGRESS", "plain")
            .output()
            .unwrap()
    };
    let ctx = b.ctx();
    let ctx = ctx.to_str().unwrap();
    // A RUN filling the disk.
    b.write(
        "Dockerfile",
        &format!("FROM {image}\nRUN dd if=/dev/zero of=/big bs=1M count=64\n"),
    );
    let out = kiln(&["build", ctx]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // kiln itself running out of space (copying the context into a layer directory; a
    // streamed copy would only write this file's few-kB gzip blob).
    std::fs::write(ctx.to_string() + "/big", vec![7u8; 40 << 20]).unwrap();
    b.write("Dockerfile", &format!("FROM {image}\nCOPY big /big\n"));
    let out = Command::new(kiln_bin())
        .arg("--root")
        .arg(&root)
        .args(["build", ctx])
        .env("BUILDKIT_PROGRESS", "plain")
        .env("KILN_STREAMED_COPY", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_file(ctx.to_string() + "/big").unwrap();
    // Nothing half-made stays, and the state dir still builds.
    assert_eq!(entries_of(&root.join("layers/.tmp")), 0);
    b.write(
        "Dockerfile",
        &format!("FROM {image}\nRUN echo fine > /fine\n"),
    );
    let out = kiln(&["build", "--tag", "store-full:1", ctx]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(check_store(&root) > 0);
}
