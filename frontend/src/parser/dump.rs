//! BuildKit's `Node.Dump()` text format, used by the parser conformance tests.
//!
//! `(instruction ["--flag" ...] "arg" ...)` per instruction; arguments quoted like Go's
//! `strconv.Quote`, flags like Go's `%q` of a string slice.

use super::node::{Ast, Node};
use std::fmt::Write;

/// Dumps the whole AST: one parenthesised instruction per line, no trailing newline.
pub fn dump_ast(ast: &Ast) -> String {
    let mut out = String::new();
    for child in &ast.children {
        out.push('(');
        out.push_str(&dump_node(child));
        out.push_str(")\n");
    }
    out.trim().to_string()
}

/// Dumps one instruction without the surrounding parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut out = node.value.to_lowercase();
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&go_quote(flag));
        }
        out.push(']');
    }
    for arg in &node.args {
        out.push(' ');
        out.push_str(&go_quote(arg));
    }
    if let Some(sub) = &node.sub {
        out.push_str(" (");
        out.push_str(&dump_node(sub));
        out.push(')');
    }
    out.trim().to_string()
}

/// Quotes `s` exactly like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the
/// ASCII space. Controls, format characters, non-ASCII spaces, separators, private use and
/// non-characters are not printable.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    if c.is_control() {
        return false;
    }
    !matches!(u,
        0xA0 | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
        | 0x1680 | 0x180E | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064
        | 0x2066..=0x206F | 0x3000 | 0xD800..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xFFFE..=0xFFFF | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F | 0xF0000..=0x10FFFF)
        && (u & 0xFFFE) != 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\n\t\u{7f}"), r#""\x00\n\t\x7f""#);
        assert_eq!(go_quote("♥ ☃ 한국어"), "\"♥ ☃ 한국어\"");
        assert_eq!(go_quote("\u{a0}\u{200b}"), r#""\u00a0\u200b""#);
        assert_eq!(go_quote("\u{f0000}"), r#""\U000f0000""#);
    }
}
