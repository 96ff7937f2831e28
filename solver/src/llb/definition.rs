//! The build graph: a DAG of vertices, deduplicated by digest.

use std::collections::{HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use super::digest::{vertex_digest, VertexDigest};
use super::op::{FileAction, Op};
use super::vertex::{Vertex, VertexMetadata, VertexRef};
use kiln_oci::Platform;

/// Errors while building a graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// A vertex handle from another definition.
    #[error("input vertex {0} does not belong to this definition")]
    UnknownInput(usize),
    /// An op field refers to an input position the vertex does not have.
    #[error("{op} op refers to input {index} but the vertex has {count} inputs")]
    InputOutOfRange {
        /// The op kind.
        op: &'static str,
        /// The position referred to.
        index: usize,
        /// How many inputs there are.
        count: usize,
    },
    /// An exec needs a root mount.
    #[error("exec op has no mounts")]
    NoRootMount,
}

/// A build graph. Vertices are added inputs-first, so insertion order is a topological order
/// and the graph cannot have cycles.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    graph: DiGraph<Vertex, usize>,
    by_digest: HashMap<VertexDigest, NodeIndex>,
}

fn check_inputs(op: &Op, count: usize) -> Result<(), GraphError> {
    let check = |index: usize| {
        if index < count {
            Ok(())
        } else {
            Err(GraphError::InputOutOfRange {
                op: op.kind(),
                index,
                count,
            })
        }
    };
    match op {
        Op::Source(_) => {
            if count > 0 {
                return Err(GraphError::InputOutOfRange {
                    op: "source",
                    index: 0,
                    count,
                });
            }
        }
        Op::Exec(e) => {
            if e.mounts.is_empty() {
                return Err(GraphError::NoRootMount);
            }
            for m in &e.mounts {
                if let Some(i) = m.input {
                    check(i)?;
                }
            }
        }
        Op::File(f) => {
            if let Some(b) = f.base {
                check(b)?;
            }
            for a in &f.actions {
                if let FileAction::Copy(c) = a {
                    check(c.src_input)?;
                }
            }
        }
        Op::Merge(_) => {}
    }
    Ok(())
}

impl Definition {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex, or returns the existing equal one (same op, platform and inputs),
    /// folding `metadata` into it.
    pub fn add(
        &mut self,
        op: Op,
        platform: Option<Platform>,
        inputs: &[VertexRef],
        metadata: VertexMetadata,
    ) -> Result<VertexRef, GraphError> {
        let mut input_digests = Vec::with_capacity(inputs.len());
        for r in inputs {
            let v = self
                .graph
                .node_weight(r.0)
                .ok_or(GraphError::UnknownInput(r.index()))?;
            input_digests.push(v.digest);
        }
        check_inputs(&op, inputs.len())?;
        let digest = vertex_digest(&op, &platform, &input_digests);
        if let Some(&existing) = self.by_digest.get(&digest) {
            if let Some(v) = self.graph.node_weight_mut(existing) {
                v.metadata.merge(metadata);
            }
            return Ok(VertexRef(existing));
        }
        let node = self.graph.add_node(Vertex {
            op,
            platform,
            inputs: inputs.to_vec(),
            digest,
            metadata,
        });
        for (pos, r) in inputs.iter().enumerate() {
            self.graph.add_edge(r.0, node, pos);
        }
        self.by_digest.insert(digest, node);
        Ok(VertexRef(node))
    }

    /// The vertex behind a handle.
    pub fn vertex(&self, r: VertexRef) -> Option<&Vertex> {
        self.graph.node_weight(r.0)
    }

    /// The vertex with this digest.
    pub fn find(&self, digest: &VertexDigest) -> Option<VertexRef> {
        self.by_digest.get(digest).copied().map(VertexRef)
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// All vertices in insertion (topological) order.
    pub fn vertices(&self) -> impl Iterator<Item = (VertexRef, &Vertex)> {
        self.graph
            .node_indices()
            .filter_map(|n| self.graph.node_weight(n).map(|v| (VertexRef(n), v)))
    }

    /// Vertices that use `r` as an input.
    pub fn dependents(&self, r: VertexRef) -> Vec<VertexRef> {
        let mut out: Vec<VertexRef> = self
            .graph
            .neighbors_directed(r.0, petgraph::Direction::Outgoing)
            .map(VertexRef)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The vertices `targets` need (themselves included), inputs before their users.
    pub fn closure(&self, targets: &[VertexRef]) -> Vec<VertexRef> {
        let mut seen: HashSet<VertexRef> = HashSet::new();
        let mut stack: Vec<VertexRef> = targets.to_vec();
        while let Some(r) = stack.pop() {
            if !seen.insert(r) {
                continue;
            }
            if let Some(v) = self.vertex(r) {
                stack.extend(v.inputs.iter().copied());
            }
        }
        let mut out: Vec<VertexRef> = seen
            .into_iter()
            .filter(|r| self.vertex(*r).is_some())
            .collect();
        out.sort();
        out
    }

    /// Graphviz DOT of what `targets` need (everything when `targets` is empty), for `--print=graph`.
    pub fn to_dot(&self, targets: &[VertexRef]) -> String {
        let refs = if targets.is_empty() {
            self.vertices().map(|(r, _)| r).collect()
        } else {
            self.closure(targets)
        };
        let mut out = String::from("digraph kiln {\n  node [shape=box, fontname=\"monospace\"];\n");
        for r in &refs {
            let Some(v) = self.vertex(*r) else { continue };
            let mut label = v.summary();
            if let Some(p) = &v.platform {
                label = format!("{label}\n{p}");
            }
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\"];\n",
                v.digest,
                dot_escape(&format!("{}\n{}", label, v.digest.short()))
            ));
        }
        for r in &refs {
            let Some(v) = self.vertex(*r) else { continue };
            for (pos, input) in v.inputs.iter().enumerate() {
                if let Some(i) = self.vertex(*input) {
                    out.push_str(&format!(
                        "  \"{}\" -> \"{}\" [label=\"{pos}\"];\n",
                        i.digest, v.digest
                    ));
                }
            }
        }
        out.push_str("}\n");
        out
    }

    /// A JSON dump of what `targets` need (everything when empty), for `--print=llb`.
    pub fn to_json(&self, targets: &[VertexRef]) -> serde_json::Value {
        #[derive(Serialize)]
        struct Dumped<'a> {
            digest: VertexDigest,
            op: &'a Op,
            platform: &'a Option<Platform>,
            inputs: Vec<VertexDigest>,
            metadata: &'a VertexMetadata,
        }
        let refs = if targets.is_empty() {
            self.vertices().map(|(r, _)| r).collect()
        } else {
            self.closure(targets)
        };
        let dumped: Vec<Dumped<'_>> = refs
            .iter()
            .filter_map(|r| self.vertex(*r))
            .map(|v| Dumped {
                digest: v.digest,
                op: &v.op,
                platform: &v.platform,
                inputs: v
                    .inputs
                    .iter()
                    .filter_map(|i| self.vertex(*i).map(|x| x.digest))
                    .collect(),
                metadata: &v.metadata,
            })
            .collect();
        serde_json::to_value(dumped).unwrap_or(serde_json::Value::Null)
    }
}

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
