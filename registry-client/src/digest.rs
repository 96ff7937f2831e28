//! Content digests (`sha256:<hex>`) and a streaming verifier.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A content digest. Only sha256 is accepted: it is what every registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::InvalidDigest(s.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::InvalidDigest(s.to_string()));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The hex part (also the blob's file name in an OCI layout).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm (always `sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// A short id like docker prints (first 12 hex digits).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
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

/// Hashes bytes as they stream by and checks digest and size at the end.
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
    /// A fresh verifier.
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

    /// Bytes seen so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of everything fed.
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.written,
        )
    }

    /// Checks the content against an expected digest and size.
    pub fn verify(self, what: &str, expected: &Digest, size: Option<u64>) -> Result<()> {
        let (actual, written) = self.finish();
        if let Some(size) = size {
            if written != size {
                return Err(Error::Verification {
                    what: what.to_string(),
                    expected: format!("{size} bytes"),
                    actual: format!("{written} bytes"),
                });
            }
        }
        if &actual != expected {
            return Err(Error::Verification {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
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
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "sha256:abc",
            "md5:00",
            "2cf24dba",
            &format!("sha256:{}", "G".repeat(64)),
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
}
