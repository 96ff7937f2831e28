//! Stream compressions seen in container tooling, detected by magic number.

use std::io::{self, BufReader, Read};

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// The compression whose magic number starts `head`.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its first bytes call for; returns the
/// compression found too.
pub fn decompress<'a, R: Read + Send + 'a>(
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    // Peek the magic by reading it out and putting it back in front, which
    // works on pipes whose first read may be short.
    let mut head = Vec::with_capacity(6);
    while head.len() < 6 {
        let mut buf = [0u8; 6];
        let got = reader.read(&mut buf[..6 - head.len()])?;
        if got == 0 {
            break;
        }
        head.extend_from_slice(&buf[..got]);
    }
    let kind = detect(&head);
    let whole = BufReader::with_capacity(64 * 1024, io::Cursor::new(head).chain(reader));
    let reader: Box<dyn Read + Send + 'a> = match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(whole)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(whole)?),
    };
    Ok((kind, reader))
}
