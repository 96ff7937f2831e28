//! Cache keys. A vertex's key is the digest of its op with cache-irrelevant fields cleared
//! (cache-mount ids and sharing, proxy variables, extra-host addresses; descriptions are
//! never in the op), its platform, an optional pin (the resolved digest of a moving source
//! such as `busybox:latest`), and one entry per input: the input's own cache key, or the
//! content checksum of just the paths the op reads from it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::contenthash::{ContentChecksum, Selector};
use crate::llb::{FileAction, MountKind, Op, Vertex};
use kiln_oci::Platform;

/// A cache key (sha256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = hex::decode(s.strip_prefix("sha256:")?).ok()?;
        Some(CacheKey(bytes.try_into().ok()?))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.hex()[..12])
    }
}

impl Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CacheKey::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid cache key"))
    }
}

/// What one input contributes to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKey {
    /// The input's cache key (the op may read all of it).
    Key(CacheKey),
    /// The checksum of the selected paths (see [`input_selectors`]).
    Content(ContentChecksum),
}

/// What a cache key was made of. Exported with remote-cache records, so that a step that
/// misses an imported cache can say which part differed (the command, the environment and
/// build args, the base image, the files an input provides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyParts {
    /// [`op_cache_digest`] of the op and its platform, hex.
    pub op: String,
    /// For a RUN: the digest of its command line, hex (told apart from `env` so a miss can
    /// say which changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// For a RUN: the digest of its environment (ENV and build args), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The pin of a moving source (an image's resolved digest, an HTTP file's digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// One entry per input, in input order.
    pub inputs: Vec<InputKey>,
}

impl KeyParts {
    /// The parts of `vertex`'s key given its pin and what its inputs contribute. An image
    /// source's digest (in its identifier, `…@sha256:…`) is its pin here, so a miss can
    /// name the base image that changed.
    pub fn of(vertex: &Vertex, pin: Option<&str>, inputs: &[InputKey]) -> KeyParts {
        // Plain string lists always serialise.
        let digest =
            |v: &[String]| hex::encode(Sha256::digest(serde_json::to_vec(v).unwrap_or_default()));
        let (args, env) = match vertex.op() {
            Op::Exec(e) => (Some(digest(&e.meta.args)), Some(digest(&e.meta.env))),
            _ => (None, None),
        };
        let image_digest = match vertex.op() {
            Op::Source(s) if matches!(s.scheme(), "docker-image" | "oci-layout") => {
                s.identifier.rsplit_once('@').map(|(_, d)| d.to_string())
            }
            _ => None,
        };
        KeyParts {
            op: hex::encode(op_cache_digest(vertex.op(), vertex.platform())),
            args,
            env,
            pin: pin.map(str::to_string).or(image_digest),
            inputs: inputs.to_vec(),
        }
    }
}

/// The op with fields that must not influence caching cleared.
pub fn cache_relevant_op(op: &Op) -> Op {
    let mut op = op.clone();
    if let Op::Exec(e) = &mut op {
        e.meta.proxy_env.clear();
        for h in &mut e.meta.extra_hosts {
            h.ip.clear();
        }
        for m in &mut e.mounts {
            if let MountKind::Cache(c) = &mut m.kind {
                c.id.clear();
                c.sharing = Default::default();
            }
        }
    }
    op
}

/// Digest of the cache-relevant op and its platform.
pub fn op_cache_digest(op: &Op, platform: Option<&Platform>) -> [u8; 32] {
    #[derive(Serialize)]
    struct Keyed<'a> {
        op: &'a Op,
        platform: Option<&'a Platform>,
    }
    let relevant = cache_relevant_op(op);
    let bytes = serde_json::to_vec(&Keyed {
        op: &relevant,
        platform,
    })
    .unwrap_or_default();
    Sha256::digest(bytes).into()
}

/// Combines an op digest, an optional pin and the inputs into a key.
pub fn cache_key(op_digest: &[u8; 32], pin: Option<&str>, inputs: &[InputKey]) -> CacheKey {
    let mut h = Sha256::new();
    h.update(b"kiln-cachekey-v1\0");
    h.update(op_digest);
    match pin {
        Some(p) => {
            h.update([1]);
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        None => h.update([0]),
    }
    h.update((inputs.len() as u64).to_le_bytes());
    for i in inputs {
        match i {
            InputKey::Key(k) => {
                h.update([b'k']);
                h.update(k.0);
            }
            InputKey::Content(c) => {
                h.update([b'c']);
                h.update(c.0);
            }
        }
    }
    CacheKey(h.finalize().into())
}

/// The key of `vertex` given what its inputs contribute (in input order).
pub fn vertex_cache_key(vertex: &Vertex, pin: Option<&str>, inputs: &[InputKey]) -> CacheKey {
    cache_key(
        &op_cache_digest(vertex.op(), vertex.platform()),
        pin,
        inputs,
    )
}

/// The paths the op reads from input `index` when it reads only selected paths of it
/// (COPY sources, read-only bind mounts with `source=`); `None` when it uses the whole
/// input (a base filesystem, the root mount, a merge).
pub fn input_selectors(op: &Op, index: usize) -> Option<Vec<Selector>> {
    let mut out = Vec::new();
    match op {
        Op::File(f) => {
            if f.base == Some(index) {
                return None;
            }
            if f.users == Some(index) {
                // `--chown` names read only these two files of the users input.
                for path in ["/etc/passwd", "/etc/group"] {
                    out.push(Selector {
                        path: path.to_string(),
                        wildcards: false,
                        follow_final_symlink: true,
                    });
                }
            }
            for a in &f.actions {
                if let FileAction::Copy(c) = a {
                    if c.src_input == index {
                        out.push(Selector {
                            path: c.src.clone(),
                            wildcards: c.allow_wildcard,
                            follow_final_symlink: c.follow_symlinks,
                        });
                    }
                }
            }
        }
        Op::Exec(e) => {
            for m in &e.mounts {
                if m.input != Some(index) {
                    continue;
                }
                match (&m.kind, &m.selector, m.readonly) {
                    // The mount shows a linked source's target: its content is what counts
                    // (BuildKit follows links for mount selectors too).
                    (MountKind::Bind, Some(sel), true) => out.push(Selector {
                        path: sel.clone(),
                        wildcards: false,
                        follow_final_symlink: true,
                    }),
                    _ => return None,
                }
            }
        }
        Op::Source(_) | Op::Merge(_) => return None,
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Whether the op reads nothing of input `index` but the files that resolve `--chown`
/// names (a `COPY --link` reading the stage below): such an input is always keyed by the
/// content of those files, so a change elsewhere below keeps the linked layer cached.
pub fn reads_only_users(op: &Op, index: usize) -> bool {
    match op {
        Op::File(f) => {
            f.users == Some(index)
                && f.base != Some(index)
                && !f
                    .actions
                    .iter()
                    .any(|a| matches!(a, FileAction::Copy(c) if c.src_input == index))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::llb::{
        CacheOpt, CacheSharing, CopyAction, ExecMeta, ExecOp, FileOp, HostIp, Mount, NetworkMode,
        SecurityMode,
    };

    fn exec(cache_id: &str, sharing: CacheSharing, proxy: &str, ip: &str) -> Op {
        let mut proxy_env = BTreeMap::new();
        proxy_env.insert("HTTP_PROXY".to_string(), proxy.to_string());
        Op::Exec(ExecOp {
            meta: ExecMeta {
                args: vec!["go".into(), "build".into()],
                cwd: "/src".into(),
                proxy_env,
                extra_hosts: vec![HostIp {
                    host: "db".into(),
                    ip: ip.into(),
                }],
                ..Default::default()
            },
            mounts: vec![
                Mount::root(),
                Mount {
                    input: None,
                    selector: None,
                    dest: "/root/.cache/go-build".into(),
                    output: false,
                    readonly: false,
                    kind: MountKind::Cache(CacheOpt {
                        id: cache_id.into(),
                        sharing,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        settings_given: false,
                    }),
                },
                Mount {
                    input: Some(1),
                    selector: Some("go.mod".into()),
                    dest: "/src/go.mod".into(),
                    output: false,
                    readonly: true,
                    kind: MountKind::Bind,
                },
            ],
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            secret_env: vec![],
        })
    }

    #[test]
    fn cache_irrelevant_fields_do_not_change_the_key() {
        let a = op_cache_digest(
            &exec(
                "gocache",
                CacheSharing::Shared,
                "http://p1:3128",
                "10.0.0.1",
            ),
            None,
        );
        let b = op_cache_digest(
            &exec("other", CacheSharing::Locked, "http://p2:8080", "10.9.9.9"),
            None,
        );
        assert_eq!(a, b);
        // ...but the command and platform do.
        let mut op = exec("gocache", CacheSharing::Shared, "", "");
        if let Op::Exec(e) = &mut op {
            e.meta.args.push("-v".into());
        }
        assert_ne!(op_cache_digest(&op, None), a);
        let arm = Platform::parse("linux/arm64").ok();
        assert_ne!(
            op_cache_digest(&exec("gocache", CacheSharing::Shared, "", ""), arm.as_ref()),
            a
        );
    }

    #[test]
    fn inputs_and_pins_are_part_of_the_key() {
        let d = [7u8; 32];
        let k1 = CacheKey([1; 32]);
        let k2 = CacheKey([2; 32]);
        let c1 = ContentChecksum([1; 32]);
        let base = cache_key(&d, None, &[InputKey::Key(k1)]);
        assert_eq!(base, cache_key(&d, None, &[InputKey::Key(k1)]));
        assert_ne!(base, cache_key(&d, None, &[InputKey::Key(k2)]));
        assert_ne!(
            base,
            cache_key(&d, None, &[InputKey::Content(c1)]),
            "key vs content of equal bytes"
        );
        assert_ne!(
            base,
            cache_key(&d, Some("sha256:abc"), &[InputKey::Key(k1)])
        );
        assert_ne!(
            cache_key(&d, Some("sha256:abc"), &[]),
            cache_key(&d, Some("sha256:abd"), &[])
        );
        assert_ne!(
            cache_key(&d, None, &[InputKey::Key(k1), InputKey::Key(k2)]),
            cache_key(&d, None, &[InputKey::Key(k2), InputKey::Key(k1)])
        );
        assert_eq!(CacheKey::parse(&base.to_string()), Some(base));
    }

    #[test]
    fn selectors_of_copies_and_bind_mounts() {
        let op = exec("c", CacheSharing::Shared, "", "");
        assert_eq!(
            input_selectors(&op, 0),
            None,
            "root mount uses all of input 0"
        );
        assert_eq!(
            input_selectors(&op, 1),
            Some(vec![Selector {
                path: "go.mod".into(),
                wildcards: false,
                follow_final_symlink: true,
            }]),
            "a bind mount shows its source's link target"
        );
        let copy = Op::File(FileOp {
            base: Some(0),
            users: None,
            actions: vec![
                FileAction::Copy(CopyAction {
                    src_input: 1,
                    src: "src/*.go".into(),
                    dest: "/app/".into(),
                    allow_wildcard: true,
                    ..Default::default()
                }),
                FileAction::Copy(CopyAction {
                    src_input: 1,
                    src: "go.sum".into(),
                    dest: "/app/".into(),
                    ..Default::default()
                }),
            ],
        });
        assert_eq!(input_selectors(&copy, 0), None, "base is used whole");
        let sel = input_selectors(&copy, 1).unwrap();
        assert_eq!(sel.len(), 2);
        assert!(sel[0].wildcards && !sel[1].wildcards);
        assert_eq!(input_selectors(&copy, 2), None, "unused input");
    }

    #[test]
    fn a_users_input_is_keyed_by_passwd_and_group_only() {
        let op = Op::File(FileOp {
            base: None,
            users: Some(1),
            actions: vec![FileAction::Copy(CopyAction {
                src_input: 0,
                src: "/app".into(),
                dest: "/app".into(),
                ..Default::default()
            })],
        });
        let paths: Vec<String> = input_selectors(&op, 1)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(paths, ["/etc/passwd", "/etc/group"]);
        assert!(reads_only_users(&op, 1));
        assert!(!reads_only_users(&op, 0));
        let Op::File(mut same_input) = op.clone() else {
            unreachable!()
        };
        same_input.users = Some(0);
        assert!(!reads_only_users(&Op::File(same_input), 0));
    }

    #[test]
    fn a_file_op_without_users_encodes_as_before() {
        let op = Op::File(FileOp {
            base: Some(0),
            users: None,
            actions: vec![],
        });
        let json = serde_json::to_string(&op).unwrap();
        assert!(!json.contains("users"), "{json}");
    }
}
