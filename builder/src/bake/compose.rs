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
        let build = match build {
            Y::String(ctx) => {
                t.context = Some(ctx.clone());
                None
            }
            Y::Mapping(_) => Some(build),
            _ => return Err(fail(&what, "build must be a path or a mapping".into())),
        };
        if let Some(b) = build {
            read_build(&mut t, b, secrets).map_err(|m| fail(&what, m))?;
        }
        // The image name is the tag when the build section has none (buildx).
        if t.tags.as_ref().is_none_or(Vec::is_empty) {
            if let Some(image) = def.get("image").and_then(scalar) {
                t.tags = Some(vec![image]);
            }
        }
        if let Some(x) = build.and_then(|b| b.get("x-bake")) {
            let json: serde_json::Value =
                serde_norway::from_value(x.clone()).map_err(|e| fail(&what, e.to_string()))?;
            let Some(obj) = json.as_object() else {
                return Err(fail(&what, "x-bake must be a mapping".into()));
            };
            let mut ext = Target::default();
            for (k, v) in obj {
                let v = hcl::to_value(v).map_err(|e| fail(&what, e.to_string()))?;
                set_attribute(&mut ext, k, &v).map_err(|m| fail(&format!("{what} x-bake"), m))?;
            }
            merge_extension(&mut t, ext);
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
) -> Result<(), String> {
    let get = |k: &str| b.get(k).filter(|v| !v.is_null());
    let one = |k: &str| -> Result<Option<String>, String> {
        get(k)
            .map(|v| scalar(v).ok_or_else(|| format!("{k} must be a string")))
            .transpose()
    };
    t.context = one("context")?.or(Some(".".into()));
    t.dockerfile = one("dockerfile")?;
    t.dockerfile_inline = one("dockerfile_inline")?;
    t.target = one("target")?;
    t.network = one("network")?;
    t.shm_size = one("shm_size")?;
    if let Some(v) = get("args") {
        t.args = Some(dict(v).map_err(|e| format!("args: {e}"))?);
    }
    if let Some(v) = get("labels") {
        t.labels = Some(dict(v).map_err(|e| format!("labels: {e}"))?);
    }
    if let Some(v) = get("additional_contexts") {
        t.contexts = Some(dict(v).map_err(|e| format!("additional_contexts: {e}"))?);
    }
    if let Some(v) = get("extra_hosts") {
        t.extra_hosts = Some(dict(v).map_err(|e| format!("extra_hosts: {e}"))?);
    }
    for (k, field) in [
        ("tags", &mut t.tags),
        ("cache_from", &mut t.cache_from),
        ("cache_to", &mut t.cache_to),
        ("platforms", &mut t.platforms),
        ("ssh", &mut t.ssh),
    ] {
        if let Some(v) = get(k) {
            *field = Some(list(v).map_err(|e| format!("{k}: {e}"))?);
        }
    }
    for (k, field) in [("no_cache", &mut t.no_cache), ("pull", &mut t.pull)] {
        if let Some(v) = get(k) {
            *field = Some(
                v.as_bool()
                    .ok_or_else(|| format!("{k} must be true or false"))?,
            );
        }
    }
    if let Some(v) = get("secrets") {
        let mut out = Vec::new();
        for id in list(v).map_err(|e| format!("secrets: {e}"))? {
            let def = secrets
                .and_then(|s| s.get(id.as_str()))
                .ok_or_else(|| format!("secret {id:?} is not defined in the top-level secrets"))?;
            if let Some(f) = def.get("file").and_then(scalar) {
                out.push(format!("id={id},src={f}"));
            } else if let Some(e) = def.get("environment").and_then(scalar) {
                out.push(format!("id={id},env={e}"));
            } else {
                return Err(format!("secret {id:?} has neither file nor environment"));
            }
        }
        t.secret = Some(out);
    }
    Ok(())
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
        assert_eq!(web.context.as_deref(), Some("./web"));
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
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = super::parse("compose.yaml", "services:\n  web: [\n", &no_env).unwrap_err();
        assert!(e.to_string().starts_with("compose.yaml:"), "{e}");
    }
}
