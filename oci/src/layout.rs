//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`) as an image
//! source and sink: what `skopeo oci:DIR:TAG`, `-o type=oci,tar=false` and `oci-layout://`
//! build contexts read and write. Names follow containerd and BuildKit:
//! `org.opencontainers.image.ref.name` holds the tag, `io.containerd.image.name` the full name.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::ImageIndex;
use crate::media_type::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_INDEX};
use crate::reference::Reference;
use crate::store::{write_file_from, ImageSink, ImageSource, MAX_DOCUMENT_SIZE};

/// The `oci-layout` file kiln writes.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI layout directory.
#[derive(Debug, Clone)]
pub struct LayoutDir {
    root: PathBuf,
}

/// An image of a layout with the names its index entries give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutImage {
    /// The root manifest or index, without the naming annotations.
    pub root: Descriptor,
    /// Full names (`io.containerd.image.name`, or a `ref.name` that is a reference).
    pub names: Vec<Reference>,
    /// Bare `ref.name` tags that are not references.
    pub tags: Vec<String>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::store(context, e)
}

impl LayoutDir {
    /// Opens the layout at `root` to read it (nothing is created).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let index = root.join("index.json");
        if !index.is_file() {
            return Err(Error::store(
                format!("{} is not an OCI layout", root.display()),
                "it has no index.json",
            ));
        }
        Ok(LayoutDir { root })
    }

    /// Opens the layout at `root`, creating `blobs/sha256/`, `oci-layout` and an empty
    /// `index.json` where missing, to write into it.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
        let layout = LayoutDir { root };
        if !layout.root.join("oci-layout").exists() {
            layout.write_file("oci-layout", OCI_LAYOUT_FILE)?;
        }
        if !layout.root.join("index.json").exists() {
            layout.write_index(&ImageIndex::new(OCI_INDEX, Vec::new()))?;
        }
        Ok(layout)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let len = fs::metadata(&path)
            .map_err(io(format!("reading {}", path.display())))?
            .len();
        if len > MAX_DOCUMENT_SIZE {
            return Err(Error::store(
                format!("reading {}", path.display()),
                format!("{len} bytes is too large for an index"),
            ));
        }
        let bytes = fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest {
            reference: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = serde_json::to_vec(index).map_err(|e| Error::store("writing index.json", e))?;
        self.write_file("index.json", &bytes)
    }

    /// Writes a file of the layout atomically (temporary file, fsync, rename).
    fn write_file(&self, name: &str, data: &[u8]) -> Result<()> {
        let path = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.kiln-tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io(format!("writing {}", path.display())))
    }

    /// The images of `index.json` with their names, one entry per root (entries naming the
    /// same root are merged).
    pub fn images(&self) -> Result<Vec<LayoutImage>> {
        let mut out: Vec<LayoutImage> = Vec::new();
        for mut d in self.index()?.manifests {
            let mut ann = d.annotations.take().unwrap_or_default();
            let full = ann.remove(ANNOTATION_IMAGE_NAME);
            let ref_name = ann.remove(ANNOTATION_REF_NAME);
            d.annotations = (!ann.is_empty()).then_some(ann);
            let (name, tag) = match (full.and_then(|n| Reference::parse(&n).ok()), ref_name) {
                (Some(n), _) => (Some(n), None),
                (None, Some(r)) if r.contains('/') || r.contains(':') => {
                    (Reference::parse(&r).ok(), None)
                }
                (None, r) => (None, r),
            };
            let at = match out.iter().position(|i| i.root.digest == d.digest) {
                Some(at) => at,
                None => {
                    out.push(LayoutImage {
                        root: d,
                        names: Vec::new(),
                        tags: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[at].names.extend(name);
            out[at].tags.extend(tag);
        }
        Ok(out)
    }

    /// Adds an unnamed entry for `root` (once).
    pub fn add_unnamed(&self, root: &Descriptor) -> Result<()> {
        let mut index = self.index()?;
        if !index
            .manifests
            .iter()
            .any(|d| d.digest == root.digest && d.annotation(ANNOTATION_REF_NAME).is_none())
        {
            index.manifests.push(root.clone());
            self.write_index(&index)?;
        }
        Ok(())
    }
}

/// The index entry naming `root` `name`: a reference gets its tag as `ref.name` and its
/// full name as `io.containerd.image.name`; a bare tag only `ref.name`.
pub fn named_entry(root: &Descriptor, name: &str) -> Descriptor {
    match Reference::parse(name) {
        Ok(r) if name.contains('/') || name.contains(':') || name.contains('@') => root
            .clone()
            .with_annotation(ANNOTATION_IMAGE_NAME, &r.to_string())
            .with_annotation(ANNOTATION_REF_NAME, r.tag().unwrap_or("latest")),
        _ => root.clone().with_annotation(ANNOTATION_REF_NAME, name),
    }
}

impl ImageSource for LayoutDir {
    fn resolve(&self, name: &str) -> Result<Descriptor> {
        let images = self.images()?;
        let wanted = Reference::parse(name).ok();
        let found = images.iter().find(|i| {
            i.tags.iter().any(|t| t == name)
                || i.names
                    .iter()
                    .any(|n| Some(n) == wanted.as_ref() || n.tag() == Some(name))
        });
        match (found, images.as_slice()) {
            (Some(i), _) => Ok(i.root.clone()),
            (None, [only]) if name.is_empty() => Ok(only.root.clone()),
            _ => Err(Error::store(
                format!("{}: no image named {name:?}", self.root.display()),
                format!("the layout has {} image(s)", images.len()),
            )),
        }
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest).is_file())
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>> {
        let path = self.blob_path(&desc.digest);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing {
                digest: desc.digest.clone(),
                what: format!("{} in {}", desc.media_type, self.root.display()),
            }),
            Err(e) => Err(Error::store(format!("opening {}", path.display()), e)),
        }
    }
}

impl ImageSink for LayoutDir {
    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest).is_file())
    }

    fn write_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let dest = self.blob_path(&desc.digest);
        let tmp = dest.with_file_name(format!(".{}.kiln-tmp", desc.digest.hex()));
        let context = format!("writing {}", dest.display());
        write_file_from(&tmp, data, &context)?;
        fs::rename(&tmp, &dest).map_err(io(context))
    }

    /// Replaces the entry of the same `ref.name` (skopeo's rule), keeping the others.
    fn tag(&self, name: &str, root: &Descriptor) -> Result<()> {
        let entry = named_entry(root, name);
        let tag = entry.annotation(ANNOTATION_REF_NAME).map(str::to_string);
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_string) != tag);
        index.manifests.push(entry);
        self.write_index(&index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::copy_images;
    use crate::manifest::ImageManifest;
    use crate::media_type::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
    use crate::walk::{walk, Partial};

    /// A layout holding one image (a config, one layer, the manifest), tagged `app:1`.
    fn one_image(dir: &Path) -> (LayoutDir, Descriptor) {
        let l = LayoutDir::create(dir).unwrap();
        let put = |mt: &str, data: &[u8]| {
            let d = Descriptor::of(mt, data);
            l.write_blob(&d, &mut &data[..]).unwrap();
            d
        };
        let layer = put(OCI_LAYER_TAR, b"layer bytes");
        let config = put(OCI_CONFIG, br#"{"architecture":"amd64","os":"linux"}"#);
        let m = ImageManifest::new(OCI_MANIFEST, config, vec![layer]);
        let root = put(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
        l.tag("example.com/app:1", &root).unwrap();
        (l, root)
    }

    #[test]
    fn walks_children_first_and_copies_verified() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let (src, root) = one_image(&d.join("src"));
        let blobs = walk(&src, &root, Partial::Refuse).unwrap();
        assert_eq!(blobs.len(), 3);
        assert_eq!(blobs.last(), Some(&root));
        assert_eq!(
            src.resolve("example.com/app:1").unwrap(),
            root_without_names(&root)
        );
        assert_eq!(src.resolve("1").unwrap().digest, root.digest);

        let dst = LayoutDir::create(d.join("dst")).unwrap();
        let report = copy_images(
            &src,
            &[(root.clone(), vec!["other:2".into()])],
            &dst,
            Partial::Refuse,
        )
        .unwrap();
        assert_eq!((report.blobs, report.written), (3, 3));
        let again = copy_images(&src, &[(root.clone(), vec![])], &dst, Partial::Refuse).unwrap();
        assert_eq!(again.written, 0, "nothing is written twice");
        assert_eq!(dst.resolve("2").unwrap().digest, root.digest);
        let images = dst.images().unwrap();
        assert_eq!(images[0].names[0].to_string(), "docker.io/library/other:2");
    }

    #[test]
    fn a_tampered_blob_is_refused_and_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let (src, root) = one_image(&d.join("src"));
        let m: ImageManifest =
            serde_json::from_slice(&fs::read(src.blob_path(&root.digest)).unwrap()).unwrap();
        fs::write(src.blob_path(&m.layers[0].digest), b"layer bytez").unwrap();
        let dst = LayoutDir::create(d.join("dst")).unwrap();
        let err = copy_images(&src, &[(root, vec![])], &dst, Partial::Refuse).unwrap_err();
        assert!(matches!(err, Error::Verification { .. }), "{err}");
        assert!(!ImageSink::has_blob(&dst, &m.layers[0].digest).unwrap());
        let names: Vec<String> = fs::read_dir(d.join("dst/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with("kiln-tmp")),
            "temporary file left: {names:?}"
        );
    }

    #[test]
    fn a_missing_layer_is_named() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let (src, root) = one_image(&d.join("src"));
        let m: ImageManifest =
            serde_json::from_slice(&fs::read(src.blob_path(&root.digest)).unwrap()).unwrap();
        fs::remove_file(src.blob_path(&m.layers[0].digest)).unwrap();
        let err = walk(&src, &root, Partial::Refuse).unwrap_err();
        assert!(
            matches!(&err, Error::Missing { digest, .. } if *digest == m.layers[0].digest),
            "{err}"
        );
    }

    #[test]
    fn an_absent_foreign_layer_is_left_out_of_the_walk() {
        use crate::media_type::DOCKER_FOREIGN_LAYER_GZIP;
        let d = tempfile::tempdir().unwrap();
        let l = LayoutDir::create(d.path()).unwrap();
        let put = |mt: &str, data: &[u8]| {
            let d = Descriptor::of(mt, data);
            l.write_blob(&d, &mut &data[..]).unwrap();
            d
        };
        let here = put(OCI_LAYER_TAR, b"layer bytes");
        let config = put(OCI_CONFIG, br#"{"architecture":"amd64","os":"windows"}"#);
        let mut foreign = Descriptor::of(DOCKER_FOREIGN_LAYER_GZIP, b"base layer");
        foreign.urls = Some(vec!["https://example.com/base".into()]);
        let m = ImageManifest::new(OCI_MANIFEST, config.clone(), vec![foreign, here.clone()]);
        let root = put(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
        let blobs = walk(&l, &root, Partial::Refuse).unwrap();
        assert_eq!(blobs, [config, here, root]);
    }

    fn root_without_names(d: &Descriptor) -> Descriptor {
        Descriptor {
            annotations: None,
            ..d.clone()
        }
    }
}
