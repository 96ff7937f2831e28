//! The standard library of bake files: the functions of buildx's `stdlib.go` that real
//! bake files use, for expressions evaluated by `hcl-rs`.

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Number, Value};

type R = Result<Value, String>;

/// Declares every standard function in `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Any, String as S};
    let fixed = |params: &[ParamType], f: hcl::eval::Func| FuncDef::new(f, params.to_vec());
    let variadic = |params: &[ParamType], rest: ParamType, f: hcl::eval::Func| {
        FuncDef::builder()
            .params(params.to_vec())
            .variadic_param(rest)
            .build(f)
    };
    let defs: Vec<(&str, FuncDef)> = vec![
        ("lower", fixed(&[S], |a| map_str(a, |s| s.to_lowercase()))),
        ("upper", fixed(&[S], |a| map_str(a, |s| s.to_uppercase()))),
        ("title", fixed(&[S], |a| map_str(a, title))),
        (
            "chomp",
            fixed(&[S], |a| {
                map_str(a, |s| s.trim_end_matches(['\n', '\r']).to_string())
            }),
        ),
        (
            "trimspace",
            fixed(&[S], |a| map_str(a, |s| s.trim().to_string())),
        ),
        (
            "strlen",
            fixed(&[S], |a| {
                Ok(Value::from(text(&a[0])?.chars().count() as u64))
            }),
        ),
        (
            "trimprefix",
            fixed(&[S, S], |a| {
                let (s, p) = (text(&a[0])?, text(&a[1])?);
                Ok(s.strip_prefix(p.as_str()).unwrap_or(&s).into())
            }),
        ),
        (
            "trimsuffix",
            fixed(&[S, S], |a| {
                let (s, p) = (text(&a[0])?, text(&a[1])?);
                Ok(s.strip_suffix(p.as_str()).unwrap_or(&s).into())
            }),
        ),
        (
            "trim",
            fixed(&[S, S], |a| {
                let (s, cut) = (text(&a[0])?, text(&a[1])?);
                Ok(s.trim_matches(|c| cut.contains(c)).into())
            }),
        ),
        (
            "replace",
            fixed(&[S, S, S], |a| {
                Ok(text(&a[0])?.replace(&text(&a[1])?, &text(&a[2])?).into())
            }),
        ),
        (
            "regex_replace",
            fixed(&[S, S, S], |a| {
                let re = regex(&text(&a[1])?)?;
                // Go's `$1` and `${name}` references are the regex crate's too.
                Ok(re
                    .replace_all(&text(&a[0])?, text(&a[2])?.as_str())
                    .into_owned()
                    .into())
            }),
        ),
        ("regex", fixed(&[S, S], regex_match)),
        (
            "split",
            fixed(&[S, S], |a| {
                let (sep, s) = (text(&a[0])?, text(&a[1])?);
                Ok(Value::Array(
                    s.split(sep.as_str()).map(Value::from).collect(),
                ))
            }),
        ),
        (
            "join",
            variadic(&[S], Any, |a| {
                let sep = text(&a[0])?;
                let mut parts = Vec::new();
                for list in &a[1..] {
                    for v in list
                        .as_array()
                        .ok_or("join: arguments after the separator must be lists")?
                    {
                        parts.push(text(v)?);
                    }
                }
                Ok(parts.join(&sep).into())
            }),
        ),
        (
            "substr",
            fixed(&[S, ParamType::Number, ParamType::Number], substr),
        ),
        ("format", variadic(&[S], Any, format)),
        (
            "sanitize",
            fixed(&[S], |a| {
                map_str(a, |s| {
                    // Letters, digits, '_' and '-' are kept: what a target name may hold.
                    s.chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                })
            }),
        ),
        ("equal", fixed(&[Any, Any], |a| Ok((a[0] == a[1]).into()))),
        (
            "notequal",
            fixed(&[Any, Any], |a| Ok((a[0] != a[1]).into())),
        ),
        (
            "and",
            fixed(&[ParamType::Bool, ParamType::Bool], |a| {
                Ok((truth(&a[0])? && truth(&a[1])?).into())
            }),
        ),
        (
            "or",
            fixed(&[ParamType::Bool, ParamType::Bool], |a| {
                Ok((truth(&a[0])? || truth(&a[1])?).into())
            }),
        ),
        (
            "not",
            fixed(&[ParamType::Bool], |a| Ok((!truth(&a[0])?).into())),
        ),
        (
            "coalesce",
            variadic(&[], Any, |a| {
                a.iter()
                    .find(|v| !v.is_null() && v.as_str() != Some(""))
                    .cloned()
                    .ok_or_else(|| "coalesce: no non-null, non-empty argument".to_string())
            }),
        ),
        (
            "coalescelist",
            variadic(&[], Any, |a| {
                Ok(a.iter()
                    .find(|v| v.as_array().is_some_and(|l| !l.is_empty()))
                    .cloned()
                    .unwrap_or(Value::Array(vec![])))
            }),
        ),
        (
            "length",
            fixed(&[Any], |a| {
                let n = match &a[0] {
                    Value::Array(l) => l.len(),
                    Value::Object(m) => m.len(),
                    Value::String(s) => s.chars().count(),
                    other => return Err(format!("length: not a collection: {other}")),
                };
                Ok(Value::from(n as u64))
            }),
        ),
        (
            "concat",
            variadic(&[], Any, |a| {
                let mut out = Vec::new();
                for l in a.iter() {
                    out.extend(
                        l.as_array()
                            .ok_or("concat: arguments must be lists")?
                            .iter()
                            .cloned(),
                    );
                }
                Ok(Value::Array(out))
            }),
        ),
        (
            "contains",
            fixed(&[Any, Any], |a| Ok(list(&a[0])?.contains(&a[1]).into())),
        ),
        (
            "distinct",
            fixed(&[Any], |a| {
                let mut out: Vec<Value> = Vec::new();
                for v in list(&a[0])? {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Ok(Value::Array(out))
            }),
        ),
        (
            "compact",
            fixed(&[Any], |a| {
                Ok(Value::Array(
                    list(&a[0])?
                        .iter()
                        .filter(|v| !v.is_null() && v.as_str() != Some(""))
                        .cloned()
                        .collect(),
                ))
            }),
        ),
        (
            "flatten",
            fixed(&[Any], |a| Ok(Value::Array(flatten(list(&a[0])?)))),
        ),
        (
            "reverse",
            fixed(&[Any], |a| {
                Ok(Value::Array(list(&a[0])?.iter().rev().cloned().collect()))
            }),
        ),
        (
            "sort",
            fixed(&[Any], |a| {
                let mut l = list(&a[0])?
                    .iter()
                    .map(text)
                    .collect::<Result<Vec<_>, _>>()?;
                l.sort();
                Ok(Value::Array(l.into_iter().map(Value::from).collect()))
            }),
        ),
        (
            "element",
            fixed(&[Any, ParamType::Number], |a| {
                let l = list(&a[0])?;
                if l.is_empty() {
                    return Err("element: the list is empty".into());
                }
                Ok(l[(int(&a[1])?.rem_euclid(l.len() as i64)) as usize].clone())
            }),
        ),
        (
            "index",
            fixed(&[Any, Any], |a| {
                list(&a[0])?
                    .iter()
                    .position(|v| *v == a[1])
                    .map(|i| Value::from(i as u64))
                    .ok_or_else(|| "index: value not in the list".into())
            }),
        ),
        (
            "slice",
            fixed(&[Any, ParamType::Number, ParamType::Number], |a| {
                let l = list(&a[0])?;
                let (from, to) = (int(&a[1])?, int(&a[2])?);
                if from < 0 || to < from || to as usize > l.len() {
                    return Err(format!(
                        "slice: bad range {from}..{to} of a list of {}",
                        l.len()
                    ));
                }
                Ok(Value::Array(l[from as usize..to as usize].to_vec()))
            }),
        ),
        (
            "keys",
            fixed(&[Any], |a| {
                Ok(Value::Array(
                    object(&a[0])?.keys().cloned().map(Value::from).collect(),
                ))
            }),
        ),
        (
            "values",
            fixed(&[Any], |a| {
                Ok(Value::Array(object(&a[0])?.values().cloned().collect()))
            }),
        ),
        (
            "lookup",
            variadic(&[Any, S], Any, |a| {
                match object(&a[0])?.get(&text(&a[1])?) {
                    Some(v) => Ok(v.clone()),
                    None => a.get(2).cloned().ok_or_else(|| {
                        format!(
                            "lookup: no key {:?} and no default",
                            text(&a[1]).unwrap_or_default()
                        )
                    }),
                }
            }),
        ),
        (
            "merge",
            variadic(&[], Any, |a| {
                let mut out = Map::new();
                for m in a.iter().filter(|v| !v.is_null()) {
                    out.extend(object(m)?.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Ok(Value::Object(out))
            }),
        ),
        (
            "add",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                arith(a, |x, y| x + y)
            }),
        ),
        (
            "subtract",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                arith(a, |x, y| x - y)
            }),
        ),
        (
            "multiply",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                arith(a, |x, y| x * y)
            }),
        ),
        (
            "divide",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                arith(a, |x, y| x / y)
            }),
        ),
        (
            "max",
            variadic(&[], ParamType::Number, |a| fold(a, f64::max)),
        ),
        (
            "min",
            variadic(&[], ParamType::Number, |a| fold(a, f64::min)),
        ),
        (
            "abs",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.abs())),
        ),
        (
            "floor",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.floor())),
        ),
        (
            "ceil",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.ceil())),
        ),
        (
            "greaterthan",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                Ok((num_of(&a[0])? > num_of(&a[1])?).into())
            }),
        ),
        (
            "lessthan",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                Ok((num_of(&a[0])? < num_of(&a[1])?).into())
            }),
        ),
        ("tostring", fixed(&[Any], |a| Ok(text(&a[0])?.into()))),
        ("tonumber", fixed(&[Any], |a| num(num_of(&a[0])?))),
        ("tobool", fixed(&[Any], |a| Ok(truth(&a[0])?.into()))),
        (
            "jsonencode",
            fixed(&[Any], |a| {
                serde_json::to_string(&a[0])
                    .map(Value::from)
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "jsondecode",
            fixed(&[S], |a| {
                serde_json::from_str::<Value>(&text(&a[0])?).map_err(|e| format!("jsondecode: {e}"))
            }),
        ),
        (
            "base64encode",
            fixed(&[S], |a| {
                use base64::Engine;
                Ok(base64::engine::general_purpose::STANDARD
                    .encode(text(&a[0])?)
                    .into())
            }),
        ),
        (
            "base64decode",
            fixed(&[S], |a| {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD
                    .decode(text(&a[0])?)
                    .map_err(|e| format!("base64decode: {e}"))?;
                String::from_utf8(b)
                    .map(Value::from)
                    .map_err(|_| "base64decode: not UTF-8".into())
            }),
        ),
        (
            "timestamp",
            fixed(&[], |_| Ok(super::time::now_rfc3339().into())),
        ),
        (
            "formatdate",
            fixed(&[S, S], |a| {
                super::time::formatdate(&text(&a[0])?, &text(&a[1])?).map(Value::from)
            }),
        ),
        (
            "formattimestamp",
            fixed(&[S, Any], |a| {
                let spec = text(&a[0])?;
                let ts = match &a[1] {
                    Value::Number(n) => {
                        let secs = n
                            .as_i64()
                            .ok_or("formattimestamp: not a whole number of seconds")?;
                        jiff::Timestamp::from_second(secs)
                            .map_err(|e| e.to_string())?
                            .to_string()
                    }
                    other => text(other)?,
                };
                if spec == "X" {
                    let t: jiff::Timestamp =
                        ts.parse().map_err(|e| format!("formattimestamp: {e}"))?;
                    return Ok(Value::from(t.as_second()));
                }
                super::time::formatdate(&spec, &ts).map(Value::from)
            }),
        ),
        (
            "basename",
            fixed(&[S], |a| {
                map_str(a, |s| {
                    s.trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
            }),
        ),
        (
            "dirname",
            fixed(&[S], |a| {
                map_str(a, |s| match s.trim_end_matches('/').rsplit_once('/') {
                    Some(("", _)) => "/".into(),
                    Some((d, _)) => d.into(),
                    None => ".".into(),
                })
            }),
        ),
        (
            "indexof",
            fixed(&[Any, Any], |a| {
                list(&a[0])?
                    .iter()
                    .position(|v| *v == a[1])
                    .map(|i| Value::from(i as u64))
                    .ok_or_else(|| "indexof: value not in the list".into())
            }),
        ),
        (
            "hasindex",
            fixed(&[Any, Any], |a| {
                Ok(match &a[0] {
                    Value::Array(l) => int(&a[1]).is_ok_and(|i| i >= 0 && (i as usize) < l.len()),
                    Value::Object(m) => text(&a[1]).is_ok_and(|k| m.contains_key(&k)),
                    _ => false,
                }
                .into())
            }),
        ),
        (
            "range",
            variadic(&[], ParamType::Number, |a| {
                let n: Vec<f64> = a.iter().map(num_of).collect::<Result<_, _>>()?;
                let (start, end, step) = match n.as_slice() {
                    [e] => (0.0, *e, 1.0),
                    [s, e] => (*s, *e, if e >= s { 1.0 } else { -1.0 }),
                    [s, e, st] => (*s, *e, *st),
                    _ => return Err("range: one to three numbers".into()),
                };
                if step == 0.0 || (end - start) / step > 1024.0 * 1024.0 {
                    return Err("range: a zero step or more than 1048576 values".into());
                }
                let mut out = Vec::new();
                let mut v = start;
                while (step > 0.0 && v < end) || (step < 0.0 && v > end) {
                    out.push(num(v)?);
                    v += step;
                }
                Ok(Value::Array(out))
            }),
        ),
        (
            "regexall",
            fixed(&[S, S], |a| {
                let re = regex(&text(&a[0])?)?;
                let s = text(&a[1])?;
                Ok(Value::Array(
                    re.captures_iter(&s)
                        .map(|c| {
                            if c.len() == 1 {
                                Value::from(c[0].to_string())
                            } else {
                                Value::Array(
                                    c.iter()
                                        .skip(1)
                                        .map(|g| g.map(|g| g.as_str()).unwrap_or("").into())
                                        .collect(),
                                )
                            }
                        })
                        .collect(),
                ))
            }),
        ),
        (
            "modulo",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                let d = num_of(&a[1])?;
                if d == 0.0 {
                    return Err("modulo: division by zero".into());
                }
                num(num_of(&a[0])? % d)
            }),
        ),
        (
            "pow",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                arith(a, f64::powf)
            }),
        ),
        (
            "negate",
            fixed(&[ParamType::Number], |a| num(-num_of(&a[0])?)),
        ),
        (
            "signum",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.signum())),
        ),
        (
            "int",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.trunc())),
        ),
        (
            "parseint",
            fixed(&[S, ParamType::Number], |a| {
                let base = int(&a[1])?;
                if !(2..=36).contains(&base) {
                    return Err("parseint: the base must be 2 to 36".into());
                }
                let v = i64::from_str_radix(&text(&a[0])?, base as u32)
                    .map_err(|e| format!("parseint: {e}"))?;
                Ok(Value::from(v))
            }),
        ),
        (
            "greaterthanorequalto",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                Ok((num_of(&a[0])? >= num_of(&a[1])?).into())
            }),
        ),
        (
            "lessthanorequalto",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                Ok((num_of(&a[0])? <= num_of(&a[1])?).into())
            }),
        ),
        (
            "reverselist",
            fixed(&[Any], |a| {
                Ok(Value::Array(list(&a[0])?.iter().rev().cloned().collect()))
            }),
        ),
        (
            "zipmap",
            fixed(&[Any, Any], |a| {
                let (k, v) = (list(&a[0])?, list(&a[1])?);
                if k.len() != v.len() {
                    return Err("zipmap: the lists differ in length".into());
                }
                let mut m = Map::new();
                for (k, v) in k.iter().zip(v) {
                    m.insert(text(k)?, v.clone());
                }
                Ok(Value::Object(m))
            }),
        ),
        (
            "chunklist",
            fixed(&[Any, ParamType::Number], |a| {
                let l = list(&a[0])?;
                let n = int(&a[1])?;
                if n < 0 {
                    return Err("chunklist: a negative size".into());
                }
                if n == 0 {
                    return Ok(Value::Array(vec![Value::Array(l.clone())]));
                }
                Ok(Value::Array(
                    l.chunks(n as usize)
                        .map(|c| Value::Array(c.to_vec()))
                        .collect(),
                ))
            }),
        ),
        (
            "indent",
            fixed(&[ParamType::Number, S], |a| {
                let pad = " ".repeat(int(&a[0])?.clamp(0, 1024) as usize);
                let s = text(&a[1])?;
                Ok(s.replace('\n', &format!("\n{pad}")).into())
            }),
        ),
        (
            "sha256",
            fixed(&[S], |a| {
                use sha2::Digest;
                Ok(hex(&sha2::Sha256::digest(text(&a[0])?.as_bytes())).into())
            }),
        ),
        (
            "sha512",
            fixed(&[S], |a| {
                use sha2::Digest;
                Ok(hex(&sha2::Sha512::digest(text(&a[0])?.as_bytes())).into())
            }),
        ),
        (
            "homedir",
            fixed(&[], |_| {
                std::env::var("HOME")
                    .map(Value::from)
                    .map_err(|_| "homedir: HOME is not set".into())
            }),
        ),
    ];
    super::funcs_ext::declare(ctx);
    for (name, def) in defs {
        ctx.declare_func(name, def);
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A primitive as a string, as HCL converts it.
pub fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("a null value where a string is required".into()),
        other => Err(format!("a string is required, not {}", kind(other))),
    }
}

/// The name of a value's type, for errors.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn map_str(a: FuncArgs, f: impl Fn(&str) -> String) -> R {
    Ok(f(&text(&a[0])?).into())
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

fn truth(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(format!("a bool is required, not {}", kind(other))),
    }
}

pub(super) fn num_of(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "a number out of range".into()),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number")),
        other => Err(format!("a number is required, not {}", kind(other))),
    }
}

pub(super) fn int(v: &Value) -> Result<i64, String> {
    let f = num_of(v)?;
    if f.fract() != 0.0 {
        return Err(format!("{f} is not a whole number"));
    }
    Ok(f as i64)
}

/// A number as HCL prints it: whole numbers without a fraction.
pub(super) fn num(f: f64) -> R {
    if f.fract() == 0.0 && f.abs() < 9e15 {
        return Ok(Value::from(f as i64));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} is not a finite number"))
}

fn arith(a: FuncArgs, f: fn(f64, f64) -> f64) -> R {
    num(f(num_of(&a[0])?, num_of(&a[1])?))
}

fn fold(a: FuncArgs, f: fn(f64, f64) -> f64) -> R {
    let mut it = a.iter().map(num_of);
    let first = it.next().ok_or("at least one number is required")??;
    let mut acc = first;
    for v in it {
        acc = f(acc, v?);
    }
    num(acc)
}

pub(super) fn list(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("a list is required, not {}", kind(v)))
}

fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("an object is required, not {}", kind(v)))
}

fn flatten(l: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for v in l {
        match v {
            Value::Array(inner) => out.extend(flatten(inner)),
            other => out.push(other.clone()),
        }
    }
    out
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// `regex(pattern, string)`: the match, its groups as a list, or its named groups as an
/// object (as Terraform's `regex`).
fn regex_match(a: FuncArgs) -> R {
    let re = regex(&text(&a[0])?)?;
    let s = text(&a[1])?;
    let caps = re
        .captures(&s)
        .ok_or_else(|| "regex: the pattern did not match".to_string())?;
    let named: Vec<&str> = re.capture_names().flatten().collect();
    if !named.is_empty() {
        let mut m = Map::new();
        for n in named {
            m.insert(
                n.into(),
                caps.name(n).map(|c| c.as_str()).unwrap_or("").into(),
            );
        }
        return Ok(Value::Object(m));
    }
    if caps.len() == 1 {
        return Ok(caps[0].to_string().into());
    }
    Ok(Value::Array(
        caps.iter()
            .skip(1)
            .map(|c| c.map(|c| c.as_str()).unwrap_or("").into())
            .collect(),
    ))
}

fn substr(a: FuncArgs) -> R {
    let s: Vec<char> = text(&a[0])?.chars().collect();
    let (offset, length) = (int(&a[1])?, int(&a[2])?);
    let start = if offset < 0 {
        (s.len() as i64 + offset).max(0)
    } else {
        offset.min(s.len() as i64)
    } as usize;
    let end = if length < 0 {
        s.len()
    } else {
        start.saturating_add(length as usize).min(s.len())
    };
    Ok(s[start..end].iter().collect::<String>().into())
}

/// `format(spec, values...)`: `%s`, `%d`, `%v`, `%q` and `%%` of Go's verbs.
fn format(a: FuncArgs) -> R {
    format_values(&a)
}

/// `format` over plain values: the spec first.
pub(super) fn format_values(a: &[Value]) -> R {
    let spec = text(a.first().ok_or("format: needs a format string")?)?;
    let mut args = a[1..].iter();
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or("format: a lone % at the end")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = args
            .next()
            .ok_or_else(|| format!("format: not enough arguments for %{verb}"))?;
        match verb {
            's' | 'v' | 'd' => out.push_str(&text(v)?),
            'q' => out.push_str(&format!("{:?}", text(v)?)),
            other => return Err(format!("format: unsupported verb %{other}")),
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        declare(&mut ctx);
        let body = hcl::parse(&format!("x = {expr}")).map_err(|e| e.to_string())?;
        let attr = body.attributes().next().unwrap().clone();
        use hcl::eval::Evaluate;
        attr.expr.evaluate(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn string_functions() {
        assert_eq!(eval(r#"upper("ab")"#), Ok("AB".into()));
        assert_eq!(eval(r#"trimprefix("v1.2", "v")"#), Ok("1.2".into()));
        assert_eq!(
            eval(r#"regex_replace("a.b.c", "\\.", "-")"#),
            Ok("a-b-c".into())
        );
        assert_eq!(eval(r#"join(",", split(".", "a.b"))"#), Ok("a,b".into()));
        assert_eq!(eval(r#"format("%s-%d", "x", 3)"#), Ok("x-3".into()));
        assert_eq!(eval(r#"coalesce("", "b")"#), Ok("b".into()));
        assert_eq!(
            eval(r#"and(notequal("a", "b"), equal(1, 1))"#),
            Ok(true.into())
        );
        assert_eq!(
            eval(r#"regex("v([0-9]+)", "v12")"#),
            Ok(Value::Array(vec!["12".into()]))
        );
        assert_eq!(eval(r#"substr("hello", 1, 3)"#), Ok("ell".into()));
        assert_eq!(eval(r#"basename("a/b/c.txt")"#), Ok("c.txt".into()));
        assert_eq!(eval(r#"dirname("a/b/c.txt")"#), Ok("a/b".into()));
        assert_eq!(eval(r#"length(range(3))"#), Ok(Value::from(3u64)));
        assert_eq!(eval(r#"parseint("ff", 16)"#), Ok(Value::from(255i64)));
        assert_eq!(
            eval(r#"formattimestamp("X", "2024-01-01T00:00:00Z")"#),
            Ok(Value::from(1704067200i64))
        );
        assert_eq!(
            eval(r#"sha256("abc")"#),
            Ok("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
        );
        assert_eq!(
            eval(r#"zipmap(["a"], [1])"#).map(|v| serde_json::to_string(&v).unwrap()),
            Ok(r#"{"a":1}"#.into())
        );
        assert_eq!(
            eval(r#"substr("hello", 1, 9007199254740991)"#),
            Ok("ello".into())
        );
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        assert!(eval(r#"element([], 1)"#).is_err());
        assert!(eval(r#"slice([1], 0, 5)"#).is_err());
        assert!(eval(r#"regex_replace("a", "(", "")"#).is_err());
        assert!(eval(r#"format("%s")"#).is_err());
        assert!(eval(r#"range(0, 1e9)"#).is_err());
        assert!(eval(r#"modulo(1, 0)"#).is_err());
        assert!(eval(r#"parseint("1", 99)"#).is_err());
    }
}
