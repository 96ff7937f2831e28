//! `--cache-to` and `--cache-from` in buildx's syntax: CSV `key=value` pairs (the `-o`
//! parser's CSV), a bare value meaning `type=registry,ref=VALUE`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_oci::{Digest, Reference};
use kiln_solver::remote_cache::{CacheMode, ExportOptions};
use kiln_solver::snapshot::layer::Compression;
use thiserror::Error;

/// A bad `--cache-to` / `--cache-from` value.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid {flag} {spec:?}: {reason}")]
pub struct CacheSpecError {
    /// `--cache-to` or `--cache-from`.
    pub flag: &'static str,
    /// The value as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Where a cache is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry image (`type=registry,ref=`; for `--cache-from` also an image carrying an
    /// inline cache).
    Registry(Reference),
    /// An OCI layout directory (`type=local,dest=|src=`), its image named `tag`.
    Local {
        /// The layout directory.
        dir: PathBuf,
        /// The `ref.name` of the cache image in `index.json` (`tag=`, default `latest`).
        tag: String,
        /// `digest=` (`--cache-from` only): the cache image's root, instead of the tag.
        digest: Option<Digest>,
    },
    /// Into the final image's config (`--cache-to type=inline`).
    Inline,
}

impl CacheLocation {
    /// The location as messages name it: the reference, the directory and tag, `inline`.
    pub fn describe(&self) -> String {
        match self {
            CacheLocation::Registry(r) => r.to_string(),
            CacheLocation::Local { dir, tag, digest } => match digest {
                Some(d) => format!("{}@{d}", dir.display()),
                None => format!("{}:{tag}", dir.display()),
            },
            CacheLocation::Inline => "inline".to_string(),
        }
    }
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    /// The value as given (for messages).
    pub spec: String,
    /// Where the cache goes.
    pub location: CacheLocation,
    /// How it is written (`cache_mounts` is empty here: `all_mounts` says whether the build's
    /// cache mounts travel, their ids being known only once the graph is).
    pub options: ExportOptions,
    /// `cache-mounts=true`: the build's cache mounts are exported too.
    pub all_mounts: bool,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    /// The value as given (for messages).
    pub spec: String,
    /// Where the cache is read.
    pub location: CacheLocation,
    /// `ignore-error=true`: a source that cannot be read is a warning.
    pub ignore_error: bool,
}

/// The backends buildx knows that kiln does not.
const UNSUPPORTED: &[&str] = &["gha", "s3", "azblob"];

/// Attributes each direction and type takes besides `type`.
fn allowed(to: bool, kind: &str) -> &'static [&'static str] {
    match (to, kind) {
        (true, "registry") => &[
            "ref",
            "mode",
            "image-manifest",
            "oci-mediatypes",
            "compression",
            "compression-level",
            "force-compression",
            "ignore-error",
            "cache-mounts",
        ],
        (true, "local") => &[
            "dest",
            "tag",
            "mode",
            "image-manifest",
            "oci-mediatypes",
            "compression",
            "compression-level",
            "force-compression",
            "ignore-error",
            "cache-mounts",
        ],
        (true, "inline") => &["mode", "ignore-error"],
        (false, "registry") => &["ref", "ignore-error"],
        (false, "local") => &["src", "tag", "digest", "ignore-error"],
        _ => &[],
    }
}

/// The parts common to both flags: the type and attributes, checked against what the type
/// takes.
struct Parsed {
    flag: &'static str,
    spec: String,
    kind: String,
    attrs: BTreeMap<String, String>,
}

impl Parsed {
    fn new(flag: &'static str, to: bool, spec: &str) -> Result<Parsed, CacheSpecError> {
        let err = |reason: String| CacheSpecError {
            flag,
            spec: spec.to_string(),
            reason,
        };
        if spec.trim().is_empty() {
            return Err(err("the value is empty".into()));
        }
        let mut attrs = if spec.contains('=') {
            crate::export::spec::parse_attrs(spec).map_err(|e| match e {
                crate::export::spec::OutputError::Syntax { reason, .. } => err(reason),
                other => err(other.to_string()),
            })?
        } else {
            // buildx: a bare value is a registry reference.
            BTreeMap::from([
                ("type".to_string(), "registry".to_string()),
                ("ref".to_string(), spec.trim().to_string()),
            ])
        };
        let kind = attrs.remove("type").ok_or_else(|| {
            err(format!(
                "type= is required ({})",
                if to {
                    "registry, local or inline"
                } else {
                    "registry or local"
                }
            ))
        })?;
        let kind = kind.trim().to_ascii_lowercase();
        match kind.as_str() {
            "registry" | "local" => {}
            "inline" if to => {}
            "inline" => {
                return Err(err(
                    "type=inline is a --cache-to type; an inline cache is read from its image: --cache-from type=registry,ref=IMAGE".into(),
                ))
            }
            k if UNSUPPORTED.contains(&k) => {
                return Err(err(format!(
                    "type={k} is a buildx cache backend kiln does not support (supported: registry, local{})",
                    if to { ", inline" } else { "" }
                )))
            }
            other => {
                return Err(err(format!(
                    "unknown type {other:?} (expected registry, local{})",
                    if to { " or inline" } else { "" }
                )))
            }
        }
        let keys = allowed(to, &kind);
        if let Some(key) = attrs.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(err(format!(
                "{key:?} is not an attribute of type={kind} (it takes {})",
                keys.join(", ")
            )));
        }
        Ok(Parsed {
            flag,
            spec: spec.to_string(),
            kind,
            attrs,
        })
    }

    fn err(&self, reason: impl Into<String>) -> CacheSpecError {
        CacheSpecError {
            flag: self.flag,
            spec: self.spec.clone(),
            reason: reason.into(),
        }
    }

    /// A boolean attribute (Go's spellings, as buildx reads them); `default` when absent.
    fn flag(&self, key: &str, default: bool) -> Result<bool, CacheSpecError> {
        match self.attrs.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "" | "1" | "t" | "true" => Ok(true),
                "0" | "f" | "false" => Ok(false),
                _ => Err(self.err(format!(
                    "{key}={:?}: expected true or false",
                    self.attrs[key]
                ))),
            },
        }
    }

    /// A required, non-empty attribute.
    fn required(&self, key: &str) -> Result<&str, CacheSpecError> {
        match self.attrs.get(key).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(self.err(format!("type={} needs {key}=", self.kind))),
        }
    }

    fn reference(&self) -> Result<Reference, CacheSpecError> {
        let value = self.required("ref")?;
        Reference::parse(value).map_err(|e| self.err(format!("ref={value:?}: {e}")))
    }

    fn tag(&self) -> Result<String, CacheSpecError> {
        match self.attrs.get("tag").map(|t| t.trim()) {
            None => Ok("latest".to_string()),
            Some("") => Err(self.err("tag= is empty")),
            Some(t) => Ok(t.to_string()),
        }
    }

    /// `mode`, `compression*`, `image-manifest`, `oci-mediatypes`.
    fn export_options(&self) -> Result<ExportOptions, CacheSpecError> {
        let mode = match self.attrs.get("mode").map(|m| m.trim()) {
            None | Some("min") => CacheMode::Min,
            Some("max") if self.kind == "inline" => {
                return Err(self.err(
                    "type=inline exports the final image's layers only (mode=min); use type=registry or type=local for mode=max",
                ))
            }
            Some("max") => CacheMode::Max,
            Some(m) => return Err(self.err(format!("mode={m:?}: expected min or max"))),
        };
        let compression = match self.attrs.get("compression") {
            None => Compression::Gzip,
            Some(c) => match c.trim() {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "uncompressed" => Compression::None,
                "estargz" => {
                    return Err(self.err("compression=estargz: kiln does not write eStargz layers"))
                }
                _ => {
                    return Err(self.err(format!(
                        "compression={c:?}: expected gzip, zstd or uncompressed"
                    )))
                }
            },
        };
        let level = match self.attrs.get("compression-level") {
            None => None,
            Some(l) => {
                let max = if compression == Compression::Zstd {
                    22
                } else {
                    9
                };
                match l.trim().parse::<i32>() {
                    Ok(n) if (0..=max).contains(&n) => Some(n),
                    _ => {
                        return Err(self.err(format!(
                            "compression-level={l:?}: expected a number from 0 to {max}"
                        )))
                    }
                }
            }
        };
        let oci_media_types = self.flag("oci-mediatypes", true)?;
        // An image manifest whose config is not an image config needs OCI media types; with
        // Docker ones the default falls back to an index (BuildKit's older default).
        let image_manifest = self.flag("image-manifest", oci_media_types)?;
        if image_manifest && !oci_media_types {
            return Err(self.err(
                "image-manifest=true needs OCI media types: drop oci-mediatypes=false, or add image-manifest=false",
            ));
        }
        if compression == Compression::Zstd && !oci_media_types {
            return Err(self.err("zstd layers need OCI media types: drop oci-mediatypes=false"));
        }
        Ok(ExportOptions {
            mode,
            compression,
            level,
            force_compression: self.flag("force-compression", false)?,
            image_manifest,
            oci_media_types,
            cache_mounts: Vec::new(),
        })
    }
}

/// Parses one `--cache-to` value.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, CacheSpecError> {
    let p = Parsed::new("--cache-to", true, spec)?;
    let location = match p.kind.as_str() {
        "registry" => {
            let r = p.reference()?;
            if r.digest().is_some() {
                return Err(p.err(format!(
                    "ref={r}: the cache is pushed under a tag, not a digest"
                )));
            }
            CacheLocation::Registry(r)
        }
        "local" => CacheLocation::Local {
            dir: PathBuf::from(p.required("dest")?),
            tag: p.tag()?,
            digest: None,
        },
        _ => CacheLocation::Inline,
    };
    Ok(CacheTo {
        spec: spec.to_string(),
        location,
        options: p.export_options()?,
        all_mounts: p.flag("cache-mounts", false)?,
        ignore_error: p.flag("ignore-error", false)?,
    })
}

/// Parses one `--cache-from` value.
pub fn parse_cache_from(spec: &str) -> Result<CacheFrom, CacheSpecError> {
    let p = Parsed::new("--cache-from", false, spec)?;
    let location = match p.kind.as_str() {
        "registry" => CacheLocation::Registry(p.reference()?),
        _ => {
            let digest = match p.attrs.get("digest").map(|d| d.trim()) {
                None => None,
                Some(d) => Some(Digest::parse(d).map_err(|e| p.err(format!("digest={d:?}: {e}")))?),
            };
            CacheLocation::Local {
                dir: PathBuf::from(p.required("src")?),
                tag: p.tag()?,
                digest,
            }
        }
    };
    Ok(CacheFrom {
        spec: spec.to_string(),
        location,
        ignore_error: p.flag("ignore-error", false)?,
    })
}

/// Every `--cache-to` and `--cache-from`, parsed; the first bad one fails.
pub fn from_flags(
    to: &[String],
    from: &[String],
) -> Result<(Vec<CacheTo>, Vec<CacheFrom>), CacheSpecError> {
    let to = to
        .iter()
        .map(|s| parse_cache_to(s))
        .collect::<Result<Vec<_>, _>>()?;
    if to
        .iter()
        .filter(|t| t.location == CacheLocation::Inline)
        .count()
        > 1
    {
        return Err(CacheSpecError {
            flag: "--cache-to",
            spec: "type=inline".into(),
            reason: "given twice (the image holds one inline cache)".into(),
        });
    }
    let from = from
        .iter()
        .map(|s| parse_cache_from(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((to, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<impl std::fmt::Debug, CacheSpecError>) -> String {
        let e = r.unwrap_err();
        e.to_string()
    }

    #[test]
    fn a_bare_value_is_a_registry_ref() {
        let t = parse_cache_to("localhost:5000/app:cache").unwrap();
        assert_eq!(
            t.location,
            CacheLocation::Registry(Reference::parse("localhost:5000/app:cache").unwrap())
        );
        assert_eq!(t.options, ExportOptions::default());
        assert!(!t.all_mounts && !t.ignore_error);
        let f = parse_cache_from("localhost:5000/app").unwrap();
        assert_eq!(f.location.describe(), "localhost:5000/app:latest");
    }

    #[test]
    fn registry_attributes() {
        let t = parse_cache_to(
            "type=registry,ref=localhost:5000/c:1,mode=max,compression=zstd,compression-level=19,force-compression=true,image-manifest=false,ignore-error=true,cache-mounts=true",
        )
        .unwrap();
        assert_eq!(t.options.mode, CacheMode::Max);
        assert_eq!(t.options.compression, Compression::Zstd);
        assert_eq!(t.options.level, Some(19));
        assert!(t.options.force_compression && !t.options.image_manifest);
        assert!(t.options.oci_media_types && t.ignore_error && t.all_mounts);
        // Docker media types: an index by default, as BuildKit wrote before image-manifest.
        let t = parse_cache_to("type=registry,ref=r/c,oci-mediatypes=false").unwrap();
        assert!(!t.options.image_manifest && !t.options.oci_media_types);
    }

    #[test]
    fn local_takes_dest_src_tag_and_digest() {
        let t = parse_cache_to("type=local,dest=/tmp/c").unwrap();
        assert_eq!(
            t.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into(),
                digest: None
            }
        );
        let f = parse_cache_from("type=local,src=/tmp/c,tag=v2,ignore-error=1").unwrap();
        assert_eq!(f.location.describe(), "/tmp/c:v2");
        assert!(f.ignore_error);
        let d = format!("sha256:{}", "a".repeat(64));
        let f = parse_cache_from(&format!("type=local,src=c,digest={d}")).unwrap();
        assert!(matches!(
            f.location,
            CacheLocation::Local {
                digest: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn inline_is_export_only_and_min_only() {
        assert_eq!(
            parse_cache_to("type=inline").unwrap().location,
            CacheLocation::Inline
        );
        let e = reason(parse_cache_from("type=inline"));
        assert!(e.contains("--cache-from type=registry,ref=IMAGE"), "{e}");
        let e = reason(parse_cache_to("type=inline,mode=max"));
        assert!(e.contains("mode=max"), "{e}");
        let e = reason(from_flags(
            &["type=inline".into(), "type=inline".into()],
            &[],
        ));
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        for (r, want) in [
            (reason(parse_cache_to("type=floppy")), "unknown type \"floppy\""),
            (reason(parse_cache_to("type=gha")), "does not support"),
            (reason(parse_cache_from("type=s3,bucket=b")), "does not support"),
            (reason(parse_cache_to("type=registry")), "needs ref="),
            (reason(parse_cache_to("type=local")), "needs dest="),
            (reason(parse_cache_from("type=local,dest=x")), "\"dest\" is not an attribute"),
            (reason(parse_cache_to("type=registry,ref=a,mode=all")), "expected min or max"),
            (reason(parse_cache_to("type=registry,ref=a,compression=lz4")), "expected gzip"),
            (reason(parse_cache_to("type=registry,ref=a,compression-level=12")), "0 to 9"),
            (reason(parse_cache_to("type=registry,ref=a,ignore-error=maybe")), "true or false"),
            (reason(parse_cache_to("type=registry,ref=A/B")), "ref=\"A/B\""),
            (reason(parse_cache_to("mode=max")), "type= is required"),
            (
                reason(parse_cache_to(&format!("r/c@sha256:{}", "a".repeat(64)))),
                "not a digest",
            ),
            (reason(parse_cache_to("type=local,dest=\"x")), "quote"),
            (
                reason(parse_cache_to("type=registry,ref=a,oci-mediatypes=false,image-manifest=true")),
                "image-manifest=true needs OCI media types",
            ),
            (
                reason(parse_cache_to("type=registry,ref=a,oci-mediatypes=false,image-manifest=false,compression=zstd")),
                "zstd",
            ),
            (reason(parse_cache_from("type=registry,ref=a,mode=max")), "\"mode\" is not an attribute"),
        ] {
            assert!(r.contains(want), "{r:?} lacks {want:?}");
            assert!(r.starts_with("invalid --cache-"), "{r}");
        }
    }
}
