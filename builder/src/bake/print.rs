//! `--print`: the resolved definition as buildx prints it (`group` and `target` maps,
//! attributes in buildx's order, structured outputs, caches, secrets and ssh).

use super::resolve::Definition;
use super::target::{Group, Target};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct Printed<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    group: &'a BTreeMap<String, Group>,
    target: BTreeMap<&'a str, PrintTarget<'a>>,
}

/// One structured entry (`{"type": "registry", "ref": …}`).
pub type Entry = BTreeMap<String, serde_json::Value>;

#[derive(Serialize)]
struct PrintTarget<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attest: Option<Vec<Entry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contexts: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dockerfile: Option<&'a str>,
    #[serde(rename = "dockerfile-inline", skip_serializing_if = "Option::is_none")]
    dockerfile_inline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<BTreeMap<&'a str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<&'a str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a Vec<String>>,
    #[serde(rename = "cache-from", skip_serializing_if = "Option::is_none")]
    cache_from: Option<Vec<Entry>>,
    #[serde(rename = "cache-to", skip_serializing_if = "Option::is_none")]
    cache_to: Option<Vec<Entry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<Vec<Entry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh: Option<Vec<Entry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platforms: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Vec<Entry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pull: Option<bool>,
    #[serde(rename = "no-cache", skip_serializing_if = "Option::is_none")]
    no_cache: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a str>,
    #[serde(rename = "no-cache-filter", skip_serializing_if = "Option::is_none")]
    no_cache_filter: Option<&'a Vec<String>>,
    #[serde(rename = "shm-size", skip_serializing_if = "Option::is_none")]
    shm_size: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ulimits: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlements: Option<&'a Vec<String>>,
    #[serde(rename = "extra-hosts", skip_serializing_if = "Option::is_none")]
    extra_hosts: Option<BTreeMap<&'a str, String>>,
}

/// The definition as buildx's `--print` JSON (two-space indented).
pub fn to_json(def: &Definition) -> String {
    let target = def
        .targets
        .iter()
        .map(|(name, t)| (name.as_str(), print_target(t)))
        .collect();
    let printed = Printed {
        group: &def.groups,
        target,
    };
    go_html_escape(&serde_json::to_string_pretty(&printed).unwrap_or_default())
}

/// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029 (only ever inside strings).
fn go_html_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// buildx escapes `${` and `%{` in text that would otherwise be read as a template again.
fn escape(s: &str) -> String {
    s.replace("${", "$${").replace("%{", "%%{")
}

/// A map's values escaped as text (`args`, `extra-hosts`), none when empty.
fn escaped_map(m: &Option<BTreeMap<String, String>>) -> Option<BTreeMap<&str, String>> {
    m.as_ref()
        .filter(|m| !m.is_empty())
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), escape(v))).collect())
}

fn non_empty<T>(v: &Option<Vec<T>>) -> Option<&Vec<T>> {
    v.as_ref().filter(|v| !v.is_empty())
}

fn print_target(t: &Target) -> PrintTarget<'_> {
    let entries = |v: &Option<Vec<String>>, kind: Kind| {
        non_empty(v).map(|l| l.iter().map(|s| entry(s, kind)).collect())
    };
    PrintTarget {
        description: t.description.as_deref(),
        annotations: non_empty(&t.annotations).map(|a| a.iter().map(|s| escape(s)).collect()),
        attest: entries(&t.attest, Kind::Attest),
        context: t.context.as_deref(),
        contexts: t.contexts.as_ref().filter(|m| !m.is_empty()),
        dockerfile: t.dockerfile.as_deref(),
        dockerfile_inline: t.dockerfile_inline.as_deref().map(escape),
        args: escaped_map(&t.args),
        labels: escaped_map(&t.labels),
        tags: non_empty(&t.tags),
        cache_from: entries(&t.cache_from, Kind::Cache),
        cache_to: entries(&t.cache_to, Kind::Cache),
        target: t.target.as_deref(),
        secret: entries(&t.secret, Kind::Secret),
        ssh: entries(&t.ssh, Kind::Ssh),
        platforms: non_empty(&t.platforms),
        output: entries(&t.output, Kind::Output),
        pull: t.pull,
        no_cache: t.no_cache,
        network: t.network.as_deref(),
        no_cache_filter: non_empty(&t.no_cache_filter),
        shm_size: t.shm_size.as_deref(),
        ulimits: non_empty(&t.ulimits),
        call: t.call.as_deref(),
        entitlements: non_empty(&t.entitlements),
        extra_hosts: escaped_map(&t.extra_hosts),
    }
}

/// The kinds of CSV attribute `--print` shows as objects.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `output`.
    Output,
    /// `cache-from`, `cache-to`.
    Cache,
    /// `secret`.
    Secret,
    /// `ssh`.
    Ssh,
    /// `attest`.
    Attest,
}

/// A CSV entry as buildx's structured form: an object of its fields (shorthands expanded,
/// keys lower-cased as buildx reads them).
pub fn entry(s: &str, kind: Kind) -> Entry {
    let mut m = Entry::new();
    if let Kind::Ssh = kind {
        // `ID[=PATH[,PATH]]`.
        let (id, paths) = s.split_once('=').unwrap_or((s, ""));
        m.insert("id".into(), id.into());
        if !paths.is_empty() {
            m.insert("paths".into(), paths.split(',').collect::<Vec<_>>().into());
        }
        return m;
    }
    let fields: Vec<String> = kiln_frontend::instructions::mount::split_csv(s)
        .map(|f| f.into_iter().map(|c| c.into_owned()).collect())
        .unwrap_or_else(|_| vec![s.to_string()]);
    if let [only] = fields.as_slice() {
        if !only.contains('=') {
            match kind {
                Kind::Output if only == "-" => {
                    m.insert("type".into(), "tar".into());
                    m.insert("dest".into(), "-".into());
                }
                Kind::Output => {
                    m.insert("type".into(), "local".into());
                    m.insert("dest".into(), only.as_str().into());
                }
                Kind::Cache => {
                    m.insert("type".into(), "registry".into());
                    m.insert("ref".into(), only.as_str().into());
                }
                _ => {
                    m.insert("id".into(), only.as_str().into());
                }
            }
            return m;
        }
    }
    let mut secret_type = None;
    for f in fields {
        let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
        let lower = k.trim().to_ascii_lowercase();
        match (kind, lower.as_str()) {
            (Kind::Secret, "type") => secret_type = Some(v.to_string()),
            (Kind::Secret, "source" | "src") => {
                m.insert("src".into(), v.into());
            }
            (Kind::Attest, "disabled") => {
                if crate::cli::parse_bool(v).unwrap_or(false) {
                    m.insert("disabled".into(), true.into());
                }
            }
            // Attributes of an attestation keep their case; the rest are lower-cased.
            (Kind::Attest, "type") => {
                m.insert("type".into(), v.into());
            }
            (Kind::Attest, _) => {
                m.insert(k.to_string(), v.into());
            }
            (_, k) => {
                m.insert(k.to_string(), v.into());
            }
        }
    }
    // `type=env,id=X,src=VAR`: the source names the variable.
    if secret_type.as_deref() == Some("env") && !m.contains_key("env") {
        if let Some(src) = m.remove("src") {
            m.insert("env".into(), src);
        }
    }
    m
}
