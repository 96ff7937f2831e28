//! A vertex: an op with its inputs, plus metadata that is not part of its identity.

use serde::{Deserialize, Serialize};

use super::digest::VertexDigest;
use super::op::Op;
use kiln_oci::Platform;

/// Where in a Dockerfile (or other source) a vertex comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// File name as shown to the user.
    pub file: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line (inclusive).
    pub end_line: u32,
}

/// Presentation and policy data of a vertex, kept apart from its digest and cache key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VertexMetadata {
    /// Progress text (`[stage 2/5] RUN make`).
    pub description: String,
    /// Source locations (several when equal work is written in several places).
    pub locations: Vec<SourceLocation>,
    /// Do not use the cache for this vertex (`--no-cache`, `--no-cache-filter`).
    pub ignore_cache: bool,
    /// Groups vertices in progress output.
    pub progress_group: Option<String>,
}

impl VertexMetadata {
    /// Metadata with only a description.
    pub fn described(description: impl Into<String>) -> Self {
        VertexMetadata {
            description: description.into(),
            ..Default::default()
        }
    }

    /// Folds in the metadata of an equal vertex added again.
    pub(crate) fn merge(&mut self, other: VertexMetadata) {
        if self.description.is_empty() {
            self.description = other.description;
        }
        for loc in other.locations {
            if !self.locations.contains(&loc) {
                self.locations.push(loc);
            }
        }
        self.ignore_cache |= other.ignore_cache;
        if self.progress_group.is_none() {
            self.progress_group = other.progress_group;
        }
    }
}

/// A handle on a vertex of a [`super::Definition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexRef(pub(crate) petgraph::graph::NodeIndex);

impl VertexRef {
    /// Position in insertion order (inputs always come before their users).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One node of the build graph.
#[derive(Debug, Clone)]
pub struct Vertex {
    pub(crate) op: Op,
    pub(crate) platform: Option<Platform>,
    pub(crate) inputs: Vec<VertexRef>,
    pub(crate) digest: VertexDigest,
    pub(crate) metadata: VertexMetadata,
}

impl Vertex {
    /// The operation.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The platform it is built for.
    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// Inputs in order (op fields refer to them by position).
    pub fn inputs(&self) -> &[VertexRef] {
        &self.inputs
    }

    /// Digest of the op, platform and inputs.
    pub fn digest(&self) -> VertexDigest {
        self.digest
    }

    /// Description, locations and cache policy.
    pub fn metadata(&self) -> &VertexMetadata {
        &self.metadata
    }

    /// A one-line summary of the op for graphs and logs when no description is set.
    pub fn summary(&self) -> String {
        if !self.metadata.description.is_empty() {
            return self.metadata.description.clone();
        }
        match &self.op {
            Op::Source(s) => s.identifier.clone(),
            Op::Exec(e) => format!("exec {}", e.meta.args.join(" ")),
            Op::File(f) => {
                let parts: Vec<String> = f
                    .actions
                    .iter()
                    .map(|a| match a {
                        super::op::FileAction::Copy(c) => format!("copy {} {}", c.src, c.dest),
                        super::op::FileAction::Mkfile(m) => format!("mkfile {}", m.path),
                        super::op::FileAction::Mkdir(m) => format!("mkdir {}", m.path),
                        super::op::FileAction::Rm(r) => format!("rm {}", r.path),
                        super::op::FileAction::Symlink(s) => {
                            format!("symlink {} -> {}", s.path, s.target)
                        }
                    })
                    .collect();
                format!("file {}", parts.join("; "))
            }
            Op::Merge(_) => format!("merge of {} inputs", self.inputs.len()),
        }
    }
}
