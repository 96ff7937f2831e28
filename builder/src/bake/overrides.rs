//! `--set PATTERN.KEY[+]=VALUE`: target attributes overridden from the command line.

use super::error::{definition, BakeError};
use super::resolve::glob;
use super::target::Target;

/// One `--set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Target name pattern (`*`, `?`).
    pub pattern: String,
    /// The key, with its name part: `tags`, `args.FOO`.
    pub key: String,
    /// The value; `None` for `args.NAME` alone (taken from the environment).
    pub value: Option<String>,
    /// `+=`: append to a list instead of replacing it.
    pub append: bool,
}

/// Keys whose value is a list (repeated `--set` accumulate, `+=` appends).
const LIST_KEYS: [&str; 12] = [
    "output",
    "cache-to",
    "cache-from",
    "tags",
    "platform",
    "secrets",
    "ssh",
    "attest",
    "entitlements",
    "annotations",
    "no-cache-filter",
    "ulimits",
];
/// Keys that need a name part (`args.NAME`).
const NAMED_KEYS: [&str; 5] = ["args", "contexts", "labels", "extra-hosts", "secret"];
/// Keys with a single value.
const SCALAR_KEYS: [&str; 9] = [
    "context",
    "dockerfile",
    "target",
    "call",
    "no-cache",
    "pull",
    "network",
    "shm-size",
    "description",
];

/// Parses `--set` values, checking keys as buildx does.
pub fn parse(sets: &[String]) -> Result<Vec<Override>, BakeError> {
    sets.iter().map(|s| parse_one(s)).collect()
}

fn parse_one(s: &str) -> Result<Override, BakeError> {
    let (lhs, value) = match s.split_once('=') {
        Some((l, v)) => (l, Some(v.to_string())),
        None => (s, None),
    };
    let append = lhs.ends_with('+');
    let lhs = lhs.trim_end_matches('+');
    let mut parts = lhs.splitn(3, '.');
    let pattern = parts.next().unwrap_or_default();
    let Some(key) = parts.next() else {
        return Err(definition(format!(
            "invalid --set {s:?}: expected TARGET.KEY=VALUE"
        )));
    };
    let name = parts.next();
    let bad = |why: &str| definition(format!("invalid --set {s:?}: {why}"));
    if key == "push" || key == "load" {
        // Shorthands for an output, as buildx reads them.
    } else if NAMED_KEYS.contains(&key) {
        if name.is_none_or(str::is_empty) {
            return Err(bad(&format!("{key} requires a name ({key}.NAME=VALUE)")));
        }
    } else if !LIST_KEYS.contains(&key) && !SCALAR_KEYS.contains(&key) {
        return Err(bad(&format!(
            "unknown key {key:?} (known: {}, {}, {}, push, load)",
            NAMED_KEYS.join(", "),
            LIST_KEYS.join(", "),
            SCALAR_KEYS.join(", ")
        )));
    }
    if append && !LIST_KEYS.contains(&key) {
        return Err(bad(&format!("{key} does not support += (only lists do)")));
    }
    let value = match value {
        Some(v) => Some(v),
        None if key == "args" => name.and_then(|n| std::env::var(n).ok()),
        None => return Err(bad("expected TARGET.KEY=VALUE")),
    };
    let key = match name {
        Some(n) => format!("{key}.{n}"),
        None => key.to_string(),
    };
    Ok(Override {
        pattern: pattern.to_string(),
        key,
        value,
        append,
    })
}

/// Applies the overrides whose pattern matches `name`, in order.
pub fn apply(t: &mut Target, name: &str, overrides: &[Override]) -> Result<(), BakeError> {
    let mut seen: Vec<&str> = Vec::new();
    for o in overrides.iter().filter(|o| glob(&o.pattern, name)) {
        let Some(value) = o.value.clone() else {
            continue;
        };
        let (key, sub) = match o.key.split_once('.') {
            Some((k, s)) => (k, Some(s)),
            None => (o.key.as_str(), None),
        };
        // A second --set of the same list key adds to the first (buildx accumulates them).
        let add = o.append || seen.contains(&o.key.as_str());
        seen.push(&o.key);
        let list = |field: &mut Option<Vec<String>>| {
            if add {
                field.get_or_insert_with(Vec::new).push(value.clone());
            } else {
                *field = Some(vec![value.clone()]);
            }
        };
        let bool_of = |v: &str| {
            crate::cli::parse_bool(v).map_err(|e| definition(format!("--set {name}.{key}: {e}")))
        };
        match key {
            "args" => {
                t.args
                    .get_or_insert_with(Default::default)
                    .insert(sub.unwrap_or_default().into(), value);
            }
            "contexts" => {
                t.contexts
                    .get_or_insert_with(Default::default)
                    .insert(sub.unwrap_or_default().into(), value);
            }
            "labels" => {
                t.labels
                    .get_or_insert_with(Default::default)
                    .insert(sub.unwrap_or_default().into(), value);
            }
            "extra-hosts" => {
                t.extra_hosts
                    .get_or_insert_with(Default::default)
                    .insert(sub.unwrap_or_default().into(), value);
            }
            "secret" => update_secret(t, name, sub.unwrap_or_default(), &value)?,
            "context" => t.context = Some(value),
            "dockerfile" => t.dockerfile = Some(value),
            "target" => t.target = Some(value),
            "call" => t.call = Some(value),
            "network" => t.network = Some(value),
            "shm-size" => t.shm_size = Some(value),
            "description" => t.description = Some(value),
            "no-cache" => t.no_cache = Some(bool_of(&value)?),
            "pull" => t.pull = Some(bool_of(&value)?),
            "tags" => list(&mut t.tags),
            "platform" => list(&mut t.platforms),
            "output" => list(&mut t.output),
            "cache-from" => list(&mut t.cache_from),
            "cache-to" => list(&mut t.cache_to),
            "secrets" => list(&mut t.secret),
            "ssh" => list(&mut t.ssh),
            "no-cache-filter" => list(&mut t.no_cache_filter),
            "ulimits" => list(&mut t.ulimits),
            // These always add, as in buildx.
            "attest" => t.attest.get_or_insert_with(Vec::new).push(value),
            "entitlements" => t.entitlements.get_or_insert_with(Vec::new).push(value),
            "annotations" => t.annotations.get_or_insert_with(Vec::new).push(value),
            "push" => set_push(&mut t.output, bool_of(&value)?),
            "load" => set_load(&mut t.output, bool_of(&value)?),
            other => return Err(definition(format!("--set: unknown key {other:?}"))),
        }
    }
    Ok(())
}

/// `secret.ID=VALUE`: a declared secret takes the source or variable of `VALUE`
/// (buildx's `updateSecret`).
fn update_secret(t: &mut Target, name: &str, id: &str, value: &str) -> Result<(), BakeError> {
    use super::print::{entry, Kind};
    let field = |m: &super::print::Entry, k: &str| {
        m.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let next = entry(value, Kind::Secret);
    let next_id = field(&next, "id");
    if !next_id.is_empty() && next_id != id {
        return Err(definition(format!(
            "--set {name}.secret.{id}: secret override id {next_id:?} does not match declared secret {id:?}"
        )));
    }
    let declared = t
        .secret
        .iter_mut()
        .flatten()
        .find(|s| field(&entry(s, Kind::Secret), "id") == id)
        .ok_or_else(|| {
            definition(format!(
                "--set {name}.secret.{id}: secret {id:?} must be declared before it can be overridden"
            ))
        })?;
    let mut csv = format!("id={id}");
    for k in ["src", "env"] {
        let v = field(&next, k);
        if !v.is_empty() {
            csv.push_str(&format!(",{k}={v}"));
        }
    }
    *declared = csv;
    Ok(())
}

/// An output's fields: `type=…,k=v` (a bare path is a local directory, `-` a tarball).
fn output_fields(s: &str) -> Vec<(String, String)> {
    if !s.contains('=') {
        let kind = if s == "-" { "tar" } else { "local" };
        return vec![("type".into(), kind.into()), ("dest".into(), s.into())];
    }
    kiln_frontend::instructions::mount::split_csv(s)
        .map(|f| {
            f.iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn output_type(s: &str) -> String {
    output_fields(s)
        .into_iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The output with `push` set to `value`.
fn with_push(s: &str, value: bool) -> String {
    let mut fields: Vec<String> = output_fields(s)
        .into_iter()
        .filter(|(k, _)| k != "push")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    fields.push(format!("push={value}"));
    fields.join(",")
}

/// `--push` / `*.push=BOOL` as buildx applies it: image outputs push (or stop pushing,
/// registry outputs dropped); with no output but `docker` ones, a pushing image output is
/// added.
fn set_push(outputs: &mut Option<Vec<String>>, push: bool) {
    let list = outputs.get_or_insert_with(Vec::new);
    if !push {
        list.retain(|o| output_type(o) != "registry");
        for o in list.iter_mut().filter(|o| output_type(o) == "image") {
            *o = with_push(o, false);
        }
        return;
    }
    let mut add = true;
    for o in list.iter_mut() {
        let kind = output_type(o);
        add &= kind == "docker";
        if kind == "image" {
            *o = with_push(o, true);
        }
    }
    if add {
        list.push("type=image,push=true".into());
    }
}

/// `--load` / `*.load=true` as buildx applies it: a `docker` output is added unless one
/// exists or an output other than image, registry or oci does.
fn set_load(outputs: &mut Option<Vec<String>>, load: bool) {
    if !load {
        return;
    }
    let list = outputs.get_or_insert_with(Vec::new);
    for o in list.iter() {
        let f = output_fields(o);
        match output_type(o).as_str() {
            "docker" if !f.iter().any(|(k, _)| k == "dest") => return,
            "image" | "registry" | "oci" => {}
            _ => return,
        }
    }
    list.push("type=docker".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_replace_and_append() {
        let sets = parse(&[
            "*.platform=linux/arm64".into(),
            "app.tags+=extra:1".into(),
            "a*.args.V=2".into(),
        ])
        .unwrap();
        let mut t = Target {
            tags: Some(vec!["base:1".into()]),
            platforms: Some(vec!["linux/amd64".into()]),
            ..Target::default()
        };
        apply(&mut t, "app", &sets).unwrap();
        assert_eq!(t.platforms, Some(vec!["linux/arm64".to_string()]));
        assert_eq!(
            t.tags,
            Some(vec!["base:1".to_string(), "extra:1".to_string()])
        );
        assert_eq!(t.args.unwrap()["V"], "2");
        let mut other = Target::default();
        apply(&mut other, "web", &sets).unwrap();
        assert_eq!(other.args, None);
    }

    #[test]
    fn extra_hosts_and_declared_secrets() {
        let sets = parse(&[
            "app.extra-hosts.db=10.0.0.9".into(),
            "app.secret.tok=type=env,src=OTHER".into(),
        ])
        .unwrap();
        let mut t = Target {
            secret: Some(vec!["id=tok,src=tok.txt".into(), "id=b,src=b".into()]),
            ..Target::default()
        };
        apply(&mut t, "app", &sets).unwrap();
        assert_eq!(t.extra_hosts.unwrap()["db"], "10.0.0.9");
        assert_eq!(
            t.secret,
            Some(vec![
                "id=tok,env=OTHER".to_string(),
                "id=b,src=b".to_string()
            ])
        );
        let undeclared = parse(&["app.secret.nope=src=x".into()]).unwrap();
        let err = apply(&mut Target::default(), "app", &undeclared).unwrap_err();
        assert!(err.to_string().contains("must be declared"), "{err}");
        let other_id = parse(&["app.secret.b=id=c,src=x".into()]).unwrap();
        let mut t = Target {
            secret: Some(vec!["id=b,src=b".into()]),
            ..Target::default()
        };
        assert!(apply(&mut t, "app", &other_id).is_err());
    }

    #[test]
    fn push_and_load_as_buildx_applies_them() {
        let push = parse(&["*.push=true".into()]).unwrap();
        let mut t = Target::default();
        apply(&mut t, "a", &push).unwrap();
        assert_eq!(t.output, Some(vec!["type=image,push=true".to_string()]));
        let mut t = Target {
            output: Some(vec!["type=image,name=x".into()]),
            ..Target::default()
        };
        apply(&mut t, "a", &push).unwrap();
        assert_eq!(
            t.output,
            Some(vec!["type=image,name=x,push=true".to_string()])
        );
        let load = parse(&["*.load=true".into()]).unwrap();
        let mut t = Target {
            output: Some(vec!["type=local,dest=out".into()]),
            ..Target::default()
        };
        apply(&mut t, "a", &load).unwrap();
        assert_eq!(t.output.as_ref().map(Vec::len), Some(1));
        let mut t = Target::default();
        apply(&mut t, "a", &load).unwrap();
        assert_eq!(t.output, Some(vec!["type=docker".to_string()]));
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in [
            "app=1",
            "app.bogus=1",
            "app.args=1",
            "app.context+=x",
            "app.tags",
        ] {
            assert!(parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
