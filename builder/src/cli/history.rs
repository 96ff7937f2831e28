//! `kiln history`: the steps that made an image, from its config's history.

use crate::local_store::LocalStore;
use kiln_oci::Platform;
use miette::{IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image (name or ID).
    pub image: String,
    /// Platform of a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Don't truncate the commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Runs `kiln history`.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let store = LocalStore::open(root)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .into_diagnostic()?;
    let image = store.find(&args.image)?;
    let (_, m) = store.manifest_for(&image.descriptor, platform.as_ref())?;
    let cfg = store.config(&m)?;
    let history = cfg
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let mut layers = m.layers.iter();
    let mut rows = Vec::new();
    for h in history.iter().rev().collect::<Vec<_>>().into_iter().rev() {
        let empty = h
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        rows.push((h.clone(), size));
    }
    rows.reverse();
    if args.format == "json" {
        for (h, size) in &rows {
            let mut v = h.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("size".into(), serde_json::json!(size));
            }
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![vec![
        "CREATED".to_string(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for (h, size) in &rows {
        let by = h
            .get("created_by")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let by = if args.no_trunc || by.chars().count() <= 45 {
            by
        } else {
            by.chars().take(44).collect::<String>() + "…"
        };
        table.push(vec![
            h.get("created")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            by,
            super::images::human_size(*size),
            h.get("comment")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        ]);
    }
    super::images::print_table(&table);
    Ok(ExitCode::SUCCESS)
}
