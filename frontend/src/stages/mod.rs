//! Build stages: ARG/ENV scoping, stage references, `--target` and the stages it needs.
//!
//! [`resolve`] turns a parsed [`Ast`] into [`Build`]: every stage with its base, platform and
//! typed instructions, expanded with the ARG/ENV scope BuildKit uses at that point. The lowering
//! (stages → build graph) consumes this; nothing here knows about the graph.

mod budget;
pub mod outline;
pub mod platform;
mod resolver;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::SourceError;
use crate::instructions::{self, Instruction};
use crate::parser::{Ast, Span};
use crate::shell::VarLookup;
pub use budget::EXPANSION_BUDGET;
use kiln_oci::Platform;
pub use platform::platform_args;
use resolver::Resolver;

/// Proxy build args: usable without an ARG, but kept out of history and cache keys unless declared.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Variables an image usually sets; with no image config at hand they count as defined
/// for the UndefinedVar check.
pub const COMMON_IMAGE_ENV: [&str; 6] = ["PATH", "HOME", "HOSTNAME", "TERM", "LANG", "PWD"];

/// Inputs of resolution besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--target` (default: the last stage).
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The platform being built for.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// Expand every stage, not only those the target needs (for checks).
    pub all_stages: bool,
    /// Environment of base images (image config `Env`), keyed by the expanded FROM reference,
    /// when the caller has fetched them; stages on other images start with an unknown env.
    pub base_env: BTreeMap<String, Vec<(String, String)>>,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            target: None,
            build_args: BTreeMap::new(),
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            all_stages: false,
            base_env: BTreeMap::new(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference (as expanded; not normalised).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// One instruction of a stage, typed and expanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedInstruction {
    /// The instruction.
    pub instruction: Instruction,
    /// Its place in the Dockerfile.
    pub span: Span,
    /// Index of its node in `Ast::children`.
    pub node: usize,
    /// RUN only: the build-time environment (ARG values, then ENV which wins); shared between
    /// RUNs with the same scope.
    pub env: RunEnv,
    /// RUN only: proxy build args passed to the command but kept out of history and cache keys.
    pub proxy_env: Vec<(String, String)>,
}

/// The environment of a RUN: `(name, value)` pairs, shared (cheap to clone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnv(pub std::sync::Arc<Vec<(String, String)>>);

impl std::ops::Deref for RunEnv {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a RunEnv {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl serde::Serialize for RunEnv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

/// An ARG as resolved in a stage or globally.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedArg {
    /// Name.
    pub name: String,
    /// Default as written.
    pub default: Option<String>,
    /// The value in effect (override, expanded default, inherited global, or none).
    pub value: Option<String>,
    /// Description from the comment above (`# NAME description`).
    pub description: Option<String>,
    /// Index of the ARG node.
    pub node: usize,
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// Position in the Dockerfile (0-based).
    pub index: usize,
    /// `AS name` as written.
    pub name: Option<String>,
    /// The FROM, expanded with the global scope.
    pub from: instructions::From,
    /// What it starts from.
    pub base: Base,
    /// The expanded `--platform`, if any.
    pub platform: Option<String>,
    /// The FROM line's place.
    pub span: Span,
    /// Index of the FROM node.
    pub node: usize,
    /// Description from the comment above FROM (`# name description`).
    pub description: Option<String>,
    /// Stages this one uses (base, COPY --from, RUN --mount from).
    pub deps: BTreeSet<usize>,
    /// The instructions after FROM (expanded when `expanded`).
    pub instructions: Vec<ResolvedInstruction>,
    /// ARGs declared in the stage.
    pub args: Vec<ResolvedArg>,
    /// The ENV in effect at the end of the stage (inherited from a base stage, then own ENVs).
    pub env: Vec<(String, String)>,
    /// Whether the instructions were expanded (needed by the target, or all stages requested).
    pub expanded: bool,
    /// Global ARGs the FROM line used.
    pub from_vars: BTreeSet<String>,
}

impl Stage {
    /// The name used to refer to the stage (the `AS` name, or the index).
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A variable reference found while expanding, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VarUse {
    /// Variable name.
    pub name: String,
    /// Index of the node it appeared in.
    pub node: usize,
    /// A close defined name, if any.
    pub suggestion: Option<String>,
}

/// The resolved Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Build {
    /// All stages in order.
    pub stages: Vec<Stage>,
    /// The target stage.
    pub target: usize,
    /// Stages the target needs (itself included), in Dockerfile order.
    pub needed: Vec<usize>,
    /// ARGs before the first FROM.
    pub global_args: Vec<ResolvedArg>,
    /// `--build-arg`s no ARG consumed (BuildKit warns about them).
    pub unused_build_args: Vec<String>,
    /// Undeclared variables used in FROM lines.
    pub undefined_in_from: Vec<VarUse>,
    /// Undefined variables used in expanded instructions.
    pub undefined_vars: Vec<VarUse>,
    /// FROM lines whose global-ARG defaults give an empty or invalid image name: (node, base name).
    pub invalid_default_from: Vec<(usize, String)>,
}

impl Build {
    /// The stage whose name is `name` (case-insensitive) or whose index is `name`.
    pub fn find_stage(&self, name: &str) -> Option<usize> {
        find_stage(&self.stages, name, self.stages.len())
    }

    /// The stages the target needs, in order.
    pub fn needed_stages(&self) -> impl Iterator<Item = &Stage> {
        self.needed.iter().filter_map(|&i| self.stages.get(i))
    }
}

fn find_stage(stages: &[Stage], name: &str, limit: usize) -> Option<usize> {
    let by_name = stages
        .iter()
        .take(limit)
        .rev()
        .find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|s| s.index);
    by_name.or_else(|| {
        name.parse::<usize>()
            .ok()
            .filter(|&i| i < limit.min(stages.len()))
    })
}

/// Ordered variables; a later entry overrides an earlier one.
#[derive(Debug, Clone, Default)]
struct Scope {
    vars: Vec<(String, String)>,
}

impl Scope {
    fn set(&mut self, k: &str, v: &str) {
        match self.vars.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.vars.push((k.to_string(), v.to_string())),
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// ENV wins over ARG.
struct StageLookup<'a> {
    env: &'a Scope,
    args: &'a Scope,
}

impl VarLookup for StageLookup<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.env.get(name).or_else(|| self.args.get(name))
    }
}

impl VarLookup for Scope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// The description in the comment block above a definition: from the comment line whose first
/// word is `name` (case-insensitive) to the end of the block, without the name.
pub fn description(comment: &[String], name: &str) -> Option<String> {
    let first_word = |l: &str| l.split_whitespace().next().map(str::to_string);
    let i = comment
        .iter()
        .position(|l| first_word(l).is_some_and(|w| w.eq_ignore_ascii_case(name)))?;
    let text = comment[i..]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let rest = text.get(name.len()..)?.trim();
    (!rest.is_empty()).then(|| rest.to_string())
}

/// A rough image-reference check for InvalidDefaultArgInFrom: non-empty, no whitespace, no
/// dangling `:`/`@`/`/`.
pub fn looks_like_reference(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().any(char::is_whitespace)
        && !s.ends_with([':', '@', '/'])
        && !s.starts_with([':', '@', '/', '.', '-'])
        && !s.contains("//")
        && !s.contains("::")
}

/// A FROM (node index, instruction) and the instructions after it.
type RawStage = (usize, instructions::From, Vec<(usize, Instruction)>);

/// Resolves `ast` into stages (see the module docs).
pub fn resolve(ast: &Ast, opts: &ResolveOptions) -> Result<Build, SourceError> {
    let (global, raw_stages) = resolver::split_stages(ast)?;
    let mut r = Resolver::new(ast, opts);
    let global_args = r.global_args(&global)?;
    let (mut stages, bodies) = r.stages(raw_stages)?;
    resolver::link_stage_refs(ast, &mut stages, &bodies)?;
    let (target, needed) = resolver::target_and_needed(ast, &stages, opts.target.as_deref())?;
    r.global_scope
        .set("TARGETSTAGE", stages[target].name.as_deref().unwrap_or(""));
    r.expand_stages(&mut stages, bodies, &needed)?;
    Ok(Build {
        unused_build_args: r.unused_build_args(),
        stages,
        target,
        needed,
        global_args,
        undefined_in_from: r.undefined_in_from,
        undefined_vars: r.undefined_vars,
        invalid_default_from: r.invalid_default_from,
    })
}

/// The names an instruction takes files from: COPY/ADD `--from`, RUN `--mount from=`.
fn stage_refs(ins: &Instruction) -> Vec<String> {
    match ins {
        Instruction::Copy(c) | Instruction::Add(c) => c.from.iter().cloned().collect(),
        Instruction::Run(r) => r
            .mount_specs
            .iter()
            .flat_map(|spec| instructions::mount::split_csv(spec).unwrap_or_default())
            .filter_map(|field| {
                let (k, v) = field.split_once('=')?;
                k.trim().eq_ignore_ascii_case("from").then(|| v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The stages `target` needs, in order; `Err(stage)` on a dependency cycle.
fn needed_stages(stages: &[Stage], target: usize) -> Result<Vec<usize>, usize> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; stages.len()];
    let mut stack: Vec<(usize, Vec<usize>)> =
        vec![(target, stages[target].deps.iter().copied().collect())];
    state[target] = 1;
    while let Some((node, pending)) = stack.last_mut() {
        match pending.pop() {
            Some(d) => match state.get(d).copied() {
                Some(0) => {
                    state[d] = 1;
                    let next = stages[d].deps.iter().copied().collect();
                    stack.push((d, next));
                }
                Some(1) => return Err(d),
                _ => {}
            },
            None => {
                state[*node] = 2;
                stack.pop();
            }
        }
    }
    Ok((0..stages.len()).filter(|&i| state[i] == 2).collect())
}
