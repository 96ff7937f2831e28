//! `format`'s verbs as cty implements them (Go's `fmt`): flags `-+# 0`, width, precision,
//! explicit argument indexes `%[n]`, and the verbs `v s q t d b o x X e E f g G`.

use super::funcs::{kind, text};
use hcl::Value;

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// The most a width or precision may ask for (a bound on the output).
const MAX_PAD: usize = 10_000;

/// Formats `args` by `spec`; every argument must be used.
pub fn format(spec: &str, args: &[Value]) -> Result<String, String> {
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let (mut i, mut next) = (0, 0);
    let mut used = vec![false; args.len()];
    while i < chars.len() {
        if chars[i] != '%' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        if chars.get(i) == Some(&'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let mut s = Spec::default();
        while let Some(&c) = chars.get(i) {
            match c {
                '-' => s.minus = true,
                '+' => s.plus = true,
                '#' => s.sharp = true,
                ' ' => s.space = true,
                '0' => s.zero = true,
                _ => break,
            }
            i += 1;
        }
        if chars.get(i) == Some(&'[') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .ok_or("format: an unclosed [ in an argument index")?;
            let n: usize = chars[i + 1..i + end]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| "format: an argument index must be a number")?;
            if n == 0 || n > args.len() {
                return Err(format!("format: there is no argument {n}"));
            }
            next = n - 1;
            i += end + 1;
        }
        s.width = number(&chars, &mut i)?;
        if chars.get(i) == Some(&'.') {
            i += 1;
            s.precision = Some(number(&chars, &mut i)?.unwrap_or(0));
        }
        let verb = *chars.get(i).ok_or("format: a verb is missing at the end")?;
        i += 1;
        let v = args
            .get(next)
            .ok_or_else(|| format!("format: not enough arguments for %{verb}"))?;
        used[next] = true;
        next += 1;
        let (body, numeric) = render(verb, v, &s)?;
        out.push_str(&pad(body, &s, numeric));
    }
    if used.iter().any(|u| !u) {
        return Err("format: too many arguments; not every one is used by a verb".into());
    }
    Ok(out)
}

fn number(chars: &[char], i: &mut usize) -> Result<Option<usize>, String> {
    let start = *i;
    while chars.get(*i).is_some_and(char::is_ascii_digit) {
        *i += 1;
    }
    if start == *i {
        return Ok(None);
    }
    let n: usize = chars[start..*i]
        .iter()
        .collect::<String>()
        .parse()
        .map_err(|_| "format: a width or precision out of range")?;
    if n > MAX_PAD {
        return Err(format!("format: a width or precision over {MAX_PAD}"));
    }
    Ok(Some(n))
}

/// The text of one verb, and whether it is a number (zero padding goes after the sign).
fn render(verb: char, v: &Value, s: &Spec) -> Result<(String, bool), String> {
    let float = |v: &Value| match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| "a number out of range".to_string()),
        other => Err(format!("%{verb} needs a number, not {}", kind(other))),
    };
    let signed = |neg: bool, digits: String| {
        let sign = if neg {
            "-"
        } else if s.plus {
            "+"
        } else if s.space {
            " "
        } else {
            ""
        };
        format!("{sign}{digits}")
    };
    Ok(match verb {
        's' => {
            let t = text(v).map_err(|e| format!("%s: {e}"))?;
            (truncate(t, s.precision), false)
        }
        'v' if s.sharp => (serde_json::to_string(v).unwrap_or_default(), false),
        'v' => match v {
            Value::Array(_) | Value::Object(_) => {
                (serde_json::to_string(v).unwrap_or_default(), false)
            }
            Value::Null => ("null".into(), false),
            // Primitives are converted to strings, as cty does for %v.
            other => (text(other)?, false),
        },
        'q' => {
            let t = text(v).map_err(|e| format!("%q: {e}"))?;
            (serde_json::to_string(&t).unwrap_or_default(), false)
        }
        't' => match v {
            Value::Bool(b) => (b.to_string(), false),
            other => return Err(format!("%t needs a bool, not {}", kind(other))),
        },
        'd' | 'b' | 'o' | 'x' | 'X' => {
            let f = float(v)?;
            if f.fract() != 0.0 || f.abs() > 9.2e18 {
                return Err(format!("%{verb} needs a whole number, not {f}"));
            }
            let n = f as i64;
            let m = n.unsigned_abs();
            let digits = match verb {
                'd' => m.to_string(),
                'b' => format!("{m:b}"),
                'o' if s.sharp => format!("0{m:o}"),
                'o' => format!("{m:o}"),
                'x' if s.sharp => format!("0x{m:x}"),
                'x' => format!("{m:x}"),
                'X' if s.sharp => format!("0X{m:X}"),
                _ => format!("{m:X}"),
            };
            (signed(n < 0, digits), true)
        }
        'f' | 'F' => {
            let f = float(v)?;
            let p = s.precision.unwrap_or(6);
            (signed(f < 0.0, format!("{:.p$}", f.abs())), true)
        }
        'e' | 'E' => {
            let f = float(v)?;
            let t = exp_form(f.abs(), s.precision.unwrap_or(6));
            let t = if verb == 'E' { t.to_uppercase() } else { t };
            (signed(f < 0.0, t), true)
        }
        'g' | 'G' => {
            let f = float(v)?;
            let t = general(f.abs(), s.precision, s.sharp);
            let t = if verb == 'G' { t.to_uppercase() } else { t };
            (signed(f < 0.0, t), true)
        }
        other => return Err(format!("format: unsupported verb %{other}")),
    })
}

fn truncate(t: String, precision: Option<usize>) -> String {
    match precision {
        Some(p) => t.chars().take(p).collect(),
        None => t,
    }
}

/// Go's `%e`: `1.500000e+00`.
fn exp_form(f: f64, p: usize) -> String {
    let t = format!("{f:.p$e}");
    let (mant, exp) = t.split_once('e').unwrap_or((&t, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

/// Go's `%g`: the shortest form (or `precision` significant digits), exponent form for
/// exponents below -4 or from the precision (6 when shortest) up.
fn general(f: f64, precision: Option<usize>, sharp: bool) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let strip = |t: String| {
        if sharp || !t.contains('.') {
            t
        } else {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    };
    let (exp, eprec, digits) = match precision {
        None => {
            let t = format!("{f:e}");
            let (mant, e) = t.split_once('e').unwrap_or((&t, "0"));
            let nd = mant.chars().filter(char::is_ascii_digit).count();
            let exp: i32 = e.parse().unwrap_or(0);
            (exp, 6, nd.max(1))
        }
        Some(p) => {
            let p = p.max(1);
            let t = format!("{f:.*e}", p - 1);
            let exp: i32 = t
                .split_once('e')
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(0);
            (exp, p as i32, p)
        }
    };
    if exp < -4 || exp >= eprec {
        let t = exp_form(f, digits - 1);
        let (mant, e) = t.split_once('e').unwrap_or((&t, ""));
        return format!("{}e{e}", strip(mant.to_string()));
    }
    match precision {
        None => format!("{f}"),
        Some(_) => {
            let decimals = (digits as i32 - 1 - exp).max(0) as usize;
            strip(format!("{f:.decimals$}"))
        }
    }
}

/// Pads to the width: left-justified with `-`, zeros after the sign for numbers with `0`.
fn pad(body: String, s: &Spec, numeric: bool) -> String {
    let Some(w) = s.width else {
        return body;
    };
    let len = body.chars().count();
    if len >= w {
        return body;
    }
    let fill = w - len;
    if s.minus {
        return format!("{body}{}", " ".repeat(fill));
    }
    if s.zero && numeric {
        let split = body
            .char_indices()
            .find(|(_, c)| !matches!(c, '+' | '-' | ' '))
            .map_or(0, |(i, _)| i);
        let (sign, digits) = body.split_at(split);
        return format!("{sign}{}{digits}", "0".repeat(fill));
    }
    format!("{}{body}", " ".repeat(fill))
}

#[cfg(test)]
mod tests {
    use super::format;
    use hcl::Value;

    fn f(spec: &str, args: &[Value]) -> String {
        format(spec, args).unwrap()
    }

    #[test]
    fn verbs_flags_width_and_precision_as_go() {
        assert_eq!(
            f(
                "%03d|%-4d|%+d|%5s|%-3s|",
                &[7.into(), 7.into(), 7.into(), "ab".into(), "x".into()]
            ),
            "007|7   |+7|   ab|x  |"
        );
        assert_eq!(
            f(
                "%.2f %x %X %#x %o %b",
                &[
                    Value::from(1.5),
                    255.into(),
                    255.into(),
                    255.into(),
                    8.into(),
                    5.into()
                ]
            ),
            "1.50 ff FF 0xff 10 101"
        );
        assert_eq!(
            f(
                "%e %g %g %g %g",
                &[
                    Value::from(1500.0),
                    Value::from(1e6),
                    Value::from(0.5),
                    Value::from(100000.0),
                    Value::from(1234567.0)
                ]
            ),
            "1.500000e+03 1e+06 0.5 100000 1.234567e+06"
        );
        assert_eq!(
            f(
                "%q %t %v %v",
                &[
                    "a\"b".into(),
                    true.into(),
                    Value::Array(vec![1.into(), "x".into()]),
                    12.into()
                ]
            ),
            r#""a\"b" true [1,"x"] 12"#
        );
        assert_eq!(
            f("%[2]s-%[1]s %.1s %%", &["a".into(), "b".into()]),
            "b-a b %"
        );
        assert_eq!(
            f("%05.1f|%-06d|", &[Value::from(-2.25), 3.into()]),
            "-02.2|3     |"
        );
        assert!(format("%d", &[Value::from(1.5)]).is_err());
        assert!(format("%s %s", &["a".into()]).is_err());
        assert!(format("%s", &["a".into(), "b".into()]).is_err());
        assert!(format("%99999s", &["a".into()]).is_err());
        assert!(format("%y", &["a".into()]).is_err());
    }
}
