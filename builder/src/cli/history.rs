//! `kiln history`: the steps that made an image, from its config's history.

use crate::local_store::LocalStore;
use crate::template;
use kiln_oci::{Digest, Platform};
use miette::{IntoDiagnostic, Result};
use serde::Serialize;
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
    /// `table`, `json` (the config's history entries), or a Go template over `ID`,
    /// `CreatedAt`, `CreatedSince`, `CreatedBy`, `Size`, `Comment`.
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
    let rows: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, (h, size))| Row::new(h, *size, (i == 0).then_some(&image.id), &args))
        .collect();
    if args.format != "table" {
        // Any other format is a Go template over docker's history fields.
        let header = serde_json::json!({
            "ID": "IMAGE",
            "CreatedAt": "CREATED AT",
            "CreatedSince": "CREATED",
            "CreatedBy": "CREATED BY",
            "Size": "SIZE",
            "Comment": "COMMENT",
        });
        let rows = rows
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .into_diagnostic()?;
        print!("{}", template::render_rows(&args.format, &header, &rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![vec![
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for r in rows {
        table.push(vec![r.id, r.created_since, r.created_by, r.size, r.comment]);
    }
    super::images::print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// One history entry with docker's template fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    #[serde(rename = "ID")]
    id: String,
    created_at: String,
    created_since: String,
    created_by: String,
    size: String,
    comment: String,
}

impl Row {
    /// `id` is the image's for the newest entry; older ones show `<missing>`, as docker shows
    /// for every step it did not build itself.
    fn new(h: &serde_json::Value, size: u64, id: Option<&Digest>, args: &Args) -> Row {
        let text = |key: &str| {
            h.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let by = text("created_by");
        let created_by = if args.no_trunc || by.chars().count() <= 45 {
            by
        } else {
            by.chars().take(44).collect::<String>() + "…"
        };
        let id = match id {
            Some(id) if args.no_trunc => id.to_string(),
            Some(id) => id.short().to_string(),
            None => "<missing>".to_string(),
        };
        let created_at = text("created");
        Row {
            id,
            created_since: super::images::created_since(&created_at),
            created_at,
            created_by,
            size: super::images::human_size(size),
            comment: text("comment"),
        }
    }
}
