//! The same end-to-end suite for every executor: real processes in a busybox
//! rootfs on overlayfs. Needs root (mounts, namespaces), like the executors.
//!
//! The rootfs is built here from Debian's busybox-static (`/bin/busybox`) with
//! applet symlinks and an /etc/passwd,group holding root, app 1000:1000 and a
//! supplementary group, so the suite needs no registry or test environment.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use support::mounts_under;
use support::net::{host_global_ipv4, pong_server};

use kiln_solver::executor::native::NativeExecutor;
use kiln_solver::executor::oci::{OciExecutor, OciRuntime};
use kiln_solver::executor::{
    select, ExecError, ExecOutcome, ExecRequest, Executor, ExecutorConfig, ExecutorKind, HostEntry,
    NetworkMode, SecurityMode, Stream,
};
use kiln_solver::mounts::{CacheSharing, CacheSpec, MountSpec, SecretSpec, SshSpec};
use kiln_solver::snapshot::overlay::Overlay;
use tempfile::TempDir;

/// The shared read-only base layer.
fn base_layer() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        // Built once per machine (under a temporary name, then renamed) and
        // reused by later runs.
        let dir = std::env::temp_dir().join("kiln-test-busybox-rootfs-v1");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp =
            std::env::temp_dir().join(format!("kiln-test-busybox-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        build_busybox_rootfs(&tmp);
        if fs::rename(&tmp, &dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        assert!(dir.join("bin/busybox").exists());
        dir
    })
}

fn build_busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "root", "home/app"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::create_dir(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("tests need Debian's busybox-static at /bin/busybox");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    std::os::unix::fs::chown(dir.join("home/app"), Some(1000), Some(1000)).unwrap();
}

/// A scratch dir for fresh upper/work pairs over the base layer.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the executor suite needs root (mounts and namespaces)"
        );
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A new overlay whose upper dir is `name/upper`.
    fn rootfs(&self, name: &str) -> Overlay {
        let d = self.dir.path().join(name);
        fs::create_dir_all(d.join("upper")).unwrap();
        fs::create_dir_all(d.join("work")).unwrap();
        Overlay {
            lowers: vec![base_layer().to_path_buf()],
            upper: d.join("upper"),
            work: d.join("work"),
        }
    }

    fn sh(&self, name: &str, script: &str) -> ExecRequest {
        ExecRequest::new(
            self.rootfs(name),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }
}

/// An executor under test and its state directory.
struct Subject {
    exec: Box<dyn Executor>,
    state: PathBuf,
}

impl Subject {
    fn run(
        &self,
        req: &ExecRequest,
        cb: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExecOutcome, ExecError> {
        self.exec.run(req, cb)
    }

    fn name(&self) -> String {
        self.exec.name()
    }

    fn cache_mounts_dir(&self) -> PathBuf {
        ExecutorConfig {
            state_dir: self.state.clone(),
        }
        .cache_mounts_dir()
    }
}

fn run(e: &Subject, req: &ExecRequest) -> Result<ExecOutcome, ExecError> {
    e.run(req, &mut |_, _| {})
}

fn stdout(e: &Subject, req: &ExecRequest) -> String {
    match run(e, req) {
        Ok(o) => String::from_utf8_lossy(&o.output.stream(Stream::Stdout)).into_owned(),
        Err(err) => panic!(
            "{} failed: {err}\n{}",
            e.name(),
            err.output().map(|o| o.to_string()).unwrap_or_default()
        ),
    }
}

/// Relative paths of everything in an upper dir.
fn upper_entries(upper: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(upper, upper);
    v.sort();
    v
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(root, &p));
        }
    }
    out
}

// ---- the suite ----

fn echo_and_streams(e: &Subject) {
    let f = Fixture::new();
    let req = f.sh("r", "echo hello; echo oops >&2; echo $$");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let out = e
        .run(&req, &mut move |s, b| {
            seen2.lock().unwrap().push((s, b.to_vec()))
        })
        .unwrap();
    assert_eq!(
        out.output.stream(Stream::Stdout),
        b"hello\n1\n",
        "pid 1 in its own pid namespace"
    );
    assert_eq!(out.output.stream(Stream::Stderr), b"oops\n");
    let streamed: Vec<u8> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == Stream::Stderr)
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert_eq!(streamed, b"oops\n");
}

fn exit_code_and_whole_output(e: &Subject) {
    let f = Fixture::new();
    let req = f.sh("r", "seq 1 50000; echo bad >&2; exit 3");
    match run(e, &req) {
        Err(ExecError::NonZeroExit { code, output, .. }) => {
            assert_eq!(code, 3);
            let out = String::from_utf8(output.stream(Stream::Stdout)).unwrap();
            assert_eq!(out.lines().count(), 50000, "output must not be clipped");
            assert_eq!(out.lines().last(), Some("50000"));
            assert_eq!(output.stream(Stream::Stderr), b"bad\n");
            // stdout and stderr are two pipes: "bad" may be read before the
            // last stdout lines, but the combined tail still ends the run.
            let tail = output.last_lines(2);
            assert!(tail.iter().any(|l| l == "50000"), "{tail:?}");
        }
        other => panic!("expected exit code 3, got {other:?}"),
    }
    // pid 1 ignores signals it has no handler for, so a child dies instead.
    match run(e, &f.sh("k", "sh -c 'kill -9 $$'; exit $?")) {
        Err(ExecError::NonZeroExit { code, .. }) => assert_eq!(code, 137),
        other => panic!("expected exit code 137, got {other:?}"),
    }
}

fn missing_program_is_an_error(e: &Subject) {
    let f = Fixture::new();
    let req = ExecRequest::new(f.rootfs("r"), vec!["no-such-program".into()]);
    let err = run(e, &req).unwrap_err();
    assert!(
        matches!(err, ExecError::Exec { .. } | ExecError::Runtime { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-program"), "{err}");
}

fn env_and_default_path(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh("r", "echo \"$FOO|$PATH|$HOME\"");
    req.env = vec!["FOO=bar baz".into()];
    assert_eq!(
        stdout(e, &req),
        "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root\n"
    );
    req.env = vec!["PATH=/bin".into(), "FOO=x".into()];
    assert_eq!(stdout(e, &req), "x|/bin|/root\n");
    // Exec form goes through PATH without a shell.
    let req = ExecRequest::new(
        f.rootfs("p"),
        vec!["echo".into(), "exec".into(), "form".into()],
    );
    assert_eq!(stdout(e, &req), "exec form\n");
}

fn cwd_is_created_and_kept(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh("r", "pwd");
    req.cwd = "/work/deep".into();
    assert_eq!(stdout(e, &req), "/work/deep\n");
    assert!(req.rootfs.upper.join("work/deep").is_dir());
}

fn user_and_group_switching(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh("r", "echo $(id -u) $(id -g) $(id -G) $HOME");
    req.user = "app".into();
    assert_eq!(stdout(e, &req), "1000 1000 1000 50 /home/app\n");
    req.user = "1000:50".into();
    assert_eq!(stdout(e, &req), "1000 50 50 /home/app\n");
    req.user = "4242".into();
    assert_eq!(stdout(e, &req), "4242 0 0 /\n");
    req.user = "root".into();
    assert_eq!(stdout(e, &req), "0 0 0 /root\n");
    req.user = "nobody".into();
    let err = run(e, &req).unwrap_err();
    assert!(matches!(err, ExecError::User(_)), "{err:?}");
    assert!(err.to_string().contains("nobody"));
}

fn writes_land_in_upper_with_whiteouts(e: &Subject) {
    let f = Fixture::new();
    let req = f.sh(
        "r",
        "echo data > /new.txt && rm /etc/group && mkdir -p /var/x",
    );
    stdout(e, &req);
    let upper = &req.rootfs.upper;
    assert_eq!(fs::read_to_string(upper.join("new.txt")).unwrap(), "data\n");
    let wh = fs::symlink_metadata(upper.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "overlay whiteout"
    );
    assert!(upper.join("var/x").is_dir());
    assert!(
        base_layer().join("etc/group").exists(),
        "lower layer untouched"
    );
}

fn etc_files_and_mount_points_stay_out_of_the_layer(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh(
        "r",
        "cat /etc/hosts; hostname; test -s /etc/resolv.conf && echo resolv; cat /etc/hostname",
    );
    req.hostname = Some("kilnbox".into());
    req.extra_hosts = vec![HostEntry {
        name: "db.internal".into(),
        ip: "10.1.2.3".parse().unwrap(),
    }];
    let out = stdout(e, &req);
    assert!(out.contains("10.1.2.3\tdb.internal"), "{out}");
    assert!(out.contains("127.0.0.1\tkilnbox"), "{out}");
    assert!(out.contains("\nkilnbox\nresolv\nkilnbox\n"), "{out}");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());

    let req = f.sh("d", "hostname");
    assert_eq!(stdout(e, &req), "buildkitsandbox\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
}

fn host_files_are_invisible(e: &Subject) {
    let f = Fixture::new();
    let secret = f.dir.path().join("host-only.txt");
    fs::write(&secret, "host secret").unwrap();
    let req = f.sh(
        "r",
        &format!(
            "cat {} 2>/dev/null && echo LEAK; ls /work /root 2>&1 | grep -c kiln; echo done",
            secret.display()
        ),
    );
    let out = stdout(e, &req);
    assert!(
        !out.contains("LEAK") && !out.contains("host secret"),
        "{out}"
    );
    assert!(out.ends_with("done\n"));
}

fn sandbox_caps_and_no_new_privs(e: &Subject) {
    let f = Fixture::new();
    let req = f.sh(
        "r",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; echo timer_list=$(wc -c < /proc/timer_list); \
         (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo PROC_SYS_WRITABLE; \
         grep ' /sys sysfs ro,' /proc/mounts >/dev/null && echo sys-ro; true",
    );
    let out = stdout(e, &req);
    assert!(
        out.contains("timer_list=0\n"),
        "/proc/timer_list is masked: {out}"
    );
    assert!(out.contains("sys-ro\n"), "sysfs is read-only: {out}");
    assert!(!out.contains("WRITABLE"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let mut req = f.sh("i", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; mkdir -p /mnt; mount -t tmpfs t /mnt && echo mounted");
    req.security = SecurityMode::Insecure;
    let out = stdout(e, &req);
    assert!(!out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("mounted"), "{out}");
    // A sandboxed step cannot mount.
    let req = f.sh("s", "mkdir -p /mnt; mount -t tmpfs t /mnt && echo mounted");
    assert!(!stdout_or_err(e, &req).contains("mounted"));
    // A non-root user has no capabilities at all.
    let mut req = f.sh("u", "grep CapEff /proc/self/status");
    req.user = "app".into();
    assert_eq!(stdout(e, &req), "CapEff:\t0000000000000000\n");
}

/// Docker's default seccomp profile: mode 2 (filter), namespaces and mounts
/// denied even where capabilities would not stop them (an unprivileged user
/// namespace), ordinary tools unaffected; `--security=insecure` unconfined.
fn seccomp_default_profile(e: &Subject) {
    let f = Fixture::new();
    let probe = "grep '^Seccomp:' /proc/self/status; \
                 unshare -U -r true 2>&1 && echo unshared; \
                 unshare -U -r sh -c 'mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo mounted'; \
                 true";
    let out = stdout(e, &f.sh("r", probe));
    assert!(out.starts_with("Seccomp:\t2\n"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(
        !out.contains("unshared") && !out.contains("mounted"),
        "{out}"
    );
    let mut req = f.sh("u", probe);
    req.user = "app".into();
    let out = stdout(e, &req);
    assert!(out.starts_with("Seccomp:\t2\n"), "{out}");
    assert!(
        !out.contains("unshared") && !out.contains("mounted"),
        "{out}"
    );
    // Ordinary build work still runs under the filter (threads, pipes, forks).
    let req = f.sh(
        "w",
        "cd /tmp && echo data > a && cp a b && tar -cf t.tar a b && mkdir x && tar -xf t.tar -C x \
         && cat x/b && sleep 0.01 & wait; chown 1000:1000 /tmp/a && ls -ln /tmp/a | cut -c1-10",
    );
    assert_eq!(stdout(e, &req), "data\n-rw-r--r--\n");
    let mut req = f.sh("i", probe);
    req.security = SecurityMode::Insecure;
    let out = stdout(e, &req);
    assert!(out.starts_with("Seccomp:\t0\n"), "{out}");
    assert!(out.contains("unshared\n"), "{out}");
}

/// `/proc/self/cgroup` as (hierarchy id, controllers, path) lines.
fn cgroup_lines(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect()
}

/// Each step runs in cgroups of its own (named for the step, in every v1
/// hierarchy, or the v2 one on a pure v2 host), so limits and accounting
/// apply to it alone; they are gone after the step. native and runc nest them
/// under the executor's own cgroup; crun's cgroupfs manager puts them at the
/// hierarchy's root.
fn own_cgroup_per_step(e: &Subject) {
    let f = Fixture::new();
    let step = cgroup_lines(&stdout(e, &f.sh("r", "cat /proc/self/cgroup")));
    let mine = cgroup_lines(&fs::read_to_string("/proc/self/cgroup").unwrap());
    let v1 = step.iter().any(|(_, c, _)| !c.is_empty());
    let checked: Vec<_> = step.iter().filter(|(_, c, _)| c.is_empty() != v1).collect();
    assert!(!checked.is_empty(), "{step:?}");
    let nests = e.name() != "oci:crun";
    for (id, controllers, path) in &checked {
        let Some((_, _, parent)) = mine.iter().find(|(i, c, _)| i == id && c == controllers) else {
            panic!("hierarchy {id}:{controllers} unknown to the host");
        };
        let leaf = path.rsplit('/').next().unwrap_or_default();
        assert!(
            path != parent && leaf.starts_with("kiln-"),
            "{}: {id}:{controllers}:{path} is not the step's own (kiln's is {parent})",
            e.name()
        );
        if nests {
            assert_eq!(
                path.strip_suffix(leaf).map(|p| p.trim_end_matches('/')),
                Some(parent.trim_end_matches('/')),
                "{}: {path} is not a child of {parent}",
                e.name()
            );
        }
        // Removed after the step.
        let mount = Path::new("/sys/fs/cgroup").join(if controllers.is_empty() {
            "unified"
        } else {
            controllers.as_str()
        });
        let dir = mount.join(path.trim_start_matches('/'));
        assert!(
            !mount.exists() || !dir.exists(),
            "{} is left",
            dir.display()
        );
    }
}

fn stdout_or_err(e: &Subject, req: &ExecRequest) -> String {
    match run(e, req) {
        Ok(o) => o.output.to_string(),
        Err(err) => err.output().map(|o| o.to_string()).unwrap_or_default(),
    }
}

fn minimal_dev_and_proc(e: &Subject) {
    let f = Fixture::new();
    let req = f.sh(
        "r",
        "for d in null zero full random urandom tty ptmx pts shm; do test -e /dev/$d || echo missing $d; done; \
         echo x > /dev/null; head -c 8 /dev/urandom | wc -c; ls /proc/1/ >/dev/null && echo proc; \
         test -d /dev/pts && grep -q devpts /proc/mounts && echo devpts",
    );
    assert_eq!(stdout(e, &req), "8\nproc\ndevpts\n");
}

fn reach(host: &str, port: u16) -> String {
    format!("if nc -w 3 {host} {port} </dev/null; then echo reached; else echo unreachable; fi")
}

/// `none`: only lo. `host`: the host's loopback services. `default`: an own
/// namespace with eth0 and a default route (slirp4netns), outbound access to
/// the host's other addresses, but not its loopback (neither 127.0.0.1 nor
/// slirp's gateway, which would forward there).
fn network_modes(e: &Subject) {
    let f = Fixture::new();
    let lo_port = pong_server("127.0.0.1:0", 16);
    let ip = host_global_ipv4();
    let out_port = pong_server(&format!("{ip}:0"), 16);

    let mut req = f.sh(
        "n",
        &format!("{}; ls /sys/class/net", reach("127.0.0.1", lo_port)),
    );
    req.network = NetworkMode::None;
    assert_eq!(stdout(e, &req), "unreachable\nlo\n");

    let mut req = f.sh("h", &reach("127.0.0.1", lo_port));
    req.network = NetworkMode::Host;
    assert_eq!(stdout(e, &req), "pong\nreached\n");

    let script = format!(
        "{}; {}; {}; ls /sys/class/net | tr '\\n' ' '; echo; ip route | grep ^default; \
         grep -c '^nameserver' /etc/resolv.conf; grep -c 'nameserver 127' /etc/resolv.conf; true",
        reach("127.0.0.1", lo_port),
        reach("10.0.2.2", lo_port),
        reach(&ip, out_port),
    );
    let out = stdout(e, &f.sh("d", &script));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.get(..4),
        Some(&["unreachable", "unreachable", "pong", "reached"][..]),
        "{out}"
    );
    assert_eq!(lines.get(4), Some(&"eth0 lo "), "{out}");
    assert!(
        lines
            .get(5)
            .is_some_and(|l| l.starts_with("default via 10.0.2.2 dev eth0")),
        "{out}"
    );
    assert_ne!(lines.get(6), Some(&"0"), "a nameserver: {out}");
    assert_eq!(lines.get(7), Some(&"0"), "no loopback nameserver: {out}");
}

/// Steps take turns on the executor's default networks: a sandboxed step's
/// network serves the next step (it cannot change it: no CAP_NET_ADMIN),
/// still with outbound access; one a `--security=insecure` step used (it may
/// have changed it) is never handed on.
fn default_network_is_reused_only_after_sandboxed_steps(e: &Subject) {
    let f = Fixture::new();
    let ip = host_global_ipv4();
    let port = pong_server(&format!("{ip}:0"), 16);
    let ns = "readlink /proc/self/ns/net";
    let tamper = "ip addr add 10.9.9.9/32 dev lo 2>/dev/null && echo changed || echo denied";
    let first = stdout(e, &f.sh("a", &format!("{ns}; {tamper}")));
    let second = stdout(e, &f.sh("b", &format!("{ns}; {}", reach(&ip, port))));
    let (first, second): (Vec<&str>, Vec<&str>) =
        (first.lines().collect(), second.lines().collect());
    assert_eq!(first.get(1), Some(&"denied"), "{first:?}");
    assert_eq!(
        first.first(),
        second.first(),
        "the second step reuses the network"
    );
    assert_eq!(
        second.get(1..),
        Some(&["pong", "reached"][..]),
        "{second:?}"
    );

    let mut insecure = f.sh("c", tamper);
    insecure.security = SecurityMode::Insecure;
    assert_eq!(stdout(e, &insecure), "changed\n");
    let after = stdout(
        e,
        &f.sh(
            "d",
            &format!("ip addr show lo | grep -c 10.9.9.9; {}", reach(&ip, port)),
        ),
    );
    assert_eq!(
        after, "0\npong\nreached\n",
        "a fresh network after an insecure step"
    );
}

fn loopback_is_up_with_network_none(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh(
        "r",
        "nc -l -p 7777 -e echo inside & sleep 0.2; nc -w 2 127.0.0.1 7777 </dev/null; wait",
    );
    req.network = NetworkMode::None;
    assert_eq!(stdout(e, &req), "inside\n");
}

fn bind_mounts_ro_and_rw(e: &Subject) {
    let f = Fixture::new();
    let src = f.dir.path().join("ctx");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("go.mod"), "module x\n").unwrap();
    let file = f.dir.path().join("single.txt");
    fs::write(&file, "single\n").unwrap();
    let mut req = f.sh(
        "r",
        "cat /src/go.mod; touch /src/new 2>/dev/null && echo WRITABLE; cat /one/single.txt",
    );
    req.mounts = vec![
        MountSpec::Bind {
            source: src.clone(),
            target: "/src".into(),
            readonly: true,
        },
        MountSpec::Bind {
            source: file.clone(),
            target: "/one/single.txt".into(),
            readonly: true,
        },
    ];
    assert_eq!(stdout(e, &req), "module x\nsingle\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());

    let mut req = f.sh(
        "w",
        "echo changed > /src/go.mod && touch /src/new && echo more >> /f && cat /src/go.mod /f",
    );
    req.mounts = vec![
        MountSpec::Bind {
            source: src.clone(),
            target: "/src".into(),
            readonly: false,
        },
        MountSpec::Bind {
            source: file.clone(),
            target: "/f".into(),
            readonly: false,
        },
    ];
    assert_eq!(stdout(e, &req), "changed\nsingle\nmore\n");
    assert_eq!(
        fs::read_to_string(src.join("go.mod")).unwrap(),
        "module x\n"
    );
    assert!(!src.join("new").exists(), "rw bind writes are discarded");
    assert_eq!(fs::read_to_string(&file).unwrap(), "single\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
}

fn cache(id: &str, target: &str, sharing: CacheSharing) -> MountSpec {
    MountSpec::Cache(CacheSpec {
        id: id.into(),
        target: target.into(),
        sharing,
        mode: 0o755,
        uid: 0,
        gid: 0,
        readonly: false,
        seed: None,
    })
}

fn cache_mount_persists_with_mode_and_owner(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh(
        "a",
        "echo $(stat -c '%a %u %g' /cache); echo one >> /cache/log",
    );
    req.mounts = vec![MountSpec::Cache(CacheSpec {
        id: "go-build".into(),
        target: "/cache".into(),
        sharing: CacheSharing::Shared,
        mode: 0o750,
        uid: 1000,
        gid: 1000,
        readonly: false,
        seed: None,
    })];
    assert_eq!(stdout(e, &req), "750 1000 1000\n");
    let mut req2 = f.sh("b", "cat /cache/log");
    req2.mounts = vec![cache("go-build", "/cache", CacheSharing::Shared)];
    assert_eq!(stdout(e, &req2), "one\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
    assert!(e.cache_mounts_dir().read_dir().unwrap().count() >= 2);
}

/// Two concurrent users of one cache id; each checks whether the other is inside.
fn concurrent_cache_users(e: &Subject, sharing: CacheSharing) -> Vec<String> {
    let f = Fixture::new();
    let script = "if [ -e /c/busy ]; then echo overlap; fi; touch /c/busy; sleep 0.5; \
                  if [ -e /c/busy ]; then rm /c/busy; fi; ls /c | wc -l";
    let reqs: Vec<ExecRequest> = (0..2)
        .map(|i| {
            let mut r = f.sh(&format!("c{i}"), script);
            r.mounts = vec![cache("shared-id", "/c", sharing)];
            r
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = reqs.iter().map(|r| s.spawn(move || stdout(e, r))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn cache_locked_users_take_turns(e: &Subject) {
    let outs = concurrent_cache_users(e, CacheSharing::Locked);
    assert!(outs.iter().all(|o| !o.contains("overlap")), "{outs:?}");
}

fn cache_private_users_get_separate_dirs(e: &Subject) {
    let f = Fixture::new();
    let outs = concurrent_cache_users(e, CacheSharing::Private);
    assert!(outs.iter().all(|o| !o.contains("overlap")), "{outs:?}");
    drop(f);
}

fn tmpfs_mount(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh("r", "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; echo x > /scratch/f; df -k /scratch | tail -1 | awk '{print $2}'");
    req.mounts = vec![MountSpec::Tmpfs {
        target: "/scratch".into(),
        size: Some(8 * 1024 * 1024),
    }];
    assert_eq!(stdout(e, &req), "tmpfs\n8192\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
}

fn secrets_as_file_and_env_stay_out_of_the_layer(e: &Subject) {
    let f = Fixture::new();
    let mut req = f.sh(
        "r",
        "cat /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token; cat /s/api; echo; echo $API_KEY; \
         (echo hi > /run/secrets/token) 2>/dev/null && echo WRITABLE; true",
    );
    req.mounts = vec![
        MountSpec::Secret(SecretSpec {
            id: "token".into(),
            data: b"t0ken".to_vec(),
            target: None,
            env: None,
            mode: 0o400,
            uid: 0,
            gid: 0,
        }),
        MountSpec::Secret(SecretSpec {
            id: "api".into(),
            data: b"k3y".to_vec(),
            target: Some("/s/api".into()),
            env: Some("API_KEY".into()),
            mode: 0o440,
            uid: 1000,
            gid: 0,
        }),
    ];
    assert_eq!(stdout(e, &req), "t0ken\n400 0\nk3y\nk3y\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
    // Nothing of the secret remains anywhere in the state dir either.
    for entry in walk(&e.state, &e.state) {
        let p = e.state.join(&entry);
        if p.is_file() {
            let data = fs::read(&p).unwrap_or_default();
            assert!(
                !data.windows(5).any(|w| w == b"t0ken"),
                "secret left in {entry}"
            );
        }
    }
}

fn ssh_agent_is_forwarded(e: &Subject) {
    let f = Fixture::new();
    let agent = f.dir.path().join("agent.sock");
    let listener = UnixListener::bind(&agent).unwrap();
    let server = std::thread::spawn(move || {
        // The probe connection made when the forward starts, then the step's.
        for conn in listener.incoming().take(2) {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4];
            if c.read_exact(&mut buf).is_ok() {
                let _ = c.write_all(b"agent-reply\n");
            }
        }
    });
    let mut req = f.sh(
        "r",
        "stat -c '%F %a %u' /run/buildkit/ssh_agent.0; echo ping | nc -f /dev/null 2>/dev/null; \
         test -S /run/buildkit/ssh_agent.0 && echo socket",
    );
    req.mounts = vec![MountSpec::Ssh(SshSpec {
        id: "default".into(),
        agent_socket: agent.clone(),
        target: None,
        mode: 0o600,
        uid: 1000,
        gid: 0,
    })];
    let out = stdout(e, &req);
    assert_eq!(out, "socket 600 1000\nsocket\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
    // Talk through the forwarded socket from the host side of the proxy path is
    // covered by the relay; finish the agent thread.
    let _ = std::os::unix::net::UnixStream::connect(&agent).map(|mut s| s.write_all(b"done"));
    server.join().unwrap();
}

fn mounts_inside_dev(e: &Subject) {
    let f = Fixture::new();
    let file = f.dir.path().join("dev-file");
    fs::write(&file, "in dev\n").unwrap();
    let mut req = f.sh(
        "r",
        "cat /dev/custom/file; echo x > /dev/scratch/f && grep -c ' /dev/scratch tmpfs' /proc/mounts",
    );
    req.mounts = vec![
        MountSpec::Bind {
            source: file,
            target: "/dev/custom/file".into(),
            readonly: true,
        },
        MountSpec::Tmpfs {
            target: "/dev/scratch".into(),
            size: None,
        },
    ];
    assert_eq!(stdout(e, &req), "in dev\n1\n");
    assert_eq!(upper_entries(&req.rootfs.upper), Vec::<String>::new());
}

/// Steps may create device nodes (CAP_MKNOD is a default capability) but open
/// only the standard ones, as runc's and Docker's device cgroup allows.
fn only_standard_devices_open(e: &Subject) {
    let f = Fixture::new();
    let script = "head -c 4 /dev/full | wc -c; echo x > /dev/null; \
                  mknod /tmp/kmsg c 1 11 && head -c 1 /tmp/kmsg >/dev/null; \
                  mknod /tmp/full c 1 7 && head -c 4 /tmp/full | wc -c; rm /tmp/full /tmp/kmsg";
    let streams = |req: &ExecRequest| match run(e, req) {
        Ok(o) => (
            String::from_utf8_lossy(&o.output.stream(Stream::Stdout)).into_owned(),
            String::from_utf8_lossy(&o.output.stream(Stream::Stderr)).into_owned(),
        ),
        Err(err) => panic!("{}: {err}", e.name()),
    };
    let (out, err) = streams(&f.sh("r", script));
    // EPERM from the OCI runtimes' device cgroup, EACCES from native's nodev mounts.
    let denied = |what: &str| {
        err.lines().any(|l| {
            l.contains(what)
                && (l.contains("Operation not permitted") || l.contains("Permission denied"))
        })
    };
    assert!(denied("/tmp/kmsg"), "/dev/kmsg's node must not open: {err}");
    if e.name().starts_with("oci:") {
        // The cgroup allows null, zero, full, ... wherever their node is.
        assert_eq!(out, "4\n4\n", "{err}");
    } else {
        // nodev mounts allow only the nodes in /dev (a known difference).
        assert_eq!(out, "4\n0\n", "{err}");
        assert!(denied("/tmp/full"), "{err}");
    }
    let mut req = f.sh("i", script);
    req.security = SecurityMode::Insecure;
    let (out, err) = streams(&req);
    assert_eq!(out, "4\n4\n");
    assert!(
        !err.contains("Operation not permitted") && !err.contains("Permission denied"),
        "insecure opens every device: {err}"
    );
}

fn background_processes_end_with_the_step(e: &Subject) {
    let f = Fixture::new();
    let marker = format!("{}", 4000 + std::process::id() % 1000);
    let req = f.sh("r", &format!("sleep {marker} & echo started"));
    assert_eq!(stdout(e, &req), "started\n");
    // The pid namespace died with its first process, taking the sleep with it.
    let leftover = fs::read_dir("/proc").unwrap().flatten().any(|p| {
        fs::read(p.path().join("cmdline"))
            .map(|c| c == format!("sleep\0{marker}\0").as_bytes())
            .unwrap_or(false)
    });
    assert!(!leftover, "a background process outlived its step");
}

/// Whether a process whose argv is exactly `argv` exists.
fn process_running(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|p| fs::read(p.path().join("cmdline")).is_ok_and(|c| c == want))
}

/// A new executor of the same kind (and runtime) as `e`'s, over its state dir.
fn fresh_executor(e: &Subject) -> Box<dyn Executor> {
    let config = ExecutorConfig {
        state_dir: e.state.clone(),
    };
    match e.name().strip_prefix("oci:") {
        Some(rt) => Box::new(
            OciExecutor::with_runtime(config, OciRuntime::find(rt).expect("runtime on PATH"))
                .unwrap(),
        ),
        None => Box::new(NativeExecutor::new(config)),
    }
}

/// A digit per executor, so that parallel tests' markers differ.
fn executor_tag(e: &Subject) -> u32 {
    match e.name().as_str() {
        "native" => 1,
        "oci:runc" => 2,
        "oci:crun" => 3,
        _ => 4,
    }
}

/// Polls until a process with exactly `argv` runs; false after 30 s.
fn wait_for_process(argv: &[&str]) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !process_running(argv) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// A step sleeping (with a locked cache mount) is killed by `cancel`: `run`
/// returns `Canceled`, no process, mount, run dir or container is left, the
/// cache mount's lock is released and the executor refuses further steps.
fn cancel_kills_a_running_step(e: &Subject) {
    let f = Fixture::new();
    // A unique duration is the marker that finds the process.
    let duration = format!("300.{}{}", std::process::id(), executor_tag(e));
    let mut req = f.sh("r", &format!("echo started; exec sleep {duration}"));
    req.mounts = vec![cache("c", "/cache", CacheSharing::Locked)];
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let result = std::thread::scope(|scope| {
        let step = scope.spawn(|| {
            let mut cb = |_: Stream, data: &[u8]| {
                if String::from_utf8_lossy(data).contains("started") {
                    let _ = started_tx.send(());
                }
            };
            e.run(&req, &mut cb)
        });
        started_rx.recv().expect("the step started");
        // `started` comes just before the shell execs the sleep.
        let found = wait_for_process(&["sleep", &duration]);
        e.exec.cancel();
        (found, step.join().unwrap())
    });
    let (found, result) = result;
    assert!(found, "the step's sleep never showed up");
    assert!(
        matches!(result, Err(ExecError::Canceled)),
        "{}: {result:?}",
        e.name()
    );
    assert!(
        !process_running(&["sleep", &duration]),
        "the step's process outlived the cancel"
    );
    assert_eq!(mounts_under(&e.state), Vec::<String>::new());
    let scratch = ExecutorConfig {
        state_dir: e.state.clone(),
    };
    assert_eq!(mounts_under(&scratch.executor_dir()), Vec::<String>::new());
    let runs = scratch.runs_dir();
    let left: Vec<_> = fs::read_dir(&runs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {left:?}");
    if let Some(rt) = e.name().strip_prefix("oci:") {
        let list = std::process::Command::new(rt)
            .arg("--root")
            .arg(scratch.executor_dir().join(format!("{rt}-state")))
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout).trim(),
            "",
            "containers left"
        );
    }
    // Canceled for good: the next step does not start.
    let again = run(e, &f.sh("again", "echo no"));
    assert!(matches!(again, Err(ExecError::Canceled)), "{again:?}");
    // The locked cache mount is free again: a fresh executor gets it at once.
    let fresh = Subject {
        exec: fresh_executor(e),
        state: e.state.clone(),
    };
    let mut req = f.sh("after", "echo free");
    req.mounts = vec![cache("c", "/cache", CacheSharing::Locked)];
    assert_eq!(stdout(&fresh, &req), "free\n");
}

/// A cancel at any moment of a step's start (sandbox setup, runtime creating
/// the container, process running) stops it: `run` returns `Canceled` and
/// nothing is left. Each moment uses a fresh executor over the same state.
fn cancel_at_any_moment_stops_the_step(e: &Subject) {
    let f = Fixture::new();
    let kind = executor_tag(e);
    for (n, delay_ms) in [0u64, 1, 3, 10, 30, 100].into_iter().enumerate() {
        let exec = fresh_executor(e);
        let duration = format!("300.{}{kind}{n}", std::process::id());
        let req = f.sh(&format!("r{n}"), &format!("sleep {duration}"));
        let result = std::thread::scope(|scope| {
            let step = scope.spawn(|| exec.run(&req, &mut |_, _| {}));
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            exec.cancel();
            step.join().unwrap()
        });
        assert!(
            matches!(result, Err(ExecError::Canceled)),
            "{} after {delay_ms} ms: {result:?}",
            e.name()
        );
        assert!(
            !process_running(&["sleep", &duration]),
            "after {delay_ms} ms"
        );
        assert_eq!(mounts_under(&e.state), Vec::<String>::new());
        let scratch = ExecutorConfig {
            state_dir: e.state.clone(),
        };
        assert_eq!(mounts_under(&scratch.executor_dir()), Vec::<String>::new());
    }
}

/// `auto` picks native where it can make a sandbox (root, as this suite runs),
/// ahead of the OCI runtimes on PATH: it starts steps fastest.
#[test]
fn auto_selection_runs_a_step() {
    let d = tempfile::tempdir().unwrap();
    let config = ExecutorConfig {
        state_dir: d.path().to_path_buf(),
    };
    assert!(
        OciRuntime::find("crun").is_some(),
        "crun on PATH (setup.sh)"
    );
    let exec = select(ExecutorKind::Auto, config.clone()).unwrap();
    assert_eq!(exec.name(), "native");
    let subject = Subject {
        exec,
        state: d.path().to_path_buf(),
    };
    let f = Fixture::new();
    assert_eq!(stdout(&subject, &f.sh("r", "echo auto")), "auto\n");
    assert_eq!(
        select(ExecutorKind::Native, config).unwrap().name(),
        "native"
    );
}

// ---- executors ----

fn native(f: &TempDir) -> Subject {
    Subject {
        exec: Box::new(NativeExecutor::new(ExecutorConfig {
            state_dir: f.path().to_path_buf(),
        })),
        state: f.path().to_path_buf(),
    }
}

fn oci(name: &str, f: &TempDir) -> Option<Subject> {
    let rt = OciRuntime::find(name)?;
    match OciExecutor::with_runtime(
        ExecutorConfig {
            state_dir: f.path().to_path_buf(),
        },
        rt,
    ) {
        Ok(e) => Some(Subject {
            exec: Box::new(e),
            state: f.path().to_path_buf(),
        }),
        Err(err) => panic!("{name} cannot run containers on this host: {err}"),
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod native_executor {
            $( #[test] fn $name() {
                let d = tempfile::tempdir().unwrap();
                super::$name(&super::native(&d))
            } )*
        }
        mod runc_executor {
            $( #[test] fn $name() {
                let d = tempfile::tempdir().unwrap();
                let e = super::oci("runc", &d).expect("runc must work on this host");
                super::$name(&e)
            } )*
        }
        mod crun_executor {
            $( #[test] fn $name() {
                let d = tempfile::tempdir().unwrap();
                let e = super::oci("crun", &d).expect("crun must work on this host");
                super::$name(&e)
            } )*
        }
    };
}

suite!(
    echo_and_streams,
    exit_code_and_whole_output,
    missing_program_is_an_error,
    env_and_default_path,
    cwd_is_created_and_kept,
    user_and_group_switching,
    writes_land_in_upper_with_whiteouts,
    etc_files_and_mount_points_stay_out_of_the_layer,
    host_files_are_invisible,
    sandbox_caps_and_no_new_privs,
    seccomp_default_profile,
    own_cgroup_per_step,
    minimal_dev_and_proc,
    network_modes,
    default_network_is_reused_only_after_sandboxed_steps,
    loopback_is_up_with_network_none,
    bind_mounts_ro_and_rw,
    cache_mount_persists_with_mode_and_owner,
    cache_locked_users_take_turns,
    cache_private_users_get_separate_dirs,
    tmpfs_mount,
    secrets_as_file_and_env_stay_out_of_the_layer,
    ssh_agent_is_forwarded,
    background_processes_end_with_the_step,
    mounts_inside_dev,
    cancel_kills_a_running_step,
    cancel_at_any_moment_stops_the_step,
    only_standard_devices_open,
);
