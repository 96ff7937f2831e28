//! Parse benchmark: a generated 10,000-instruction Dockerfile, timed over repeated runs.
//! `cargo bench -p kiln-frontend --bench parse` prints a table (target: parse + resolve < 20 ms).

use std::fmt::Write;
use std::time::{Duration, Instant};

/// A Dockerfile with `n` instructions covering every argument form, continuations and heredocs.
fn generate(n: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\n# check=skip=StageNameCasing\n\n");
    let mut i = 0;
    while i < n {
        let k = i % 20;
        match k {
            0 => writeln!(s, "FROM --platform=$BUILDPLATFORM busybox:1.{i} AS stage{i}"),
            1 => writeln!(s, "ARG VERSION_{i}=1.2.{i}"),
            2 => writeln!(s, "ENV PATH=/opt/{i}/bin:$PATH LANG=C.UTF-8 name=\"value {i}\""),
            3 => writeln!(
                s,
                "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    apt-get update && \\\n    # comment inside\n    apt-get install -y pkg{i} && \\\n    rm -rf /var/lib/apt/lists/*"
            ),
            4 => writeln!(s, "COPY --from=stage0 --chown=1000:1000 --link /src/{i} /dst/{i}/"),
            5 => writeln!(s, "RUN <<EOF\nset -e\necho step {i}\nls -la /\nEOF"),
            6 => writeln!(s, "LABEL org.opencontainers.image.version=\"{i}\" maintainer=\"kiln\""),
            7 => writeln!(s, "CMD [\"/bin/sh\", \"-c\", \"echo {i}\"]"),
            8 => writeln!(s, "WORKDIR /work/{i}"),
            9 => writeln!(s, "ADD --checksum=sha256:abc https://example.com/{i}.tar.gz /tmp/"),
            10 => writeln!(s, "EXPOSE {}/tcp 53/udp", 8000 + i % 1000),
            11 => writeln!(s, "USER 1000:1000"),
            12 => writeln!(s, "ENTRYPOINT [\"/entry-{i}\"]"),
            13 => writeln!(s, "HEALTHCHECK --interval=5s CMD curl -f http://localhost/{i}"),
            14 => writeln!(s, "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]"),
            15 => writeln!(s, "VOLUME [\"/data/{i}\"]"),
            16 => writeln!(s, "ONBUILD RUN echo onbuild {i}"),
            17 => writeln!(s, "COPY <<-EOT /etc/conf{i}\n\tkey=value\n\tEOT"),
            18 => writeln!(s, "STOPSIGNAL SIGTERM"),
            _ => writeln!(s, "RUN echo a{i} && echo b{i} # not a comment"),
        }
        .expect("write to String");
        i += 1;
    }
    s
}

fn main() {
    let src = generate(10_000);
    let lines = src.lines().count();
    let ast = kiln_frontend::parse(&src).expect("generated Dockerfile parses");
    assert_eq!(ast.children.len(), 10_000);

    let runs = 30;
    // The clock stops before the AST is freed: freeing is not parsing.
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let ast = kiln_frontend::parse(std::hint::black_box(&src)).expect("parses");
            let elapsed = start.elapsed();
            drop(std::hint::black_box(ast));
            elapsed
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().sum::<Duration>() / runs as u32;
    let mib_s = src.len() as f64 / (1024.0 * 1024.0) / mean.as_secs_f64();
    println!("| benchmark | instructions | lines | bytes | runs | min ms | median ms | mean ms | max ms | MiB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| parse | {} | {lines} | {} | {runs} | {:.2} | {:.2} | {:.2} | {:.2} | {mib_s:.1} |",
        ast.children.len(),
        src.len(),
        ms(times[0]),
        ms(times[runs / 2]),
        ms(mean),
        ms(times[runs - 1]),
    );
}
