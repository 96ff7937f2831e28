//! The content store as an image source and sink: pulls, loads and builds write into it,
//! pushes, saves and exports read from it. Names are full normalised references.

use std::io::Read;

use kiln_oci::store::io_to_error;
use kiln_oci::{Descriptor, Digest, ImageSink, ImageSource};

use super::{ContentError, ContentStore, Expected};

fn oci_err(context: impl Into<String>) -> impl FnOnce(ContentError) -> kiln_oci::Error {
    let context = context.into();
    move |e| kiln_oci::Error::store(context, e)
}

impl ImageSource for ContentStore {
    fn resolve(&self, name: &str) -> kiln_oci::Result<Descriptor> {
        self.resolve(name)
            .map_err(oci_err(format!("looking up {name}")))?
            .ok_or_else(|| {
                kiln_oci::Error::store(
                    format!("looking up {name}"),
                    "no such image in the local store",
                )
            })
    }

    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        self.exists(digest).map_err(oci_err("local store"))
    }

    fn open_blob(&self, desc: &Descriptor) -> kiln_oci::Result<Box<dyn Read + '_>> {
        match self.open_blob(&desc.digest) {
            Ok(f) => Ok(Box::new(f)),
            Err(ContentError::NotFound(digest)) => Err(kiln_oci::Error::Missing {
                digest,
                what: format!("{} in the local store", desc.media_type),
            }),
            Err(e) => Err(oci_err(format!("opening blob {}", desc.digest))(e)),
        }
    }
}

impl ImageSink for ContentStore {
    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        self.exists(digest).map_err(oci_err("local store"))
    }

    fn write_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> kiln_oci::Result<()> {
        let context = format!("storing blob {}", desc.digest);
        let mut ingest = self
            .ingest(Expected::exact(desc.digest.clone(), desc.size))
            .map_err(oci_err(context.clone()))?;
        std::io::copy(data, &mut ingest).map_err(|e| io_to_error(e, &context))?;
        ingest.commit().map_err(oci_err(context))?;
        Ok(())
    }

    fn tag(&self, name: &str, root: &Descriptor) -> kiln_oci::Result<()> {
        self.set_tag(name, root)
            .map_err(oci_err(format!("tagging {name}")))
    }
}
