//! Content digests in OCI form (`sha256:<hex>`): parsing, computing, and verifying while
//! streaming. kiln stores and trusts sha256 only (as the distribution registry does by default).

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// `sha256:<hex>`, as written.
    text: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidDigest(s.to_string());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        Self::from_hex(hex).ok_or_else(bad)
    }

    /// The digest whose hex part is `hex`, if it is 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest {
            text: format!("sha256:{hex}"),
        })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    fn from_hasher(h: Sha256) -> Self {
        Digest {
            text: format!("sha256:{}", hex::encode(h.finalize())),
        }
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.text["sha256:".len()..]
    }

    /// The algorithm (`sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The first 12 hex digits, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Digest::parse(&s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts bytes as they stream past, then checks them against a descriptor.
#[derive(Clone)]
pub struct Verifier {
    hasher: Sha256,
    written: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Verifier {
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.written += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest and size of everything fed.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.written)
    }

    /// Checks what was fed against `expected` (and `size` when known); `what` names the
    /// content in the error.
    pub fn verify(self, what: &str, expected: &Digest, size: Option<u64>) -> Result<()> {
        let (actual, written) = self.finish();
        let mismatch = |expected: String, actual: String| Error::Verification {
            what: what.to_string(),
            expected,
            actual,
        };
        if let Some(size) = size.filter(|s| *s != written) {
            return Err(mismatch(
                format!("{size} bytes"),
                format!("{written} bytes"),
            ));
        }
        if &actual != expected {
            return Err(mismatch(expected.to_string(), actual.to_string()));
        }
        Ok(())
    }
}

/// A writer that hashes and counts everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    verifier: Verifier,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            verifier: Verifier::new(),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.verifier.written()
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let (digest, n) = self.verifier.finish();
        (self.inner, digest, n)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.verifier.update(buf.get(..n).unwrap_or(buf));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    verifier: Verifier,
}

impl<R: io::Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            verifier: Verifier::new(),
        }
    }

    /// Returns the inner reader, the digest and the byte count of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let (digest, n) = self.verifier.finish();
        (self.inner, digest, n)
    }

    /// Returns the inner reader after checking what was read against `expected`.
    pub fn verify(self, what: &str, expected: &Digest, size: Option<u64>) -> Result<R> {
        self.verifier.verify(what, expected, size)?;
        Ok(self.inner)
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(done) = buf.get(..n) {
            self.verifier.update(done);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&s).unwrap(), d);
        assert_eq!(d.short(), "2cf24dba5fb0");
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "sha256:abc",
            "md5:00",
            "2cf24dba",
            &format!("sha512:{}", "a".repeat(128)),
            &format!("sha256:{}", "G".repeat(64)),
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verifier_catches_truncation_and_tampering() {
        let d = Digest::of(b"hello world");
        let mut v = Verifier::new();
        v.update(b"hello ");
        assert!(v.clone().verify("blob", &d, Some(11)).is_err());
        v.update(b"world");
        assert!(v.clone().verify("blob", &d, Some(11)).is_ok());
        let mut t = Verifier::new();
        t.update(b"hello worle");
        let err = t.verify("blob", &d, Some(11)).unwrap_err();
        assert!(err.to_string().contains("verification failed"));
    }

    #[test]
    fn hashing_writer_and_reader_match_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!((buf.as_slice(), n), (&b"hello world"[..], 11));
        assert_eq!(d, Digest::of(b"hello world"));
        let mut r = HashingReader::new(&b"hello world"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert!(r.verify("blob", &d, Some(11)).is_ok());
    }
}
