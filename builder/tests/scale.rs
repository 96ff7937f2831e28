//! Builds at scale (issue 17): a rebuild that changes nothing costs a stat per context file
//! and writes nothing to the state directory's database. Timings are bench/scale.sh's job;
//! these tests check what the speed rests on.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use support::{busybox, executed, Build, TestEnv};

/// Every file under `dir` with its size, mtime and (for small ones) content.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                let bytes = (meta.len() <= 64 << 20).then(|| std::fs::read(e.path()).unwrap());
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, (meta.len(), meta.modified().unwrap(), bytes));
            }
        }
    }
    out
}

#[test]
fn a_noop_rebuild_leaves_the_state_database_alone() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY . /ctx/\nRUN ls -R /ctx | wc -l > /count\n",
            busybox(&env)
        ),
    );
    for i in 0..2000 {
        b.write(
            &format!("src/d{:02}/f{i:04}.txt", i / 100),
            &format!("file {i}\n"),
        );
    }
    // Files younger than the stat cache's racy slack (2 s) are read again by the next
    // build, and their entries then written: the context must be older than that.
    std::thread::sleep(Duration::from_millis(2200));
    let tag = "kiln-test/scale-noop:1";
    let first = b.build(&["-t", tag]);
    assert!(executed(&first) >= 2, "{first}");

    let before = files(b.root.path());
    let again = b.build(&["-t", tag]);
    assert_eq!(executed(&again), 0, "{again}");
    assert_eq!(
        again["containerimage.digest"],
        first["containerimage.digest"]
    );
    let after = files(b.root.path());
    // The cache hits' last-use times go to the use journal (appended, no fsync); nothing
    // else in the state directory changes, the database least of all.
    let journal = Path::new("meta.redb.uses");
    for (path, was) in &before {
        if path == journal {
            continue;
        }
        let now = after.get(path);
        assert!(
            now == Some(was),
            "{} changed in a no-op rebuild",
            path.display()
        );
    }
    let new: Vec<_> = after
        .keys()
        .filter(|p| !before.contains_key(*p) && p.as_path() != journal)
        .collect();
    assert!(new.is_empty(), "a no-op rebuild made {new:?}");
    assert!(after.contains_key(journal), "the hits are recorded as uses");

    // An edit still re-runs what depends on it, and then folds the journal in.
    b.write("src/d00/f0000.txt", "edited\n");
    let edited = b.build(&["-t", tag]);
    assert!(executed(&edited) >= 2, "{edited}");
    assert!(
        !b.root.path().join(journal).exists(),
        "the writing build folded the journal into the database"
    );
}

/// Runs `kiln --root <state> ARGS` with stdin from `input`; returns whether it succeeded,
/// its stderr and its peak RSS in bytes (from wait4, the child's own).
// The child is reaped by wait4, which std's wait does not offer (it has no rusage).
#[allow(clippy::zombie_processes)]
fn kiln_rss(b: &Build, args: &[&str], input: &Path) -> (bool, String, u64) {
    let child = std::process::Command::new(support::kiln_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(args)
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(b.path("stderr")).unwrap())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stderr = std::fs::read_to_string(b.path("stderr")).unwrap();
    (ok, stderr, u64::try_from(usage.ru_maxrss).unwrap() * 1024)
}

#[test]
fn a_big_tarball_context_on_stdin_streams() {
    let b = Build::new();
    // 256 MiB of context in one file, beside what the build uses.
    let tarball = b.path("ctx.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
        let mut add = |name: &str, data: &mut dyn std::io::Read, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            t.append_data(&mut h, name, data).unwrap();
        };
        add(
            "Dockerfile",
            &mut &b"FROM scratch\nCOPY small.txt /\n"[..],
            30,
        );
        add("small.txt", &mut &b"small\n"[..], 6);
        let big = 256u64 << 20;
        add("big.bin", &mut std::io::repeat(7).take(big), big);
        t.finish().unwrap();
    }
    let out = b.path("out");
    let (ok, stderr, rss) = kiln_rss(
        &b,
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out.display()),
            "-",
        ],
        &tarball,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("small.txt")).unwrap(),
        "small\n"
    );
    assert!(
        rss < 128 << 20,
        "peak RSS {} MiB for a 256 MiB context on stdin",
        rss >> 20
    );
}

/// `strace -f -c` of `kiln --root <state> ARGS`: calls per syscall name.
fn syscall_counts(b: &Build, args: &[&str]) -> BTreeMap<String, u64> {
    let summary = b.path("strace.txt");
    let out = std::process::Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(support::kiln_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(args)
        .output()
        .expect("run strace (testdata/env/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "% time  seconds  usecs/call  calls  [errors]  syscall" rows.
    std::fs::read_to_string(&summary)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = cols.last()?;
            let calls = cols.get(3)?.parse().ok()?;
            (cols.len() >= 5 && *name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

#[test]
fn a_noop_rebuild_costs_one_statx_per_context_file() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY . /ctx/\n", busybox(&env)),
    );
    let (files, dirs) = (3000u64, 30u64);
    for i in 0..files {
        b.write(
            &format!("src/d{:02}/f{i:04}.txt", i / (files / dirs)),
            &format!("file {i}\n"),
        );
    }
    // Older than the stat cache's racy slack, so the first build's entries are trusted.
    std::thread::sleep(Duration::from_millis(2200));
    let tag = "kiln-test/scale-noop-syscalls:1";
    b.build(&["-t", tag]);
    let ctx = b.ctx();
    let counts = syscall_counts(
        &b,
        &[
            "build",
            "--progress",
            "quiet",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ],
    );
    let calls = |name: &str| counts.get(name).copied().unwrap_or(0);
    // One statx per file and directory (plus the few of the state directory), relative to
    // its directory: no path-based stat, no open, no xattr read, no database read per file.
    let statx = calls("statx") + calls("newfstatat");
    assert!(
        (files..files + 300).contains(&statx),
        "{statx} stats for {files} files: {counts:?}"
    );
    for (name, n) in &counts {
        if name != "statx" && name != "newfstatat" {
            assert!(
                *n < files / 4,
                "{n} {name} calls in a no-op rebuild of {files} files: {counts:?}"
            );
        }
    }
    assert!(
        calls("openat") < dirs + 200,
        "directories are opened once each: {counts:?}"
    );
}
