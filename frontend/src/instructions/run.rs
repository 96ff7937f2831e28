//! `RUN [--mount=...] [--network=...] [--security=...] command`.

use super::flags::FlagKind;
use super::mount::{parse_mount, Mount};
use super::{CommandLine, Ctx, Expand};
use crate::error::{ErrorKind, SourceError};
use crate::parser::Heredoc;

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The sandbox default.
    #[default]
    Default,
    /// Only an isolated loopback.
    None,
    /// The host network (needs the `network.host` entitlement).
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Normal sandbox.
    #[default]
    Sandbox,
    /// Privileged (needs the `security.insecure` entitlement).
    Insecure,
}

/// A typed RUN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    /// The command (shell or exec form).
    pub command: CommandLine,
    /// The `--mount` values as written.
    pub mount_specs: Vec<String>,
    /// Parsed mounts (filled with expanded values by [`Run::expand`]; at parse time, mounts whose
    /// values use variables are left out until then).
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// Heredocs of the command.
    pub heredocs: Vec<Heredoc>,
    /// Per spec: the index in `mounts` of its parse-time result when expansion cannot change it.
    #[serde(skip)]
    parsed: Vec<Option<usize>>,
}

const FLAGS: &[(&str, FlagKind)] = &[
    ("mount", FlagKind::Strings),
    ("network", FlagKind::String),
    ("security", FlagKind::String),
];

pub(crate) fn parse(cx: &Ctx) -> Result<Run, SourceError> {
    let fl = cx.flags(FLAGS)?;
    let network = match fl.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(cx.error_at_text(
                fl.raw("network").unwrap_or("--network"),
                ErrorKind::Flag,
                format!(
                    "unsupported network mode {other:?}{}",
                    crate::suggest::did_you_mean(other, ["default", "none", "host"])
                ),
                Some("--network is one of default, none, host".into()),
            ))
        }
    };
    let security = match fl.string("security").as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => {
            return Err(cx.error_at_text(
                fl.raw("security").unwrap_or("--security"),
                ErrorKind::Flag,
                format!("unsupported security mode {other:?}"),
                Some("--security is sandbox or insecure".into()),
            ))
        }
    };
    if cx.node.args.iter().all(|a| a.trim().is_empty()) && cx.node.heredocs.is_empty() {
        return Err(cx.error(
            ErrorKind::Instruction,
            "RUN requires at least one argument",
            Some("write RUN <command>".into()),
        ));
    }
    let mount_specs = fl.strings("mount");
    let mut mounts = Vec::new();
    let mut parsed = Vec::new();
    let mut ssh = 0;
    for spec in &mount_specs {
        match parse_mount(spec, &mut |v: &str| Ok(v.to_string()), ssh) {
            Ok(m) => {
                ssh += usize::from(m.kind == super::mount::MountType::Ssh);
                parsed.push((!needs_expansion(spec, cx.ast.escape)).then_some(mounts.len()));
                mounts.push(m);
            }
            // A value with a variable may be valid once expanded.
            Err(_) if spec.contains('$') => parsed.push(None),
            Err(e) => {
                return Err(cx.error_at_text(
                    spec,
                    ErrorKind::Flag,
                    format!("invalid --mount: {}", e.message),
                    e.hint,
                ))
            }
        }
    }
    Ok(Run {
        command: CommandLine::from_node(cx.node),
        mount_specs,
        mounts,
        network,
        security,
        heredocs: cx.node.heredocs.clone(),
        parsed,
    })
}

/// Whether expansion could change a mount spec (variables, quotes or escapes in it).
fn needs_expansion(spec: &str, escape: char) -> bool {
    spec.contains(['$', '\'', '"', escape])
}

impl Run {
    /// Re-parses the mounts with expanded option values (`from` stays as written).
    pub(crate) fn expand(&mut self, cx: &Ctx, ex: &mut Expand) -> Result<(), SourceError> {
        let mut mounts = Vec::new();
        let mut ssh = 0;
        let mut old: Vec<Option<Mount>> = std::mem::take(&mut self.mounts)
            .into_iter()
            .map(Some)
            .collect();
        for (i, spec) in self.mount_specs.iter().enumerate() {
            // Specs without variables, quotes or escapes were fully parsed already.
            let reuse = self
                .parsed
                .get(i)
                .copied()
                .flatten()
                .and_then(|j| old.get_mut(j).and_then(Option::take))
                .filter(|m| m.kind != super::mount::MountType::Ssh);
            let m = match reuse {
                Some(m) => m,
                None => parse_mount(spec, ex, ssh).map_err(|e| {
                    cx.error_at_text(
                        spec,
                        ErrorKind::Flag,
                        format!("invalid --mount: {}", e.message),
                        e.hint,
                    )
                })?,
            };
            ssh += usize::from(m.kind == super::mount::MountType::Ssh);
            mounts.push(m);
        }
        // After expansion mount i belongs to spec i; only specs that never needed expansion stay reusable.
        self.parsed = self
            .parsed
            .iter()
            .enumerate()
            .map(|(i, p)| p.map(|_| i))
            .collect();
        self.mounts = mounts;
        Ok(())
    }
}
