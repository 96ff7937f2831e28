//! The history `created_by` of metadata instructions, as BuildKit writes it:
//! the instruction name and the values it stored, in Go's `%v` / `%q`
//! formatting (`CMD ["a" "b"]`, `VOLUME [/a /b]`, `ENV A=1 B=two words`);
//! also COPY/ADD's and the build-arg prefix of RUN's.

use crate::image::{HealthConfig, ImageConfig};
use crate::instructions::expose::exposed_ports;
use crate::instructions::{Copy, Instruction};
use crate::stages::{Base, Build, ResolvedArg, Stage};

/// The entry for `instruction`, applied to `config` already; `args` are the
/// values in effect of an ARG's names. `None`: BuildKit adds no entry (ONBUILD);
/// `written` is used where BuildKit's text is not reproduced.
pub(super) fn created_by(
    instruction: &Instruction,
    config: &ImageConfig,
    args: &[(String, Option<String>)],
    written: &str,
) -> Option<String> {
    let c = &config.config;
    Some(match instruction {
        Instruction::Onbuild(_) => return None,
        Instruction::Env(kv) | Instruction::Label(kv) => {
            let mut s = instruction.name().to_string();
            for p in &kv.pairs {
                s.push_str(&format!(" {}={}", p.key, p.value));
            }
            s
        }
        Instruction::Cmd(_) => format!("CMD {}", go_quoted_list(c.cmd.as_deref().unwrap_or(&[]))),
        Instruction::Entrypoint(_) => format!(
            "ENTRYPOINT {}",
            go_quoted_list(c.entrypoint.as_deref().unwrap_or(&[]))
        ),
        Instruction::User(u) => format!("USER {u}"),
        Instruction::Volume(v) => format!("VOLUME {}", go_list(v)),
        Instruction::Stopsignal(s) => format!("STOPSIGNAL {s}"),
        Instruction::Shell(sh) => format!("SHELL {}", go_list(sh)),
        Instruction::Maintainer(m) => format!("MAINTAINER {m}"),
        Instruction::Healthcheck(_) => match &c.healthcheck {
            Some(h) => format!("HEALTHCHECK {}", healthcheck(h)),
            None => written.to_string(),
        },
        Instruction::Expose(ports) => {
            // BuildKit sorts the ports as written, then expands each.
            let mut sorted = ports.clone();
            sorted.sort();
            let keys: Vec<String> = sorted
                .iter()
                .flat_map(|p| exposed_ports(p).unwrap_or_default())
                .collect();
            format!("EXPOSE {}", go_list(&keys))
        }
        Instruction::Arg(_) => {
            let parts: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            format!("ARG {}", parts.join(" "))
        }
        _ => written.to_string(),
    })
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

/// Go's `%+v` of BuildKit's HealthcheckConfig (Dockerfile 1.24+).
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

/// Go's `%v` of a string slice: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a string slice: `["a" "b c"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatting() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(go_list(&v(&["/a", "/b"])), "[/a /b]");
        assert_eq!(
            go_quoted_list(&v(&["/bin/sh", "-c", "echo \"hi\"\t\\ é\u{1}"])),
            r#"["/bin/sh" "-c" "echo \"hi\"\t\\ é\x01"]"#
        );
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(100_000_000), "100ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        let h = HealthConfig {
            test: v(&["CMD", "/bin/true"]),
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
