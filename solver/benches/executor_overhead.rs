//! Per-step overhead of `RUN true` with each executor (needs root).
//!
//! `cargo bench -p kiln-solver --bench executor_overhead` prints a table of the
//! wall time of a whole step: overlay mount, world preparation, sandbox start,
//! `/bin/true` in a busybox rootfs, teardown. Target: <= 50 ms per step.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_solver::executor::native::NativeExecutor;
use kiln_solver::executor::netns::NetworkPool;
use kiln_solver::executor::oci::{OciExecutor, OciRuntime};
use kiln_solver::executor::world::{prepare, sync_layer};
use kiln_solver::executor::{ExecRequest, Executor, ExecutorConfig};
use kiln_solver::snapshot::overlay::Overlay;

/// Runs per executor (`KILN_BENCH_RUNS` overrides, e.g. for profiling a few).
fn runs() -> usize {
    std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(50)
}

/// Whether `name` is measured (`KILN_BENCH_ONLY=native,oci-crun` picks some).
fn wanted(name: &str) -> bool {
    std::env::var("KILN_BENCH_ONLY")
        .map(|only| only.split(',').any(|o| o == name))
        .unwrap_or(true)
}

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
    if !wanted(name) {
        return;
    }
    let runs = runs();
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut cpu = Duration::ZERO;
    for i in 0..runs + 3 {
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
        "| {name:<12} | {runs:>4} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>8.1} |",
        ms(times.first().copied().unwrap_or_default()),
        ms(pct(50)),
        mean,
        ms(cpu) / runs as f64,
        ms(pct(90)),
        ms(times.last().copied().unwrap_or_default())
    );
}

/// The phases of a step, run one by one: where the time of `measure` goes.
#[derive(Default, Clone, Copy)]
struct Phases {
    prepare: Duration,
    run: Duration,
    teardown: Duration,
    sync: Duration,
    syncfs: Duration,
}

fn measure_phases(
    name: &str,
    config: &ExecutorConfig,
    networks: &std::sync::Arc<NetworkPool>,
    run_world: &dyn Fn(&kiln_solver::executor::world::World) -> bool,
    base: &Path,
    scratch: &Path,
) {
    if !wanted(name) {
        return;
    }
    let runs = runs();
    let mut all: Vec<Phases> = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let d = scratch.join(format!("{name}-phases-{i}"));
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
        let t0 = Instant::now();
        let prepared = match prepare(config, &req, networks) {
            Ok(p) => p,
            Err(e) => {
                println!("| {name:<12} | prepare failed: {e} |");
                return;
            }
        };
        let t1 = Instant::now();
        if !run_world(&prepared.world) {
            println!("| {name:<12} | run failed |");
            return;
        }
        let t2 = Instant::now();
        prepared.finish();
        let t3 = Instant::now();
        // Every other step syncs the whole filesystem instead, as kiln did
        // before: the two columns compare under the same load.
        let whole_fs = i % 2 == 1;
        if whole_fs {
            if let Ok(f) = fs::File::open(&req.rootfs.upper) {
                unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
            }
        } else {
            let _ = sync_layer(&req.rootfs.upper);
        }
        let t4 = Instant::now();
        if i >= 3 {
            all.push(Phases {
                prepare: t1 - t0,
                run: t2 - t1,
                teardown: t3 - t2,
                sync: if whole_fs { Duration::MAX } else { t4 - t3 },
                syncfs: if whole_fs { t4 - t3 } else { Duration::MAX },
            });
        }
        let _ = fs::remove_dir_all(&d);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = |f: fn(&Phases) -> Duration| {
        let mut v: Vec<Duration> = all.iter().map(f).filter(|d| *d != Duration::MAX).collect();
        v.sort();
        (
            ms(v.first().copied().unwrap_or_default()),
            ms(v.get(v.len() / 2).copied().unwrap_or_default()),
        )
    };
    let (a, b, c, d, e) = (
        p50(|p| p.prepare),
        p50(|p| p.run),
        p50(|p| p.teardown),
        p50(|p| p.sync),
        p50(|p| p.syncfs),
    );
    println!(
        "| {name:<12} | {:>5.1} / {:>5.1} | {:>5.1} / {:>5.1} | {:>5.1} / {:>5.1} | {:>5.1} / {:>5.1} | {:>5.1} / {:>5.1} |",
        a.0, a.1, b.0, b.1, c.0, c.1, d.0, d.1, e.0, e.1
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
    println!(
        "| executor     | runs |      min |      p50 |     mean |      cpu |      p90 |      max |"
    );
    println!(
        "|--------------|------|----------|----------|----------|----------|----------|----------|"
    );
    let native = NativeExecutor::new(config.clone());
    measure("native", &native, &base, dir.path());
    let mut oci = Vec::new();
    for rt in ["runc", "crun"] {
        if !wanted(&format!("oci-{rt}")) {
            continue;
        }
        match OciRuntime::find(rt).map(|r| OciExecutor::with_runtime(config.clone(), r)) {
            Some(Ok(e)) => {
                measure(&format!("oci-{rt}"), &e, &base, dir.path());
                oci.push((rt, e));
            }
            Some(Err(e)) => println!("| oci-{rt:<8} | unusable here: {e} |"),
            None => println!("| oci-{rt:<8} | not installed |"),
        }
    }
    println!();
    println!("choosing the runtime (sweep + probe container), paid by a build's first RUN (ms)");
    println!("| runtime      |      min |      p50 |");
    println!("|--------------|----------|----------|");
    for (rt, e) in &oci {
        let mut times: Vec<Duration> = (0..10)
            .filter_map(|_| {
                let start = Instant::now();
                OciExecutor::with_runtime(config.clone(), e.runtime().clone())
                    .ok()
                    .map(|_| start.elapsed())
            })
            .collect();
        times.sort();
        let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
        println!(
            "| oci-{rt:<8} | {:>8.1} | {:>8.1} |",
            ms(times.first()),
            ms(times.get(times.len() / 2))
        );
    }
    println!();
    println!("phases of the same step (ms, min / p50): prepare = overlay mount, user, /etc files,");
    println!("mount points; run = sandbox + process; teardown = unmount, stubs, dirs; sync = the");
    println!(
        "layer's files (sync_layer), on alternate steps syncfs of the whole filesystem instead"
    );
    println!("| executor     | prepare       | run           | teardown      | sync          | syncfs        |");
    println!("|--------------|---------------|---------------|---------------|---------------|---------------|");
    // One pool for the phases, as an executor keeps one for its steps.
    let networks = NetworkPool::new(config.runs_dir());
    measure_phases(
        "native",
        &config,
        &networks,
        &|w| native.run_world(w, &mut |_, _| {}).is_ok(),
        &base,
        dir.path(),
    );
    for (rt, e) in &oci {
        measure_phases(
            &format!("oci-{rt}"),
            &config,
            &networks,
            &|w| e.run_world(w, &mut |_, _| {}).is_ok(),
            &base,
            dir.path(),
        );
    }
}
