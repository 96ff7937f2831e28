//! Operations of the build graph (BuildKit's LLB ops, trimmed to what kiln executes).
//! Every type here is part of a vertex's identity: field order and `BTreeMap`s keep their
//! serialisation canonical. Descriptions and source locations live in `VertexMetadata`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A root: an image, a local context, an HTTP file, a git repository, an OCI layout.
    Source(SourceOp),
    /// Run a process (RUN) over a root filesystem and mounts.
    Exec(ExecOp),
    /// Filesystem actions (COPY, ADD, WORKDIR's mkdir, heredoc files).
    File(FileOp),
    /// Stack the inputs' layers in order (`COPY --link`).
    Merge(MergeOp),
}

impl Op {
    /// A short name of the op kind ("source", "exec", "file", "merge").
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Source(_) => "source",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
        }
    }
}

/// A source identifier with attributes, e.g. `docker-image://docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOp {
    /// `scheme://rest`; see the constructors for the schemes.
    pub identifier: String,
    /// Scheme-specific options (`http.checksum`, `git.keepgitdir`, `local.includepattern`, ...).
    pub attrs: BTreeMap<String, String>,
}

impl SourceOp {
    fn with_scheme(scheme: &str, rest: &str) -> Self {
        SourceOp {
            identifier: format!("{scheme}://{rest}"),
            attrs: BTreeMap::new(),
        }
    }

    /// An image by its normalised reference (`docker.io/library/busybox:latest` or `...@sha256:`).
    pub fn image(reference: &str) -> Self {
        Self::with_scheme("docker-image", reference)
    }

    /// A local directory sent by the client, by name (`context`, `dockerfile`, a named context).
    pub fn local(name: &str) -> Self {
        Self::with_scheme("local", name)
    }

    /// A file downloaded over HTTP(S); `url` keeps its own scheme.
    pub fn http(url: &str) -> Self {
        SourceOp {
            identifier: url.to_string(),
            attrs: BTreeMap::new(),
        }
    }

    /// A git repository (`host/path.git#ref:subdir`).
    pub fn git(remote: &str) -> Self {
        Self::with_scheme("git", remote)
    }

    /// An image in a local OCI layout (`/path@sha256:...` or `/path:tag`).
    pub fn oci_layout(location: &str) -> Self {
        Self::with_scheme("oci-layout", location)
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.attrs.insert(key.to_string(), value.to_string());
        self
    }

    /// The scheme (`docker-image`, `local`, `http`, `https`, `git`, `oci-layout`).
    pub fn scheme(&self) -> &str {
        self.identifier.split("://").next().unwrap_or("")
    }

    /// The identifier without `scheme://` (for http(s), the whole URL).
    pub fn location(&self) -> &str {
        match self.scheme() {
            "http" | "https" => &self.identifier,
            _ => self
                .identifier
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(&self.identifier),
        }
    }
}

/// A RUN: process metadata, mounts, network and security mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// What runs and in which environment.
    pub meta: ExecMeta,
    /// Mounts; by convention the first is the root filesystem (`/`, input 0, output).
    pub mounts: Vec<Mount>,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
    /// Secrets exposed as environment variables (`--mount=type=secret,env=NAME`).
    pub secret_env: Vec<SecretEnv>,
}

/// The process of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecMeta {
    /// argv.
    pub args: Vec<String>,
    /// `KEY=value` in the order the image config and the Dockerfile give them.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// `user[:group]` as written in the Dockerfile or config (resolved in the rootfs).
    pub user: String,
    /// Proxy variables (HTTP_PROXY, ...): passed to the process, never part of cache keys.
    pub proxy_env: BTreeMap<String, String>,
    /// `--add-host` entries.
    pub extra_hosts: Vec<HostIp>,
    /// Container hostname, if set.
    pub hostname: Option<String>,
}

/// An `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIp {
    /// Host name.
    pub host: String,
    /// Address (cleared from cache keys).
    pub ip: String,
}

/// A mount of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Index into the vertex's inputs; `None` for an empty source (scratch, cache, tmpfs, secret).
    pub input: Option<usize>,
    /// Subpath of the input to mount (`source=` of a bind mount).
    pub selector: Option<String>,
    /// Mount point in the container.
    pub dest: String,
    /// Whether the mount's final state is the vertex's result (only the root mount).
    pub output: bool,
    /// Read-only.
    pub readonly: bool,
    /// Kind and kind-specific options.
    pub kind: MountKind,
}

impl Mount {
    /// The writable root filesystem from input 0, which becomes the result.
    pub fn root() -> Self {
        Mount {
            input: Some(0),
            selector: None,
            dest: "/".to_string(),
            output: true,
            readonly: false,
            kind: MountKind::Bind,
        }
    }
}

/// What a mount is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A bind of an input (read-only by default; writes to a rw bind are discarded).
    Bind,
    /// A persistent cache directory.
    Cache(CacheOpt),
    /// A tmpfs.
    Tmpfs(TmpfsOpt),
    /// A secret file.
    Secret(SecretOpt),
    /// An ssh-agent socket.
    Ssh(SshOpt),
}

/// `--mount=type=cache` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheOpt {
    /// Cache id (default: the target). Not part of cache keys.
    pub id: String,
    /// Concurrency mode. Not part of cache keys.
    pub sharing: CacheSharing,
    /// Mode of the cache directory when created (default 0755).
    pub mode: u32,
    /// Owner uid when created.
    pub uid: u32,
    /// Owner gid when created.
    pub gid: u32,
    /// `mode`, `uid` or `gid` was given (without `source`): the directory is then
    /// a different cache from the plain id's, as BuildKit seeds such a mount from a
    /// `mkdir` with those settings and keys cache directories by their seed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settings_given: bool,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Everyone uses the same directory at once.
    #[default]
    Shared,
    /// Concurrent users get separate directories.
    Private,
    /// One user at a time; others wait.
    Locked,
}

/// `--mount=type=tmpfs` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TmpfsOpt {
    /// Size limit in bytes (0 = the kernel's default).
    pub size: u64,
}

/// `--mount=type=secret` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretOpt {
    /// Secret id.
    pub id: String,
    /// File owner uid.
    pub uid: u32,
    /// File owner gid.
    pub gid: u32,
    /// File mode (default 0400).
    pub mode: u32,
    /// Whether a missing secret is ignored (`required=false`).
    pub optional: bool,
}

/// `--mount=type=ssh` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOpt {
    /// Agent id (default `default`).
    pub id: String,
    /// Socket owner uid.
    pub uid: u32,
    /// Socket owner gid.
    pub gid: u32,
    /// Socket mode (default 0600).
    pub mode: u32,
    /// Whether a missing agent is ignored.
    pub optional: bool,
}

/// A secret exposed as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    /// Secret id.
    pub id: String,
    /// Variable name.
    pub name: String,
    /// Whether a missing secret is ignored.
    pub optional: bool,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The build's default (`kiln build --network`; else an own namespace
    /// with outbound access).
    #[default]
    Default,
    /// Own network namespace with only `lo`.
    None,
    /// The host's network (needs the `network.host` entitlement).
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Default capabilities, no_new_privs.
    #[default]
    Sandbox,
    /// All capabilities (needs the `security.insecure` entitlement).
    Insecure,
}

/// Filesystem actions applied in order onto a base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// Index of the input the actions start from; `None` = an empty filesystem (scratch).
    pub base: Option<usize>,
    /// The actions, applied in order.
    pub actions: Vec<FileAction>,
    /// Index of the input whose `/etc/passwd` and `/etc/group` resolve `--chown`
    /// names; `None` = the base. `COPY --link` writes onto an empty layer, so it
    /// names the stage below (BuildKit's `NamedUserOpt.input`); only those two files
    /// of it are part of the cache key. Absent from the encoding when `None`, so
    /// digests of ops without it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
}

/// One filesystem action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    /// Copy from an input.
    Copy(CopyAction),
    /// Create a file with given contents.
    Mkfile(MkfileAction),
    /// Create a directory.
    Mkdir(MkdirAction),
    /// Remove a path.
    Rm(RmAction),
    /// Create a symlink.
    Symlink(SymlinkAction),
}

/// `--chown` value: ids or names resolved in the destination's /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    /// The user.
    pub user: UserSpec,
    /// The group; `None` = the user's primary group (or the same number for a numeric user).
    pub group: Option<UserSpec>,
}

/// A numeric id or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSpec {
    /// A numeric id.
    Id(u32),
    /// A name to look up.
    Name(String),
}

/// `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChmodOpt {
    /// Octal bits.
    Octal(u32),
    /// Symbolic form (`u=rwX,go=rX`).
    Symbolic(String),
}

/// COPY / ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CopyAction {
    /// Index of the input copied from.
    pub src_input: usize,
    /// Source path (may hold wildcards when `allow_wildcard`).
    pub src: String,
    /// Destination path (a trailing `/` means "into this directory").
    pub dest: String,
    /// New owner.
    pub owner: Option<ChownOpt>,
    /// New mode.
    pub mode: Option<ChmodOpt>,
    /// Follow a symlink given as the source.
    pub follow_symlinks: bool,
    /// Copy a directory's contents rather than the directory.
    pub dir_copy_contents: bool,
    /// Unpack a local archive (ADD).
    pub attempt_unpack: bool,
    /// Create missing parents of the destination.
    pub create_dest_path: bool,
    /// Expand wildcards in `src`.
    pub allow_wildcard: bool,
    /// A wildcard matching nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// Fixed mtime for the copied files (SOURCE_DATE_EPOCH).
    pub timestamp: Option<i64>,
    /// Only paths matching these patterns.
    pub include_patterns: Vec<String>,
    /// Skip paths matching these patterns (`--exclude`).
    pub exclude_patterns: Vec<String>,
    /// Keep the source's parent directories (`--parents`).
    pub parents: bool,
    /// Replace existing destination paths even when types differ.
    pub always_replace_existing_dest_paths: bool,
}

impl CopyAction {
    /// Everything of input `src_input` onto the destination's root (a
    /// directory as a base image, a cache mount seeded from a source).
    pub fn whole_tree(src_input: usize) -> CopyAction {
        CopyAction {
            src_input,
            src: "/".to_string(),
            dest: "/".to_string(),
            dir_copy_contents: true,
            create_dest_path: true,
            ..Default::default()
        }
    }
}

/// Create a file (heredoc COPY, generated files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkfileAction {
    /// Path of the file.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Contents.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Fixed mtime.
    pub timestamp: Option<i64>,
}

/// Create a directory (WORKDIR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkdirAction {
    /// Path of the directory.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Create missing parents.
    pub make_parents: bool,
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Fixed mtime.
    pub timestamp: Option<i64>,
}

/// Remove a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmAction {
    /// Path to remove.
    pub path: String,
    /// A missing path is not an error.
    pub allow_not_found: bool,
    /// Expand wildcards in `path`.
    pub allow_wildcard: bool,
}

/// Create a symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymlinkAction {
    /// The link's target.
    pub target: String,
    /// Where the link is created.
    pub path: String,
    /// Owner.
    pub owner: Option<ChownOpt>,
    /// Fixed mtime.
    pub timestamp: Option<i64>,
}

/// Stack the layers of the inputs, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MergeOp {}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
