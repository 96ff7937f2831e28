//! Compose files: each service with a `build:` section is a target (buildx's compose
//! support), its `x-bake` extension holding bake attributes compose has no field for.

use super::error::{definition, BakeError};
use super::eval::set_attribute;
use super::target::{Config, Target};
use serde_norway::Value as Y;
use std::collections::BTreeMap;

/// Reads a compose file's services into targets, `${VAR}` interpolated from `env`.
pub fn parse(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, BakeError> {
    let mut doc: Y = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        BakeError::Syntax {
            file: name.to_string(),
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let fail = |what: &str, msg: String| definition(format!("{name}: {what}: {msg}"));
    interpolate_all(&mut doc, env).map_err(|m| fail("interpolation", m))?;
    let secrets = doc.get("secrets").and_then(Y::as_mapping);
    let mut config = Config::default();
    let Some(services) = doc.get("services").and_then(Y::as_mapping) else {
        return Ok(config);
    };
    let mut default = Vec::new();
    for (svc, def) in services {
        let svc = scalar(svc)
            .ok_or_else(|| fail("services", "a service name must be a string".into()))?;
        let what = format!("service {svc:?}");
        let Some(build) = def.get("build") else {
            continue;
        };
        let mut t = Target::default();
        let svc_env = match def.get("environment") {
            Some(e) => dict(e).map_err(|m| fail(&what, format!("environment: {m}")))?,
            None => BTreeMap::new(),
        };
        // `args` without a value take the service's environment, then the process's.
        let lookup = |k: &str| svc_env.get(k).cloned().or_else(|| env(k));
        let build = match build {
            Y::String(ctx) => {
                t.context = Some(clean_path(ctx));
                None
            }
            Y::Mapping(_) => Some(build),
            _ => return Err(fail(&what, "build must be a path or a mapping".into())),
        };
        if let Some(b) = build {
            read_build(&mut t, b, secrets, &lookup).map_err(|m| fail(&what, m))?;
        }
        if let Some(x) = build.and_then(|b| b.get("x-bake")) {
            let json: serde_json::Value =
                serde_norway::from_value(x.clone()).map_err(|e| fail(&what, e.to_string()))?;
            let Some(obj) = json.as_object() else {
                return Err(fail(&what, "x-bake must be a mapping".into()));
            };
            let mut ext = Target::default();
            for (k, v) in obj {
                // A list attribute given as one string is its words (buildx's `stringArray`).
                let list_key = [
                    "tags",
                    "cache-from",
                    "cache-to",
                    "secret",
                    "ssh",
                    "platforms",
                    "output",
                    "no-cache-filter",
                ]
                .contains(&k.as_str());
                let v = match v.as_str() {
                    Some(words) if list_key => {
                        serde_json::Value::from(words.split_whitespace().collect::<Vec<_>>())
                    }
                    _ => v.clone(),
                };
                let v = hcl::to_value(&v).map_err(|e| fail(&what, e.to_string()))?;
                set_attribute(&mut ext, k, &v).map_err(|m| fail(&format!("{what} x-bake"), m))?;
            }
            merge_extension(&mut t, ext);
        }
        // The image name is the tag when neither the build section nor x-bake has one.
        if t.tags.as_ref().is_none_or(Vec::is_empty) {
            if let Some(image) = def.get("image").and_then(scalar) {
                t.tags = Some(vec![image]);
            }
        }
        // Compose names may hold characters a target name may not.
        let tname: String = svc
            .chars()
            .map(|c| if c == '.' { '_' } else { c })
            .collect();
        default.push(tname.clone());
        config.add_target(tname, t);
    }
    // The services make the `default` group, as buildx makes it.
    config.add_group(
        "default".into(),
        super::target::Group {
            description: None,
            targets: default,
        },
    );
    Ok(config)
}

/// Lays `x-bake` over the compose build: its lists add to compose's (without duplicates),
/// its other attributes replace (buildx's `composeExtTarget`).
fn merge_extension(t: &mut Target, ext: Target) {
    fn add(dst: &mut Option<Vec<String>>, src: Option<Vec<String>>) {
        if let Some(src) = src.filter(|s| !s.is_empty()) {
            let d = dst.get_or_insert_with(Vec::new);
            for v in src {
                if !d.contains(&v) {
                    d.push(v);
                }
            }
        }
    }
    let mut ext = ext;
    add(&mut t.tags, ext.tags.take());
    add(&mut t.cache_from, ext.cache_from.take());
    add(&mut t.cache_to, ext.cache_to.take());
    add(&mut t.secret, ext.secret.take());
    add(&mut t.ssh, ext.ssh.take());
    add(&mut t.platforms, ext.platforms.take());
    add(&mut t.output, ext.output.take());
    t.merge(&ext);
}

fn scalar(v: &Y) -> Option<String> {
    match v {
        Y::String(s) => Some(s.clone()),
        Y::Number(n) => Some(n.to_string()),
        Y::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of strings, or a single string.
fn list(v: &Y) -> Result<Vec<String>, String> {
    match v {
        Y::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "expected a list of strings".to_string()))
            .collect(),
        other => scalar(other)
            .map(|s| vec![s])
            .ok_or_else(|| "expected a list of strings".into()),
    }
}

/// A mapping, or a list of `KEY=VALUE` (a bare `KEY` has no value and is left out).
fn dict(v: &Y) -> Result<BTreeMap<String, String>, String> {
    match v {
        Y::Mapping(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                Ok((
                    scalar(k).ok_or("a key must be a string")?,
                    scalar(v).ok_or("a value must be a string")?,
                ))
            })
            .collect(),
        Y::Sequence(_) => Ok(list(v)?
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()),
        _ => Err("expected a mapping or a list of KEY=VALUE".into()),
    }
}

fn read_build(
    t: &mut Target,
    b: &Y,
    secrets: Option<&serde_norway::Mapping>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let get = |k: &str| b.get(k).filter(|v| !v.is_null());
    let one = |k: &str| -> Result<Option<String>, String> {
        get(k)
            .map(|v| scalar(v).ok_or_else(|| format!("{k} must be a string")))
            .transpose()
    };
    t.context = Some(one("context")?.map_or_else(|| ".".into(), |c| clean_path(&c)));
    t.dockerfile = one("dockerfile")?;
    t.dockerfile_inline = one("dockerfile_inline")?;
    t.target = one("target")?;
    t.network = one("network")?;
    t.shm_size = one("shm_size")?
        .map(|s| shm_size(&s))
        .transpose()
        .map_err(|e| format!("shm_size: {e}"))?;
    if let Some(v) = get("args") {
        t.args = Some(args(v, lookup).map_err(|e| format!("args: {e}"))?);
    }
    if let Some(v) = get("ulimits") {
        t.ulimits = Some(ulimits(v).map_err(|e| format!("ulimits: {e}"))?);
    }
    let mut attest = Vec::new();
    for kind in ["sbom", "provenance"] {
        if let Some(v) = one(kind)? {
            // buildx's `CanonicalizeAttest`: a boolean enables or disables it.
            attest.push(match crate::cli::parse_bool(&v) {
                Ok(on) => format!("type={kind},disabled={}", !on),
                Err(_) => format!("type={kind},{v}"),
            });
        }
    }
    if !attest.is_empty() {
        t.attest = Some(attest);
    }
    if let Some(v) = get("labels") {
        t.labels = Some(dict(v).map_err(|e| format!("labels: {e}"))?);
    }
    if let Some(v) = get("additional_contexts") {
        t.contexts = Some(named_contexts(
            dict(v).map_err(|e| format!("additional_contexts: {e}"))?,
        ));
    }
    if let Some(v) = get("extra_hosts") {
        t.extra_hosts = Some(extra_hosts(v).map_err(|e| format!("extra_hosts: {e}"))?);
    }
    if let Some(v) = get("ssh") {
        // `ID` or `ID=PATH`, a list or a mapping; sorted by id as buildx sorts them.
        let mut keys: Vec<String> = match v {
            Y::Mapping(_) => dict_keep_empty(v)?
                .into_iter()
                .map(|(k, p)| if p.is_empty() { k } else { format!("{k}={p}") })
                .collect(),
            other => list(other).map_err(|e| format!("ssh: {e}"))?,
        };
        keys.sort_by(|a, b| a.split('=').next().cmp(&b.split('=').next()));
        t.ssh = Some(keys);
    }
    for (k, field) in [
        ("tags", &mut t.tags),
        ("cache_from", &mut t.cache_from),
        ("cache_to", &mut t.cache_to),
        ("platforms", &mut t.platforms),
    ] {
        if let Some(v) = get(k) {
            *field = Some(list(v).map_err(|e| format!("{k}: {e}"))?);
        }
    }
    // Only `true` is kept: compose has no unset state for these (buildx).
    for (k, field) in [("no_cache", &mut t.no_cache), ("pull", &mut t.pull)] {
        if let Some(v) = get(k) {
            let on = v
                .as_bool()
                .ok_or_else(|| format!("{k} must be true or false"))?;
            *field = on.then_some(true);
        }
    }
    if let Some(v) = get("secrets") {
        let Y::Sequence(items) = v else {
            return Err("secrets must be a list".into());
        };
        let mut out = Vec::new();
        for item in items {
            // `NAME`, or the long form `{source: NAME, target: …}`.
            let id = scalar(item)
                .or_else(|| item.get("source").and_then(scalar))
                .ok_or("secrets: an entry needs a source")?;
            let def = secrets
                .and_then(|s| s.get(id.as_str()))
                .ok_or_else(|| format!("secret {id:?} is not defined in the top-level secrets"))?;
            if def.get("external").and_then(Y::as_bool) == Some(true) {
                return Err(format!("unsupported external secret {id}"));
            }
            let mut csv = format!("id={id}");
            if let Some(f) = def.get("file").and_then(scalar) {
                csv.push_str(&format!(",src={f}"));
            }
            if let Some(e) = def.get("environment").and_then(scalar) {
                csv.push_str(&format!(",env={e}"));
            }
            out.push(csv);
        }
        t.secret = Some(out);
    }
    Ok(())
}

/// `args`: a mapping or `KEY=VALUE` list; a key without a value (`- KEY`, `KEY:`) takes
/// it from `lookup` and is left out when that has none (compose's `Resolve`).
fn args(
    v: &Y,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let entries: Vec<(String, Option<String>)> = match v {
        Y::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let k = scalar(k).ok_or("a key must be a string")?;
                let v = if v.is_null() {
                    None
                } else {
                    Some(scalar(v).ok_or("a value must be a string")?)
                };
                Ok((k, v))
            })
            .collect::<Result<_, String>>()?,
        other => list(other)?
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (kv, None),
            })
            .collect(),
    };
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| v.or_else(|| lookup(&k)).map(|v| (k, v)))
        .collect())
}

/// A mapping whose null values are empty strings.
fn dict_keep_empty(v: &Y) -> Result<Vec<(String, String)>, String> {
    let Y::Mapping(m) = v else {
        return Err("expected a mapping".into());
    };
    m.iter()
        .map(|(k, v)| {
            let k = scalar(k).ok_or("a key must be a string")?;
            Ok((
                k,
                if v.is_null() {
                    String::new()
                } else {
                    scalar(v).ok_or("a value must be a string")?
                },
            ))
        })
        .collect()
}

/// A local path cleaned as compose's loader leaves it (`./web/` is `web`); URLs and
/// `scheme://` or `docker-image:` references as they are.
pub(super) fn clean_path(p: &str) -> String {
    if p.contains("://") || p.starts_with("docker-image:") || p.starts_with("git@") || p.is_empty()
    {
        return p.to_string();
    }
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if abs => {}
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `service:NAME` (and `target:NAME`) contexts as bake's `target:NAME`.
fn named_contexts(m: BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| {
            let linked = v
                .strip_prefix("service:")
                .or_else(|| v.strip_prefix("target:"));
            match linked {
                Some(name) => (k, format!("target:{}", name.replace('.', "_"))),
                None => {
                    let v = clean_path(&v);
                    (k, v)
                }
            }
        })
        .collect()
}

/// `extra_hosts`: a mapping, or a list of `HOST=IP` / `HOST:IP`; several addresses of
/// one host are joined with commas.
fn extra_hosts(v: &Y) -> Result<BTreeMap<String, String>, String> {
    let pairs: Vec<(String, String)> = match v {
        Y::Mapping(_) => dict_keep_empty(v)?,
        other => list(other)?
            .into_iter()
            .map(|e| {
                e.split_once('=')
                    .or_else(|| e.split_once(':'))
                    .map(|(h, ip)| (h.to_string(), ip.to_string()))
                    .ok_or_else(|| format!("{e:?} is not HOST=IP or HOST:IP"))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (h, ip) in pairs {
        out.entry(h)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&ip);
            })
            .or_insert(ip);
    }
    Ok(out)
}

/// `ulimits`: `name: N` or `name: {soft: S, hard: H}`, as `name=S:H` sorted by name.
fn ulimits(v: &Y) -> Result<Vec<String>, String> {
    let Y::Mapping(m) = v else {
        return Err("expected a mapping".into());
    };
    let mut out = Vec::new();
    for (k, u) in m {
        let k = scalar(k).ok_or("a name must be a string")?;
        let int = |v: Option<&Y>| {
            v.and_then(Y::as_i64)
                .ok_or_else(|| format!("{k}: soft and hard must be numbers"))
        };
        let (soft, hard) = match u {
            Y::Number(_) => (int(Some(u))?, int(Some(u))?),
            Y::Mapping(_) => (int(u.get("soft"))?, int(u.get("hard"))?),
            _ => return Err(format!("{k}: expected a number or soft and hard")),
        };
        out.push(format!("{k}={soft}:{hard}"));
    }
    out.sort();
    Ok(out)
}

/// `shm_size` as buildx prints it: bytes in binary units (`64m` is `64MiB`, docker's
/// `units.BytesSize`).
fn shm_size(s: &str) -> Result<String, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits);
    let num: f64 = num.parse().map_err(|_| format!("{t:?} is not a size"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("{t:?} is not a size")),
    };
    let mut size = num * mult;
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    while size >= 1024.0 && i + 1 < units.len() {
        size /= 1024.0;
        i += 1;
    }
    Ok(format!("{}{}", go_g4(size), units[i]))
}

/// Go's `%.4g` for the small positive numbers sizes are.
fn go_g4(v: f64) -> String {
    let digits = if v >= 1.0 {
        v.log10().floor() as i32 + 1
    } else {
        1
    };
    let decimals = (4 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Compose's variable interpolation in a string: `$VAR`, `${VAR}`, `${VAR:-default}`
/// (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` / `${VAR?message}`
/// (an error), and `$$` for a literal `$`.
fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            out.push_str(&expand(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&env(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One `${…}`: a name and an optional modifier.
fn expand(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() {
        return Err(format!("invalid interpolation ${{{expr}}}"));
    }
    let value = env(name);
    let set_non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let fallback = |arg: &str, ok: bool| -> Result<String, String> {
        if ok {
            Ok(value.clone().unwrap_or_default())
        } else {
            interpolate(arg, env)
        }
    };
    match op {
        "" => Ok(value.unwrap_or_default()),
        _ if op.starts_with(":-") => fallback(&op[2..], set_non_empty),
        _ if op.starts_with('-') => fallback(&op[1..], value.is_some()),
        _ if op.starts_with(":+") => Ok(if set_non_empty {
            interpolate(&op[2..], env)?
        } else {
            String::new()
        }),
        _ if op.starts_with('+') => Ok(if value.is_some() {
            interpolate(&op[1..], env)?
        } else {
            String::new()
        }),
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let ok = if op.starts_with(':') {
                set_non_empty
            } else {
                value.is_some()
            };
            if ok {
                Ok(value.unwrap_or_default())
            } else {
                let msg = op.trim_start_matches(':').trim_start_matches('?');
                Err(format!(
                    "required variable {name} is missing a value: {msg}"
                ))
            }
        }
        _ => Err(format!("invalid interpolation ${{{expr}}}")),
    }
}

/// Interpolates every string of the document (keys too, as compose does for values only:
/// keys are left alone).
fn interpolate_all(v: &mut Y, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match v {
        Y::String(s) => *s = interpolate(s, env)?,
        Y::Sequence(items) => {
            for i in items {
                interpolate_all(i, env)?;
            }
        }
        Y::Mapping(m) => {
            for (_, val) in m.iter_mut() {
                interpolate_all(val, env)?;
            }
        }
        Y::Tagged(t) => interpolate_all(&mut t.value, env)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn interpolation_as_compose_reads_it() {
        let env = |n: &str| match n {
            "TAG" => Some("1.2".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let i = |s: &str| super::interpolate(s, &env);
        assert_eq!(i("app:${TAG}").unwrap(), "app:1.2");
        assert_eq!(i("app:$TAG-x").unwrap(), "app:1.2-x");
        assert_eq!(
            i("${EMPTY:-def}/${EMPTY-def}/${NOPE-def}").unwrap(),
            "def//def"
        );
        assert_eq!(i("$$TAG ${TAG:+set}").unwrap(), "$TAG set");
        assert!(i("${NOPE:?needed}").unwrap_err().contains("needed"));
        assert!(i("${TAG").is_err());
    }

    #[test]
    fn services_with_build_become_targets() {
        let c = super::parse(
            "compose.yaml",
            "services:\n  web:\n    image: example/web:1\n    build:\n      context: ./web\n      args:\n        - A=1\n      x-bake:\n        platforms: [linux/amd64, linux/arm64]\n  db:\n    image: postgres\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.targets.len(), 1);
        let web = &c.targets["web"];
        assert_eq!(web.context.as_deref(), Some("web"));
        assert_eq!(
            web.tags.as_deref(),
            Some(&["example/web:1".to_string()][..])
        );
        assert_eq!(web.args.as_ref().unwrap()["A"], "1");
        assert_eq!(web.platforms.as_ref().map(Vec::len), Some(2));
        // x-bake lists add to compose's; the image is the tag only when there is none.
        let c = super::parse(
            "compose.yaml",
            "services:\n  web:\n    image: example/web:1\n    build:\n      tags: [example/web:2]\n      x-bake:\n        tags: [example/web:3]\n",
            &no_env,
        )
        .unwrap();
        let tags: Vec<&str> = c.targets["web"]
            .tags
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(tags, ["example/web:2", "example/web:3"]);
        let c = super::parse(
            "compose.yaml",
            "services:\n  web:\n    build:\n      x-bake:\n        platforms: linux/amd64 linux/arm64\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.targets["web"].platforms.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = super::parse("compose.yaml", "services:\n  web: [\n", &no_env).unwrap_err();
        assert!(e.to_string().starts_with("compose.yaml:"), "{e}");
    }
}
