//! `kiln inspect`: docker-style JSON about local images.

use crate::local_store::LocalStore;
use crate::template::{GoTemplate, JsonStyle};
use kiln_oci::{Platform, Reference};
use miette::{IntoDiagnostic, Result};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images (names or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Platform of a multi-platform image (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Go template (`{{.Architecture}}`, `{{json .Config}}`).
    #[arg(short, long)]
    pub format: Option<String>,
}

/// Runs `kiln inspect`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .into_diagnostic()?;
    let mut out = Vec::new();
    for what in &args.images {
        let image = store.find(what)?;
        let (desc, m) = store.manifest_for(&image.descriptor, platform.as_ref())?;
        let cfg = store.config(&m)?;
        let tags: Vec<String> = store
            .with_id(&image.id)?
            .into_iter()
            .filter_map(|i| Reference::parse(&i.name).ok().map(|r| r.familiar()))
            .collect();
        let size: u64 = m.layers.iter().map(|l| l.size).sum();
        out.push(json!({
            "Id": image.id.to_string(),
            "RepoTags": tags,
            "Descriptor": image.descriptor,
            "Manifest": desc,
            "Created": cfg.get("created").cloned().unwrap_or(serde_json::Value::Null),
            "Author": cfg.get("author").cloned().unwrap_or(json!("")),
            "Architecture": cfg.get("architecture").cloned().unwrap_or(json!("")),
            "Variant": cfg.get("variant").cloned().unwrap_or(serde_json::Value::Null),
            "Os": cfg.get("os").cloned().unwrap_or(json!("")),
            "Config": cfg.get("config").cloned().unwrap_or(json!({})),
            "RootFS": {
                "Type": "layers",
                "Layers": cfg.get("rootfs").and_then(|r| r.get("diff_ids")).cloned().unwrap_or(json!([])),
            },
            "Size": size,
        }));
    }
    match &args.format {
        Some(t) => {
            let template = GoTemplate::parse(t, JsonStyle::Compact)?;
            for v in &out {
                println!("{}", template.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out).into_diagnostic()?),
    }
    Ok(ExitCode::SUCCESS)
}
