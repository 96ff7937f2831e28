//! The history `created_by` of metadata instructions, as BuildKit writes it:
//! the instruction name and the values it stored, in Go's `%v` / `%q`
//! formatting (`CMD ["a" "b"]`, `VOLUME [/a /b]`, `ENV A=1 B=two words`).

use crate::image::ImageConfig;
use crate::instructions::expose::exposed_ports;
use crate::instructions::Instruction;

/// The entry for `instruction`, applied to `config` already; `args` are the
/// values in effect of an ARG's names. `None`: BuildKit adds no entry (ONBUILD);
/// `written` is used where BuildKit's text is not reproduced (HEALTHCHECK).
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
    }
}
