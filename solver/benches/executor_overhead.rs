//! Per-step overhead of `RUN true` with each executor (needs root).
//!
//! `cargo bench -p kiln-solver --bench executor_overhead` prints a table of the
//! wall time of a whole step: overlay mount, world preparation, sandbox start,
//! `/bin/true` in a busybox rootfs, teardown. Target: <= 50 ms per step.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_solver::executor::native::NativeExecutor;
use kiln_solver::executor::oci::{OciExecutor, OciRuntime};
use kiln_solver::executor::{ExecRequest, Executor, ExecutorConfig};
use kiln_solver::snapshot::overlay::Overlay;

const RUNS: usize = 50;

/// CPU time (user + system) of this process and its reaped descendants.
fn cpu_time() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        for tv in [ru.ru_utime, ru.ru_stime] {
            total +=
                Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
        }
    }
    total
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("base");
    fs::create_dir_all(root.join("bin")).expect("mkdir");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("needs /bin/busybox (busybox-static)");
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    root
}

fn measure(name: &str, exec: &dyn Executor, base: &Path, scratch: &Path) {
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut cpu = Duration::ZERO;
    for i in 0..RUNS + 3 {
        let d = scratch.join(format!("{name}-{i}"));
        fs::create_dir_all(d.join("upper")).expect("mkdir");
        fs::create_dir_all(d.join("work")).expect("mkdir");
        let req = ExecRequest::new(
            Overlay {
                lowers: vec![base.to_path_buf()],
                upper: d.join("upper"),
                work: d.join("work"),
            },
            vec!["/bin/sh".into(), "-c".into(), "true".into()],
        );
        let start = Instant::now();
        let cpu_start = cpu_time();
        if let Err(e) = exec.run(&req, &mut |_, _| {}) {
            println!("| {name:<12} | failed: {e} |");
            return;
        }
        // The first runs warm caches (page cache, runtime binary).
        if i >= 3 {
            times.push(start.elapsed());
            cpu += cpu_time().saturating_sub(cpu_start);
        }
        let _ = fs::remove_dir_all(&d);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    let pct = |p: usize| {
        times
            .get(times.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "| {name:<12} | {RUNS:>4} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} |",
        mean,
        ms(cpu) / RUNS as f64,
        ms(pct(50)),
        ms(pct(90)),
        ms(times.last().copied().unwrap_or_default())
    );
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("executor_overhead needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = busybox_rootfs(dir.path());
    let config = ExecutorConfig {
        state_dir: dir.path().join("state"),
    };
    println!("RUN true, whole step (ms)");
    let mut load = [0f64; 3];
    unsafe { libc::getloadavg(load.as_mut_ptr(), 3) };
    println!(
        "(load average {:.1}; cpu = user+sys of kiln, runtime and step per run)",
        load[0]
    );
    println!("| executor     | runs |     mean |      cpu |      p50 |      p90 |      max |");
    println!("|--------------|------|----------|----------|----------|----------|----------|");
    measure(
        "native",
        &NativeExecutor::new(config.clone()),
        &base,
        dir.path(),
    );
    for rt in ["runc", "crun"] {
        match OciRuntime::find(rt).map(|r| OciExecutor::with_runtime(config.clone(), r)) {
            Some(Ok(e)) => measure(&format!("oci-{rt}"), &e, &base, dir.path()),
            Some(Err(e)) => println!("| oci-{rt:<8} | unusable here: {e} |"),
            None => println!("| oci-{rt:<8} | not installed |"),
        }
    }
}
