//! `kiln images` (alias `ls`): list local images.

use crate::local_store::{LocalImage, LocalStore};
use crate::template;
use kiln_oci::media_type::is_index;
use kiln_oci::Reference;
use kiln_solver::timestamp;
use miette::{miette, IntoDiagnostic, Result};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln images`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only images whose name matches (`busybox`, `busybox:1*`, `*/app`).
    pub repository: Option<String>,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Only IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// `table` (default), `json`, or a template such as `{{.Repository}}:{{.Tag}}`.
    #[arg(long)]
    pub format: Option<String>,
    /// Filters: `dangling=true|false`, `reference=PATTERN`. Repeatable.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

/// One row of the listing (field names as docker's template keys).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    repository: String,
    tag: String,
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    created_at: String,
    created_since: String,
    size: String,
    #[serde(skip)]
    full_id: String,
    platforms: String,
}

/// Runs `kiln images`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let mut dangling: Option<bool> = None;
    let mut patterns: Vec<String> = args.repository.iter().cloned().collect();
    for f in &args.filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| miette!("bad filter {f:?}: expected KEY=VALUE"))?;
        match k {
            "dangling" => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(miette!("bad filter {f:?}: dangling takes true or false")),
                })
            }
            "reference" => patterns.push(v.to_string()),
            _ => {
                return Err(miette!(
                    "unsupported filter {k:?} (supported: dangling, reference)"
                ))
            }
        }
    }
    let mut rows = Vec::new();
    for image in store.images()? {
        if dangling == Some(true) {
            continue;
        }
        let Ok(r) = Reference::parse(&image.name) else {
            continue;
        };
        let familiar = r.familiar();
        let name = r.familiar_name();
        if !patterns.is_empty()
            && !patterns
                .iter()
                .any(|p| reference_matches(p, &name, &familiar))
        {
            continue;
        }
        rows.push(row(&store, &image, Some(&r), args.no_trunc)?);
    }
    // Untagged images (`<none>`) match no reference pattern, as in docker.
    if dangling != Some(false) && patterns.is_empty() {
        for image in store.untagged()? {
            rows.push(row(&store, &image, None, args.no_trunc)?);
        }
    }
    let format = args.format.as_deref().unwrap_or("table");
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r.full_id.clone()) {
                println!("{}", r.id);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match format {
        "json" => {
            for r in &rows {
                println!("{}", serde_json::to_string(r).into_diagnostic()?);
            }
        }
        "table" => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
            for r in &rows {
                let mut line = vec![r.repository.clone(), r.tag.clone()];
                if args.digests {
                    line.push(r.digest.clone());
                }
                line.extend([r.id.clone(), r.created_since.clone(), r.size.clone()]);
                table.push(line);
            }
            print_table(&table);
        }
        format => {
            let header = serde_json::json!({
                "Repository": "REPOSITORY",
                "Tag": "TAG",
                "Digest": "DIGEST",
                "ID": "IMAGE ID",
                "CreatedAt": "CREATED AT",
                "CreatedSince": "CREATED",
                "Size": "SIZE",
                "Platforms": "PLATFORMS",
            });
            let rows = rows
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()
                .into_diagnostic()?;
            print!("{}", template::render_rows(format, &header, &rows)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(
    store: &LocalStore,
    image: &LocalImage,
    r: Option<&Reference>,
    no_trunc: bool,
) -> Result<Row> {
    let d = &image.descriptor;
    let manifests = store.platform_manifests(d).unwrap_or_default();
    let mut size = 0u64;
    let mut created = String::new();
    let mut platforms = Vec::new();
    for (desc, m) in &manifests {
        size += m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>() + desc.size;
        if created.is_empty() {
            if let Ok(cfg) = store.config(m) {
                created = cfg["created"].as_str().unwrap_or("").to_string();
                if let (Some(os), Some(arch)) = (cfg["os"].as_str(), cfg["architecture"].as_str()) {
                    platforms.push(format!("{os}/{arch}"));
                }
            }
        } else if let Some(p) = &desc.platform {
            platforms.push(p.to_string());
        }
    }
    if is_index(&d.media_type) {
        size += d.size;
    }
    let full_id = image.id.to_string();
    let id = if no_trunc {
        full_id.clone()
    } else {
        image.id.short().to_string()
    };
    Ok(Row {
        repository: r.map_or_else(|| "<none>".to_string(), |r| r.familiar_name()),
        tag: r.and_then(|r| r.tag()).unwrap_or("<none>").to_string(),
        digest: d.digest.to_string(),
        id,
        created_since: created_since(&created),
        created_at: if created.is_empty() {
            "N/A".into()
        } else {
            created
        },
        size: human_size(size),
        full_id,
        platforms: platforms.join(","),
    })
}

/// Docker's "2 hours ago" age of an RFC 3339 time, `N/A` when it has none.
pub fn created_since(ts: &str) -> String {
    let Some(then) = timestamp::parse_rfc3339(ts) else {
        return "N/A".to_string();
    };
    timestamp::human_duration(timestamp::now_secs().saturating_sub(then).max(0) as u64) + " ago"
}

/// `docker images` sizes: decimal, 3 significant digits (`4.26MB`).
pub fn human_size(n: u64) -> String {
    kiln_solver::units::human_size_with_precision(n, 3)
}

/// Prints left-aligned columns separated by three spaces, like docker.
pub fn print_table(rows: &[Vec<String>]) {
    print!("{}", crate::table::columns(rows, 3));
}

/// Docker's `reference=` filter: shell-style glob on `name` or `name:tag`, where `*` stops at '/'.
fn reference_matches(pattern: &str, name: &str, familiar: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes()) || glob(pattern.as_bytes(), familiar.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&p[1..], s) || (s.first().is_some_and(|c| *c != b'/') && glob(p, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_path_match() {
        assert!(reference_matches("busybox", "busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox", "busybox:latest"));
        assert!(reference_matches(
            "busybox:lat*",
            "busybox",
            "busybox:latest"
        ));
        assert!(!reference_matches(
            "*",
            "127.0.0.1:5000/x",
            "127.0.0.1:5000/x:1"
        ));
        assert!(reference_matches(
            "*/*",
            "127.0.0.1:5000/x",
            "127.0.0.1:5000/x:1"
        ));
        assert!(!reference_matches("alpine", "busybox", "busybox:latest"));
    }

    #[test]
    fn timestamps() {
        assert!(created_since("1970-01-01T00:00:00Z").ends_with("years ago"));
        assert_eq!(created_since(""), "N/A");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_089_000), "1.09MB");
    }
}
