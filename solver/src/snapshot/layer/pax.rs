//! PAX extended headers carrying xattrs (`SCHILY.xattr.<name>`), as Docker and BuildKit write them.

use std::io::{self, Write};

/// The PAX key prefix for extended attributes.
pub const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Encodes one PAX record: `<len> <key>=<value>\n`, where `len` counts the whole record.
pub fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = 1 + key.len() + 1 + value.len() + 1;
    let mut len = base + 1;
    // The length includes its own digits; grow until it is a fixed point.
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Appends a PAX `x` header holding `records` (already encoded) to a tar stream.
pub fn append_pax_header<W: Write>(
    builder: &mut tar::Builder<W>,
    records: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_path("PaxHeaders/entry")?;
    header.set_size(records.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_cksum();
    builder.append(&header, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_counts_itself() {
        let r = record("SCHILY.xattr.user.a", b"1");
        let s = String::from_utf8(r.clone()).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
        // Crossing a digit boundary: base 97 needs 99 with two digits, base 98 needs 101.
        for n in 90..110 {
            let r = record("k", &vec![b'v'; n]);
            let s = String::from_utf8(r.clone()).unwrap();
            let (len, _) = s.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "value length {n}");
        }
    }
}
