//! `--provenance`, `--sbom` and `--attest` as buildx spells them, into what a build attests.

use thiserror::Error;

/// A bad attestation flag.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct AttestFlagError {
    /// The flag (`--provenance`, `--sbom`, `--attest`).
    pub flag: &'static str,
    /// Its value as given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// How much the provenance records (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    /// Parameters and dependencies only.
    #[default]
    Min,
    /// Also the build steps and the Dockerfile source.
    Max,
}

/// The SLSA predicate version (`version=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    /// `https://slsa.dev/provenance/v1`.
    #[default]
    V1,
    /// `https://slsa.dev/provenance/v0.2`.
    V02,
}

/// What the provenance attestation holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceOptions {
    /// `mode=`.
    pub mode: ProvenanceMode,
    /// `version=`.
    pub version: SlsaVersion,
    /// `builder-id=`.
    pub builder_id: Option<String>,
}

/// The attestations a build asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attestations {
    /// The provenance, when on.
    pub provenance: Option<ProvenanceOptions>,
    /// Whether the provenance is only buildx's default (attached to pushed and OCI images
    /// only), not asked for.
    pub provenance_by_default: bool,
    /// An SPDX SBOM of each platform's image (`generator=builtin`).
    pub sbom: bool,
}

impl Attestations {
    /// Whether any attestation is on.
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }

    /// The attestations from the flags; `no_default` is `BUILDX_NO_DEFAULT_ATTESTATIONS`.
    /// As in buildx, `--provenance`/`--sbom` are `--attest type=…` spelled short, a later
    /// flag wins, and min provenance is on unless turned off or `no_default`.
    pub fn from_flags(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
        no_default: bool,
    ) -> Result<Attestations, AttestFlagError> {
        let mut out = Attestations::default();
        let mut provenance_set = false;
        for a in attest {
            let (kind, rest) = attest_type(a)?;
            match kind {
                "provenance" => {
                    out.provenance = parse_provenance("--attest", a, &rest)?;
                    provenance_set = true;
                }
                "sbom" => out.sbom = parse_sbom("--attest", a, &rest)?,
                other => {
                    return Err(AttestFlagError {
                        flag: "--attest",
                        value: a.clone(),
                        reason: format!("unknown type {other:?} (expected provenance or sbom)"),
                    })
                }
            }
        }
        if let Some(p) = provenance {
            out.provenance = parse_provenance("--provenance", p, &short_fields(p))?;
            provenance_set = true;
        }
        if let Some(s) = sbom {
            out.sbom = parse_sbom("--sbom", s, &short_fields(s))?;
        }
        if !provenance_set && !no_default {
            out.provenance = Some(ProvenanceOptions::default());
            out.provenance_by_default = true;
        }
        Ok(out)
    }
}

/// `--provenance VALUE`'s fields: a bare boolean is `disabled=`, else `key=value` CSV.
/// `key=value` fields of a flag, keys lowercased.
type Fields = Vec<(String, String)>;

fn short_fields(v: &str) -> Fields {
    match v.trim() {
        "true" | "1" => vec![],
        "false" | "0" => vec![("disabled".into(), "true".into())],
        other => fields(other),
    }
}

fn fields(v: &str) -> Fields {
    v.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
            None => (f.trim().to_ascii_lowercase(), String::new()),
        })
        .collect()
}

/// `type=` of an `--attest` value, and its other fields.
fn attest_type(a: &str) -> Result<(&'static str, Fields), AttestFlagError> {
    let mut kind = None;
    let mut rest = Vec::new();
    for (k, v) in fields(a) {
        if k == "type" {
            kind = Some(v);
        } else {
            rest.push((k, v));
        }
    }
    let bad = |reason: String| AttestFlagError {
        flag: "--attest",
        value: a.to_string(),
        reason,
    };
    match kind.as_deref() {
        Some("provenance") => Ok(("provenance", rest)),
        Some("sbom") => Ok(("sbom", rest)),
        Some(other) => Err(bad(format!(
            "unknown type {other:?} (expected provenance or sbom)"
        ))),
        None => Err(bad(
            "type= is required (type=provenance or type=sbom)".into()
        )),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_provenance(
    flag: &'static str,
    value: &str,
    fields: &[(String, String)],
) -> Result<Option<ProvenanceOptions>, AttestFlagError> {
    let bad = |reason: String| AttestFlagError {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut opts = ProvenanceOptions::default();
    let mut disabled = false;
    for (k, v) in fields {
        match k.as_str() {
            "disabled" => {
                disabled =
                    parse_bool(v).ok_or_else(|| bad(format!("disabled={v:?} is not a boolean")))?
            }
            "mode" => {
                opts.mode = match v.as_str() {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    _ => return Err(bad(format!("mode={v:?} (expected min or max)"))),
                }
            }
            "version" => {
                opts.version = match v.as_str() {
                    "v1" | "v1.0" => SlsaVersion::V1,
                    "v0.2" => SlsaVersion::V02,
                    _ => return Err(bad(format!("version={v:?} (expected v1 or v0.2)"))),
                }
            }
            "builder-id" => opts.builder_id = Some(v.clone()).filter(|v| !v.is_empty()),
            // buildx passes these through to BuildKit; kiln has nothing to do with them.
            "inline-only" | "reproducible" => {}
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    Ok((!disabled).then_some(opts))
}

fn parse_sbom(
    flag: &'static str,
    value: &str,
    fields: &[(String, String)],
) -> Result<bool, AttestFlagError> {
    let bad = |reason: String| AttestFlagError {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut on = true;
    for (k, v) in fields {
        match k.as_str() {
            "disabled" => {
                on =
                    !parse_bool(v).ok_or_else(|| bad(format!("disabled={v:?} is not a boolean")))?
            }
            "generator" if v == "builtin" => {}
            "generator" => {
                return Err(bad(format!(
                    "generator={v:?}: kiln scans with its built-in scanner only (generator=builtin)"
                )))
            }
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    Ok(on)
}

/// The build arg that adds the build context to the SBOM scans.
pub const SCAN_CONTEXT_ARG: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";
/// The build arg that adds build stages to the SBOM scans.
pub const SCAN_STAGE_ARG: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// What the SBOM scans beside the image, each an extra SPDX statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanExtras {
    /// The build context (named `context`).
    pub context: bool,
    /// Stages the target needs (itself excepted): BuildKit's name (`AS` name lowercased,
    /// `stage-N` without one) and index, sorted by name.
    pub stages: Vec<(String, usize)>,
}

/// The extra scans of a build, as BuildKit's Dockerfile frontend decides them: only where
/// `ARG BUILDKIT_SBOM_SCAN_CONTEXT`/`BUILDKIT_SBOM_SCAN_STAGE` is declared, globally (before
/// the first FROM, then for every stage) or in a stage (which wins), `--build-arg` giving
/// the value; `true`/`false` as Go's `ParseBool`, anything else a comma-separated list of
/// stage names. The context counts for the target stage, stages for those it needs.
pub fn scan_extras(build: &kiln_frontend::stages::Build) -> ScanExtras {
    let mut out = ScanExtras::default();
    for stage in build.needed_stages() {
        let name = stage
            .name
            .as_ref()
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let enabled = |arg: &str| {
            let global = build
                .global_args
                .iter()
                .rev()
                .filter(|a| a.name == arg)
                .find_map(|a| a.value.as_deref());
            let own = stage
                .args
                .iter()
                .rev()
                .filter(|a| a.name == arg)
                .find_map(|a| a.value.as_deref());
            own.or(global).is_some_and(|v| enabled_for_stage(&name, v))
        };
        if stage.index == build.target {
            out.context = enabled(SCAN_CONTEXT_ARG);
        } else if enabled(SCAN_STAGE_ARG) {
            out.stages.push((name, stage.index));
        }
    }
    out.stages.sort();
    out.stages.dedup_by(|a, b| a.0 == b.0);
    out
}

/// BuildKit's `isEnabledForStage`: a boolean, or a list naming the stage.
fn enabled_for_stage(stage: &str, value: &str) -> bool {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        list => list.split(',').any(|s| s == stage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: Option<&str>, s: Option<&str>, a: &[&str], no_default: bool) -> Attestations {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        Attestations::from_flags(p, s, &a, no_default).unwrap()
    }

    #[test]
    fn default_is_min_provenance_unless_turned_off() {
        let d = parse(None, None, &[], false);
        assert_eq!(d.provenance, Some(ProvenanceOptions::default()));
        assert!(d.provenance_by_default && !d.sbom);
        assert_eq!(parse(None, None, &[], true), Attestations::default());
        assert_eq!(parse(Some("false"), None, &[], false).provenance, None);
        let asked = parse(Some("true"), None, &[], true);
        assert!(asked.provenance.is_some() && !asked.provenance_by_default);
    }

    #[test]
    fn provenance_fields_and_attest_spelling() {
        let p = parse(
            Some("mode=max,version=v0.2,builder-id=https://ci.example/run/1"),
            None,
            &[],
            false,
        )
        .provenance
        .unwrap();
        assert_eq!(p.mode, ProvenanceMode::Max);
        assert_eq!(p.version, SlsaVersion::V02);
        assert_eq!(p.builder_id.as_deref(), Some("https://ci.example/run/1"));
        let a = parse(
            None,
            None,
            &["type=provenance,mode=max", "type=sbom"],
            false,
        );
        assert_eq!(a.provenance.unwrap().mode, ProvenanceMode::Max);
        assert!(a.sbom);
        let off = parse(None, None, &["type=provenance,disabled=true"], false);
        assert_eq!(off.provenance, None);
        assert!(parse(None, Some("generator=builtin"), &[], false).sbom);
        assert!(!parse(None, Some("false"), &[], false).sbom);
    }

    #[test]
    fn bad_values_are_refused() {
        let err = |p: Option<&str>, s: Option<&str>, a: &[&str]| {
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            Attestations::from_flags(p, s, &a, false).unwrap_err()
        };
        assert!(err(Some("mode=full"), None, &[]).reason.contains("mode"));
        assert!(err(None, Some("generator=docker/scout"), &[])
            .reason
            .contains("builtin"));
        assert!(err(None, None, &["type=vex"])
            .reason
            .contains("unknown type"));
        assert!(err(None, None, &["mode=max"]).reason.contains("type="));
        assert!(err(Some("colour=red"), None, &[])
            .reason
            .contains("unknown key"));
    }

    fn scan_build(dockerfile: &str, args: &[(&str, &str)]) -> ScanExtras {
        let ast = kiln_frontend::parser::parse(dockerfile).unwrap();
        let opts = kiln_frontend::stages::ResolveOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        scan_extras(&kiln_frontend::stages::resolve(&ast, &opts).unwrap())
    }

    #[test]
    fn scan_args_count_where_declared_as_buildkit_reads_them() {
        // BuildKit's own test Dockerfile: the context (global ARG) and the needed stages
        // that declare the stage ARG; base2 is not built, the target is the image.
        let df = "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
                  FROM scratch AS file\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY a /a\n\
                  FROM scratch AS Base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /a /b\n\
                  FROM scratch AS base2\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /a /c\n\
                  FROM base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n";
        let all = scan_build(df, &[]);
        assert!(all.context);
        let names: Vec<&str> = all.stages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["base", "file"]);
        let off = scan_build(
            df,
            &[(SCAN_STAGE_ARG, "false"), (SCAN_CONTEXT_ARG, "false")],
        );
        assert_eq!(off, ScanExtras::default());
        let listed = scan_build(df, &[(SCAN_STAGE_ARG, "file,nope")]);
        assert_eq!(listed.stages, [("file".to_string(), 0)]);
        // Build args alone enable nothing: the Dockerfile must declare the ARG.
        let plain = "FROM scratch AS b\nCOPY a /a\nFROM scratch\nCOPY --from=b /a /a\n";
        assert_eq!(
            scan_build(plain, &[(SCAN_STAGE_ARG, "true"), (SCAN_CONTEXT_ARG, "1")]),
            ScanExtras::default()
        );
        // A global ARG reaches unnamed stages by their BuildKit name.
        let global = "ARG BUILDKIT_SBOM_SCAN_STAGE=stage-0\nFROM scratch\nCOPY a /a\n\
                      FROM scratch\nCOPY --from=0 /a /a\n";
        assert_eq!(scan_build(global, &[]).stages, [("stage-0".to_string(), 0)]);
    }
}
