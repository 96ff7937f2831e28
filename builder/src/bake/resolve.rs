//! From the merged definition to the targets to build: names and groups expanded,
//! `inherits` applied, `--set` overrides, defaults, and `target:` links.

use super::error::{definition, BakeError};
use super::overrides::Override;
use super::target::{Config, Group, Target};
use std::collections::BTreeMap;

/// The resolved definition: what `--print` shows and what is built.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    /// Groups by name; `default` lists the requested names.
    pub groups: BTreeMap<String, Group>,
    /// Targets by name, resolved.
    pub targets: BTreeMap<String, Target>,
    /// Targets added only because another links to them (`target:NAME`): built for
    /// their dependents, not exported.
    pub linked: Vec<String>,
}

/// How deep groups and `inherits` may nest.
const MAX_DEPTH: usize = 64;

/// Resolves the requested targets and groups (none: the `default` group, else the only
/// target).
pub fn resolve(
    config: &Config,
    requested: &[String],
    overrides: &[Override],
) -> Result<Definition, BakeError> {
    let mut names: Vec<String> = Vec::new();
    if requested.is_empty() {
        if config.groups.contains_key("default") || config.targets.contains_key("default") {
            names.push("default".into());
        } else if config.targets.len() == 1 {
            names.extend(config.targets.keys().cloned());
        } else {
            return Err(definition(format!(
                "no target named: the file has no \"default\" group or target; name one of: {}",
                config
                    .targets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    for r in requested {
        for n in match_names(config, r)? {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut def = Definition::default();
    for n in &names {
        let mut targets = Vec::new();
        let mut groups = Vec::new();
        expand_group(config, n, &mut Vec::new(), &mut targets, &mut groups)?;
        for g in groups {
            def.groups.insert(g.clone(), config.groups[&g].clone());
        }
        for t in targets {
            if let std::collections::btree_map::Entry::Vacant(e) = def.targets.entry(t) {
                let resolved = resolve_target(config, e.key(), overrides)?;
                e.insert(resolved);
            }
        }
    }
    // The requested names make the `default` group, as buildx prints it.
    if !(names.len() == 1 && names[0] == "default" && def.groups.contains_key("default")) {
        let g = def.groups.entry("default".into()).or_default();
        for n in &names {
            if !g.targets.contains(n) {
                g.targets.push(n.clone());
            }
        }
        g.targets.sort();
    }
    load_links(config, overrides, &mut def)?;
    Ok(def)
}

/// Names matching a pattern (`*`, `?`) among groups and targets; a plain name as is.
fn match_names(config: &Config, pattern: &str) -> Result<Vec<String>, BakeError> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![pattern.to_string()]);
    }
    let found: Vec<String> = config
        .groups
        .keys()
        .chain(config.targets.keys())
        .filter(|n| glob(pattern, n))
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(definition(format!(
            "no target or group matches {pattern:?}"
        )));
    }
    Ok(found)
}

/// Shell-style matching of `*` and `?` (as Go's `path.Match` on names without `/`).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn expand_group(
    config: &Config,
    name: &str,
    stack: &mut Vec<String>,
    targets: &mut Vec<String>,
    groups: &mut Vec<String>,
) -> Result<(), BakeError> {
    let Some(g) = config.groups.get(name) else {
        if !config.targets.contains_key(name) {
            return Err(definition(format!(
                "failed to find target or group {name:?}"
            )));
        }
        if !targets.iter().any(|t| t == name) {
            targets.push(name.to_string());
        }
        return Ok(());
    };
    if stack.iter().any(|s| s == name) || stack.len() > MAX_DEPTH {
        stack.push(name.to_string());
        return Err(definition(format!("group cycle: {}", stack.join(" -> "))));
    }
    if !groups.iter().any(|g| g == name) {
        groups.push(name.to_string());
    }
    stack.push(name.to_string());
    for t in &g.targets {
        // A group may name a target that has the group's own name (buildx allows it).
        if t == name && config.targets.contains_key(t) {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
            continue;
        }
        expand_group(config, t, stack, targets, groups)?;
    }
    stack.pop();
    Ok(())
}

/// One target: its `inherits` merged in order under it, overrides on top, then defaults.
pub fn resolve_target(
    config: &Config,
    name: &str,
    overrides: &[Override],
) -> Result<Target, BakeError> {
    let mut t = inherited(config, name, &mut Vec::new())?;
    super::overrides::apply(&mut t, name, overrides)?;
    t.normalize();
    t.inherits.clear();
    if t.context.is_none() {
        t.context = Some(".".into());
    }
    if t.dockerfile.as_deref().is_none_or(str::is_empty) {
        t.dockerfile = Some("Dockerfile".into());
    }
    Ok(t)
}

fn inherited(config: &Config, name: &str, stack: &mut Vec<String>) -> Result<Target, BakeError> {
    if stack.iter().any(|s| s == name) || stack.len() > MAX_DEPTH {
        stack.push(name.to_string());
        return Err(definition(format!(
            "inherits cycle: {}",
            stack.join(" -> ")
        )));
    }
    let own = config.targets.get(name).ok_or_else(|| match stack.last() {
        Some(child) => definition(format!(
            "target {child:?} inherits from {name:?}, which is not a target"
        )),
        None => definition(format!("failed to find target {name:?}")),
    })?;
    stack.push(name.to_string());
    let mut base = Target::default();
    for parent in &own.inherits {
        let p = inherited(config, parent, stack)?;
        base.merge(&p);
    }
    stack.pop();
    base.inherits.clear();
    base.merge(own);
    Ok(base)
}

/// Adds the targets that `target:NAME` contexts name; refuses links to self and cycles.
fn load_links(
    config: &Config,
    overrides: &[Override],
    def: &mut Definition,
) -> Result<(), BakeError> {
    let mut queue: Vec<String> = def.targets.keys().cloned().collect();
    let mut guard = 0;
    while let Some(name) = queue.pop() {
        guard += 1;
        if guard > 10_000 {
            return Err(definition("too many linked targets"));
        }
        let links: Vec<String> = def.targets[&name]
            .linked_targets()
            .map(|(_, t)| t.to_string())
            .collect();
        for l in links {
            if l == name {
                return Err(definition(format!("target {name} cannot link to itself")));
            }
            let platforms = |t: &Target| t.platforms.clone().unwrap_or_default();
            if let Some(dep) = def
                .targets
                .get(&l)
                .cloned()
                .or_else(|| resolve_target(config, &l, overrides).ok())
            {
                let (mine, theirs) = (platforms(&def.targets[&name]), platforms(&dep));
                // A multi-platform target needs each of its platforms from a multi-platform link.
                if mine.len() > 1 && theirs.len() > 1 && !mine.iter().all(|p| theirs.contains(p)) {
                    return Err(definition(format!(
                        "target {l} can't be used by {name} because its platforms {mine:?} are not a subset of {theirs:?}"
                    )));
                }
            }
            if !def.targets.contains_key(&l) {
                let mut t = resolve_target(config, &l, overrides)?;
                t.output = Some(vec!["type=cacheonly".into()]);
                def.targets.insert(l.clone(), t);
                def.linked.push(l.clone());
                queue.push(l);
            }
        }
    }
    // A cycle through links would deadlock the build order.
    super::order::build_order(def).map(|_| ())
}
