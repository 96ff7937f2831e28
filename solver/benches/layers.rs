//! Layer and checksum throughput on a synthetic tree; prints a table.
//! Run: `cargo bench -p kiln-solver --bench layers` (KILN_BENCH_MB sets the tree size, default 128).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kiln_solver::cache::{checksum_paths, Selector};
use kiln_solver::content::ContentStore;
use kiln_solver::snapshot::layer::{
    apply_layer, write_layer, ApplyOptions, Compression, DiffOptions,
};

/// A tree like a build output: many small text files and a few large binaries.
fn make_tree(root: &Path, total_mb: usize) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Half the bytes in 4 KiB source-like files (compressible), half in 8 MiB blobs (semi-random).
    let small_total = total_mb * 1024 * 1024 / 2;
    let mut written = 0;
    let words = [
        "fn ",
        "let ",
        "mut ",
        "struct ",
        "impl ",
        "return ",
        "match ",
        "=> ",
        "{\n",
        "}\n",
        "self",
        ".clone()",
        "Vec<u8>",
        "// comment\n",
    ];
    while written < small_total {
        let dir = root.join(format!("src/mod{:03}", files / 100));
        fs::create_dir_all(&dir).unwrap();
        let mut body = String::with_capacity(4096);
        while body.len() < 4000 {
            body.push_str(words[(next() % words.len() as u64) as usize]);
        }
        fs::write(dir.join(format!("file{files}.rs")), &body).unwrap();
        written += body.len();
        bytes += body.len() as u64;
        files += 1;
    }
    fs::create_dir_all(root.join("bin")).unwrap();
    let big = 8 * 1024 * 1024;
    for i in 0..(total_mb / 2 / 8).max(1) {
        let data: Vec<u8> = (0..big)
            .map(|j| {
                if j % 3 == 0 {
                    (next() & 0xff) as u8
                } else {
                    (j % 61) as u8
                }
            })
            .collect();
        fs::write(root.join(format!("bin/tool{i}")), &data).unwrap();
        bytes += big as u64;
        files += 1;
    }
    (files, bytes)
}

fn mbps(bytes: u64, secs: f64) -> String {
    format!("{:8.1}", bytes as f64 / 1024.0 / 1024.0 / secs)
}

fn main() {
    let total_mb: usize = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let (files, bytes) = make_tree(&tree, total_mb);
    let store = ContentStore::open(work.path().join("content")).unwrap();
    println!(
        "tree: {files} files, {:.1} MiB",
        bytes as f64 / 1024.0 / 1024.0
    );
    println!(
        "{:<34} {:>9} {:>10} {:>12}",
        "operation", "seconds", "MiB/s", "output MiB"
    );

    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let t = Instant::now();
        let layer = write_layer(
            &tree,
            &store,
            &DiffOptions {
                compression: c,
                ..Default::default()
            },
        )
        .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>9.2} {:>10} {:>12.1}",
            format!("write_layer ({c})"),
            s,
            mbps(bytes, s),
            layer.blob.size as f64 / 1024.0 / 1024.0
        );
        let dest = work.path().join(format!("apply-{c}"));
        let t = Instant::now();
        apply_layer(
            store.open_blob(&layer.blob.digest).unwrap(),
            &dest,
            &ApplyOptions::default(),
        )
        .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>9.2} {:>10} {:>12}",
            format!("apply_layer ({c})"),
            s,
            mbps(bytes, s),
            ""
        );
        fs::remove_dir_all(&dest).unwrap();
    }

    // Parallel gzip: the same blob with one thread and with all of them.
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        let layer = pool.install(|| write_layer(&tree, &store, &DiffOptions::default()).unwrap());
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>9.2} {:>10} {:>12.1}",
            format!("write_layer (gzip, {threads} thr)"),
            s,
            mbps(bytes, s),
            layer.blob.size as f64 / 1024.0 / 1024.0
        );
    }

    // Baseline: GNU tar + gzip over the same tree.
    let out = work.path().join("baseline.tar.gz");
    let t = Instant::now();
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        let s = t.elapsed().as_secs_f64();
        let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "{:<34} {:>9.2} {:>10} {:>12.1}",
            "baseline: tar -czf (GNU)",
            s,
            mbps(bytes, s),
            size as f64 / 1024.0 / 1024.0
        );
        let dest = work.path().join("baseline-extract");
        fs::create_dir(&dest).unwrap();
        let t = Instant::now();
        let ok = Command::new("tar")
            .arg("-xzf")
            .arg(&out)
            .arg("-C")
            .arg(&dest)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            let s = t.elapsed().as_secs_f64();
            println!(
                "{:<34} {:>9.2} {:>10} {:>12}",
                "baseline: tar -xzf (GNU)",
                s,
                mbps(bytes, s),
                ""
            );
        }
    }

    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        pool.install(|| checksum_paths(&tree, &[Selector::path("")]).unwrap());
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:<34} {:>9.2} {:>10} {:>12}",
            format!("checksum_paths (whole, {threads} thr)"),
            s,
            mbps(bytes, s),
            ""
        );
    }
    let t = Instant::now();
    checksum_paths(&tree, &[Selector::path("src/mod000")]).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>9.4} {:>10} {:>12}",
        "checksum_paths (one dir, 100 f)", s, "", ""
    );
}
