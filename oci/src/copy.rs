//! Copying images from a source to a sink: walk the source, write what the sink lacks,
//! verifying every blob on the way.

use crate::descriptor::Descriptor;
use crate::error::Result;
use crate::store::{verifying, ImageSink, ImageSource};
use crate::walk::{walk_all, Partial};

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Blobs reachable from the roots.
    pub blobs: usize,
    /// Blobs written (the others were in the sink already).
    pub written: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Copies every blob reachable from `roots` that `sink` lacks, children before parents, each
/// verified against its descriptor while it streams; then names each root with its names.
pub fn copy_images(
    source: &dyn ImageSource,
    roots: &[(Descriptor, Vec<String>)],
    sink: &dyn ImageSink,
    partial: Partial,
) -> Result<CopyReport> {
    let blobs = walk_all(source, roots.iter().map(|(d, _)| d), partial)?;
    let mut report = CopyReport {
        blobs: blobs.len(),
        ..Default::default()
    };
    for desc in &blobs {
        if sink.has_blob(&desc.digest)? {
            continue;
        }
        let mut data = verifying(source.open_blob(desc)?, desc, "blob");
        sink.write_blob(desc, &mut data)?;
        report.written += 1;
        report.bytes += desc.size;
    }
    for (root, names) in roots {
        for name in names {
            sink.tag(name, root)?;
        }
    }
    Ok(report)
}
