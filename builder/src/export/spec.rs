//! `-o/--output`, `--push`, `--load` and `-t`, in buildx's syntax, turned
//! into the list of outputs a build writes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use thiserror::Error;

/// A bad `--output` value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OutputError {
    /// Not `key=value` CSV.
    #[error("invalid --output {spec:?}: {reason}")]
    Syntax {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An exporter kiln does not know.
    #[error("invalid --output {spec:?}: unknown type {kind:?} (expected one of image, registry, docker, oci, local, tar, cacheonly)")]
    UnknownType {
        /// The value as given.
        spec: String,
        /// The type named.
        kind: String,
    },
    /// A key that does not apply to this exporter.
    #[error("invalid --output {spec:?}: {key:?} is not an attribute of type={kind}")]
    UnknownKey {
        /// The value as given.
        spec: String,
        /// The exporter.
        kind: &'static str,
        /// The offending key.
        key: String,
    },
    /// A required attribute is missing.
    #[error("invalid --output {spec:?}: type={kind} needs {key}=")]
    Missing {
        /// The value as given.
        spec: String,
        /// The exporter.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A value of the wrong shape.
    #[error("invalid --output {spec:?}: {key}={value:?}: {reason}")]
    BadValue {
        /// The value as given.
        spec: String,
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// Two outputs that cannot both write to stdout.
    #[error("only one output can be written to stdout (`-`)")]
    StdoutTwice,
}

/// The exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Into the local store (and pushed with `push=true`).
    Image,
    /// docker-archive tarball (`docker load`).
    Docker,
    /// OCI image layout tarball.
    Oci,
    /// The final filesystem as a directory.
    Local,
    /// The final filesystem as a tarball.
    Tar,
    /// Nothing but the cache.
    CacheOnly,
}

impl OutputKind {
    fn name(self) -> &'static str {
        match self {
            OutputKind::Image => "image",
            OutputKind::Docker => "docker",
            OutputKind::Oci => "oci",
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
            OutputKind::CacheOnly => "cacheonly",
        }
    }

    /// The keys each exporter takes besides `type` (`annotation.*` is
    /// checked apart).
    fn keys(self) -> &'static [&'static str] {
        const IMAGE: &[&str] = &[
            "name",
            "push",
            "push-by-digest",
            "registry.insecure",
            "insecure",
            "dangling-name-prefix",
            "name-canonical",
            "compression",
            "compression-level",
            "force-compression",
            "rewrite-timestamp",
            "oci-mediatypes",
            "unpack",
            "store",
            "buildinfo",
            "compatibility-version",
            "referrers",
        ];
        const ARCHIVE: &[&str] = &[
            "name",
            "dest",
            "tar",
            "context",
            "compression",
            "compression-level",
            "force-compression",
            "rewrite-timestamp",
            "oci-mediatypes",
            "buildinfo",
            "compatibility-version",
        ];
        // A docker-archive holds no attestations, so only the OCI layout takes `referrers`.
        const OCI: &[&str] = &[
            "name",
            "dest",
            "tar",
            "context",
            "compression",
            "compression-level",
            "force-compression",
            "rewrite-timestamp",
            "oci-mediatypes",
            "buildinfo",
            "compatibility-version",
            "referrers",
        ];
        match self {
            OutputKind::Image => IMAGE,
            OutputKind::Docker => ARCHIVE,
            OutputKind::Oci => OCI,
            OutputKind::Local => &["dest", "mode", "platform-split"],
            OutputKind::Tar => &["dest", "platform-split"],
            OutputKind::CacheOnly => &[],
        }
    }
}

/// Where an archive or a directory goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (`dest=-`).
    Stdout,
    /// A path.
    Path(PathBuf),
}

/// One output of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The exporter.
    pub kind: OutputKind,
    /// Image names (`name=` and `-t`).
    pub names: Vec<String>,
    /// `dest=`.
    pub dest: Option<Destination>,
    /// Every attribute as given (`compression`, `oci-mediatypes`, ...).
    pub attrs: BTreeMap<String, String>,
}

impl OutputSpec {
    /// A boolean attribute; `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.attrs.get(key).map(String::as_str) {
            Some("" | "true" | "1") => true,
            Some(_) => false,
            None => default,
        }
    }

    /// `push=true`.
    pub fn push(&self) -> bool {
        self.flag("push", false)
    }

    /// `referrers=true`: attestations as OCI 1.1 referrers of each image, not index entries.
    pub fn referrers(&self) -> bool {
        self.flag("referrers", false)
    }

    /// `annotation.<key>=<value>` attributes.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("annotation.").map(|k| (k, v.as_str())))
    }
}

/// Splits one CSV record, honouring double quotes (`name="a,b"`).
fn split_csv(spec: &str) -> Result<Vec<String>, OutputError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(OutputError::Syntax {
            spec: spec.to_string(),
            reason: "unterminated quote".to_string(),
        });
    }
    fields.push(field);
    Ok(fields)
}

/// The `key=value` pairs of one CSV flag value (`-o`, `--cache-to`, ...), keys lowercased;
/// a field without `=` is a key with an empty value.
pub(crate) fn parse_attrs(spec: &str) -> Result<BTreeMap<String, String>, OutputError> {
    let mut attrs = BTreeMap::new();
    for field in split_csv(spec)? {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        attrs.insert(k.trim().to_lowercase(), v.to_string());
    }
    Ok(attrs)
}

/// Parses one `-o` value: `type=...,k=v`, a bare path (`local`), or `-`
/// (a tarball of the filesystem on stdout).
pub fn parse_output(spec: &str) -> Result<OutputSpec, OutputError> {
    if spec == "-" {
        return Ok(OutputSpec {
            kind: OutputKind::Tar,
            names: Vec::new(),
            dest: Some(Destination::Stdout),
            attrs: BTreeMap::new(),
        });
    }
    if !spec.contains('=') {
        return Ok(OutputSpec {
            kind: OutputKind::Local,
            names: Vec::new(),
            dest: Some(Destination::Path(PathBuf::from(spec))),
            attrs: BTreeMap::new(),
        });
    }
    let mut attrs = parse_attrs(spec)?;
    let kind_name = attrs.remove("type").ok_or_else(|| OutputError::Syntax {
        spec: spec.to_string(),
        reason: "type= is required".to_string(),
    })?;
    let kind = match kind_name.as_str() {
        "image" => OutputKind::Image,
        "registry" => {
            attrs
                .entry("push".to_string())
                .or_insert_with(|| "true".to_string());
            OutputKind::Image
        }
        "docker" => OutputKind::Docker,
        "oci" => OutputKind::Oci,
        "local" => OutputKind::Local,
        "tar" => OutputKind::Tar,
        "cacheonly" => OutputKind::CacheOnly,
        other => {
            return Err(OutputError::UnknownType {
                spec: spec.to_string(),
                kind: other.to_string(),
            })
        }
    };
    for key in attrs.keys() {
        let annotation = key.starts_with("annotation.") || key.starts_with("annotation-");
        let allowed =
            kind.keys().contains(&key.as_str()) || (annotation && kind.keys().contains(&"name"));
        if !allowed {
            return Err(OutputError::UnknownKey {
                spec: spec.to_string(),
                kind: kind.name(),
                key: key.clone(),
            });
        }
    }
    for key in [
        "push",
        "push-by-digest",
        "force-compression",
        "oci-mediatypes",
        "unpack",
        "store",
        "tar",
        "referrers",
    ] {
        if let Some(v) = attrs.get(key) {
            if !matches!(v.as_str(), "" | "true" | "false" | "1" | "0") {
                return Err(OutputError::BadValue {
                    spec: spec.to_string(),
                    key: key.to_string(),
                    value: v.clone(),
                    reason: "expected true or false".to_string(),
                });
            }
        }
    }
    if let Some(c) = attrs.get("compression") {
        if !matches!(c.as_str(), "gzip" | "zstd" | "uncompressed") {
            return Err(OutputError::BadValue {
                spec: spec.to_string(),
                key: "compression".to_string(),
                value: c.clone(),
                reason: "expected gzip, zstd or uncompressed".to_string(),
            });
        }
        // A Docker manifest cannot list zstd layers: refused as BuildKit refuses it (its
        // docker exporter defaults to Docker media types, so type=docker needs them asked).
        let oci_types = match attrs.get("oci-mediatypes").map(String::as_str) {
            Some(v) => matches!(v, "" | "true" | "1"),
            None => kind != OutputKind::Docker,
        };
        if c == "zstd" && !oci_types {
            return Err(OutputError::BadValue {
                spec: spec.to_string(),
                key: "compression".to_string(),
                value: c.clone(),
                reason: "zstd layers need OCI media types: add oci-mediatypes=true".to_string(),
            });
        }
    }
    if let Some(l) = attrs.get("compression-level") {
        let max = if attrs.get("compression").map(String::as_str) == Some("zstd") {
            22
        } else {
            9
        };
        if !l.parse::<i32>().is_ok_and(|n| (0..=max).contains(&n)) {
            return Err(OutputError::BadValue {
                spec: spec.to_string(),
                key: "compression-level".to_string(),
                value: l.clone(),
                reason: format!("expected a number from 0 to {max}"),
            });
        }
    }
    let dest = attrs.remove("dest").map(|d| {
        if d == "-" {
            Destination::Stdout
        } else {
            Destination::Path(PathBuf::from(d))
        }
    });
    if dest.is_none() && matches!(kind, OutputKind::Local) {
        return Err(OutputError::Missing {
            spec: spec.to_string(),
            kind: kind.name(),
            key: "dest",
        });
    }
    let names = attrs
        .remove("name")
        .map(|n| {
            n.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(OutputSpec {
        kind,
        names,
        dest,
        attrs,
    })
}

/// The outputs of a build from its flags, as buildx combines them: each
/// `-o`; `--push` adds (or turns on push for) an image output; `--load` adds
/// an image output into the local store; with none of them but `-t`, the
/// image goes into the local store under those tags. `-t` names apply to
/// every image output without a name of its own.
pub fn outputs_from_flags(
    outputs: &[String],
    tags: &[String],
    push: bool,
    load: bool,
) -> Result<Vec<OutputSpec>, OutputError> {
    let mut specs = outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>, _>>()?;
    let image = |push: bool| OutputSpec {
        kind: OutputKind::Image,
        names: Vec::new(),
        dest: None,
        attrs: if push {
            BTreeMap::from([("push".to_string(), "true".to_string())])
        } else {
            BTreeMap::new()
        },
    };
    if push {
        match specs.iter_mut().find(|s| s.kind == OutputKind::Image) {
            Some(s) => {
                s.attrs.insert("push".to_string(), "true".to_string());
            }
            None => specs.push(image(true)),
        }
    }
    if load
        && !specs
            .iter()
            .any(|s| s.kind == OutputKind::Image && !s.push())
    {
        specs.push(image(false));
    }
    if specs.is_empty() {
        // buildx warns that the result stays in the cache; kiln's store is
        // local, so an image output is the useful default.
        specs.push(image(false));
    }
    for s in specs.iter_mut().filter(|s| {
        matches!(
            s.kind,
            OutputKind::Image | OutputKind::Docker | OutputKind::Oci
        )
    }) {
        if s.names.is_empty() {
            s.names = tags.to_vec();
        }
    }
    if specs
        .iter()
        .filter(|s| s.dest == Some(Destination::Stdout))
        .count()
        > 1
    {
        return Err(OutputError::StdoutTwice);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands() {
        let o = parse_output("-").unwrap();
        assert_eq!(
            (o.kind, o.dest),
            (OutputKind::Tar, Some(Destination::Stdout))
        );
        let o = parse_output("out/dir").unwrap();
        assert_eq!(
            (o.kind, o.dest),
            (OutputKind::Local, Some(Destination::Path("out/dir".into())))
        );
    }

    #[test]
    fn registry_is_image_with_push_and_names_are_a_list() {
        let o =
            parse_output("type=registry,\"name=a:1,b:2\",compression=zstd,compression-level=19")
                .unwrap();
        assert_eq!(o.kind, OutputKind::Image);
        assert!(o.push());
        assert_eq!(o.names, ["a:1", "b:2"]);
        assert_eq!(o.attrs["compression"], "zstd");
    }

    #[test]
    fn referrers_is_a_flag_of_image_and_oci_outputs() {
        assert!(parse_output("type=registry,name=a,referrers=true")
            .unwrap()
            .referrers());
        assert!(parse_output("type=oci,dest=o.tar,referrers=1")
            .unwrap()
            .referrers());
        assert!(!parse_output("type=image,name=a").unwrap().referrers());
        assert!(matches!(
            parse_output("type=docker,dest=o.tar,referrers=true"),
            Err(OutputError::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_output("type=registry,name=a,referrers=yes"),
            Err(OutputError::BadValue { .. })
        ));
    }

    #[test]
    fn annotations_and_dest() {
        let o = parse_output("type=oci,dest=out.tar,annotation.org.opencontainers.image.title=x")
            .unwrap();
        assert_eq!(o.dest, Some(Destination::Path("out.tar".into())));
        assert_eq!(
            o.annotations().collect::<Vec<_>>(),
            [("org.opencontainers.image.title", "x")]
        );
    }

    #[test]
    fn bad_outputs_are_clear_errors() {
        assert!(matches!(
            parse_output("type=floppy"),
            Err(OutputError::UnknownType { .. })
        ));
        assert!(matches!(
            parse_output("type=local"),
            Err(OutputError::Missing { key: "dest", .. })
        ));
        assert!(matches!(
            parse_output("type=local,dest=x,push=true"),
            Err(OutputError::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_output("type=image,push=maybe"),
            Err(OutputError::BadValue { .. })
        ));
        assert!(matches!(
            parse_output("type=image,compression=lz4"),
            Err(OutputError::BadValue { .. })
        ));
        assert!(matches!(
            parse_output("type=image,compression-level=12"),
            Err(OutputError::BadValue { .. })
        ));
        assert!(matches!(
            parse_output("dest=x"),
            Err(OutputError::Syntax { .. })
        ));
        assert!(matches!(
            parse_output("type=oci,dest=\"x"),
            Err(OutputError::Syntax { .. })
        ));
        let e = parse_output("type=floppy").unwrap_err().to_string();
        assert!(e.contains("floppy") && e.contains("expected one of"), "{e}");
    }

    #[test]
    fn zstd_needs_oci_media_types() {
        for spec in [
            "type=image,name=a,compression=zstd,oci-mediatypes=false",
            "type=docker,dest=a.tar,compression=zstd",
        ] {
            let err = parse_output(spec).unwrap_err().to_string();
            assert!(err.contains("oci-mediatypes=true"), "{spec}: {err}");
        }
        for spec in [
            "type=image,name=a,compression=zstd",
            "type=docker,dest=a.tar,compression=zstd,oci-mediatypes=true",
            "type=oci,dest=a.tar,compression=zstd",
        ] {
            assert!(parse_output(spec).is_ok(), "{spec}");
        }
    }

    #[test]
    fn flags_combine_like_buildx() {
        let tags = vec!["app:1".to_string()];
        let o = outputs_from_flags(&[], &tags, false, false).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].kind, o[0].push(), o[0].names.clone()),
            (OutputKind::Image, false, tags.clone())
        );
        let o = outputs_from_flags(&[], &tags, true, false).unwrap();
        assert!(o[0].push());
        let o = outputs_from_flags(&["type=oci,dest=a.tar".into()], &tags, true, true).unwrap();
        let kinds: Vec<_> = o.iter().map(|s| (s.kind, s.push())).collect();
        assert_eq!(
            kinds,
            [
                (OutputKind::Oci, false),
                (OutputKind::Image, true),
                (OutputKind::Image, false)
            ]
        );
        assert!(o.iter().all(|s| s.names == tags));
        assert_eq!(
            outputs_from_flags(&["-".into(), "type=oci,dest=-".into()], &tags, false, false),
            Err(OutputError::StdoutTwice)
        );
    }
}
