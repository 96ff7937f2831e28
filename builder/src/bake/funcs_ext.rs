//! The rest of buildx's standard library: sets, hashes and UUIDs, network prefixes, time
//! arithmetic, version constraints and `formatlist`.

use super::funcs::{format_values, hex, int, list, num, num_of, text};
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Value};

type R = Result<Value, String>;

/// Declares these functions in `ctx`.
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
        ("formatlist", variadic(&[S], Any, formatlist)),
        ("setunion", variadic(&[], Any, |a| sets(&a, SetOp::Union))),
        (
            "setintersection",
            variadic(&[Any], Any, |a| sets(&a, SetOp::Intersection)),
        ),
        (
            "setsubtract",
            fixed(&[Any, Any], |a| sets(&a, SetOp::Subtract)),
        ),
        (
            "setsymmetricdifference",
            variadic(&[Any], Any, |a| sets(&a, SetOp::SymmetricDifference)),
        ),
        ("setproduct", variadic(&[], Any, setproduct)),
        (
            "sethaselement",
            fixed(&[Any, Any], |a| Ok(list(&a[0])?.contains(&a[1]).into())),
        ),
        (
            "md5",
            fixed(&[S], |a| {
                use md5::Digest;
                Ok(hex(&md5::Md5::digest(text(&a[0])?.as_bytes())).into())
            }),
        ),
        (
            "sha1",
            fixed(&[S], |a| {
                use sha1::Digest;
                Ok(hex(&sha1::Sha1::digest(text(&a[0])?.as_bytes())).into())
            }),
        ),
        ("uuidv4", fixed(&[], |_| Ok(uuidv4().into()))),
        (
            "uuidv5",
            fixed(&[S, S], |a| {
                uuidv5(&text(&a[0])?, &text(&a[1])?).map(Value::from)
            }),
        ),
        (
            "urlencode",
            fixed(&[S], |a| Ok(urlencode(&text(&a[0])?).into())),
        ),
        (
            "absolute",
            fixed(&[ParamType::Number], |a| num(num_of(&a[0])?.abs())),
        ),
        (
            "log",
            fixed(&[ParamType::Number, ParamType::Number], |a| {
                num(num_of(&a[0])?.ln() / num_of(&a[1])?.ln())
            }),
        ),
        ("semvercmp", fixed(&[S, S], semvercmp)),
        ("timeadd", fixed(&[S, S], timeadd)),
        (
            "unixtimestampparse",
            fixed(&[ParamType::Number], unixtimestampparse),
        ),
        ("cidrnetmask", fixed(&[S], cidrnetmask)),
        ("cidrhost", fixed(&[S, ParamType::Number], cidrhost)),
        (
            "cidrsubnet",
            fixed(&[S, ParamType::Number, ParamType::Number], cidrsubnet),
        ),
        (
            "cidrsubnets",
            variadic(&[S], ParamType::Number, cidrsubnets),
        ),
    ];
    for (name, def) in defs {
        ctx.declare_func(name, def);
    }
}

/// `formatlist(spec, values...)`: `format` once per element; lists must have one length,
/// other values repeat.
fn formatlist(a: FuncArgs) -> R {
    let mut n: Option<usize> = None;
    for v in &a[1..] {
        if let Value::Array(l) = v {
            match n {
                Some(m) if m != l.len() => {
                    return Err(format!(
                        "formatlist: lists of different lengths ({m} and {})",
                        l.len()
                    ))
                }
                _ => n = Some(l.len()),
            }
        }
    }
    let n = n.unwrap_or(1);
    (0..n)
        .map(|i| {
            let mut args = vec![a[0].clone()];
            args.extend(a[1..].iter().map(|v| match v {
                Value::Array(l) => l[i].clone(),
                other => other.clone(),
            }));
            format_values(&args)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[derive(Clone, Copy)]
enum SetOp {
    Union,
    Intersection,
    Subtract,
    SymmetricDifference,
}

/// A set as a list without duplicates, sorted as cty orders sets of strings and numbers.
fn as_set(mut items: Vec<Value>) -> Value {
    let mut seen = Vec::new();
    items.retain(|v| {
        let new = !seen.contains(v);
        if new {
            seen.push(v.clone());
        }
        new
    });
    if items.iter().all(Value::is_string) {
        items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    } else if items.iter().all(Value::is_number) {
        items.sort_by(|a, b| {
            let (x, y) = (num_of(a).unwrap_or(0.0), num_of(b).unwrap_or(0.0));
            x.total_cmp(&y)
        });
    }
    Value::Array(items)
}

fn sets(a: &[Value], op: SetOp) -> R {
    let lists = a.iter().map(list).collect::<Result<Vec<_>, _>>()?;
    let Some((first, rest)) = lists.split_first() else {
        return Ok(Value::Array(vec![]));
    };
    let out: Vec<Value> = match op {
        SetOp::Union => lists.iter().flat_map(|l| l.iter().cloned()).collect(),
        SetOp::Intersection => first
            .iter()
            .filter(|v| rest.iter().all(|l| l.contains(v)))
            .cloned()
            .collect(),
        SetOp::Subtract => first
            .iter()
            .filter(|v| !rest.iter().any(|l| l.contains(v)))
            .cloned()
            .collect(),
        SetOp::SymmetricDifference => {
            let all: Vec<Value> = lists.iter().flat_map(|l| l.iter().cloned()).collect();
            all.iter()
                .filter(|v| lists.iter().filter(|l| l.contains(v)).count() % 2 == 1)
                .cloned()
                .collect()
        }
    };
    Ok(as_set(out))
}

/// `setproduct(a, b, …)`: every combination, the first list varying slowest.
fn setproduct(a: FuncArgs) -> R {
    let mut out: Vec<Vec<Value>> = vec![vec![]];
    for l in a.iter() {
        let l = list(l)?;
        let mut next = Vec::with_capacity(out.len() * l.len());
        for combo in &out {
            for v in l {
                let mut c = combo.clone();
                c.push(v.clone());
                next.push(c);
            }
        }
        if next.len() > 100_000 {
            return Err("setproduct: more than 100000 combinations".into());
        }
        out = next;
    }
    if a.is_empty() {
        return Err("setproduct: at least two arguments are required".into());
    }
    Ok(Value::Array(out.into_iter().map(Value::Array).collect()))
}

/// Formats 16 bytes as a UUID with its version and the RFC 4122 variant set.
fn uuid_text(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn uuidv4() -> String {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    uuid_text(b, 4)
}

/// `uuidv5(namespace, name)`: `dns`, `url`, `oid`, `x500` or a UUID as the namespace.
fn uuidv5(namespace: &str, name: &str) -> Result<String, String> {
    let ns = match namespace {
        "dns" => "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "url" => "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
        "oid" => "6ba7b812-9dad-11d1-80b4-00c04fd430c8",
        "x500" => "6ba7b814-9dad-11d1-80b4-00c04fd430c8",
        other => other,
    };
    let ns_hex: String = ns.chars().filter(|c| *c != '-').collect();
    let ns_bytes = ::hex::decode(&ns_hex)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            format!("uuidv5: {namespace:?} is not a namespace (dns, url, oid, x500 or a UUID)")
        })?;
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(&ns_bytes);
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    Ok(uuid_text(b, 5))
}

/// Go's `url.QueryEscape`: unreserved characters kept, space as `+`, the rest `%XX`.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// `semvercmp(version, constraint)`: whether the version satisfies the constraint
/// (Masterminds syntax: `||` alternatives of comparators separated by commas or spaces).
fn semvercmp(a: FuncArgs) -> R {
    let (v, c) = (text(&a[0])?, text(&a[1])?);
    let version = semver::Version::parse(&full_version(&v))
        .map_err(|e| format!("semvercmp: {v:?} is not a version: {e}"))?;
    let comparator = regex::Regex::new(
        r"(!=|>=|<=|=>|=<|>|<|=|~>|~|\^)?\s*v?([0-9xX*]+(?:\.[0-9xX*]+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)",
    )
    .map_err(|e| e.to_string())?;
    let mut any = false;
    for alt in c.split("||") {
        let mut all = true;
        let mut seen = false;
        for m in comparator.captures_iter(alt) {
            seen = true;
            let op = m.get(1).map_or("", |o| o.as_str());
            let ver = &m[2];
            let ok = match op {
                "!=" => semver::Version::parse(&full_version(ver)).map_or(true, |x| x != version),
                _ => {
                    let op = match op {
                        "=>" => ">=",
                        "=<" => "<=",
                        "~>" => "~",
                        "" => "=",
                        o => o,
                    };
                    semver::VersionReq::parse(&format!("{op}{ver}"))
                        .map_err(|e| format!("semvercmp: {c:?} is not a constraint: {e}"))?
                        .matches(&version)
                }
            };
            all &= ok;
        }
        if !seen {
            return Err(format!("semvercmp: {c:?} is not a constraint"));
        }
        any |= all;
    }
    Ok(any.into())
}

/// `1.2` as `1.2.0`, `v1` as `1.0.0` (Masterminds reads partial versions).
fn full_version(v: &str) -> String {
    let v = v.trim().trim_start_matches('v');
    let split = v.find(['-', '+']).unwrap_or(v.len());
    let (core, rest) = v.split_at(split);
    let mut parts: Vec<&str> = core.split('.').collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    format!("{}{rest}", parts.join("."))
}

/// `timeadd(timestamp, duration)`: Go durations (`1h30m`, `-10m`), RFC 3339 out, in the
/// timestamp's own offset.
fn timeadd(a: FuncArgs) -> R {
    let (ts, d) = (text(&a[0])?, text(&a[1])?);
    let t: jiff::Timestamp = ts
        .parse()
        .map_err(|e| format!("timeadd: {ts:?} is not an RFC 3339 timestamp: {e}"))?;
    let dur: jiff::SignedDuration = d
        .parse()
        .map_err(|e| format!("timeadd: {d:?} is not a duration: {e}"))?;
    let t = t
        .checked_add(dur)
        .map_err(|e| format!("timeadd: out of range: {e}"))?;
    let offset = rfc3339_offset(&ts);
    let z = t.to_zoned(jiff::tz::TimeZone::fixed(offset));
    let out = if offset.seconds() == 0 && ts.ends_with(['Z', 'z']) {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    Ok(out.into())
}

/// The `±HH:MM` offset at the end of an RFC 3339 timestamp (UTC for `Z`).
fn rfc3339_offset(ts: &str) -> jiff::tz::Offset {
    let tail = ts.get(ts.len().saturating_sub(6)..).unwrap_or("");
    let sign = match tail.chars().next() {
        Some('+') => 1,
        Some('-') => -1,
        _ => return jiff::tz::Offset::UTC,
    };
    let (h, m) = (tail.get(1..3), tail.get(4..6));
    match (
        h.and_then(|h| h.parse::<i32>().ok()),
        m.and_then(|m| m.parse::<i32>().ok()),
    ) {
        (Some(h), Some(m)) => jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60))
            .unwrap_or(jiff::tz::Offset::UTC),
        _ => jiff::tz::Offset::UTC,
    }
}

/// `unixtimestampparse(seconds)`: the date's fields in UTC.
fn unixtimestampparse(a: FuncArgs) -> R {
    let secs = int(&a[0])?;
    let t = jiff::Timestamp::from_second(secs)
        .map_err(|e| format!("unixtimestampparse: {secs} is out of range: {e}"))?;
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    let iso = z.date().iso_week_date();
    let weekday = z.weekday();
    let n = |v: i64| Value::from(v);
    let fields: Map<String, Value> = [
        ("year", n(z.year().into())),
        ("year_day", n(z.day_of_year().into())),
        ("day", n(z.day().into())),
        ("month", n(z.month().into())),
        ("month_name", super::time::month_name(z.month()).into()),
        ("weekday", n(weekday.to_sunday_zero_offset().into())),
        ("weekday_name", format!("{weekday:?}").into()),
        ("hour", n(z.hour().into())),
        ("minute", n(z.minute().into())),
        ("second", n(z.second().into())),
        ("iso_year", n(iso.year().into())),
        ("iso_week", n(iso.week().into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Value::Object(fields))
}

/// A prefix as (network address, prefix length, address bits).
fn prefix(s: &str) -> Result<(u128, u32, u32), String> {
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|e| format!("{s:?} is not an address prefix: {e}"))?;
    Ok(match net.network() {
        std::net::IpAddr::V4(a) => (u32::from(a).into(), net.prefix_len().into(), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), net.prefix_len().into(), 128),
    })
}

fn address(v: u128, bits: u32) -> String {
    if bits == 32 {
        std::net::Ipv4Addr::from(v as u32).to_string()
    } else {
        std::net::Ipv6Addr::from(v).to_string()
    }
}

/// `2^n - 1` for `n` up to 128.
fn ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

fn cidrnetmask(a: FuncArgs) -> R {
    let (_, len, bits) = prefix(&text(&a[0])?)?;
    if bits != 32 {
        return Err("cidrnetmask: only IPv4 prefixes have a netmask".into());
    }
    let mask = ones(32) & !ones(32 - len);
    Ok(address(mask, 32).into())
}

fn cidrhost(a: FuncArgs) -> R {
    let (net, len, bits) = prefix(&text(&a[0])?)?;
    let host = int(&a[1])?;
    let max = ones(bits - len);
    let h = if host < 0 {
        max.checked_sub(u128::from(host.unsigned_abs()) - 1)
    } else {
        Some(host as u128).filter(|h| *h <= max)
    }
    .ok_or_else(|| {
        format!(
            "cidrhost: prefix has no host {host} (it has {} addresses)",
            max.saturating_add(1)
        )
    })?;
    Ok(address(net | h, bits).into())
}

fn subnet(
    net: u128,
    len: u32,
    bits: u32,
    newbits: i64,
    netnum: i64,
) -> Result<(u128, u32), String> {
    let newlen = len + u32::try_from(newbits).map_err(|_| "newbits must not be negative")?;
    if newlen > bits {
        return Err(format!(
            "{newbits} more bits would make a prefix longer than {bits} bits"
        ));
    }
    let netnum = u128::try_from(netnum).map_err(|_| "netnum must not be negative")?;
    if newbits < 128 && netnum > ones(newbits as u32) {
        return Err(format!("netnum {netnum} does not fit in {newbits} bits"));
    }
    let shifted = if bits - newlen >= 128 {
        0
    } else {
        netnum << (bits - newlen)
    };
    Ok((net | shifted, newlen))
}

fn cidrsubnet(a: FuncArgs) -> R {
    let (net, len, bits) = prefix(&text(&a[0])?)?;
    let (sub, newlen) =
        subnet(net, len, bits, int(&a[1])?, int(&a[2])?).map_err(|e| format!("cidrsubnet: {e}"))?;
    Ok(format!("{}/{newlen}", address(sub, bits)).into())
}

/// `cidrsubnets(prefix, newbits...)`: consecutive subnets, each aligned to its own size
/// (Terraform's allocation).
fn cidrsubnets(a: FuncArgs) -> R {
    let (net, len, bits) = prefix(&text(&a[0])?)?;
    let end = net | ones(bits - len);
    let mut next = net; // the first address not yet allocated
    let mut out = Vec::new();
    for nb in &a[1..] {
        let nb = int(nb)?;
        let newlen = len
            + u32::try_from(nb)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("cidrsubnets: newbits must be at least 1, not {nb}"))?;
        if newlen > bits {
            return Err(format!(
                "cidrsubnets: {nb} more bits would exceed {bits} bits"
            ));
        }
        let size = ones(bits - newlen);
        // Align up to the subnet size.
        let start = match next.checked_add(size) {
            Some(v) => v & !size,
            None => return Err("cidrsubnets: not enough remaining address space".into()),
        };
        let last = start | size;
        if start < next || last > end || (start == 0 && next != 0) {
            return Err(format!(
                "cidrsubnets: not enough remaining address space for a subnet with a prefix of {newlen} bits"
            ));
        }
        out.push(Value::from(format!("{}/{newlen}", address(start, bits))));
        next = match last.checked_add(1) {
            Some(v) => v,
            None => end.wrapping_add(1),
        };
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use hcl::eval::{Context, Evaluate};
    use hcl::Value;

    fn eval(expr: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        super::super::funcs::declare(&mut ctx);
        let body = hcl::parse(&format!("x = {expr}")).map_err(|e| e.to_string())?;
        let attr = body.attributes().next().unwrap().clone();
        attr.expr.evaluate(&ctx).map_err(|e| e.to_string())
    }

    fn json(expr: &str) -> String {
        serde_json::to_string(&eval(expr).unwrap()).unwrap()
    }

    #[test]
    fn sets_and_formatlist() {
        assert_eq!(
            json(r#"setunion(["b", "a"], ["c", "a"])"#),
            r#"["a","b","c"]"#
        );
        assert_eq!(
            json(r#"setintersection(["a", "b"], ["b", "c"])"#),
            r#"["b"]"#
        );
        assert_eq!(
            json(r#"setsubtract(["a", "b", "c"], ["a"])"#),
            r#"["b","c"]"#
        );
        assert_eq!(
            json(r#"setsymmetricdifference(["a", "b"], ["b", "c"])"#),
            r#"["a","c"]"#
        );
        assert_eq!(
            json(r#"setproduct(["a", "b"], [1, 2])"#),
            r#"[["a",1],["a",2],["b",1],["b",2]]"#
        );
        assert_eq!(json(r#"sethaselement(["a"], "a")"#), "true");
        assert_eq!(
            json(r#"formatlist("%s:%s", ["a", "b"], "x")"#),
            r#"["a:x","b:x"]"#
        );
        assert!(eval(r#"formatlist("%s%s", ["a"], ["b", "c"])"#).is_err());
    }

    #[test]
    fn hashes_uuids_and_urls() {
        assert_eq!(
            json(r#"md5("abc")"#),
            r#""900150983cd24fb0d6963f7d28e17f72""#
        );
        assert_eq!(
            json(r#"sha1("abc")"#),
            r#""a9993e364706816aba3e25717850c26c9cd0d89d""#
        );
        // Python's uuid.uuid5(uuid.NAMESPACE_DNS, "www.example.com").
        assert_eq!(
            json(r#"uuidv5("dns", "www.example.com")"#),
            r#""2ed6657d-e927-568b-95e1-2665a8aea6a2""#
        );
        let v4 = eval("uuidv4()").unwrap();
        let v4 = v4.as_str().unwrap();
        assert_eq!((v4.len(), &v4[14..15]), (36, "4"));
        assert_ne!(eval("uuidv4()").unwrap(), eval("uuidv4()").unwrap());
        assert_eq!(
            json(r#"urlencode("a b/c?d=é~")"#),
            r#""a+b%2Fc%3Fd%3D%C3%A9~""#
        );
    }

    #[test]
    fn numbers_versions_and_times() {
        assert_eq!(json("absolute(-3)"), "3");
        assert_eq!(json("log(8, 2)"), "3");
        assert_eq!(json(r#"semvercmp("1.2.3", ">= 1.2.0, < 2")"#), "true");
        assert_eq!(json(r#"semvercmp("v2.0.0", ">= 1.2.0 < 2")"#), "false");
        assert_eq!(json(r#"semvercmp("2.1", "~1.2 || ^2.0")"#), "true");
        assert_eq!(json(r#"semvercmp("1.2.3", "!= 1.2.3")"#), "false");
        assert!(eval(r#"semvercmp("x", "1")"#).is_err());
        assert_eq!(
            json(r#"timeadd("2024-01-31T23:30:00Z", "1h30m")"#),
            r#""2024-02-01T01:00:00Z""#
        );
        assert_eq!(
            json(r#"timeadd("2024-01-01T00:00:00+02:00", "-10m")"#),
            r#""2023-12-31T23:50:00+02:00""#
        );
        let p = eval("unixtimestampparse(1704067200)").unwrap();
        let p = p.as_object().unwrap();
        assert_eq!(p["year"], Value::from(2024));
        assert_eq!(p["month_name"], Value::from("January"));
        assert_eq!(p["weekday_name"], Value::from("Monday"));
        assert_eq!(p["weekday"], Value::from(1));
        assert_eq!(p["iso_week"], Value::from(1));
    }

    #[test]
    fn network_prefixes_as_terraform() {
        assert_eq!(json(r#"cidrnetmask("172.16.0.0/12")"#), r#""255.240.0.0""#);
        assert_eq!(
            json(r#"cidrhost("10.12.112.0/20", 16)"#),
            r#""10.12.112.16""#
        );
        assert_eq!(
            json(r#"cidrhost("10.12.112.0/20", -1)"#),
            r#""10.12.127.255""#
        );
        assert_eq!(
            json(r#"cidrsubnet("172.16.0.0/12", 4, 2)"#),
            r#""172.18.0.0/16""#
        );
        assert_eq!(
            json(r#"cidrsubnet("fd00:fd12:3456:7890::/56", 16, 162)"#),
            r#""fd00:fd12:3456:7800:a200::/72""#
        );
        assert_eq!(
            json(r#"cidrsubnets("10.1.0.0/16", 4, 4, 8, 4)"#),
            r#"["10.1.0.0/20","10.1.16.0/20","10.1.32.0/24","10.1.48.0/20"]"#
        );
        assert!(eval(r#"cidrsubnet("10.0.0.0/30", 4, 0)"#).is_err());
        assert!(eval(r#"cidrhost("10.0.0.0/30", 4)"#).is_err());
        assert!(eval(r#"cidrsubnets("10.0.0.0/30", 1, 1, 1)"#).is_err());
    }
}
