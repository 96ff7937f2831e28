//! Target platforms (`linux/amd64`, `linux/arm64/v8`): the one platform type
//! of the build graph, the frontend (TARGETPLATFORM, `FROM --platform`) and
//! the build driver.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OS/architecture[/variant] triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v7`, `v8`, ... when given.
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(pub String);

impl Platform {
    /// Parses `os/arch[/variant]`, or `arch` alone meaning linux (as buildx
    /// does); components are lower-cased.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError(s.to_string());
        let parts: Vec<String> = s.trim().split('/').map(str::to_lowercase).collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [arch] => ("linux".to_string(), arch.clone(), None),
            [os, arch] => (os.clone(), arch.clone(), None),
            [os, arch, v] if !v.is_empty() => (os.clone(), arch.clone(), Some(v.clone())),
            _ => return Err(bad()),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !word(&os) || !word(&architecture) {
            return Err(bad());
        }
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }

    /// The platform this program runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        for bad in [
            "",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/arm64/",
            "linux/am d64",
        ] {
            assert_eq!(
                Platform::parse(bad),
                Err(PlatformError(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_is_a_valid_platform() {
        let h = Platform::host();
        assert_eq!(Platform::parse(&h.to_string()), Ok(h));
    }
}
