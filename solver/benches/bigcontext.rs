//! The phases of `COPY . /app` from a big context, one by one: the COPY into a fresh layer,
//! the layer tar alone (diffID), and the whole export (tar + gzip + blob digest + store write
//! with fsync). Prints a table of wall times.
//!
//! Run: `KILN_BIGCONTEXT=DIR cargo bench -p kiln-solver --bench bigcontext`, where DIR was made
//! by `bench/contexts/bigcontext/gen.sh DIR` (20,000 small files + a 200 MB random file).
//! KILN_BENCH_REPS sets the repetitions (default 3; the table shows the minimum).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_solver::content::ContentStore;
use kiln_solver::llb::{CopyAction, FileAction};
use kiln_solver::ops::file::{apply_file_actions, SourceRoot};
use kiln_solver::snapshot::layer::{write_layer, write_tar, Compression, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;

fn copy_into(ctx: &Path, dest: &Path) {
    let action = FileAction::Copy(CopyAction {
        src: "/".into(),
        dest: "/app".into(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        ..Default::default()
    });
    apply_file_actions(dest, &[SourceRoot::new(ctx)], &[action]).expect("copy");
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn main() {
    let Some(ctx) = std::env::var_os("KILN_BIGCONTEXT").map(PathBuf::from) else {
        eprintln!("set KILN_BIGCONTEXT to a directory made by bench/contexts/bigcontext/gen.sh");
        return;
    };
    let reps: usize = std::env::var("KILN_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Next to the context: same filesystem as a state directory would likely be.
    let work = tempfile::tempdir_in(ctx.parent().unwrap_or(Path::new("/tmp"))).expect("tmp");
    let store = ContentStore::open(work.path().join("content")).expect("store");
    // Layers are made where the worker makes them (pending directories of a layer store).
    let layers = LayerStore::open(work.path().join("layers")).expect("layers");
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        ("COPY into a fresh layer", vec![]),
        ("tar + diffID (no compression)", vec![]),
        ("export: tar + gzip + digests + store", vec![]),
        ("export uncompressed: tar + digests + store", vec![]),
    ];
    for _ in 0..reps {
        let pending = layers.begin().expect("pending layer");
        let layer = pending.upper();
        let ((), t) = timed(|| copy_into(&ctx, &layer));
        rows[0].1.push(t);
        let (_, t) = timed(|| write_tar(&layer, io::sink(), &DiffOptions::default()).expect("tar"));
        rows[1].1.push(t);
        let (blob, t) =
            timed(|| write_layer(&layer, &store, &DiffOptions::default()).expect("layer"));
        rows[2].1.push(t);
        let none = DiffOptions {
            compression: Compression::None,
            ..DiffOptions::default()
        };
        let (plain, t) = timed(|| write_layer(&layer, &store, &none).expect("layer"));
        rows[3].1.push(t);
        if let Ok(p) = store.blob_path(&plain.blob.digest) {
            let _ = std::fs::remove_file(p);
        }
        // The next rep writes the same blob: remove it so the store does the whole write.
        if let Ok(p) = store.blob_path(&blob.blob.digest) {
            let _ = std::fs::remove_file(p);
        }
        // Kept until the end: deleting now would slow the next rep's creates (see topdir).
        std::mem::forget(pending);
    }
    println!("| phase | min s | all runs s |");
    println!("|---|---:|---|");
    for (name, times) in rows {
        let min = times.iter().min().copied().unwrap_or_default();
        let all: Vec<String> = times
            .iter()
            .map(|t| format!("{:.3}", t.as_secs_f64()))
            .collect();
        println!("| {name} | {:.3} | {} |", min.as_secs_f64(), all.join(" "));
    }
}
