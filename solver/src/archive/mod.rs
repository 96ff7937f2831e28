//! Archives as users hand them to kiln: build contexts as tarballs, `ADD`
//! sources that are archives, `kiln load` input. Compression is detected by
//! magic number, never by file name.

mod compression;
mod extract;

pub use compression::{decompress, detect, Compression};
pub use extract::{extract_tar, extract_tar_as_caller, is_tar, ExtractError};
