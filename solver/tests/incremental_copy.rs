//! Incremental copies against cold ones: a random sequence of edits on a small tree, each
//! followed by the copy made from the previous result (files taken over) and a cold copy;
//! both layers must tar to the same bytes (same diffID), and the previous layers must not
//! change. Their gzip blobs too: the incremental layer's blob, resumed from the previous
//! layer's where their tars agree, is byte for byte the cold layer's.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use kiln_solver::content::ContentStore;
use kiln_solver::llb::{CopyAction, FileAction};
use kiln_solver::ops::file::{apply_file_actions_with, FileOpOptions, Reuse, SourceRoot};
use kiln_solver::snapshot::layer::{write_layer, write_layer_indexed, write_tar, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::steps::StepRecord;

/// One edit of the source tree; indexes pick among the files present.
#[derive(Debug, Clone)]
enum Edit {
    Write(usize, String),
    Add(String, String),
    Delete(usize),
    Chmod(usize, u32),
    FileToDir(usize),
    SameSizeAndMtime(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), "[a-z]{0,40}").prop_map(|(i, s)| Edit::Write(i, s)),
        ("[a-c]/[a-z]{1,3}", "[a-z]{0,40}").prop_map(|(p, s)| Edit::Add(p, s)),
        any::<usize>().prop_map(Edit::Delete),
        (
            any::<usize>(),
            prop_oneof![Just(0o600u32), Just(0o755), Just(0o640)]
        )
            .prop_map(|(i, m)| Edit::Chmod(i, m)),
        any::<usize>().prop_map(Edit::FileToDir),
        any::<usize>().prop_map(Edit::SameSizeAndMtime),
    ]
}

/// The regular files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| Some(e.path().strip_prefix(dir).ok()?.to_str()?.to_string()))
        .collect();
    out.sort();
    out
}

fn apply(src: &Path, e: &Edit) {
    let all = files(src);
    let pick = |i: &usize| (!all.is_empty()).then(|| src.join(&all[i % all.len()]));
    match e {
        Edit::Write(i, s) => {
            if let Some(p) = pick(i) {
                std::fs::write(p, s).unwrap();
            }
        }
        Edit::Add(p, s) => {
            let p = src.join(p);
            if std::fs::create_dir_all(p.parent().unwrap()).is_ok() && !p.exists() {
                std::fs::write(p, s).unwrap();
            }
        }
        Edit::Delete(i) => {
            if let Some(p) = pick(i) {
                std::fs::remove_file(p).unwrap();
            }
        }
        Edit::Chmod(i, m) => {
            if let Some(p) = pick(i) {
                std::fs::set_permissions(p, PermissionsExt::from_mode(*m)).unwrap();
            }
        }
        Edit::FileToDir(i) => {
            if let Some(p) = pick(i) {
                std::fs::remove_file(&p).unwrap();
                std::fs::create_dir(&p).unwrap();
                std::fs::write(p.join("inner"), "inner").unwrap();
            }
        }
        Edit::SameSizeAndMtime(i) => {
            if let Some(p) = pick(i) {
                let md = std::fs::metadata(&p).unwrap();
                let mut body = std::fs::read(&p).unwrap();
                if let Some(b) = body.first_mut() {
                    *b = if *b == b'#' { b'%' } else { b'#' };
                }
                std::fs::write(&p, body).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(md.modified().unwrap())
                    .unwrap();
            }
        }
    }
}

fn copy_action() -> FileAction {
    FileAction::Copy(CopyAction {
        src: "/".into(),
        dest: "/app/".into(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        ..Default::default()
    })
}

/// Copies `src` into a new layer, taking files over from `prev` when given; returns the
/// layer's directory and the record of the copy.
fn copy(
    layers: &LayerStore,
    src: &Path,
    prev: Option<(std::path::PathBuf, StepRecord)>,
) -> (std::path::PathBuf, StepRecord, usize) {
    let pending = layers.begin().unwrap();
    let reuse = Reuse::new(prev, pending.upper());
    let opts = FileOpOptions {
        reuse: Some(&reuse),
        ..Default::default()
    };
    apply_file_actions_with(
        &pending.upper(),
        &[SourceRoot::new(src)],
        &[copy_action()],
        &opts,
    )
    .unwrap();
    let taken = reuse.taken();
    let mut record = reuse.finish();
    let id = layers.commit(pending).unwrap();
    record.layer = Some(id.clone());
    (layers.path(&id), record, taken)
}

fn diff_id(dir: &Path) -> String {
    let (_, d, _) = write_tar(dir, std::io::sink(), &DiffOptions::default()).unwrap();
    d.to_string()
}

fn seed(src: &Path) {
    for d in ["a", "b", "c/d"] {
        for f in 0..4 {
            let p = src.join(d).join(format!("f{f}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("{d} {f}\n").repeat(f + 1)).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn incremental_layers_tar_as_cold_ones(edits in prop::collection::vec(edit(), 1..8)) {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        seed(&src);
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let (mut prev_dir, mut prev_rec, _) = copy(&layers, &src, None);
        // Every layer made so far, with the diffID it had when made.
        let mut made: BTreeMap<std::path::PathBuf, String> = BTreeMap::new();
        made.insert(prev_dir.clone(), diff_id(&prev_dir));
        let mut total_taken = 0;
        for e in &edits {
            apply(&src, e);
            let (dir, rec, taken) = copy(&layers, &src, Some((prev_dir, prev_rec)));
            let (cold, _, cold_taken) = copy(&layers, &src, None);
            prop_assert_eq!(cold_taken, 0);
            prop_assert_eq!(diff_id(&dir), diff_id(&cold), "after {:?}", e);
            total_taken += taken;
            made.insert(dir.clone(), diff_id(&dir));
            (prev_dir, prev_rec) = (dir, rec);
        }
        for (dir, id) in &made {
            prop_assert_eq!(&diff_id(dir), id, "{} changed", dir.display());
        }
        // Most files are untouched by each edit: they were taken over.
        prop_assert!(total_taken >= edits.len() * 6, "only {} taken over", total_taken);
    }
}

/// [`seed`] and a 2.5 MiB file sorted first, so the tar has chunk boundaries to resume at
/// before the small files.
fn seed_big(src: &Path) {
    seed(src);
    let body: String = (0..280_000u32)
        .map(|i| format!("{:08x}\n", i.wrapping_mul(2_654_435_761)))
        .collect();
    std::fs::write(src.join("0big"), body).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn incremental_blobs_are_cold_blobs(edits in prop::collection::vec(edit(), 1..5)) {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        seed_big(&src);
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let store = ContentStore::open(d.path().join("content")).unwrap();
        let opts = DiffOptions::default();
        let (mut prev_dir, mut prev_rec, _) = copy(&layers, &src, None);
        write_layer_indexed(&prev_dir, &store, &opts).unwrap();
        for e in &edits {
            apply(&src, e);
            let (dir, rec, _) = copy(&layers, &src, Some((prev_dir, prev_rec)));
            let made = write_layer_indexed(&dir, &store, &opts).unwrap();
            let (cold, _, _) = copy(&layers, &src, None);
            let fresh = tempfile::tempdir().unwrap();
            let cold_store = ContentStore::open(fresh.path()).unwrap();
            let want = write_layer(&cold, &cold_store, &opts).unwrap();
            prop_assert_eq!(&made, &want, "after {:?}", e);
            prop_assert_eq!(
                store.read_blob(&made.blob.digest).unwrap(),
                cold_store.read_blob(&want.blob.digest).unwrap()
            );
            (prev_dir, prev_rec) = (dir, rec);
        }
    }
}
