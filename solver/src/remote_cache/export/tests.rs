use std::fs;

use kiln_oci::media_type as mt;
use kiln_oci::validate::{validate, Options};

use super::*;
use crate::snapshot::blobs::import_layer;
use crate::snapshot::{BlobRecord, LayerRecord};

/// A state directory's stores in a temporary directory.
pub(crate) struct Stores {
    _dir: tempfile::TempDir,
    pub layers: LayerStore,
    pub content: ContentStore,
    pub meta: MetaDb,
}

impl Stores {
    pub fn new() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        Stores {
            layers: LayerStore::open(dir.path().join("layers")).unwrap(),
            content: ContentStore::open(dir.path().join("content")).unwrap(),
            meta: MetaDb::open(&dir.path().join("meta.redb")).unwrap(),
            _dir: dir,
        }
    }

    pub fn export(&self) -> ExportStores<'_> {
        ExportStores {
            layers: &self.layers,
            content: &self.content,
            meta: &self.meta,
            mounts: None,
        }
    }

    /// A layer a step made, holding `files`.
    pub fn built(&self, files: &[(&str, &str)]) -> LayerId {
        let pending = self.layers.begin().unwrap();
        for (path, data) in files {
            let p = pending.upper().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let id = self.layers.commit(pending).unwrap();
        let mut w = self.meta.writer().unwrap();
        w.put_layer(&LayerRecord::new(id.clone()), 1).unwrap();
        w.commit().unwrap();
        id
    }

    /// A base image layer pulled as a zstd blob.
    pub fn pulled_zstd(&self, file: &str) -> LayerId {
        let other = Stores::new();
        let id = other.built(&[(file, "base")]);
        let opts = DiffOptions {
            compression: Compression::Zstd,
            ..Default::default()
        };
        let made = export_layer(&other.layers, &other.content, &other.meta, &id, &opts).unwrap();
        self.content
            .put_bytes(&other.content.read_blob(&made.blob.digest).unwrap())
            .unwrap();
        import_layer(
            &self.layers,
            &self.content,
            &self.meta,
            &made.blob.digest,
            &made.diff_id,
        )
        .unwrap()
        .id
    }
}

pub(crate) fn record(n: u8, layers: &[&LayerId], description: &str) -> ExportRecord {
    ExportRecord {
        key: CacheKey([n; 32]),
        snapshot: Snapshot {
            layers: layers.iter().map(|l| (*l).clone()).collect(),
        },
        description: description.into(),
        parts: None,
        checksums: vec![],
    }
}

/// base (pulled, zstd) → a → b is the final image; base → c is another stage.
fn graph(s: &Stores) -> (Vec<ExportRecord>, Snapshot) {
    let base = s.pulled_zstd("etc/os-release");
    let a = s.built(&[("app/a", "a")]);
    let b = s.built(&[("app/b", "b")]);
    let c = s.built(&[("tools/c", "c")]);
    let records = vec![
        record(4, &[&base, &a, &b], "RUN b"),
        record(1, &[&base], "FROM base"),
        record(2, &[&base, &a], "RUN a"),
        record(3, &[&base, &c], "RUN c"),
        record(2, &[&base, &a], "RUN a (again)"),
    ];
    let final_image = records[0].snapshot.clone();
    (records, final_image)
}

fn ok(s: &Stores, image: &CacheImage) {
    let report = validate(&s.content, &image.root, Options::default()).unwrap();
    assert_eq!(report.layers, image.config.kiln.blobs.len());
}

#[test]
fn min_keeps_the_final_images_chain_and_max_every_record_each_key_once() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let min = export_cache(
        &s.export(),
        &records,
        std::slice::from_ref(&final_image),
        &ExportOptions::default(),
    )
    .unwrap();
    ok(&s, &min);
    let keys: Vec<u8> = min.config.kiln.records.iter().map(|r| r.key.0[0]).collect();
    assert_eq!(keys, [1, 2, 4], "sorted by key, the other stage left out");
    assert_eq!(
        min.config.kiln.records[1].description, "RUN a",
        "first wins"
    );
    let blobs = &min.config.kiln.blobs;
    assert_eq!(blobs.len(), 3);
    assert_eq!(min.config.kiln.records[2].layers, [0, 1, 2]);
    // The pulled layer keeps its zstd blob; built layers take the requested gzip.
    assert_eq!(blobs[0].media_type, mt::OCI_LAYER_ZSTD);
    assert_eq!(blobs[1].media_type, mt::OCI_LAYER_GZIP);
    let manifest: ImageManifest = s.content.read_json(&min.root.digest).unwrap();
    assert_eq!(min.root.media_type, mt::OCI_MANIFEST);
    assert_eq!(manifest.config.media_type, mt::BUILDKIT_CACHE_CONFIG);
    for (desc, blob) in manifest.layers.iter().zip(blobs) {
        assert_eq!(desc.digest, blob.digest);
        assert_eq!(
            desc.annotation(mt::ANNOTATION_UNCOMPRESSED),
            Some(blob.diff_id.as_ref())
        );
    }
    let read = CacheConfig::parse(
        "test",
        &s.content.read_blob(&manifest.config.digest).unwrap(),
    );
    assert_eq!(read.unwrap(), min.config);
    assert_eq!(min.blobs.len(), 4, "three layers and the config");

    let max = export_cache(
        &s.export(),
        &records,
        &[final_image],
        &ExportOptions {
            mode: CacheMode::Max,
            ..Default::default()
        },
    )
    .unwrap();
    ok(&s, &max);
    let keys: Vec<u8> = max.config.kiln.records.iter().map(|r| r.key.0[0]).collect();
    assert_eq!(keys, [1, 2, 3, 4]);
    assert_eq!(max.config.kiln.blobs.len(), 4);
}

#[test]
fn an_unchanged_cache_exports_the_same_bytes() {
    let s = Stores::new();
    let (mut records, final_image) = graph(&s);
    let opts = ExportOptions {
        mode: CacheMode::Max,
        ..Default::default()
    };
    records.pop(); // the duplicate: its description would win once reversed
    let first = export_cache(
        &s.export(),
        &records,
        std::slice::from_ref(&final_image),
        &opts,
    )
    .unwrap();
    records.reverse();
    let again = export_cache(&s.export(), &records, &[final_image], &opts).unwrap();
    assert_eq!(first.root, again.root);
}

#[test]
fn the_index_shape_and_docker_media_types() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let finals = [final_image];
    let index = ExportOptions {
        image_manifest: false,
        ..Default::default()
    };
    let oci = export_cache(&s.export(), &records, &finals, &index).unwrap();
    ok(&s, &oci);
    assert_eq!(oci.root.media_type, mt::OCI_INDEX);
    let idx: ImageIndex = s.content.read_json(&oci.root.digest).unwrap();
    assert_eq!(idx.manifests.len(), 4);
    assert_eq!(idx.manifests[3].media_type, mt::BUILDKIT_CACHE_CONFIG);

    let docker_opts = ExportOptions {
        oci_media_types: false,
        ..index
    };
    let docker = export_cache(&s.export(), &records, &finals, &docker_opts).unwrap();
    assert_eq!(docker.root.media_type, mt::DOCKER_MANIFEST_LIST);
    let idx: ImageIndex = s.content.read_json(&docker.root.digest).unwrap();
    assert_eq!(idx.manifests[1].media_type, mt::DOCKER_LAYER_GZIP);
    assert_eq!(
        idx.manifests[0].media_type,
        mt::OCI_LAYER_ZSTD,
        "zstd has no Docker type"
    );

    let refused = ExportOptions {
        oci_media_types: false,
        ..Default::default()
    };
    let err = export_cache(&s.export(), &records, &finals, &refused).unwrap_err();
    assert!(
        matches!(err, RemoteCacheError::ImageManifestNeedsOci),
        "{err}"
    );
}

#[test]
fn forced_compression_recompresses_the_pulled_layer() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let opts = ExportOptions {
        force_compression: true,
        ..Default::default()
    };
    let image = export_cache(&s.export(), &records, &[final_image], &opts).unwrap();
    ok(&s, &image);
    assert!(image
        .config
        .kiln
        .blobs
        .iter()
        .all(|b| b.media_type == mt::OCI_LAYER_GZIP));
}

#[test]
fn a_lazily_imported_layer_is_listed_with_the_blob_it_came_as() {
    let s = Stores::new();
    let diff_id = Digest::of(b"tar");
    let id = LayerId::for_diff_id(&diff_id);
    let blob = BlobRecord {
        digest: Digest::of(b"blob"),
        size: 42,
        compression: Compression::Gzip,
    };
    let mut w = s.meta.writer().unwrap();
    w.put_layer(
        &LayerRecord {
            id: id.clone(),
            diff_id: Some(diff_id.clone()),
            size: None,
            blobs: vec![blob.clone()],
        },
        1,
    )
    .unwrap();
    w.commit().unwrap();
    let r = record(1, &[&id], "RUN x");
    let image = export_cache(
        &s.export(),
        std::slice::from_ref(&r),
        std::slice::from_ref(&r.snapshot),
        &ExportOptions::default(),
    )
    .unwrap();
    let b = &image.config.kiln.blobs[0];
    assert_eq!(
        (&b.digest, b.size, &b.diff_id),
        (&blob.digest, 42, &diff_id)
    );
}

#[test]
fn an_inline_cache_names_the_images_own_layers() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let layers: Vec<(Descriptor, Digest)> = (0..3)
        .map(|n| {
            (
                Descriptor::new(mt::OCI_LAYER_GZIP, Digest::of(&[n]), 1),
                Digest::of(&[n, n]),
            )
        })
        .collect();
    let config = inline_config(&records, &final_image, &layers);
    let got: Vec<(u8, Vec<usize>)> = config
        .kiln
        .records
        .iter()
        .map(|r| (r.key.0[0], r.layers.clone()))
        .collect();
    assert_eq!(got, [(1, vec![0]), (2, vec![0, 1]), (4, vec![0, 1, 2])]);
    assert_eq!(config.kiln.blobs[2].diff_id, Digest::of(&[2, 2]));
    let parsed = CacheConfig::parse("inline", &config.to_bytes()).unwrap();
    assert_eq!(parsed, config);
}

#[test]
fn the_oracle_catches_a_cache_layer_whose_annotated_diff_id_is_wrong() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let image = export_cache(
        &s.export(),
        &records,
        &[final_image],
        &ExportOptions::default(),
    )
    .unwrap();
    let mut manifest: ImageManifest = s.content.read_json(&image.root.digest).unwrap();
    manifest.layers[1] = manifest.layers[1]
        .clone()
        .with_annotation(mt::ANNOTATION_UNCOMPRESSED, Digest::of(b"x").as_ref());
    let bad = s.content.put_json(mt::OCI_MANIFEST, &manifest).unwrap();
    let problems = validate(&s.content, &bad, Options::default()).unwrap_err();
    assert!(problems.to_string().contains("says diff_id"), "{problems}");
}

#[test]
fn forcing_another_compression_on_a_lazy_layer_unpacks_its_fetched_blob() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let first = export_cache(
        &s.export(),
        &records,
        std::slice::from_ref(&final_image),
        &ExportOptions::default(),
    )
    .unwrap();
    // Another state holds the pulled (zstd) layer lazily: recorded, its blob fetched, no
    // directory.
    let other = Stores::new();
    let base = &first.config.kiln.blobs[0];
    let id = LayerId::for_diff_id(&base.diff_id);
    other
        .content
        .put_bytes(&s.content.read_blob(&base.digest).unwrap())
        .unwrap();
    let mut w = other.meta.writer().unwrap();
    w.put_layer(
        &LayerRecord {
            id: id.clone(),
            diff_id: Some(base.diff_id.clone()),
            size: None,
            blobs: vec![BlobRecord {
                digest: base.digest.clone(),
                size: base.size,
                compression: Compression::Zstd,
            }],
        },
        1,
    )
    .unwrap();
    w.commit().unwrap();
    let r = record(9, &[&id], "FROM base");
    let opts = ExportOptions {
        force_compression: true,
        ..Default::default()
    };
    let image = export_cache(
        &other.export(),
        std::slice::from_ref(&r),
        std::slice::from_ref(&r.snapshot),
        &opts,
    )
    .unwrap();
    ok(&other, &image);
    assert_eq!(image.config.kiln.blobs[0].media_type, mt::OCI_LAYER_GZIP);
    assert!(other.layers.exists(&id));
}

#[test]
fn a_cache_mount_blob_gets_docker_media_types_with_the_layers() {
    let s = Stores::new();
    let (records, final_image) = graph(&s);
    let mounts_dir = tempfile::tempdir().unwrap();
    let mounts = crate::mounts::cache::CacheMounts::new(mounts_dir.path()).unwrap();
    let lease = mounts
        .acquire("/root/.cache", Default::default(), 0o755, 0, 0)
        .unwrap();
    std::fs::write(lease.dir().join("pkg"), b"downloaded").unwrap();
    drop(lease);
    let stores = ExportStores {
        mounts: Some(&mounts),
        ..s.export()
    };
    let opts = ExportOptions {
        image_manifest: false,
        oci_media_types: false,
        cache_mounts: vec!["/root/.cache".into()],
        ..Default::default()
    };
    let image = export_cache(&stores, &records, &[final_image], &opts).unwrap();
    let mount = &image.config.kiln.mounts[0];
    assert_eq!(mount.id, "/root/.cache");
    assert_eq!(
        image.config.kiln.blobs[mount.blob].media_type,
        mt::DOCKER_LAYER_GZIP
    );
}
