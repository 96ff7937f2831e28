//! Lowering: resolved stages become the build graph (`solver::llb`) plus the
//! image config of the target stage. Metadata instructions (ENV, CMD, LABEL,
//! ...) change the config, not the graph; RUN, COPY, ADD and WORKDIR add
//! vertices. Only the stages the target needs are lowered.

mod config;
mod copy;
mod history;
mod run;
mod steps;
mod time;

use crate::error::{ErrorKind, SourceError};
use crate::instructions::Instruction;
use crate::parser::{Ast, Node};
use crate::stages::{Base, Build, ResolvedInstruction, RunEnv, Stage};
use kiln_oci::config::ImageConfig;
use kiln_oci::Platform;
use kiln_solver::llb::{
    ChownOpt, Definition, FileAction, FileOp, MkdirAction, Op, SourceLocation, SourceOp, UserSpec,
    VertexMetadata, VertexRef,
};
use std::collections::{BTreeMap, BTreeSet};
use steps::Steps;

pub use time::rfc3339;

/// An image a FROM or `--from` names, resolved for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference pinned to its manifest (`docker.io/library/busybox:latest@sha256:…`).
    pub reference: String,
    /// The image's config.
    pub config: ImageConfig,
}

/// Resolves image references (the builder asks the local store or a registry).
pub trait ImageResolver {
    /// Resolves `reference` (as written, expanded) for `platform`; the error is shown to the user.
    /// The error keeps its cause (a registry's, say) so the caller can pick a hint by it.
    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>>;
}

/// Which stages ignore the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NoCache {
    /// Use the cache everywhere.
    #[default]
    None,
    /// `--no-cache`.
    All,
    /// `--no-cache-filter` stage names (lower-case).
    Stages(BTreeSet<String>),
}

/// What lowering needs besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// The platform being built for (stages without `--platform`).
    pub platform: Platform,
    /// The local source name of the build context.
    pub context: String,
    /// Cache policy.
    pub no_cache: NoCache,
    /// SOURCE_DATE_EPOCH: history timestamps (and file times where BuildKit clamps them).
    pub source_date_epoch: Option<i64>,
    /// Named contexts (`--build-context name=...`), by lower-case name. They
    /// take the place of a stage or image of that name in FROM, COPY --from
    /// and RUN --mount from=.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Prefix step descriptions with the stage's platform (`[linux/arm64 stage-1 2/3]`),
    /// as BuildKit does when several platforms are built at once.
    pub platform_in_descriptions: bool,
    /// The `BUILDKIT_SANDBOX_HOSTNAME` build arg: the hostname RUN steps see
    /// (the executor's default when unset).
    pub sandbox_hostname: Option<String>,
    /// The `BUILDKIT_CACHE_MOUNT_NS` build arg: a namespace prefixed to cache mount ids.
    pub cache_mount_ns: Option<String>,
    /// `--network`: the network of RUN steps without `--network` (and with
    /// `--network=default`), as BuildKit's `force-network-mode`.
    pub default_network: kiln_solver::llb::NetworkMode,
}

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, by the session's local source name.
    Local(String),
    /// An image reference (`docker-image://REF`), or a local OCI layout's image as
    /// `oci-layout://PATH[:TAG|@DIGEST]` (the resolver pins it to `oci-layout://PATH@DIGEST`).
    Image(String),
    /// Another build's result in the same graph (bake's `target:NAME`): its root vertex
    /// (none: an empty filesystem) and its image config.
    Target {
        /// The root vertex.
        vertex: Option<VertexRef>,
        /// The image config its FROM starts from.
        config: Box<ImageConfig>,
    },
}

/// The result of lowering.
#[derive(Debug)]
pub struct Lowered {
    /// The graph.
    pub definition: Definition,
    /// The target's final vertex; `None` for an empty `FROM scratch` result.
    pub target: Option<VertexRef>,
    /// The target's image config (history included, rootfs left to the exporter).
    pub config: ImageConfig,
    /// Each lowered stage's final vertex, by stage index (for `--print=graph` and tests).
    pub stage_vertices: BTreeMap<usize, Option<VertexRef>>,
    /// For each history entry the build added (by index in `config.history`),
    /// the vertex whose result it describes, so the builder can date it by
    /// when that result was made (a cached rebuild keeps its timestamps).
    pub history_vertices: Vec<(usize, Option<VertexRef>)>,
}

/// One stage while it is being lowered.
#[derive(Debug, Clone)]
struct StageState {
    vertex: Option<VertexRef>,
    config: ImageConfig,
    platform: Platform,
    /// History entries added by this build and the vertex each describes.
    stamps: Vec<(usize, Option<VertexRef>)>,
    /// Whether this stage set CMD itself (then ENTRYPOINT keeps it).
    cmd_set: bool,
}

/// Where an ONBUILD trigger comes from.
#[derive(Debug, Clone, Copy)]
enum TriggerOrigin<'a> {
    /// A base image's config, by reference.
    Image(&'a str),
    /// A parent stage's ONBUILD instructions, with the ARG values in effect at its end.
    Stage {
        name: &'a str,
        args: &'a [(String, String)],
    },
}

impl StageState {
    /// A stage whose config is scratch's (no base image): `FROM scratch`, or
    /// a directory as the base (`vertex` holds its files).
    fn empty(vertex: Option<VertexRef>, platform: &Platform) -> StageState {
        StageState {
            vertex,
            config: ImageConfig::scratch(
                &platform.os,
                &platform.architecture,
                platform.variant.as_deref(),
            ),
            platform: platform.clone(),
            stamps: Vec::new(),
            cmd_set: false,
        }
    }
}

struct Lowerer<'a> {
    ast: &'a Ast,
    build: &'a Build,
    images: &'a mut dyn ImageResolver,
    opts: &'a LowerOptions,
    def: Definition,
    stages: BTreeMap<usize, StageState>,
    /// Image sources already added, by (reference as written, platform).
    image_sources: BTreeMap<(String, String), (VertexRef, ImageConfig)>,
    created: String,
}

/// Lowers the stages `build` needs into a graph.
pub fn lower(
    ast: &Ast,
    build: &Build,
    images: &mut dyn ImageResolver,
    opts: &LowerOptions,
) -> Result<Lowered, SourceError> {
    lower_into(Definition::new(), ast, build, images, opts)
}

/// Lowers the stages `build` needs into `def`, a graph that may already hold
/// other platforms' vertices: equal work (a `--platform=$BUILDPLATFORM`
/// stage) stays one vertex. The grown graph is `Lowered::definition`.
pub fn lower_into(
    def: Definition,
    ast: &Ast,
    build: &Build,
    images: &mut dyn ImageResolver,
    opts: &LowerOptions,
) -> Result<Lowered, SourceError> {
    let created = rfc3339(opts.source_date_epoch.unwrap_or_else(time::now));
    let mut l = Lowerer {
        ast,
        build,
        images,
        opts,
        def,
        stages: BTreeMap::new(),
        image_sources: BTreeMap::new(),
        created,
    };
    for &si in &build.needed {
        let stage = build
            .stages
            .get(si)
            .ok_or_else(|| internal(ast, "a needed stage is missing"))?;
        tracing::debug!(stage = stage.index, name = ?stage.name, base = ?stage.base, platform = %opts.platform, "lowering stage");
        let state = l.lower_stage(stage)?;
        l.stages.insert(si, state);
    }
    let target = l
        .stages
        .get(&build.target)
        .cloned()
        .ok_or_else(|| internal(ast, "the target stage was not lowered"))?;
    let stage_vertices = l.stages.iter().map(|(i, s)| (*i, s.vertex)).collect();
    tracing::debug!(vertices = l.def.len(), platform = %opts.platform, "lowered");
    Ok(Lowered {
        definition: l.def,
        target: target.vertex,
        config: target.config,
        stage_vertices,
        history_vertices: target.stamps,
    })
}

fn internal(ast: &Ast, msg: &str) -> SourceError {
    SourceError::new(
        ErrorKind::Stage,
        format!("internal error while lowering: {msg}"),
        crate::error::Location::new(ast.file.clone(), 1, 1, 0),
    )
}

impl Lowerer<'_> {
    fn node(&self, i: usize) -> &Node {
        &self.ast.children[i]
    }

    fn err(
        &self,
        node: usize,
        kind: ErrorKind,
        msg: impl Into<String>,
        hint: Option<&str>,
    ) -> SourceError {
        let e = self.ast.error_at(self.node(node), kind, msg);
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }

    fn metadata(&self, description: String, node: usize, stage: &Stage) -> VertexMetadata {
        let n = self.node(node);
        let ignore_cache = match &self.opts.no_cache {
            NoCache::None => false,
            NoCache::All => true,
            NoCache::Stages(names) => stage
                .name
                .as_deref()
                .is_some_and(|s| names.contains(&s.to_ascii_lowercase())),
        };
        VertexMetadata {
            description,
            locations: vec![SourceLocation {
                file: self.ast.file.clone(),
                start_line: n.span.start_line as u32,
                end_line: n.span.end_line as u32,
            }],
            ignore_cache,
            progress_group: None,
        }
    }

    fn add(
        &mut self,
        op: Op,
        platform: &Platform,
        inputs: &[VertexRef],
        meta: VertexMetadata,
        node: usize,
    ) -> Result<VertexRef, SourceError> {
        self.def
            .add(op, Some(platform.clone()), inputs, meta)
            .map_err(|e| {
                self.err(
                    node,
                    ErrorKind::Stage,
                    format!("internal error while building the graph: {e}"),
                    None,
                )
            })
    }

    /// The source vertex and config of an image, resolved once per platform;
    /// `description` labels the vertex when it is first added.
    fn image(
        &mut self,
        reference: &str,
        platform: &Platform,
        node: usize,
        meta: VertexMetadata,
    ) -> Result<(VertexRef, ImageConfig), SourceError> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(found) = self.image_sources.get(&key) {
            return Ok(found.clone());
        }
        let resolved = self.images.resolve(reference, platform).map_err(|e| {
            self.err(
                node,
                ErrorKind::Stage,
                format!("{reference}: {e}"),
                Some(if reference.starts_with("oci-layout://") {
                    "check the layout's path and tags (skopeo inspect oci:PATH:TAG lists what it holds)"
                } else {
                    "check the image name and tag, and that the registry is reachable (kiln pull shows the details)"
                }),
            )
        })?;
        // An image of a local OCI layout (a named context) keeps its own scheme.
        let source = match resolved.reference.strip_prefix("oci-layout://") {
            Some(location) => SourceOp::oci_layout(location),
            None => SourceOp::image(&resolved.reference),
        };
        let v = self.add(Op::Source(source), platform, &[], meta, node)?;
        self.image_sources.insert(key, (v, resolved.config.clone()));
        Ok((v, resolved.config))
    }

    /// The local source of the build context (or a named context).
    fn local(
        &mut self,
        name: &str,
        platform: &Platform,
        node: usize,
    ) -> Result<VertexRef, SourceError> {
        let meta = VertexMetadata::described(if name == self.opts.context {
            "[internal] load build context".to_string()
        } else {
            format!("[internal] load build context {name}")
        });
        self.add(Op::Source(SourceOp::local(name)), platform, &[], meta, node)
    }

    /// What `--from=<name>` or `from=<name>` points at: a lowered stage, a named
    /// context, or an image.
    fn source_named(
        &mut self,
        name: &str,
        platform: &Platform,
        node: usize,
    ) -> Result<Option<VertexRef>, SourceError> {
        match self
            .opts
            .named_contexts
            .get(&name.to_ascii_lowercase())
            .cloned()
        {
            Some(NamedContext::Local(local)) => {
                return self.local(&local, platform, node).map(Some)
            }
            Some(NamedContext::Image(reference)) => {
                let meta =
                    VertexMetadata::described(format!("[context {name}] load image {reference}"));
                return self
                    .image(&reference, platform, node, meta)
                    .map(|(v, _)| Some(v));
            }
            Some(NamedContext::Target { vertex, .. }) => return Ok(vertex),
            None => {}
        }
        if let Some(si) = self.build.find_stage(name) {
            return match self.stages.get(&si) {
                Some(s) => Ok(s.vertex),
                None => Err(self.err(
                    node,
                    ErrorKind::Stage,
                    format!("stage {name:?} is used before it is built"),
                    Some("a stage can only use stages defined above it"),
                )),
            };
        }
        let meta = VertexMetadata::described(format!("[internal] load image {name}"));
        self.image(name, platform, node, meta).map(|(v, _)| Some(v))
    }

    /// Lowers one stage: its platform and step names, its base, then its instructions.
    fn lower_stage(&mut self, stage: &Stage) -> Result<StageState, SourceError> {
        let platform = match &stage.platform {
            Some(p) => Platform::parse(p).map_err(|e| {
                self.err(
                    stage.node,
                    ErrorKind::Flag,
                    format!("invalid --platform {p:?}: {e}"),
                    None,
                )
            })?,
            None => self.opts.platform.clone(),
        };
        let mut steps = self.stage_steps(stage, &platform);
        let mut state = match &stage.base {
            Base::Scratch => StageState::empty(None, &platform),
            Base::Stage(b) => self.base_stage(stage, *b, &platform, &mut steps)?,
            Base::Image(written) => self.base_image(stage, written, &platform, &mut steps)?,
        };
        for ri in &stage.instructions {
            let description = if makes_vertex(&ri.instruction) {
                steps.next(&self.display(ri))
            } else {
                String::new()
            };
            self.lower_instruction(stage, &mut state, ri, description)?;
        }
        state.config.created = Some(self.created.clone());
        Ok(state)
    }

    /// The step names of a stage (`[label n/total]`): FROM an image and every instruction
    /// that makes a vertex count.
    fn stage_steps(&self, stage: &Stage, platform: &Platform) -> Steps {
        // BuildKit leaves the stage name out when the Dockerfile has one stage.
        let mut label = if self.build.stages.len() == 1 {
            String::new()
        } else {
            stage
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", stage.index))
        };
        if self.opts.platform_in_descriptions {
            label = format!("{platform} {label}").trim_end().to_string();
        }
        let from_step = usize::from(matches!(stage.base, Base::Image(_)));
        Steps::new(
            label,
            from_step
                + stage
                    .instructions
                    .iter()
                    .filter(|i| makes_vertex(&i.instruction))
                    .count(),
        )
    }

    /// A stage built on stage `b`: its state, after the parent's own ONBUILD triggers.
    fn base_stage(
        &mut self,
        stage: &Stage,
        b: usize,
        platform: &Platform,
        steps: &mut Steps,
    ) -> Result<StageState, SourceError> {
        let parent = self.stages.get(&b).cloned().ok_or_else(|| {
            self.err(
                stage.node,
                ErrorKind::Stage,
                "the base stage was not built",
                None,
            )
        })?;
        let mut state = StageState {
            platform: platform.clone(),
            cmd_set: false,
            ..parent
        };
        // As BuildKit: the parent stage's own ONBUILD instructions run
        // here, once; the child's config does not carry them on.
        let triggers = std::mem::take(&mut state.config.config.on_build);
        let parent_name = self.build.stages.get(b).map(Stage::display_name);
        let parent_name = parent_name.unwrap_or_default();
        let args = self.args_at_end(b);
        let origin = TriggerOrigin::Stage {
            name: &parent_name,
            args: &args,
        };
        steps.add(triggers.len());
        for trigger in &triggers {
            self.run_trigger(stage, &mut state, origin, trigger, steps)?;
        }
        Ok(state)
    }

    /// A stage on an image (or a named context in its place): the FROM step, then the
    /// image's ONBUILD triggers.
    fn base_image(
        &mut self,
        stage: &Stage,
        written: &str,
        platform: &Platform,
        steps: &mut Steps,
    ) -> Result<StageState, SourceError> {
        let named = self
            .opts
            .named_contexts
            .get(&written.to_ascii_lowercase())
            .cloned();
        let reference = match &named {
            Some(NamedContext::Image(r)) => r.clone(),
            _ => written.to_string(),
        };
        let meta = self.metadata(steps.next(&format!("FROM {reference}")), stage.node, stage);
        if let Some(NamedContext::Local(local)) = named {
            // A directory as the base: its files become the first layer.
            let src = self.local(&local, platform, stage.node)?;
            let copy = FileAction::Copy(kiln_solver::llb::CopyAction::whole_tree(0));
            let op = Op::File(FileOp {
                base: None,
                users: None,
                actions: vec![copy],
            });
            let v = self.add(op, platform, &[src], meta, stage.node)?;
            return Ok(StageState::empty(Some(v), platform));
        }
        let (v, mut config) = match named {
            Some(NamedContext::Target { vertex, config }) => (vertex, *config),
            _ => {
                let (v, config) = self.image(&reference, platform, stage.node, meta)?;
                (Some(v), config)
            }
        };
        config.created = None;
        let triggers = std::mem::take(&mut config.config.on_build);
        let mut state = StageState {
            vertex: v,
            config,
            platform: platform.clone(),
            stamps: Vec::new(),
            cmd_set: false,
        };
        // The base's ONBUILD triggers run once, here, before the
        // stage's own instructions; the result does not carry them.
        steps.add(triggers.len());
        for trigger in &triggers {
            let origin = TriggerOrigin::Image(&reference);
            self.run_trigger(stage, &mut state, origin, trigger, steps)?;
        }
        Ok(state)
    }

    /// Lowers one ONBUILD trigger of the base: parsed as a one-line
    /// Dockerfile, expanded with the base's environment, attributed to the
    /// FROM line.
    fn run_trigger(
        &mut self,
        stage: &Stage,
        state: &mut StageState,
        origin: TriggerOrigin<'_>,
        trigger: &str,
        steps: &mut Steps,
    ) -> Result<(), SourceError> {
        let bad = |l: &Self, e: String| {
            let (of, hint) = match origin {
                TriggerOrigin::Image(reference) => (
                    reference.to_string(),
                    "the base image's ONBUILD instruction is invalid; use another base or fix its Dockerfile",
                ),
                TriggerOrigin::Stage { name, .. } => (
                    format!("stage {name}"),
                    "fix the ONBUILD instruction of the base stage",
                ),
            };
            l.err(
                stage.node,
                ErrorKind::Instruction,
                format!("ONBUILD trigger {trigger:?} of {of}: {e}"),
                Some(hint),
            )
        };
        let trigger_ast = crate::parse_named("ONBUILD", trigger.as_bytes())
            .map_err(|e| bad(self, e.message.clone()))?;
        let Some(node) = trigger_ast.children.first() else {
            return Ok(());
        };
        let mut instruction =
            Instruction::parse(&trigger_ast, node).map_err(|e| bad(self, e.message.clone()))?;
        if matches!(
            instruction,
            Instruction::From(_) | Instruction::Onbuild(_) | Instruction::Maintainer(_)
        ) {
            return Err(bad(
                self,
                "FROM, ONBUILD and MAINTAINER are not allowed as triggers".to_string(),
            ));
        }
        // A parent stage's ARGs are in scope (BuildKit's child inherits its
        // base stage's build args); ENV wins over them.
        let stage_args = match origin {
            TriggerOrigin::Stage { args, .. } => args,
            TriggerOrigin::Image(_) => &[][..],
        };
        let mut vars: Vec<(String, String)> = stage_args.to_vec();
        for (k, v) in state.config.config.env_pairs() {
            match vars.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1 = v,
                None => vars.push((k, v)),
            }
        }
        let env: BTreeMap<String, String> = vars.iter().cloned().collect();
        let lexer = crate::shell::Lexer::new(trigger_ast.escape);
        let cx = crate::instructions::Ctx {
            ast: &trigger_ast,
            node,
        };
        let mut expand = |w: &str| lexer.process_word(w, &env).map_err(|e| e.to_string());
        instruction
            .expand(&cx, &mut expand)
            .map_err(|e| bad(self, e.message.clone()))?;
        let body = crate::shell::Lexer::heredoc_body();
        let mut expand_body = |w: &str| body.process_word(w, &env).map_err(|e| e.to_string());
        instruction
            .expand_heredocs(&cx, &mut expand_body)
            .map_err(|e| bad(self, e.message.clone()))?;
        // Every trigger counts in the total; only those that make a vertex take a number.
        let description = if makes_vertex(&instruction) {
            steps.next(&format!("ONBUILD {trigger}"))
        } else {
            String::new()
        };
        let ri = ResolvedInstruction {
            instruction,
            span: stage.span,
            node: stage.node,
            env: RunEnv(std::sync::Arc::new(vars)),
            proxy_env: Vec::new(),
        };
        self.lower_instruction(stage, state, &ri, description)
    }

    /// The ARG values in effect at the end of stage `index`: those it
    /// inherited from its base stages, then its own (later ones win).
    fn args_at_end(&self, index: usize) -> Vec<(String, String)> {
        let mut chain = Vec::new();
        let mut cur = self.build.stages.get(index);
        while let Some(st) = cur {
            if chain.len() > self.build.stages.len() {
                break;
            }
            chain.push(st);
            cur = match st.base {
                Base::Stage(b) => self.build.stages.get(b),
                _ => None,
            };
        }
        let mut vars: Vec<(String, String)> = Vec::new();
        for st in chain.iter().rev() {
            for a in &st.args {
                let Some(v) = &a.value else { continue };
                match vars.iter_mut().find(|(k, _)| *k == a.name) {
                    Some(e) => e.1 = v.clone(),
                    None => vars.push((a.name.clone(), v.clone())),
                }
            }
        }
        vars
    }

    /// The instruction as progress shows it: the original line, heredoc bodies left out.
    fn display(&self, ri: &ResolvedInstruction) -> String {
        first_line(&self.node(ri.node).original)
    }

    fn history(&self, state: &mut StageState, created_by: String, empty_layer: bool) {
        state
            .stamps
            .push((state.config.history.len(), state.vertex));
        state.config.history.push(kiln_oci::config::History {
            created: Some(self.created.clone()),
            created_by,
            comment: "buildkit.dockerfile.v0".to_string(),
            empty_layer,
            extra: BTreeMap::new(),
        });
    }

    fn lower_instruction(
        &mut self,
        stage: &Stage,
        state: &mut StageState,
        ri: &ResolvedInstruction,
        description: String,
    ) -> Result<(), SourceError> {
        match &ri.instruction {
            Instruction::Run(run) => {
                let created_by = self.lower_run(stage, state, ri, run, description)?;
                self.history(state, created_by, false);
            }
            Instruction::Copy(c) | Instruction::Add(c) => {
                let is_add = matches!(ri.instruction, Instruction::Add(_));
                self.lower_copy(stage, state, ri, c, is_add, description)?;
                self.history(state, history::copy(c, is_add), false);
            }
            Instruction::Workdir(dir) => {
                let path = config::normalize_workdir(&state.config.config.working_dir, dir);
                state.config.config.working_dir = path.clone();
                // As BuildKit, history shows the resulting directory.
                let created_by = format!("WORKDIR {path}");
                // As BuildKit: the root needs no directory, so no layer.
                if path == "/" {
                    self.history(state, created_by, true);
                    return Ok(());
                }
                let owner = chown_of(&state.config.config.user);
                let action = FileAction::Mkdir(MkdirAction {
                    path,
                    mode: 0o755,
                    make_parents: true,
                    owner,
                    timestamp: self.opts.source_date_epoch,
                });
                let meta = self.metadata(description, ri.node, stage);
                let (base, inputs) = match state.vertex {
                    Some(v) => (Some(0), vec![v]),
                    None => (None, vec![]),
                };
                let op = Op::File(FileOp {
                    base,
                    users: None,
                    actions: vec![action],
                });
                state.vertex =
                    Some(self.add(op, &state.platform.clone(), &inputs, meta, ri.node)?);
                self.history(state, created_by, false);
            }
            other => {
                config::apply(&mut state.config, other, state.cmd_set);
                if matches!(other, Instruction::Cmd(_)) {
                    state.cmd_set = true;
                }
                let args: Vec<_> = stage.args.iter().filter(|a| a.node == ri.node).collect();
                if let Some(created_by) = history::metadata(other, &state.config, &args) {
                    self.history(state, created_by, true);
                }
            }
        }
        Ok(())
    }
}

/// Whether the instruction adds a vertex (and takes a step number).
fn makes_vertex(instruction: &Instruction) -> bool {
    matches!(
        instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    )
}

/// The first line of an instruction as written (heredoc bodies left out).
fn first_line(written: &str) -> String {
    written
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `user[:group]` as a chown owner; empty means root (no chown).
fn chown_of(user: &str) -> Option<ChownOpt> {
    if user.is_empty() {
        return None;
    }
    let spec = |s: &str| match s.parse::<u32>() {
        Ok(n) => UserSpec::Id(n),
        Err(_) => UserSpec::Name(s.to_string()),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    Some(ChownOpt {
        user: spec(u),
        group: g.filter(|g| !g.is_empty()).map(spec),
    })
}

#[cfg(test)]
mod tests;
