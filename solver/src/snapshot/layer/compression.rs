//! Layer compressions: gzip (the default), zstd, none; detected on read by magic bytes.

use std::io::{self, BufRead, BufReader, Read, Write};

use kiln_oci::media_type::{
    DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
};

use crate::archive;

/// gzip level when `compression-level` is not given.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;

/// The gzip level a layer is written with for the `compression-level` given.
pub(crate) fn gzip_level(level: Option<i32>) -> u32 {
    // Default: fastest (go-containerregistry's choice too); layers are mostly
    // already-compressed binaries where level 6 buys little.
    level
        .map(|l| l.clamp(0, 9) as u32)
        .unwrap_or(DEFAULT_GZIP_LEVEL)
}

/// How a layer blob is compressed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`).
    #[default]
    Gzip,
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
}

impl Compression {
    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
            Compression::None => OCI_LAYER_TAR,
        }
    }

    /// The Docker v2 media type (zstd has none; the OCI one is returned).
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => DOCKER_LAYER_GZIP,
            Compression::None => DOCKER_LAYER_TAR,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type announces, if it is a layer type we know.
    pub fn from_media_type(s: &str) -> Option<Self> {
        if s.ends_with("+gzip") || s.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if s.ends_with("+zstd") || s.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if s.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// Parses `gzip`, `zstd`, `uncompressed`/`none` (the `compression=` export option).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "uncompressed" | "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The layer compression of a stream starting with `head`, by magic number
    /// ([`crate::archive::detect`] is the one detector). `Err` carries a compression that
    /// exists but is no layer compression (bzip2, xz). Give it 512 bytes when there are: a
    /// plain tar is recognised by its header first.
    pub fn detect(head: &[u8]) -> Result<Self, archive::Compression> {
        // A plain tar whose first name happens to start like a magic number is a tar.
        if archive::is_tar(head) {
            return Ok(Compression::None);
        }
        match archive::detect(head) {
            archive::Compression::Gzip => Ok(Compression::Gzip),
            archive::Compression::Zstd => Ok(Compression::Zstd),
            archive::Compression::None => Ok(Compression::None),
            other @ (archive::Compression::Bzip2 | archive::Compression::Xz) => Err(other),
        }
    }
}

/// How an unsupported compression is named in errors (`bzip2`, `xz`).
pub(crate) fn compression_name(kind: archive::Compression) -> String {
    format!("{kind:?}").to_lowercase()
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "uncompressed",
        })
    }
}

/// A compressing writer for one of the compressions.
pub enum Encoder<W: Write> {
    /// gzip (parallel, multi-member; see [`super::pargzip`]).
    Gzip(super::pargzip::ParallelGzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// pass-through.
    None(W),
}

impl<W: Write> Encoder<W> {
    /// Wraps `inner`; `level` is the codec's level (gzip 0-9, zstd 1-22), default when `None`.
    pub fn new(inner: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Encoder::Gzip(super::pargzip::ParallelGzEncoder::new(
                inner,
                gzip_level(level),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                inner,
                level.unwrap_or(3),
            )?),
            Compression::None => Encoder::None(inner),
        })
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// Returns a reader of the decompressed stream, detecting the compression by magic bytes.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    let compression = Compression::detect(head).map_err(|kind| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the layer is {}-compressed; layers are gzip, zstd or uncompressed tar",
                compression_name(kind)
            ),
        )
    })?;
    let out: Box<dyn Read + 'a> = match compression {
        // MultiGzDecoder: some tools write layers as several gzip members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    Ok((compression, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_compression() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut e = Encoder::new(Vec::new(), c, None).unwrap();
            e.write_all(&data).unwrap();
            let blob = e.finish().unwrap();
            assert_eq!(Compression::detect(&blob), Ok(c), "{c}");
            let (found, mut r) = decompress(&blob[..]).unwrap();
            assert_eq!(found, c);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn other_archive_compressions_are_named_not_mistaken_for_tar() {
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&b"tar bytes"[..], 1)
            .read_to_end(&mut xz)
            .unwrap();
        let mut bz = Vec::new();
        bzip2::read::BzEncoder::new(&b"tar bytes"[..], bzip2::Compression::fast())
            .read_to_end(&mut bz)
            .unwrap();
        // A plain tar whose first entry is named like bzip2's magic is still a tar.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        tar.append_data(&mut h, "BZh91AY", &[][..]).unwrap();
        let tar = tar.into_inner().unwrap();
        assert_eq!(Compression::detect(&tar), Ok(Compression::None));
        assert_eq!(decompress(&tar[..]).unwrap().0, Compression::None);
        for (blob, name) in [(xz, "xz"), (bz, "bzip2")] {
            assert!(Compression::detect(&blob).is_err(), "{name}");
            let err = decompress(&blob[..]).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(
                err.to_string().contains(&format!("is {name}-compressed")),
                "{err}"
            );
        }
    }

    #[test]
    fn media_types_map_back() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            assert_eq!(Compression::from_media_type(c.oci_media_type()), Some(c));
            assert_eq!(Compression::from_media_type(c.docker_media_type()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type(kiln_oci::media_type::OCI_CONFIG),
            None
        );
    }
}
