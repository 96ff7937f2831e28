//! The reachable-blob walk, written once: what a manifest or index refers to, and every blob
//! reachable from a root, children before their parents (the order a sink must receive them).

use std::collections::HashSet;
use std::io::Read;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::media_type::{is_foreign_layer, is_index, is_manifest};
use crate::store::{read_verified, ImageSource, MAX_DOCUMENT_SIZE};

/// The descriptors a manifest or index document refers to: an image's config and layers, an
/// index's manifests, and the subject of either. `desc` is the document's own descriptor
/// (its media type decides how `bytes` are read when the document does not say).
pub fn children(desc: &Descriptor, bytes: &[u8]) -> Result<Vec<Descriptor>> {
    let (manifest, _) = Manifest::parse(desc.digest.as_ref(), bytes, Some(&desc.media_type))?;
    Ok(match manifest {
        Manifest::Image(m) => std::iter::once(m.config)
            .chain(m.layers)
            .chain(m.subject)
            .collect(),
        Manifest::Index(i) => i.manifests.into_iter().chain(i.subject).collect(),
    })
}

/// Whether a descriptor points at a document that can refer to other blobs.
pub fn may_refer(desc: &Descriptor) -> bool {
    is_index(&desc.media_type) || is_manifest(&desc.media_type)
}

/// What a walk does with an index entry the source does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// Every blob must be there.
    Refuse,
    /// An index's images that were not pulled are left out (a pull of one platform keeps the
    /// whole index); everything an included image refers to must still be there.
    SkipMissingImages,
}

/// Every blob reachable from `root` in `source`, each once, children before parents (layers
/// and config, then their manifest, then the index), `root` last. Manifests and indexes are
/// read and verified; layers and configs are not read.
pub fn walk(
    source: &dyn ImageSource,
    root: &Descriptor,
    partial: Partial,
) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    visit(source, root, partial, &mut seen, &mut out, 0)?;
    Ok(out)
}

/// The blobs of several roots (an archive of many images), each once.
pub fn walk_all<'a>(
    source: &dyn ImageSource,
    roots: impl IntoIterator<Item = &'a Descriptor>,
    partial: Partial,
) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for root in roots {
        visit(source, root, partial, &mut seen, &mut out, 0)?;
    }
    Ok(out)
}

/// Nesting deeper than this (an index of indexes of …) is refused: real images nest twice.
const MAX_DEPTH: usize = 8;

fn visit(
    source: &dyn ImageSource,
    desc: &Descriptor,
    partial: Partial,
    seen: &mut HashSet<Digest>,
    out: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<()> {
    if !seen.insert(desc.digest.clone()) {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(crate::Error::BadManifest {
            reference: desc.digest.to_string(),
            reason: format!("indexes nested more than {MAX_DEPTH} deep"),
        });
    }
    if !may_refer(desc) {
        return leaf(desc, source.has_blob(&desc.digest)?, out);
    }
    let bytes = read_verified(source, desc, "manifest")?;
    let children = children(desc, &bytes)?;
    // A document's config and layers are asked about at once: a registry answers in parallel.
    let leaves: Vec<Digest> = children
        .iter()
        .filter(|c| !may_refer(c) && !seen.contains(&c.digest))
        .map(|c| c.digest.clone())
        .collect();
    let held = source.has_blobs(&leaves)?;
    let present: HashSet<&Digest> = leaves
        .iter()
        .zip(held)
        .filter_map(|(d, has)| has.then_some(d))
        .collect();
    let index = is_index(&desc.media_type);
    for child in &children {
        if may_refer(child) {
            let skip = index
                && partial == Partial::SkipMissingImages
                && !source.has_blob(&child.digest)?;
            if !skip {
                visit(source, child, partial, seen, out, depth + 1)?;
            }
        } else if seen.insert(child.digest.clone()) {
            leaf(child, present.contains(&child.digest), out)?;
        }
    }
    out.push(desc.clone());
    Ok(())
}

/// A blob that refers to nothing: walked when present; an absent foreign (non-distributable)
/// layer is left out, as whoever runs the image fetches it from its URLs; any other is missing.
fn leaf(desc: &Descriptor, present: bool, out: &mut Vec<Descriptor>) -> Result<()> {
    if present {
        out.push(desc.clone());
    } else if !is_foreign_layer(&desc.media_type) {
        return Err(crate::Error::Missing {
            digest: desc.digest.clone(),
            what: desc.media_type.clone(),
        });
    }
    Ok(())
}

/// The digests a JSON document refers to, read leniently (any `config`, `subject`, and entries
/// of `layers`, `manifests`, `blobs`), each with whether it may itself refer to others (layers
/// never do). For garbage collection, which must keep whatever might be referenced, also by
/// documents kiln cannot copy (artifacts, unknown media types).
pub fn referenced(bytes: &[u8]) -> Vec<(Digest, bool)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let digest = |d: &serde_json::Value| {
        d.get("digest")
            .and_then(|x| x.as_str())
            .and_then(|s| Digest::parse(s).ok())
    };
    let mut out = Vec::new();
    for (key, may_refer) in [("manifests", true), ("layers", false), ("blobs", true)] {
        for d in v.get(key).and_then(|x| x.as_array()).into_iter().flatten() {
            out.extend(digest(d).map(|d| (d, may_refer)));
        }
    }
    for key in ["config", "subject"] {
        out.extend(v.get(key).and_then(digest).map(|d| (d, true)));
    }
    out
}

/// Every digest reachable from `roots` through [`referenced`], present in `source` or not
/// (a missing blob is kept in the set and not followed; documents over
/// [`MAX_DOCUMENT_SIZE`] are not read).
pub fn reachable(
    source: &dyn ImageSource,
    roots: impl IntoIterator<Item = Descriptor>,
) -> Result<HashSet<Digest>> {
    let mut seen = HashSet::new();
    let mut stack: Vec<(Descriptor, bool)> = roots
        .into_iter()
        .map(|d| {
            let follow = d.media_type.is_empty()
                || d.media_type.contains("manifest")
                || d.media_type.contains("index");
            (d, follow)
        })
        .collect();
    while let Some((desc, follow)) = stack.pop() {
        if !seen.insert(desc.digest.clone()) || !follow || !source.has_blob(&desc.digest)? {
            continue;
        }
        let mut bytes = Vec::new();
        source
            .open_blob(&desc)?
            .take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| crate::Error::store(format!("reading {}", desc.digest), e))?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            continue;
        }
        for (digest, may_refer) in referenced(&bytes) {
            stack.push((Descriptor::new("", digest, 0), may_refer));
        }
    }
    Ok(seen)
}
