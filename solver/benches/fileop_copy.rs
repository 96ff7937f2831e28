//! COPY throughput: `apply_file_actions` against `cp -a` on the same trees.
//! `cargo bench -p kiln-solver --bench fileop_copy` prints a table
//! (target: within 1.5x of `cp -a` on many small files and on one big file).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_solver::llb::{CopyAction, FileAction};
use kiln_solver::ops::file::{apply_file_actions, SourceRoot};

const RUNS: usize = 5;

fn small_files(root: &Path, dirs: usize, per_dir: usize) -> (usize, u64) {
    let body = vec![b'x'; 1024];
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            fs::write(dir.join(format!("f{f:04}.txt")), &body).unwrap();
        }
    }
    (dirs * per_dir, (dirs * per_dir * body.len()) as u64)
}

fn big_file(root: &Path, mib: usize) -> (usize, u64) {
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut data = Vec::with_capacity(mib * chunk.len());
    for _ in 0..mib {
        data.extend_from_slice(&chunk);
    }
    fs::write(root.join("big.bin"), &data).unwrap();
    (1, data.len() as u64)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_kiln(src: &Path) -> Duration {
    let runs = (0..RUNS)
        .map(|_| {
            let dest = tempfile::tempdir().unwrap();
            let action = FileAction::Copy(CopyAction {
                src: "/".into(),
                dest: "/out/".into(),
                follow_symlinks: true,
                dir_copy_contents: true,
                create_dest_path: true,
                allow_wildcard: true,
                ..Default::default()
            });
            let start = Instant::now();
            apply_file_actions(dest.path(), &[SourceRoot::new(src)], &[action]).unwrap();
            start.elapsed()
        })
        .collect();
    median(runs)
}

fn time_cp(src: &Path) -> Duration {
    let runs = (0..RUNS)
        .map(|_| {
            let dest = tempfile::tempdir().unwrap();
            let start = Instant::now();
            let ok = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(dest.path().join("out"))
                .status()
                .unwrap()
                .success();
            assert!(ok, "cp -a failed");
            start.elapsed()
        })
        .collect();
    median(runs)
}

fn main() {
    println!("| case | files | MiB | kiln ms | cp -a ms | kiln/cp |");
    println!("|---|---:|---:|---:|---:|---:|");
    type Make = fn(&Path) -> (usize, u64);
    let cases: [(&str, Make); 2] = [
        ("5000 x 1 KiB in 50 dirs", |r| small_files(r, 50, 100)),
        ("1 x 256 MiB", |r| big_file(r, 256)),
    ];
    for (name, make) in cases {
        let src = tempfile::tempdir().unwrap();
        let (files, bytes) = make(src.path());
        let kiln = time_kiln(src.path());
        let cp = time_cp(src.path());
        println!(
            "| {name} | {files} | {:.1} | {:.1} | {:.1} | {:.2} |",
            bytes as f64 / (1024.0 * 1024.0),
            kiln.as_secs_f64() * 1e3,
            cp.as_secs_f64() * 1e3,
            kiln.as_secs_f64() / cp.as_secs_f64()
        );
    }
}
