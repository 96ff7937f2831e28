//! The history's `created_by`, worded as BuildKit's Dockerfile frontend words
//! it (what `docker history` shows): expanded values, Go's `%q`/`%v`
//! formatting of lists, no entry for ONBUILD, COPY without `--from`/`--link`.

use crate::instructions::expose::exposed_ports;
use crate::instructions::{Copy, Instruction};
use crate::parser::dump::go_quote;
use crate::stages::{Base, Build, ResolvedArg, Stage};
use kiln_oci::config::{HealthConfig, ImageConfig};

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()` of `nanos`: `0s`, `1.5s`, `1m30s`, `100ms`.
fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    // Below a second: the largest unit that keeps the integer part non-zero.
    if nanos < 1_000_000_000 {
        let (unit, per) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", fraction(nanos, per));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / per` with the fraction's trailing zeros dropped (`1500, 1000` → `1.5`).
fn fraction(value: u64, per: u64) -> String {
    let whole = value / per;
    let rest = value % per;
    if rest == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Go's `%+v` of BuildKit's HealthcheckConfig.
fn healthcheck(h: &HealthConfig) -> String {
    format!(
        "{{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

/// `KEY=value ...` of ENV/LABEL pairs, unquoted.
fn pairs(name: &str, kv: &crate::instructions::KeyValues) -> String {
    let mut s = name.to_string();
    for p in &kv.pairs {
        s.push_str(&format!(" {}={}", p.key, p.value));
    }
    s
}

/// The `created_by` of a metadata instruction applied to `config` (the
/// config after it); `None` for ONBUILD, which BuildKit leaves out of history.
/// `args` are the stage's ARG declarations of this instruction.
pub(super) fn metadata(
    instruction: &Instruction,
    config: &ImageConfig,
    args: &[&ResolvedArg],
) -> Option<String> {
    let c = &config.config;
    Some(match instruction {
        Instruction::Env(kv) => pairs("ENV", kv),
        Instruction::Label(kv) => pairs("LABEL", kv),
        Instruction::Expose(ports) => {
            // BuildKit sorts the ports as written before expanding each (its
            // test: EXPOSE 2375 5000 1234/udp -> [1234/udp 2375/tcp 5000/tcp]).
            let mut sorted = ports.clone();
            sorted.sort();
            let all: Vec<String> = sorted
                .iter()
                .flat_map(|p| exposed_ports(p).unwrap_or_default())
                .collect();
            format!("EXPOSE {}", go_list(&all))
        }
        Instruction::Volume(paths) => format!("VOLUME {}", go_list(paths)),
        Instruction::User(u) => format!("USER {u}"),
        Instruction::Stopsignal(s) => format!("STOPSIGNAL {s}"),
        Instruction::Shell(sh) => format!("SHELL {}", go_list(sh)),
        Instruction::Maintainer(m) => format!("MAINTAINER {m}"),
        Instruction::Cmd(_) => format!("CMD {}", go_quote_list(c.cmd.as_deref().unwrap_or(&[]))),
        Instruction::Entrypoint(_) => format!(
            "ENTRYPOINT {}",
            go_quote_list(c.entrypoint.as_deref().unwrap_or(&[]))
        ),
        Instruction::Healthcheck(_) => match &c.healthcheck {
            Some(h) => format!("HEALTHCHECK {}", healthcheck(h)),
            None => "HEALTHCHECK".to_string(),
        },
        Instruction::Arg(_) => {
            let decls: Vec<String> = args
                .iter()
                .map(|a| match &a.value {
                    Some(v) => format!("{}={v}", a.name),
                    None => a.name.clone(),
                })
                .collect();
            format!("ARG {}", decls.join(" "))
        }
        Instruction::Onbuild(_) => return None,
        // Lowered with their own vertices, which word their own history.
        Instruction::Workdir(_)
        | Instruction::From(_)
        | Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_) => return None,
    })
}

/// The `created_by` of COPY/ADD: the name, `--parents`, `--chown`, `--chmod`,
/// the source paths, the heredocs as `<<NAME`, the destination (BuildKit
/// leaves `--from`, `--link` and `--exclude` out).
pub(super) fn copy(c: &Copy, is_add: bool) -> String {
    let mut s = if is_add { "ADD" } else { "COPY" }.to_string();
    if c.parents {
        s.push_str(" --parents");
    }
    if let Some(chown) = c.chown.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = c.chmod_raw.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!(" --chmod={chmod}"));
    }
    for src in c.sources.iter().filter(|src| !c.is_heredoc_source(src)) {
        s.push(' ');
        s.push_str(src);
    }
    for h in &c.heredocs {
        s.push_str(&format!(" <<{}", h.name));
    }
    s.push(' ');
    s.push_str(&c.dest);
    s.push_str(" # buildkit");
    s
}

/// The ARGs a RUN at `node` of `stage` sees, in declaration order: a parent
/// stage's first, then the stage's own before `node` (BuildKit's buildArgs).
fn args_before<'b>(build: &'b Build, stage: &'b Stage, node: usize) -> Vec<&'b ResolvedArg> {
    let mut chain = vec![stage];
    let mut cur = stage;
    // Bounded: a stage's base is always an earlier stage.
    while let Base::Stage(b) = cur.base {
        match build.stages.get(b) {
            Some(parent) if parent.index < cur.index => {
                chain.push(parent);
                cur = parent;
            }
            _ => break,
        }
    }
    let mut out = Vec::new();
    for (i, s) in chain.iter().rev().enumerate() {
        let own = i + 1 == chain.len();
        out.extend(s.args.iter().filter(|a| !own || a.node < node));
    }
    out
}

/// `|N k=v ... ` before a RUN's command in history: every ARG the RUN sees
/// once, valued from the RUN's environment (where ENV wins) or its own value.
pub(super) fn run_build_args(
    build: &Build,
    stage: &Stage,
    node: usize,
    env: &[(String, String)],
) -> String {
    let mut seen: Vec<(String, String)> = Vec::new();
    for a in args_before(build, stage, node) {
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| *k == a.name)
            .map(|(_, v)| v.clone())
            .or_else(|| a.value.clone())
            .unwrap_or_default();
        match seen.iter_mut().find(|(k, _)| *k == a.name) {
            Some(e) => e.1 = value,
            None => seen.push((a.name.clone(), value)),
        }
    }
    if seen.is_empty() {
        return String::new();
    }
    let kv: Vec<String> = seen.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("|{} {} ", seen.len(), kv.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats_match_buildkits_history() {
        assert_eq!(go_quote("echo \"$HOME\"\n"), r#""echo \"$HOME\"\n""#);
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "a b".into()]),
            r#"["/bin/sh" "-c" "a b"]"#
        );
        assert_eq!(go_list(&["/data".into(), "/logs".into()]), "[/data /logs]");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(100_000_000), "100ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        let h = HealthConfig {
            test: vec!["CMD".into(), "/bin/true".into()],
            interval: 5_000_000_000,
            retries: 3,
            ..Default::default()
        };
        assert_eq!(
            healthcheck(&h),
            "{Test:[CMD /bin/true] Interval:5s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}"
        );
    }
}
