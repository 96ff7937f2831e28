//! Benchmark: parse + resolve (stages, ARG/ENV expansion, typed instructions) and the build
//! checks on a generated 10,000-instruction Dockerfile. Run with
//! `cargo run --release -p kiln-frontend --example bench_resolve` (or bench/resolve.sh).

use kiln_frontend::lint::{check, CheckOptions};
use kiln_frontend::stages::{resolve, ResolveOptions};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// 100 stages of 100 instructions each (FROM included), with global ARGs, ENV/ARG use,
/// RUN mounts, COPY --from and heredocs.
fn generate(instructions: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine\nARG TAG=3.19\n");
    let mut n = 2;
    let mut stage = 0;
    while n < instructions {
        let _ = writeln!(
            s,
            "FROM --platform=$BUILDPLATFORM ${{BASE}}:${{TAG}} AS stage{stage}"
        );
        let _ = writeln!(s, "ARG TARGETARCH\nARG VERSION_{stage}=1.{stage}.0\nENV PREFIX=/opt/s{stage} PATH=/opt/s{stage}/bin:$PATH");
        n += 4;
        let mut i = 0;
        while i < 96 && n < instructions {
            match i % 8 {
                0 => {
                    let _ = writeln!(s, "WORKDIR $PREFIX/src/${{VERSION_{stage}}}");
                }
                1 => {
                    let _ = writeln!(s, "RUN --mount=type=cache,target=/root/.cache/$TARGETARCH,sharing=locked --mount=type=bind,source=.,target=/src make -C /src VERSION=${{VERSION_{stage}}} step{i}");
                }
                2 => {
                    let _ = writeln!(
                        s,
                        "COPY --chown=1000:1000 --chmod=0755 --link src/{i} $PREFIX/{i}/"
                    );
                }
                3 => {
                    let _ = writeln!(s, "ENV STEP_{i}=\"value ${{VERSION_{stage}%%.*}} {i}\" OTHER_{i}=${{PREFIX#/opt}}");
                }
                4 if stage > 0 => {
                    let _ = writeln!(
                        s,
                        "COPY --from=stage{} /opt/s{}/bin/tool{i} /usr/local/bin/",
                        stage - 1,
                        stage - 1
                    );
                }
                5 => {
                    let _ = writeln!(s, "LABEL org.example.step{i}=\"${{VERSION_{stage}}}\" org.example.arch=$TARGETARCH");
                }
                6 => {
                    let _ = writeln!(s, "RUN <<EOF\nset -e\necho step {i} in $PREFIX\nEOF");
                }
                _ => {
                    let _ = writeln!(s, "EXPOSE {}/tcp", 8000 + i);
                }
            }
            n += 1;
            i += 1;
        }
        stage += 1;
    }
    s
}

/// Nanoseconds this process has run on a CPU (Linux `/proc/self/schedstat`), so the numbers stay
/// meaningful on a loaded machine; `None` elsewhere.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// (min wall, median wall, median CPU) over `runs`.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, Option<Duration>) {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let c0 = cpu_ns();
        let t = Instant::now();
        std::hint::black_box(f());
        wall.push(t.elapsed());
        if let (Some(a), Some(b)) = (c0, cpu_ns()) {
            cpu.push(Duration::from_nanos(b.saturating_sub(a)));
        }
    }
    wall.sort();
    cpu.sort();
    (
        wall[0],
        wall[wall.len() / 2],
        cpu.get(cpu.len() / 2).copied(),
    )
}

fn main() {
    let src = generate(10_000);
    let ast = kiln_frontend::parse(&src).expect("parse");
    let count = ast.children.len();
    let runs = 30;
    let opts = ResolveOptions {
        all_stages: true,
        ..ResolveOptions::default()
    };
    let target_opts = ResolveOptions::default();
    let parse = time(runs, || kiln_frontend::parse(&src).expect("parse"));
    let res_all = time(runs, || resolve(&ast, &opts).expect("resolve"));
    let res_target = time(runs, || resolve(&ast, &target_opts).expect("resolve"));
    let both = time(runs, || {
        resolve(&kiln_frontend::parse(&src).expect("parse"), &opts).expect("resolve")
    });
    let lint = time(runs, || {
        check(
            &ast,
            &CheckOptions {
                resolve: ResolveOptions::default(),
                ignored: None,
            },
        )
        .expect("check")
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "generated Dockerfile: {count} instructions, {} bytes, {runs} runs each",
        src.len()
    );
    println!(
        "{:<38} {:>12} {:>12} {:>12}",
        "step", "wall min ms", "wall med ms", "cpu med ms"
    );
    for (name, (min, med, cpu)) in [
        ("parse", parse),
        ("resolve (all stages expanded)", res_all),
        ("resolve (default target, pruned)", res_target),
        ("parse + resolve (all stages)", both),
        ("check (resolve + 20 rules)", lint),
    ] {
        let cpu = cpu.map_or("n/a".to_string(), |c| format!("{:.2}", ms(c)));
        println!("{name:<38} {:>12.2} {:>12.2} {cpu:>12}", ms(min), ms(med));
    }
}
