//! `HEALTHCHECK [--interval --timeout --start-period --start-interval --retries] CMD ...` or `NONE`.

use std::time::Duration;

use super::duration::parse_duration;
use super::flags::FlagKind;
use super::{CommandLine, Ctx};
use crate::error::{ErrorKind, SourceError};

/// A typed HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK CMD ...`.
    Cmd {
        /// The probe.
        command: CommandLine,
        /// `--interval` (default 30s when unset).
        interval: Option<Duration>,
        /// `--timeout` (default 30s).
        timeout: Option<Duration>,
        /// `--start-period` (default 0s).
        start_period: Option<Duration>,
        /// `--start-interval` (default 5s).
        start_interval: Option<Duration>,
        /// `--retries` (default 3).
        retries: Option<u32>,
    },
}

const FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

pub(crate) fn parse(cx: &Ctx) -> Result<Healthcheck, SourceError> {
    let fl = cx.flags(FLAGS)?;
    let kind = cx
        .node
        .args
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    match kind.as_str() {
        "NONE" => {
            if cx.node.args.len() > 1 || !cx.node.flags.is_empty() {
                return Err(cx.error(
                    ErrorKind::Instruction,
                    "HEALTHCHECK NONE takes no arguments",
                    Some("write just HEALTHCHECK NONE".into()),
                ));
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            let rest: Vec<String> = cx.node.args.iter().skip(1).cloned().collect();
            if rest.iter().all(|a| a.trim().is_empty()) {
                return Err(cx.error(
                    ErrorKind::Instruction,
                    "Missing command after HEALTHCHECK CMD",
                    Some("write HEALTHCHECK CMD <command>".into()),
                ));
            }
            let command = if cx.node.json {
                CommandLine::Exec(rest)
            } else {
                CommandLine::Shell(rest.join(" "))
            };
            let dur = |name: &str| -> Result<Option<Duration>, SourceError> {
                let Some(v) = fl.string(name) else {
                    return Ok(None);
                };
                let at = fl.raw(name).unwrap_or(name).to_string();
                let d = parse_duration(&v).map_err(|m| {
                    cx.error_at_text(&at, ErrorKind::Flag, m, Some(format!("e.g. --{name}=30s")))
                })?;
                if d != Duration::ZERO && d < Duration::from_millis(1) {
                    return Err(cx.error_at_text(
                        &at,
                        ErrorKind::Flag,
                        format!("Interval {name:?} cannot be less than 1ms"),
                        None,
                    ));
                }
                Ok(Some(d))
            };
            let retries = match fl.string("retries") {
                None => None,
                Some(v) => {
                    let at = fl.raw("retries").unwrap_or("--retries").to_string();
                    let n: i64 = v.parse().map_err(|_| {
                        cx.error_at_text(
                            &at,
                            ErrorKind::Flag,
                            format!("invalid --retries {v:?}: not a number"),
                            None,
                        )
                    })?;
                    if n < 0 {
                        return Err(cx.error_at_text(
                            &at,
                            ErrorKind::Flag,
                            format!("--retries cannot be negative ({n})"),
                            None,
                        ));
                    }
                    Some(u32::try_from(n).map_err(|_| {
                        cx.error_at_text(
                            &at,
                            ErrorKind::Flag,
                            format!("--retries too large ({n})"),
                            None,
                        )
                    })?)
                }
            };
            Ok(Healthcheck::Cmd {
                command,
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                start_interval: dur("start-interval")?,
                retries,
            })
        }
        other => Err(cx.error(
            ErrorKind::Instruction,
            format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            Some("write HEALTHCHECK CMD <command> or HEALTHCHECK NONE".into()),
        )),
    }
}
