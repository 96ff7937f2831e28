//! The history `created_by` of metadata instructions, as BuildKit writes it:
//! the instruction name and the values it stored, in Go's `%v` / `%q`
//! formatting (`CMD ["a" "b"]`, `VOLUME [/a /b]`, `ENV A=1 B=two words`).

use crate::image::ImageConfig;
use crate::instructions::expose::exposed_ports;
use crate::instructions::{Copy, Instruction};

/// The entry for `instruction`, applied to `config` already; `args` are the
/// values in effect of an ARG's names. `None`: BuildKit adds no entry (ONBUILD);
/// `written` is the fallback for instructions without an entry of their own.
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
        Instruction::Healthcheck(_) => {
            let h = c.healthcheck.clone().unwrap_or_default();
            format!(
                "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                go_list(&h.test),
                go_duration(h.interval),
                go_duration(h.timeout),
                go_duration(h.start_period),
                go_duration(h.start_interval),
                h.retries
            )
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

/// The entry of COPY/ADD: flags BuildKit records (`--parents`, `--chown`,
/// `--chmod`), the sources, heredocs as `<<NAME`, the destination.
pub(super) fn copy_created_by(c: &Copy, is_add: bool) -> String {
    let mut s = String::from(if is_add { "ADD" } else { "COPY" });
    if c.parents {
        s.push_str(" --parents");
    }
    if let Some(chown) = c.chown.as_deref().filter(|o| !o.is_empty()) {
        s.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = c.chmod_raw.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(" --chmod={chmod}"));
    }
    let (heredocs, paths): (Vec<&String>, Vec<&String>) =
        c.sources.iter().partition(|src| c.is_heredoc_source(src));
    for src in paths {
        s.push_str(&format!(" {src}"));
    }
    for src in heredocs {
        let name = src
            .trim_start_matches("<<")
            .trim_start_matches('-')
            .trim_matches(['"', '\'']);
        s.push_str(&format!(" <<{name}"));
    }
    s.push_str(&format!(" {} # buildkit", c.dest));
    s
}

/// Go's `time.Duration` text: `0s`, `500ms`, `1.5s`, `1m30s`, `2h0m0s`.
fn go_duration(nanos: u64) -> String {
    /// `n / unit` with the fraction's trailing zeros dropped.
    fn scaled(n: u64, unit: u64) -> String {
        let (whole, frac) = (n / unit, n % unit);
        if frac == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
    const SECOND: u64 = 1_000_000_000;
    match nanos {
        0 => "0s".to_string(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", scaled(n, 1_000)),
        n if n < SECOND => format!("{}ms", scaled(n, 1_000_000)),
        n => {
            let (h, m) = (n / (3600 * SECOND), n / (60 * SECOND) % 60);
            let secs = scaled(n % (60 * SECOND), SECOND);
            match (h, m) {
                (0, 0) => format!("{secs}s"),
                (0, m) => format!("{m}m{secs}s"),
                (h, m) => format!("{h}h{m}m{secs}s"),
            }
        }
    }
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
    fn go_durations() {
        let s = 1_000_000_000;
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(3 * s / 2), "1.5s");
        assert_eq!(go_duration(90 * s), "1m30s");
        assert_eq!(go_duration(300 * s), "5m0s");
        assert_eq!(go_duration(7200 * s + 1), "2h0m0.000000001s");
    }

    #[test]
    fn go_formatting() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(go_list(&v(&["/a", "/b"])), "[/a /b]");
        assert_eq!(
            go_quoted_list(&v(&["/bin/sh", "-c", "echo \"hi\"\t\\ é\u{1}"])),
            r#"["/bin/sh" "-c" "echo \"hi\"\t\\ é\x01"]"#
        );
    }
}
