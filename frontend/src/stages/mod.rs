//! Build stages: ARG/ENV scoping, stage references, `--target` and the stages it needs.
//!
//! [`resolve`] turns a parsed [`Ast`] into [`Build`]: every stage with its base, platform and
//! typed instructions, expanded with the ARG/ENV scope BuildKit uses at that point. The lowering
//! (stages → build graph) consumes this; nothing here knows about the graph.

mod budget;
pub mod outline;
pub mod platform;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{ErrorKind, SourceError};
use crate::instructions::{self, Ctx, Instruction};
use crate::parser::{Ast, Span};
use crate::shell::{Lexer, VarLookup};
pub use budget::EXPANSION_BUDGET;
use budget::{env_size, Budget};
use kiln_oci::Platform;
pub use platform::platform_args;

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
    let lexer = Lexer::new(ast.escape);
    let budget = Budget::new();
    let mut used_build_args: BTreeSet<String> = BTreeSet::new();

    // Built-in platform ARGs live in the global scope.
    let mut builtins = Scope::default();
    for (k, v) in platform_args(&opts.target_platform, "TARGET")
        .into_iter()
        .chain(platform_args(&opts.build_platform, "BUILD"))
    {
        builtins.set(&k, &v);
    }

    // Parse every instruction and split them into the global part and the stages.
    let mut global: Vec<(usize, Instruction)> = Vec::new();
    let mut raw_stages: Vec<RawStage> = Vec::new();
    for (i, node) in ast.children.iter().enumerate() {
        let ins = Instruction::parse(ast, node)?;
        match ins {
            Instruction::From(f) => raw_stages.push((i, f, Vec::new())),
            other => match raw_stages.last_mut() {
                Some(st) => st.2.push((i, other)),
                None => {
                    if !matches!(other, Instruction::Arg(_)) {
                        let cx = Ctx { ast, node };
                        return Err(cx.error(
                            ErrorKind::Stage,
                            format!("{} instruction before the first FROM: no build stage in current context", other.name()),
                            Some("only ARG may come before the first FROM".into()),
                        ));
                    }
                    global.push((i, other));
                }
            },
        }
    }
    if raw_stages.is_empty() {
        let msg = "the Dockerfile has no build stage (no FROM instruction)";
        return Err(match ast.children.first() {
            Some(n) => {
                Ctx { ast, node: n }.error(ErrorKind::Stage, msg, Some("add FROM <image>".into()))
            }
            None => SourceError::new(
                ErrorKind::Empty,
                msg,
                crate::error::Location::new(ast.file.clone(), 1, 1, 0),
            )
            .with_hint("add FROM <image>"),
        });
    }

    // Global ARGs.
    let mut global_scope = builtins.clone();
    let mut global_defaults = builtins.clone();
    let mut global_declared: BTreeSet<String> = BTreeSet::new();
    let mut global_args = Vec::new();
    for (node_i, ins) in &global {
        let Instruction::Arg(decls) = ins else {
            continue;
        };
        let node = &ast.children[*node_i];
        for d in decls {
            global_declared.insert(d.name.clone());
            let expand_default = |scope: &Scope| -> Result<Option<String>, SourceError> {
                let cx = Ctx { ast, node };
                match &d.default {
                    Some(raw) => {
                        let v = lexer
                            .process_word(raw, scope)
                            .map_err(|e| cx.expansion_error(e.to_string()))?;
                        budget.grew(raw, &v, &cx)?;
                        Ok(Some(v))
                    }
                    None => Ok(None),
                }
            };
            let default_only = expand_default(&global_defaults)?;
            let value = match opts.build_args.get(&d.name) {
                Some(v) => {
                    used_build_args.insert(d.name.clone());
                    Some(v.clone())
                }
                None => expand_default(&global_scope)?,
            };
            if let Some(v) = &value {
                global_scope.set(&d.name, v);
            }
            if let Some(v) = &default_only {
                global_defaults.set(&d.name, v);
            }
            global_args.push(ResolvedArg {
                name: d.name.clone(),
                default: d.default.clone(),
                value,
                description: description(&node.prev_comment, &d.name),
                node: *node_i,
            });
        }
    }

    // Stages: FROM lines are expanded with the global scope.
    let mut undefined_in_from = Vec::new();
    let mut invalid_default_from = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut bodies = Vec::new();
    for (index, (node_i, from, body)) in raw_stages.into_iter().enumerate() {
        let node = &ast.children[node_i];
        let cx = Ctx { ast, node };
        let mut f = from.clone();
        let mut unmatched = BTreeSet::new();
        let mut matched = BTreeSet::new();
        let mut expand_from = |w: &str, scope: &Scope| -> Result<String, SourceError> {
            let e = lexer
                .expand(w, scope)
                .map_err(|e| cx.expansion_error(e.to_string()))?;
            budget.grew(w, &e.result, &cx)?;
            unmatched.extend(e.unmatched);
            matched.extend(e.matched);
            Ok(e.result)
        };
        f.image = expand_from(&from.image, &global_scope)?;
        if let Some(p) = &from.platform {
            let expanded = expand_from(p, &global_scope)?;
            if let Err(e) = Platform::parse(&expanded) {
                return Err(cx.error_at_text(
                    p,
                    ErrorKind::Flag,
                    format!("failed to parse platform {p}: {e}"),
                    Some(
                        "write --platform=os/arch[/variant], e.g. linux/arm64, or $BUILDPLATFORM"
                            .into(),
                    ),
                ));
            }
            f.platform = Some(expanded);
        }
        let mut undeclared_in_from = false;
        for name in unmatched {
            if !global_declared.contains(&name) && builtins.get(&name).is_none() {
                undeclared_in_from = true;
                let cands: Vec<&str> = global_declared
                    .iter()
                    .map(String::as_str)
                    .chain(builtins.vars.iter().map(|(k, _)| k.as_str()))
                    .collect();
                undefined_in_from.push(VarUse {
                    suggestion: crate::suggest::closest(&name, cands, true).map(str::to_string),
                    name,
                    node: node_i,
                });
            }
        }
        if from.image.contains('$') && !undeclared_in_from {
            let with_defaults = lexer
                .process_word(&from.image, &global_defaults)
                .unwrap_or_default();
            if !looks_like_reference(&with_defaults) {
                invalid_default_from.push((node_i, from.image.clone()));
            }
        }
        // Checks report this as InvalidDefaultArgInFrom instead of failing.
        if f.image.is_empty() && !opts.all_stages {
            return Err(cx.error(
                ErrorKind::Stage,
                format!("base name ({}) should not be blank", from.image),
                Some("give the ARG used in FROM a default or pass it with --build-arg".into()),
            ));
        }
        let base = if f.image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            // FROM refers to earlier stages by name only (`FROM 0` is an image called "0").
            let by_name = stages.iter().rev().find(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&f.image))
            });
            match by_name {
                Some(s) => Base::Stage(s.index),
                None => Base::Image(f.image.clone()),
            }
        };
        let mut deps = BTreeSet::new();
        if let Base::Stage(i) = base {
            deps.insert(i);
        }
        stages.push(Stage {
            index,
            name: f.name.clone(),
            platform: f.platform.clone(),
            base,
            from: f,
            span: node.span,
            node: node_i,
            description: from
                .name
                .as_deref()
                .and_then(|n| description(&node.prev_comment, n)),
            deps,
            instructions: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            expanded: false,
            from_vars: matched,
        });
        bodies.push(body);
    }

    // Stage references from COPY --from and RUN --mount from=, also those of
    // the base stage's ONBUILD triggers, which run in this stage.
    for si in 0..bodies.len() {
        let mut refs: Vec<(usize, String)> = Vec::new();
        for (node_i, ins) in &bodies[si] {
            refs.extend(stage_refs(ins).into_iter().map(|r| (*node_i, r)));
        }
        if let Base::Stage(b) = stages[si].base {
            for (_, ins) in bodies.get(b).into_iter().flatten() {
                if let Instruction::Onbuild(o) = ins {
                    let from = stages[si].node;
                    refs.extend(stage_refs(&o.inner).into_iter().map(|r| (from, r)));
                }
            }
        }
        for (node_i, r) in refs {
            if r.contains('$') {
                continue; // reported when the instruction is expanded
            }
            if let Some(dep) = find_stage(&stages, &r, stages.len()) {
                if dep == si {
                    let node = &ast.children[node_i];
                    return Err(Ctx { ast, node }.error(
                        ErrorKind::Stage,
                        format!(
                            "circular dependency detected on stage: {}",
                            stages[si].display_name()
                        ),
                        Some("a stage cannot copy or mount from itself".into()),
                    ));
                }
                stages[si].deps.insert(dep);
            }
        }
    }

    // The target and what it needs.
    let target = match &opts.target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .rev()
            .find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .map(|s| s.index)
            .ok_or_else(|| {
                let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
                let mut e = SourceError::new(
                    ErrorKind::Stage,
                    format!(
                        "target stage {t:?} could not be found{}",
                        crate::suggest::did_you_mean(t, names.iter().copied())
                    ),
                    crate::error::Location::new(ast.file.clone(), 1, 1, 0),
                );
                e = e.with_hint(if names.is_empty() {
                    "the Dockerfile has no named stages; name one with FROM <image> AS <name>"
                        .to_string()
                } else {
                    format!("stages: {}", names.join(", "))
                });
                e
            })?,
    };
    let needed = needed_stages(&stages, target).map_err(|cycle| {
        let s = &stages[cycle];
        let node = &ast.children[s.node];
        Ctx { ast, node }.error(
            ErrorKind::Stage,
            format!(
                "circular dependency detected on stage: {}",
                s.display_name()
            ),
            Some("stages must not depend on each other in a loop".into()),
        )
    })?;
    global_scope.set("TARGETSTAGE", stages[target].name.as_deref().unwrap_or(""));

    // Expand the stages' instructions in order.
    let mut undefined_vars = Vec::new();
    // Each expanded stage's ARGs at its end: a stage built on it inherits them
    // (values and declarations), as BuildKit's child stage does.
    let mut final_args: Vec<Option<(Scope, BTreeSet<String>)>> = Vec::new();
    for (si, body) in bodies.into_iter().enumerate() {
        if !opts.all_stages && !needed.contains(&si) {
            stages[si].instructions = body
                .into_iter()
                .map(|(node_i, instruction)| ResolvedInstruction {
                    instruction,
                    span: ast.children[node_i].span,
                    node: node_i,
                    env: RunEnv::default(),
                    proxy_env: Vec::new(),
                })
                .collect();
            continue;
        }
        let mut env = Scope::default();
        let mut image_env_known = false;
        match stages[si].base {
            Base::Stage(b) => {
                let cx = Ctx {
                    ast,
                    node: &ast.children[stages[si].node],
                };
                budget.spend(env_size(&stages[b].env), &cx)?;
                env.vars = stages[b].env.clone();
                image_env_known = true;
            }
            Base::Scratch => image_env_known = true,
            Base::Image(ref image) => {
                if let Some(vars) = opts.base_env.get(image) {
                    env.vars = vars.clone();
                    image_env_known = true;
                }
            }
        }
        // Walk the base chain: a stage on scratch knows its whole env.
        if let Base::Stage(mut b) = stages[si].base {
            loop {
                match stages[b].base {
                    Base::Stage(n) => b = n,
                    Base::Scratch => break,
                    Base::Image(ref image) => {
                        image_env_known = opts.base_env.contains_key(image);
                        break;
                    }
                }
            }
        }
        let (mut args, mut declared) = match stages[si].base {
            Base::Stage(b) => final_args.get(b).cloned().flatten().unwrap_or_default(),
            _ => Default::default(),
        };
        if !args.vars.is_empty() {
            let cx = Ctx {
                ast,
                node: &ast.children[stages[si].node],
            };
            budget.spend(env_size(&args.vars), &cx)?;
        }
        let mut out = Vec::new();
        let mut stage_args = Vec::new();
        // The RUN environment, rebuilt only after an ARG or ENV.
        let mut snapshot: Option<RunEnv> = None;
        for (node_i, mut ins) in body {
            let node = &ast.children[node_i];
            let cx = Ctx { ast, node };
            let mut unmatched: BTreeSet<String> = BTreeSet::new();
            match &mut ins {
                Instruction::Arg(decls) => {
                    for d in decls.iter() {
                        declared.insert(d.name.clone());
                        let value = if let Some(v) = opts.build_args.get(&d.name) {
                            used_build_args.insert(d.name.clone());
                            Some(v.clone())
                        } else if let Some(raw) = &d.default {
                            let e = lexer
                                .expand(
                                    raw,
                                    &StageLookup {
                                        env: &env,
                                        args: &args,
                                    },
                                )
                                .map_err(|e| cx.expansion_error(e.to_string()))?;
                            budget.grew(raw, &e.result, &cx)?;
                            unmatched.extend(e.unmatched);
                            Some(e.result)
                        } else {
                            global_scope.get(&d.name).map(str::to_string)
                        };
                        if let Some(v) = &value {
                            args.set(&d.name, v);
                        }
                        stage_args.push(ResolvedArg {
                            name: d.name.clone(),
                            default: d.default.clone(),
                            value,
                            description: description(&node.prev_comment, &d.name),
                            node: node_i,
                        });
                    }
                }
                Instruction::Env(kv) => {
                    // Every value in one ENV sees the variables from before it: expand all
                    // pairs first, then apply them.
                    {
                        let lookup = StageLookup {
                            env: &env,
                            args: &args,
                        };
                        for p in kv.pairs.iter_mut() {
                            for w in [&mut p.key, &mut p.value] {
                                let e = lexer
                                    .expand(w, &lookup)
                                    .map_err(|e| cx.expansion_error(e.to_string()))?;
                                budget.grew(w, &e.result, &cx)?;
                                unmatched.extend(e.unmatched);
                                *w = e.result;
                            }
                        }
                    }
                    for p in &kv.pairs {
                        env.set(&p.key, &p.value);
                    }
                }
                other => {
                    let lookup = StageLookup {
                        env: &env,
                        args: &args,
                    };
                    let mut ex_with = |lex: Lexer, w: &str| -> Result<String, String> {
                        let e = lex.expand(w, &lookup).map_err(|e| e.to_string())?;
                        budget
                            .grew(w, &e.result, &cx)
                            .map_err(|e| e.message.clone())?;
                        unmatched.extend(e.unmatched);
                        Ok(e.result)
                    };
                    other.expand(&cx, &mut |w: &str| ex_with(lexer, w))?;
                    other.expand_heredocs(&cx, &mut |w: &str| ex_with(Lexer::heredoc_body(), w))?;
                }
            }
            for name in unmatched {
                let known = declared.contains(&name)
                    || env.get(&name).is_some()
                    || (!image_env_known && COMMON_IMAGE_ENV.contains(&name.as_str()));
                if !known {
                    let cands: Vec<&str> = env
                        .vars
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .chain(declared.iter().map(String::as_str))
                        .collect();
                    undefined_vars.push(VarUse {
                        suggestion: crate::suggest::closest(&name, cands, true).map(str::to_string),
                        name,
                        node: node_i,
                    });
                }
            }
            if matches!(ins, Instruction::Arg(_) | Instruction::Env(_)) {
                snapshot = None;
            }
            let (run_env, proxy_env) = if matches!(ins, Instruction::Run(_)) {
                let env_now = snapshot
                    .get_or_insert_with(|| {
                        let mut vars = args.vars.clone();
                        for (k, v) in &env.vars {
                            match vars.iter_mut().find(|(n, _)| n == k) {
                                Some(e) => e.1 = v.clone(),
                                None => vars.push((k.clone(), v.clone())),
                            }
                        }
                        RunEnv(std::sync::Arc::new(vars))
                    })
                    .clone();
                // Lowering copies the environment into every RUN.
                budget.spend(env_size(&env_now), &cx)?;
                let proxy: Vec<(String, String)> = PROXY_ARGS
                    .iter()
                    .filter(|p| !declared.contains(**p))
                    .filter_map(|p| opts.build_args.get(*p).map(|v| (p.to_string(), v.clone())))
                    .collect();
                (env_now, proxy)
            } else {
                (RunEnv::default(), Vec::new())
            };
            out.push(ResolvedInstruction {
                instruction: ins,
                span: node.span,
                node: node_i,
                env: run_env,
                proxy_env,
            });
        }
        let st = &mut stages[si];
        st.instructions = out;
        st.args = stage_args;
        st.env = env.vars;
        st.expanded = true;
        final_args.resize(si, None);
        final_args.push(Some((args, declared)));
    }

    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !used_build_args.contains(*k))
        .filter(|k| {
            !PROXY_ARGS.contains(&k.as_str())
                && !k.starts_with("BUILDKIT_")
                && *k != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect();

    Ok(Build {
        stages,
        target,
        needed,
        global_args,
        unused_build_args,
        undefined_in_from,
        undefined_vars,
        invalid_default_from,
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
