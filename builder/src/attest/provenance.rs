//! SLSA provenance of a build as an in-toto statement, shaped as BuildKit writes it (v1 by
//! default, v0.2 on request): the request's parameters, the resolved dependencies, and with
//! `mode=max` the build steps and the Dockerfile source. Secrets are never recorded: they
//! are not build args, and the steps name them by id only.

use super::options::{ProvenanceMode, ProvenanceOptions, SlsaVersion};
use super::statement::{Statement, Subject};
use base64::Engine;
use kiln_solver::llb::{Definition, Op};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// The predicate type of SLSA provenance v1.
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// The predicate type of SLSA provenance v0.2.
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// BuildKit's build type of v1 provenance.
pub const BUILD_TYPE_V1: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// BuildKit's build type of v0.2 provenance.
pub const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";

/// What a build knows about itself, for its provenance.
#[derive(Debug, Clone)]
pub struct BuildFacts<'a> {
    /// The Dockerfile's path in its context (`Dockerfile`, `-f` as given).
    pub dockerfile_path: &'a str,
    /// The Dockerfile's bytes.
    pub dockerfile: &'a [u8],
    /// `--build-arg`s (never secrets).
    pub build_args: &'a BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// The target platforms (`linux/amd64`, …).
    pub platforms: Vec<String>,
    /// `--build-context` names and values.
    pub named_contexts: Vec<(String, String)>,
    /// The build graph (sources become dependencies; `mode=max` lists its steps).
    pub definition: &'a Definition,
    /// This build's id.
    pub invocation_id: String,
    /// When the build started and finished (seconds since the epoch).
    pub started_on: i64,
    /// See `started_on`.
    pub finished_on: i64,
}

/// One resolved dependency: a URI and its digests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    /// `pkg:docker/…`, `https://…`, `git+https://…`.
    pub uri: String,
    /// Algorithm → hex.
    pub digest: BTreeMap<String, String>,
}

/// The provenance statement of a build for `subjects` (each platform's manifest).
pub fn statement(
    opts: &ProvenanceOptions,
    facts: &BuildFacts<'_>,
    subjects: Vec<Subject>,
) -> Statement {
    let (predicate_type, predicate) = match opts.version {
        SlsaVersion::V1 => (SLSA_V1, predicate_v1(opts, facts)),
        SlsaVersion::V02 => (SLSA_V02, predicate_v02(opts, facts)),
    };
    Statement::new(subjects, predicate_type, predicate)
}

/// The request's parameters as BuildKit records them: frontend, `build-arg:` args, target,
/// platform, and the named contexts (`context:NAME`).
fn request(facts: &BuildFacts<'_>) -> Value {
    let mut args = Map::new();
    for (k, v) in facts.build_args {
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    if let Some(t) = facts.target {
        args.insert("target".into(), json!(t));
    }
    args.insert("platform".into(), json!(facts.platforms.join(",")));
    for (name, value) in &facts.named_contexts {
        args.insert(format!("context:{name}"), json!(value));
    }
    json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn config_source(facts: &BuildFacts<'_>) -> Value {
    json!({
        "path": facts.dockerfile_path,
        "digest": {"sha256": sha256_hex(facts.dockerfile)},
    })
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `mode=max`: the steps (each op, its inputs by position) and the Dockerfile's source.
fn build_config(facts: &BuildFacts<'_>) -> Value {
    let ids: BTreeMap<_, _> = facts
        .definition
        .vertices()
        .enumerate()
        .map(|(i, (r, _))| (r, format!("step{i}")))
        .collect();
    let steps: Vec<Value> = facts
        .definition
        .vertices()
        .enumerate()
        .map(|(i, (_, v))| {
            json!({
                "id": format!("step{i}"),
                "op": v.op(),
                "platform": v.platform().map(ToString::to_string),
                "inputs": v.inputs().iter().filter_map(|r| ids.get(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "llbDefinition": steps })
}

fn source_info(facts: &BuildFacts<'_>) -> Value {
    json!({
        "infos": [{
            "filename": facts.dockerfile_path,
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(facts.dockerfile),
        }]
    })
}

fn predicate_v1(opts: &ProvenanceOptions, facts: &BuildFacts<'_>) -> Value {
    let mut internal = json!({ "builderPlatform": kiln_oci::Platform::host().to_string() });
    let mut metadata = json!({
        "invocationID": facts.invocation_id,
        "startedOn": rfc3339(facts.started_on),
        "finishedOn": rfc3339(facts.finished_on),
        "buildkit_completeness": {"request": true, "resolvedDependencies": true},
        "buildkit_hermetic": false,
        "buildkit_reproducible": false,
    });
    if opts.mode == ProvenanceMode::Max {
        internal["buildConfig"] = build_config(facts);
        metadata["buildkit_metadata"] = json!({ "source": source_info(facts) });
    }
    let deps: Vec<Value> = dependencies(facts.definition)
        .into_iter()
        .map(|d| json!({"uri": d.uri, "digest": d.digest}))
        .collect();
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE_V1,
            "externalParameters": {
                "configSource": config_source(facts),
                "request": request(facts),
            },
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": opts.builder_id.clone().unwrap_or_default()},
            "metadata": metadata,
        },
    })
}

fn predicate_v02(opts: &ProvenanceOptions, facts: &BuildFacts<'_>) -> Value {
    let mut invocation = json!({
        "configSource": {
            "entryPoint": facts.dockerfile_path,
            "digest": {"sha256": sha256_hex(facts.dockerfile)},
        },
        "parameters": request(facts),
        "environment": {"platform": kiln_oci::Platform::host().to_string()},
    });
    let mut predicate = json!({
        "builder": {"id": opts.builder_id.clone().unwrap_or_default()},
        "buildType": BUILD_TYPE_V02,
        "metadata": {
            "buildInvocationID": facts.invocation_id,
            "buildStartedOn": rfc3339(facts.started_on),
            "buildFinishedOn": rfc3339(facts.finished_on),
            "completeness": {"parameters": true, "environment": true, "materials": false},
            "reproducible": false,
        },
        "materials": dependencies(facts.definition)
            .into_iter()
            .map(|d| json!({"uri": d.uri, "digest": d.digest}))
            .collect::<Vec<_>>(),
    });
    if opts.mode == ProvenanceMode::Max {
        predicate["buildConfig"] = build_config(facts);
        predicate["metadata"]["https://mobyproject.org/buildkit@v1#metadata"] =
            json!({ "source": source_info(facts) });
    } else {
        invocation["parameters"]
            .as_object_mut()
            .map(|p| p.remove("locals"));
    }
    predicate["invocation"] = invocation;
    predicate
}

/// The build's sources with what pins them: images by manifest digest (as purls), HTTP
/// files by their checksum, git repositories by commit when the reference names one.
/// Local sources (the context, named directories) are the request's, not dependencies.
pub fn dependencies(def: &Definition) -> Vec<Dependency> {
    let mut out = Vec::new();
    for (_, v) in def.vertices() {
        let Op::Source(src) = v.op() else { continue };
        let platform = v.platform().map(ToString::to_string);
        let dep = match src.scheme() {
            "docker-image" | "oci-layout" => image_dependency(src.location(), platform.as_deref()),
            "http" | "https" => Some(Dependency {
                uri: src.identifier.clone(),
                digest: digest_map(src.attrs.get("http.checksum").map(String::as_str)),
            }),
            "git" => Some(git_dependency(src.location())),
            _ => None,
        };
        if let Some(dep) = dep {
            out.push(dep);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn digest_map(digest: Option<&str>) -> BTreeMap<String, String> {
    digest
        .and_then(|d| d.split_once(':'))
        .map(|(alg, hex)| BTreeMap::from([(alg.to_string(), hex.to_string())]))
        .unwrap_or_default()
}

/// `docker.io/library/busybox:1.36@sha256:…` as `pkg:docker/busybox@1.36?platform=…`, as
/// BuildKit names images (the digest apart).
fn image_dependency(reference: &str, platform: Option<&str>) -> Option<Dependency> {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (name, tag) = match name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((n, t)) => (n, Some(t)),
        None => (name, None),
    };
    let short = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    let mut uri = format!("pkg:docker/{short}");
    if let Some(tag) = tag {
        uri.push('@');
        uri.push_str(tag);
    }
    if let Some(p) = platform {
        uri.push_str("?platform=");
        uri.push_str(&p.replace('/', "%2F"));
    }
    Some(Dependency {
        uri,
        digest: digest_map(digest),
    })
}

/// `host/repo.git#ref` as `git+https://host/repo.git#ref`, the ref as digest when it is a
/// full commit id.
fn git_dependency(remote: &str) -> Dependency {
    let fragment = remote.split_once('#').map(|(_, f)| f);
    let commit = fragment
        .map(|f| f.split(':').next().unwrap_or(""))
        .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
    let uri = if remote.contains("://") {
        remote.to_string()
    } else {
        format!("https://{remote}")
    };
    Dependency {
        uri,
        digest: commit
            .map(|c| BTreeMap::from([("sha1".to_string(), c.to_string())]))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::llb::SourceOp;

    #[test]
    fn images_become_purls_with_their_digest() {
        let d = image_dependency(
            "docker.io/library/busybox:1.36@sha256:abcd",
            Some("linux/amd64"),
        )
        .unwrap();
        assert_eq!(d.uri, "pkg:docker/busybox@1.36?platform=linux%2Famd64");
        assert_eq!(d.digest["sha256"], "abcd");
        let r = image_dependency("127.0.0.1:5000/base@sha256:ef", None).unwrap();
        assert_eq!(r.uri, "pkg:docker/127.0.0.1:5000/base");
    }

    #[test]
    fn git_commits_are_recorded() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        let d = git_dependency(&format!("github.com/o/r.git#{c}:sub"));
        assert_eq!(d.uri, format!("https://github.com/o/r.git#{c}:sub"));
        assert_eq!(d.digest["sha1"], c);
        assert!(git_dependency("github.com/o/r.git#main").digest.is_empty());
    }

    #[test]
    fn min_leaves_out_steps_and_source_max_has_them() {
        let mut def = Definition::new();
        def.add(
            Op::Source(SourceOp::http("https://example.com/f").attr("http.checksum", "sha256:aa")),
            None,
            &[],
            kiln_solver::llb::VertexMetadata::default(),
        )
        .unwrap();
        let args = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let facts = BuildFacts {
            dockerfile_path: "Dockerfile",
            dockerfile: b"FROM scratch\n",
            build_args: &args,
            target: Some("app"),
            platforms: vec!["linux/amd64".into()],
            named_contexts: vec![],
            definition: &def,
            invocation_id: "id".into(),
            started_on: 0,
            finished_on: 1,
        };
        let min = statement(&ProvenanceOptions::default(), &facts, vec![]);
        let text = serde_json::to_string(&min).unwrap();
        assert!(!text.contains("llbDefinition") && !text.contains("buildkit_metadata"));
        let p = &min.predicate["buildDefinition"];
        assert_eq!(
            p["externalParameters"]["request"]["args"]["build-arg:A"],
            "1"
        );
        assert_eq!(p["resolvedDependencies"][0]["digest"]["sha256"], "aa");
        let max = statement(
            &ProvenanceOptions {
                mode: ProvenanceMode::Max,
                ..Default::default()
            },
            &facts,
            vec![],
        );
        let text = serde_json::to_string(&max).unwrap();
        assert!(text.contains("llbDefinition") && text.contains("buildkit_metadata"));
        let v02 = statement(
            &ProvenanceOptions {
                version: SlsaVersion::V02,
                ..Default::default()
            },
            &facts,
            vec![],
        );
        assert_eq!(v02.predicate_type, SLSA_V02);
        assert_eq!(v02.predicate["buildType"], BUILD_TYPE_V02);
    }
}
