//! The definition types: a target and a group as bake files declare them, and how two
//! declarations of one target merge (buildx's `Target.Merge`).

use std::collections::BTreeMap;

/// A `target` block (or compose service): every attribute optional until resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// `description`.
    pub description: Option<String>,
    /// `inherits`: targets whose attributes this one starts from, in order.
    pub inherits: Vec<String>,
    /// `annotations` (merged).
    pub annotations: Option<Vec<String>>,
    /// `attest` (merged).
    pub attest: Option<Vec<String>>,
    /// `context`.
    pub context: Option<String>,
    /// `contexts`: named contexts, `target:NAME` among them.
    pub contexts: Option<BTreeMap<String, String>>,
    /// `dockerfile`.
    pub dockerfile: Option<String>,
    /// `dockerfile-inline`.
    pub dockerfile_inline: Option<String>,
    /// `args`.
    pub args: Option<BTreeMap<String, String>>,
    /// `labels`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `tags` (replaced, not merged).
    pub tags: Option<Vec<String>>,
    /// `cache-from` (merged).
    pub cache_from: Option<Vec<String>>,
    /// `cache-to`.
    pub cache_to: Option<Vec<String>>,
    /// `target`: the Dockerfile stage.
    pub target: Option<String>,
    /// `secret` (merged).
    pub secret: Option<Vec<String>>,
    /// `ssh` (merged).
    pub ssh: Option<Vec<String>>,
    /// `platforms`.
    pub platforms: Option<Vec<String>>,
    /// `output`.
    pub output: Option<Vec<String>>,
    /// `pull`.
    pub pull: Option<bool>,
    /// `no-cache`.
    pub no_cache: Option<bool>,
    /// `network`.
    pub network: Option<String>,
    /// `no-cache-filter` (merged).
    pub no_cache_filter: Option<Vec<String>>,
    /// `shm-size`.
    pub shm_size: Option<String>,
    /// `ulimits` (merged).
    pub ulimits: Option<Vec<String>>,
    /// `call`.
    pub call: Option<String>,
    /// `entitlements` (merged).
    pub entitlements: Option<Vec<String>>,
    /// `extra-hosts`.
    pub extra_hosts: Option<BTreeMap<String, String>>,
}

/// A `group` block: targets and groups built together.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Group {
    /// `description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `targets`: target or group names.
    pub targets: Vec<String>,
}

/// Every target and group of the bake files, in file order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Groups by name.
    pub groups: indexmap::IndexMap<String, Group>,
    /// Targets by name.
    pub targets: indexmap::IndexMap<String, Target>,
}

impl Config {
    /// Adds a target, merged over an earlier declaration of the same name (a later file
    /// overrides an earlier one, as buildx merges `docker-bake.override.hcl`).
    pub fn add_target(&mut self, name: String, t: Target) {
        match self.targets.get_mut(&name) {
            Some(existing) => existing.merge(&t),
            None => {
                self.targets.insert(name, t);
            }
        }
    }

    /// Adds a group; a later declaration adds its targets to an earlier one's (buildx's
    /// `mergeConfig`).
    pub fn add_group(&mut self, name: String, g: Group) {
        match self.groups.get_mut(&name) {
            Some(existing) => {
                for t in g.targets {
                    if !existing.targets.contains(&t) {
                        existing.targets.push(t);
                    }
                }
                if g.description.is_some() {
                    existing.description = g.description;
                }
            }
            None => {
                self.groups.insert(name, g);
            }
        }
    }
}

fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if let Some(v) = src {
        *dst = Some(v.clone());
    }
}

fn append(dst: &mut Option<Vec<String>>, src: &Option<Vec<String>>) {
    if let Some(v) = src {
        dst.get_or_insert_with(Vec::new).extend(v.iter().cloned());
    }
}

fn extend(dst: &mut Option<BTreeMap<String, String>>, src: &Option<BTreeMap<String, String>>) {
    if let Some(v) = src {
        dst.get_or_insert_with(BTreeMap::new)
            .extend(v.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

impl Target {
    /// Lays `t2` over `self`: scalars and replaced lists from `t2` win, merged lists append,
    /// maps take `t2`'s keys (buildx's `Target.Merge`).
    pub fn merge(&mut self, t2: &Target) {
        set(&mut self.description, &t2.description);
        set(&mut self.context, &t2.context);
        set(&mut self.dockerfile, &t2.dockerfile);
        set(&mut self.dockerfile_inline, &t2.dockerfile_inline);
        extend(&mut self.args, &t2.args);
        extend(&mut self.contexts, &t2.contexts);
        extend(&mut self.labels, &t2.labels);
        set(&mut self.tags, &t2.tags);
        set(&mut self.target, &t2.target);
        set(&mut self.call, &t2.call);
        append(&mut self.annotations, &t2.annotations);
        append(&mut self.attest, &t2.attest);
        append(&mut self.secret, &t2.secret);
        append(&mut self.ssh, &t2.ssh);
        set(&mut self.platforms, &t2.platforms);
        append(&mut self.cache_from, &t2.cache_from);
        set(&mut self.cache_to, &t2.cache_to);
        set(&mut self.output, &t2.output);
        set(&mut self.pull, &t2.pull);
        set(&mut self.no_cache, &t2.no_cache);
        set(&mut self.network, &t2.network);
        append(&mut self.no_cache_filter, &t2.no_cache_filter);
        set(&mut self.shm_size, &t2.shm_size);
        append(&mut self.ulimits, &t2.ulimits);
        append(&mut self.entitlements, &t2.entitlements);
        extend(&mut self.extra_hosts, &t2.extra_hosts);
        self.inherits.extend(t2.inherits.iter().cloned());
    }

    /// Drops duplicates from the list attributes and empty named contexts, and adds the
    /// `network.host` entitlement `network = "host"` needs (buildx's `normalize`).
    pub fn normalize(&mut self) {
        use super::print::{entry, Kind};
        // Secrets and ssh keys are one per id, attestations one per type: a later one
        // takes the place of an earlier one (buildx's `removeSecretDupes` and the like).
        for (list, kind, key) in [
            (&mut self.secret, Kind::Secret, "id"),
            (&mut self.ssh, Kind::Ssh, "id"),
            (&mut self.attest, Kind::Attest, "type"),
        ] {
            if let Some(list) = list {
                dedup_by_key(list, |s| entry(s, kind).get(key).cloned());
            }
        }
        for list in [
            &mut self.annotations,
            &mut self.tags,
            &mut self.platforms,
            &mut self.cache_from,
            &mut self.cache_to,
            &mut self.output,
            &mut self.no_cache_filter,
            &mut self.ulimits,
        ]
        .into_iter()
        .flatten()
        {
            dedup(list);
        }
        if self.network.as_deref() == Some("host") {
            self.entitlements
                .get_or_insert_with(Vec::new)
                .push("network.host".into());
        }
        if let Some(e) = &mut self.entitlements {
            dedup(e);
        }
        if let Some(c) = &mut self.contexts {
            c.retain(|_, v| !v.is_empty());
            if c.is_empty() {
                self.contexts = None;
            }
        }
    }

    /// The targets this one needs built first: `target:NAME` named contexts.
    pub fn linked_targets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.contexts.iter().flatten().filter_map(|(name, v)| {
            v.strip_prefix("target:")
                .map(|target| (name.as_str(), target))
        })
    }
}

/// One entry per key: a later entry replaces an earlier one in its place.
fn dedup_by_key<K: PartialEq>(list: &mut Vec<String>, key: impl Fn(&str) -> K) {
    let mut out: Vec<(K, String)> = Vec::new();
    for v in list.drain(..) {
        let k = key(&v);
        match out.iter_mut().find(|(ok, _)| *ok == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    list.extend(out.into_iter().map(|(_, v)| v));
}

/// Keeps the first of each value, in order.
fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|v| seen.insert(v.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_scalars_and_tags_and_appends_merged_lists() {
        let mut a = Target {
            dockerfile: Some("a.Dockerfile".into()),
            tags: Some(vec!["a".into()]),
            cache_from: Some(vec!["type=local,src=a".into()]),
            args: Some(BTreeMap::from([
                ("X".into(), "1".into()),
                ("Y".into(), "1".into()),
            ])),
            ..Target::default()
        };
        let b = Target {
            tags: Some(vec!["b".into()]),
            cache_from: Some(vec!["type=local,src=b".into()]),
            args: Some(BTreeMap::from([("Y".into(), "2".into())])),
            ..Target::default()
        };
        a.merge(&b);
        assert_eq!(a.dockerfile.as_deref(), Some("a.Dockerfile"));
        assert_eq!(a.tags, Some(vec!["b".to_string()]));
        assert_eq!(a.cache_from.as_ref().map(Vec::len), Some(2));
        assert_eq!(a.args.unwrap()["Y"], "2");
    }

    #[test]
    fn normalize_dedups_and_adds_network_host() {
        let mut t = Target {
            tags: Some(vec!["x".into(), "y".into(), "x".into()]),
            network: Some("host".into()),
            contexts: Some(BTreeMap::from([("a".into(), String::new())])),
            ..Target::default()
        };
        t.normalize();
        assert_eq!(t.tags, Some(vec!["x".to_string(), "y".to_string()]));
        assert_eq!(t.entitlements, Some(vec!["network.host".to_string()]));
        assert_eq!(t.contexts, None);
    }

    #[test]
    fn normalize_keeps_one_secret_per_id_and_one_attestation_per_type() {
        let mut t = Target {
            secret: Some(vec![
                "id=a,src=1".into(),
                "id=b,src=2".into(),
                "id=a,env=X".into(),
            ]),
            attest: Some(vec![
                "type=sbom".into(),
                "type=provenance,mode=max".into(),
                "type=sbom,disabled=true".into(),
            ]),
            ..Target::default()
        };
        t.normalize();
        assert_eq!(
            t.secret,
            Some(vec!["id=a,env=X".to_string(), "id=b,src=2".to_string()])
        );
        assert_eq!(
            t.attest,
            Some(vec![
                "type=sbom,disabled=true".to_string(),
                "type=provenance,mode=max".to_string()
            ])
        );
    }
}
