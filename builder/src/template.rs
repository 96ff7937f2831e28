//! `--format` Go templates (`images`, `inspect`, `history`, `imagetools inspect`) through
//! `gtmpl`, with docker's extra functions (`json`, `join`, `split`, `lower`, `upper`, `title`,
//! `truncate`, `pad`) and its `\t`/`\n` escapes.

use gtmpl::{Context, Func, FuncError, Value};
use std::collections::HashMap;

/// A template that did not parse or did not run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TemplateError {
    /// The template is not a valid Go template.
    #[error("invalid --format template {template:?}")]
    Parse {
        /// The template as given.
        template: String,
        /// What the parser said.
        #[source]
        source: Box<gtmpl::error::ParseError>,
    },
    /// `define`, `template` and `block` are refused: a template calling itself would recurse
    /// until the stack runs out.
    #[error(
        "invalid --format template {template:?}: define, template and block are not supported"
    )]
    Nested {
        /// The template as given.
        template: String,
    },
    /// The template failed on a value (unknown field, bad function argument).
    #[error("--format template {template:?} failed")]
    Execute {
        /// The template as given.
        template: String,
        /// What went wrong.
        #[source]
        source: Box<gtmpl::error::ExecError>,
    },
}

/// How `{{json …}}` prints: docker's compact line or buildx's indented document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// One line (`docker images/inspect/history`).
    Compact,
    /// Indented by two spaces (`buildx imagetools inspect`).
    Indented,
}

/// A parsed `--format` template, run once per row.
pub struct GoTemplate {
    source: String,
    template: gtmpl::Template,
}

impl GoTemplate {
    /// Parses `format` as docker does: `\t` and `\n` written as two characters become a tab
    /// and a newline first.
    pub fn parse(format: &str, json: JsonStyle) -> Result<Self, TemplateError> {
        let text = format.replace("\\t", "\t").replace("\\n", "\n");
        if calls_templates(&text) {
            return Err(TemplateError::Nested {
                template: format.to_string(),
            });
        }
        let mut template = gtmpl::Template::default();
        let json_fn: Func = match json {
            JsonStyle::Compact => json_compact,
            JsonStyle::Indented => json_indented,
        };
        template.add_funcs(&[
            ("json", json_fn),
            ("join", join as Func),
            ("split", split as Func),
            ("lower", lower as Func),
            ("upper", upper as Func),
            ("title", title as Func),
            ("truncate", truncate as Func),
            ("pad", pad as Func),
        ]);
        template
            .parse(text)
            .map_err(|source| TemplateError::Parse {
                template: format.to_string(),
                source: Box::new(source),
            })?;
        Ok(GoTemplate {
            source: format.to_string(),
            template,
        })
    }

    /// Runs the template on `value`; the top-level object's fields are strict (an unknown
    /// `{{.Field}}` is an error, as on docker's structs), nested objects are maps (a missing
    /// key prints `<no value>`).
    pub fn render(&self, value: &serde_json::Value) -> Result<String, TemplateError> {
        self.template
            .render(&Context::from(to_gtmpl(value, true)))
            .map_err(|source| TemplateError::Execute {
                template: self.source.clone(),
                source: Box::new(source),
            })
    }
}

/// Renders one line per row for a `--format` value. `table <template>` (docker's form) puts a
/// header first, rendered from `header` (each field's column title), and aligns the cells the
/// template separates with tabs; any other template renders each row as it is.
pub fn render_rows(
    format: &str,
    header: &serde_json::Value,
    rows: &[serde_json::Value],
) -> Result<String, TemplateError> {
    let (table, text) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, format),
    };
    let template = GoTemplate::parse(text, JsonStyle::Compact)?;
    let mut lines = Vec::with_capacity(rows.len() + 1);
    if table {
        lines.push(template.render(header)?);
    }
    for row in rows {
        lines.push(template.render(row)?);
    }
    if !table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    Ok(crate::table::columns(&cells, 3))
}

/// Whether an action starts with `define`, `template` or `block` (trim markers allowed).
fn calls_templates(text: &str) -> bool {
    text.match_indices("{{").any(|(i, _)| {
        let action = text[i + 2..].trim_start_matches('-').trim_start();
        ["define", "template", "block"].iter().any(|k| {
            action
                .strip_prefix(k)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    })
}

/// JSON to template values; `null` prints `<no value>`.
fn to_gtmpl(v: &serde_json::Value, top: bool) -> Value {
    match v {
        serde_json::Value::Null => Value::NoValue,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::NoValue,
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(|v| to_gtmpl(v, false)).collect()),
        serde_json::Value::Object(o) => {
            let fields: HashMap<String, Value> = o
                .iter()
                .map(|(k, v)| (k.clone(), to_gtmpl(v, false)))
                .collect();
            if top {
                Value::Object(fields)
            } else {
                Value::Map(fields)
            }
        }
    }
}

/// Template values back to JSON for `{{json …}}` (keys sorted, as Go prints maps).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into(),
            (_, Some(i), _) => i.into(),
            (_, _, Some(f)) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        },
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn string_arg(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(FuncError::Generic(format!(
            "{name}: expected a string, got {other}"
        ))),
    }
}

fn number_arg(name: &str, v: &Value) -> Result<usize, FuncError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| FuncError::Generic(format!("{name}: expected a count, got {n}"))),
        other => Err(FuncError::Generic(format!(
            "{name}: expected a count, got {other}"
        ))),
    }
}

fn json_compact(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_json(one("json", args)?).to_string()))
}

fn json_indented(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(go_json_indented(&to_json(one(
        "json", args,
    )?))))
}

/// `v` as Go's `json.MarshalIndent(v, "", "  ")` prints it (buildx's `json`): keys sorted,
/// two-space indent, and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`… — those
/// characters only occur inside strings, so replacing them in the text is exact.
pub fn go_json_indented(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".to_string());
    if !text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `join LIST SEP`.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Array(items), sep] = args else {
        return Err(FuncError::Generic(
            "join: expected a list and a separator".into(),
        ));
    };
    let sep = string_arg("join", sep)?;
    let items: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    Ok(Value::String(items.join(&sep)))
}

/// `split STRING SEP`.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [s, sep] = args else {
        return Err(FuncError::ExactlyXArgs("split".into(), 2));
    };
    let (s, sep) = (string_arg("split", s)?, string_arg("split", sep)?);
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str()).map(Value::from).collect()
    };
    Ok(Value::Array(parts))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        one("lower", args)?.to_string().to_lowercase(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        one("upper", args)?.to_string().to_uppercase(),
    ))
}

/// Upper-cases the first letter of each word.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = one("title", args)?.to_string();
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

/// `truncate STRING N`: the first N characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let [s, n] = args else {
        return Err(FuncError::ExactlyXArgs("truncate".into(), 2));
    };
    let n = number_arg("truncate", n)?;
    Ok(Value::String(s.to_string().chars().take(n).collect()))
}

/// `pad STRING BEFORE AFTER`: spaces around.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let [s, before, after] = args else {
        return Err(FuncError::ExactlyXArgs("pad".into(), 3));
    };
    let (before, after) = (number_arg("pad", before)?, number_arg("pad", after)?);
    // Bounded: docker pads table cells by a few spaces.
    if before > 4096 || after > 4096 {
        return Err(FuncError::Generic("pad: at most 4096 spaces".into()));
    }
    Ok(Value::String(format!(
        "{}{s}{}",
        " ".repeat(before),
        " ".repeat(after)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &serde_json::Value) -> Result<String, TemplateError> {
        GoTemplate::parse(t, JsonStyle::Compact)?.render(v)
    }

    #[test]
    fn fields_json_and_escapes() {
        let v = json!({"Repository": "busybox", "Tag": "latest", "Size": 4260000u64,
                       "Config": {"Labels": {"a": "1"}}, "Layers": ["x", "y"]});
        assert_eq!(
            render("{{.Repository}}:{{.Tag}}", &v).unwrap(),
            "busybox:latest"
        );
        assert_eq!(render("{{json .Tag}}", &v).unwrap(), "\"latest\"");
        assert_eq!(render("{{.Size}}", &v).unwrap(), "4260000");
        assert_eq!(
            render(r"{{.Tag}}\t{{.Size}}\n", &v).unwrap(),
            "latest\t4260000\n"
        );
        assert_eq!(
            render("{{json .Config}}", &v).unwrap(),
            r#"{"Labels":{"a":"1"}}"#
        );
        assert_eq!(render("{{.Config.Labels.a}}", &v).unwrap(), "1");
        assert_eq!(render(r#"{{index .Config.Labels "a"}}"#, &v).unwrap(), "1");
        assert_eq!(render("{{.Config.Labels.b}}", &v).unwrap(), "<no value>");
        assert_eq!(render(r#"{{join .Layers ","}}"#, &v).unwrap(), "x,y");
        assert_eq!(
            render("{{range .Layers}}[{{.}}]{{end}}", &v).unwrap(),
            "[x][y]"
        );
        assert_eq!(render("{{if .Tag}}tagged{{end}}", &v).unwrap(), "tagged");
        assert_eq!(render("{{len .Layers}}", &v).unwrap(), "2");
        assert_eq!(
            render(r#"{{upper .Tag}} {{lower "AB"}} {{title "a b"}}"#, &v).unwrap(),
            "LATEST ab A B"
        );
        assert_eq!(render("{{truncate .Repository 4}}", &v).unwrap(), "busy");
        assert_eq!(render(r#"{{pad .Tag 1 2}}|"#, &v).unwrap(), " latest  |");
        assert_eq!(
            render(r#"{{range split "a:b" ":"}}{{.}};{{end}}"#, &v).unwrap(),
            "a;b;"
        );
        let doc = GoTemplate::parse("{{json .Config}}", JsonStyle::Indented)
            .unwrap()
            .render(&v)
            .unwrap();
        assert_eq!(doc, "{\n  \"Labels\": {\n    \"a\": \"1\"\n  }\n}");
        // As Go's encoder: HTML characters escaped, in keys and values alike.
        assert_eq!(
            go_json_indented(&json!({"a<b": "x & y > z\u{2028}"})),
            "{\n  \"a\\u003cb\": \"x \\u0026 y \\u003e z\\u2028\"\n}"
        );
    }

    #[test]
    fn table_formats_get_a_header_and_aligned_columns() {
        let header = json!({"Repository": "REPOSITORY", "Tag": "TAG"});
        let rows = [
            json!({"Repository": "busybox", "Tag": "latest"}),
            json!({"Repository": "a", "Tag": "1"}),
        ];
        assert_eq!(
            render_rows(r"table {{.Repository}}\t{{.Tag}}", &header, &rows).unwrap(),
            "REPOSITORY   TAG\nbusybox      latest\na            1\n"
        );
        assert_eq!(
            render_rows("{{.Repository}}:{{.Tag}}", &header, &rows).unwrap(),
            "busybox:latest\na:1\n"
        );
    }

    #[test]
    fn errors_name_the_template() {
        let v = json!({"Tag": "latest"});
        let e = render("{{.Nope}}", &v).unwrap_err();
        assert!(matches!(e, TemplateError::Execute { .. }), "{e:?}");
        assert!(e.to_string().contains("{{.Nope}}"), "{e}");
        for bad in [
            "{{.Tag",
            "{{end}}",
            "{{if}}",
            "{{range .Tag}}",
            "{{)}}",
            "{{.Tag | nope}}",
        ] {
            let e = render(bad, &v).unwrap_err();
            assert!(e.to_string().contains("--format template"), "{bad}: {e}");
        }
        for nested in [
            r#"{{define "a"}}{{template "a"}}{{end}}{{template "a"}}"#,
            r#"{{- block "b" .}}x{{end}}"#,
        ] {
            assert!(matches!(
                render(nested, &v).unwrap_err(),
                TemplateError::Nested { .. }
            ));
        }
        // Words that only start like the keywords are fields or text.
        assert_eq!(render("template {{.Tag}}", &v).unwrap(), "template latest");
    }
}
