//! `kiln build`: flags spelled as buildx spells them. For now only the frontend methods run:
//! `--check` / `--call check` (build checks), `--call outline` and `--call targets`; building
//! images comes with the solver (issue 5).

use crate::context::{BuildContext, ContextSpec};
use kiln_frontend::lint::{self, render, CheckOptions};
use kiln_frontend::stages::{self, Platform, ResolveOptions};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Arguments of `kiln build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build context: a directory, a tarball, a git or HTTP URL, or `-` for stdin.
    #[arg(value_name = "PATH | URL | -")]
    pub context: String,
    /// Name of the Dockerfile (default: `PATH/Dockerfile`); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,
    /// Set the target build stage to build.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set build-time variables (`KEY=VALUE`, or `KEY` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Set target platform for build (`os/arch[/variant]`, comma-separated or repeated).
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Set method for evaluating build (`build`, `check`, `outline`, `targets`), with an optional
    /// `,format=json`.
    #[arg(long, value_name = "METHOD", default_value = "build")]
    pub call: String,
    /// Shorthand for `--call=check`.
    #[arg(long, conflicts_with = "call")]
    pub check: bool,
    /// Output format of `--call` results (`text` or `json`).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Build,
    Check,
    Outline,
    Targets,
}

/// Runs `kiln build`.
pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (method, json) = method(&args)?;
    if method == Method::Build {
        return Err(miette::miette!(
            help = "use `kiln build --check`, `--call outline` or `--call targets` meanwhile",
            "building images is not available yet in kiln (only the frontend methods are)"
        ));
    }
    let scratch =
        tempfile::tempdir().map_err(|e| miette::miette!("creating a temporary directory: {e}"))?;
    let ctx = BuildContext::load(
        &ContextSpec::parse(&args.context),
        args.file.as_deref(),
        scratch.path(),
    )
    .map_err(|e| miette::miette!("{e}"))?;
    let name = ctx.dockerfile.name.clone();
    let source = String::from_utf8_lossy(&ctx.dockerfile.content).into_owned();
    let ast = kiln_frontend::parse_named(&name, &ctx.dockerfile.content)
        .map_err(|e| super::dockerfile::report(e, &name, &source))?;
    let resolve = resolve_options(&args)?;
    let fail = |e| super::dockerfile::report(e, &name, &source);
    match method {
        Method::Check => {
            let ignore = &ctx.ignore;
            let is_ignored = |p: &str| ignore.excludes(p);
            let report = lint::check(
                &ast,
                &CheckOptions {
                    resolve,
                    ignored: Some(&is_ignored),
                },
            )
            .map_err(fail)?;
            if json {
                let v = serde_json::json!({
                    "warnings": report.warnings,
                    "error": report.failure_message(),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| miette::miette!("{e}"))?
                );
            } else {
                print!("{}", render::report_text(&report, ast.source()));
            }
            if let Some(msg) = report.failure_message() {
                if !json {
                    eprintln!("ERROR: {msg}");
                }
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Method::Outline => {
            let build = stages::resolve(&ast, &resolve).map_err(fail)?;
            let outline = build.outline();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outline).map_err(|e| miette::miette!("{e}"))?
                );
            } else {
                print!("{}", outline_text(&outline));
            }
            Ok(ExitCode::SUCCESS)
        }
        Method::Targets => {
            let build = stages::resolve(
                &ast,
                &ResolveOptions {
                    all_stages: false,
                    ..resolve
                },
            )
            .map_err(fail)?;
            let targets = build.targets();
            if json {
                let v = serde_json::json!({ "targets": targets });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| miette::miette!("{e}"))?
                );
            } else {
                print!("{}", targets_text(&targets));
            }
            Ok(ExitCode::SUCCESS)
        }
        Method::Build => Ok(ExitCode::FAILURE),
    }
}

fn method(args: &Args) -> miette::Result<(Method, bool)> {
    let spec = if args.check {
        "check"
    } else {
        args.call.as_str()
    };
    let mut parts = spec.split(',');
    let m = match parts
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "build" | "" => Method::Build,
        "check" | "lint" => Method::Check,
        "outline" => Method::Outline,
        "targets" => Method::Targets,
        other => {
            return Err(miette::miette!(
                help = "methods: build, check, outline, targets",
                "unknown --call method {other:?}"
            ))
        }
    };
    let mut format = args.format.clone();
    for p in parts {
        match p.split_once('=') {
            Some(("format", f)) => format = Some(f.to_string()),
            _ => {
                return Err(miette::miette!(
                    help = "write --call outline,format=json",
                    "invalid --call option {p:?}"
                ))
            }
        }
    }
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => {
            return Err(miette::miette!(
                help = "formats: text, json",
                "unknown format {f:?}"
            ))
        }
    };
    Ok((m, json))
}

fn resolve_options(args: &Args) -> miette::Result<ResolveOptions> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg KEY` takes the value from the environment, and is ignored when unset.
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let target_platform = match args.platform.iter().find(|p| !p.trim().is_empty()) {
        None => Platform::host(),
        Some(p) if p == "local" => Platform::host(),
        Some(p) => Platform::parse(p)
            .map_err(|e| miette::miette!(help = "e.g. --platform linux/arm64", "{e}"))?,
    };
    Ok(ResolveOptions {
        target: args.target.clone(),
        build_args,
        target_platform,
        ..ResolveOptions::default()
    })
}

/// Go tabwriter-style columns: each column as wide as its widest cell plus `pad`.
fn table(rows: &[Vec<String>], pad: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 < r.len() {
                line.push_str(&format!("{cell:<w$}", w = widths[c] + pad));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn outline_text(o: &stages::outline::Outline) -> String {
    let mut out = String::new();
    let mut head = vec![vec![
        "TARGET:".to_string(),
        if o.name.is_empty() {
            "(default)".into()
        } else {
            o.name.clone()
        },
    ]];
    if let Some(d) = &o.description {
        head.push(vec!["DESCRIPTION:".into(), d.clone()]);
    }
    out.push_str(&table(&head, 1));
    out.push('\n');
    if !o.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_string(),
            "VALUE".into(),
            "DESCRIPTION".into(),
        ]];
        for a in &o.args {
            rows.push(vec![
                a.name.clone(),
                a.value.clone().unwrap_or_default(),
                a.description.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if !list.is_empty() {
            let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
            for s in list {
                rows.push(vec![
                    s.name.clone(),
                    if s.required {
                        "true".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            out.push_str(&table(&rows, 3));
            out.push('\n');
        }
    }
    out
}

fn targets_text(targets: &[stages::outline::Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".into()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, _) => "(default)".to_string(),
            (false, true) => format!("{} (default)", t.name),
            (false, false) => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone().unwrap_or_default()]);
    }
    table(&rows, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["TARGET".into(), "DESCRIPTION".into()],
            vec!["build (default)".into(), "".into()],
        ];
        assert_eq!(
            table(&rows, 3),
            "TARGET            DESCRIPTION\nbuild (default)\n"
        );
    }
}
