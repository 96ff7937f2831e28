//! The phases of [`super::resolve`]: split the Dockerfile into global part and stages, resolve
//! the global ARGs, the FROM lines, the stage references and the target, then expand the
//! instructions of the stages the target needs.

use std::collections::BTreeSet;

use super::budget::{env_size, Budget};
use super::{
    description, find_stage, looks_like_reference, needed_stages, platform_args, stage_refs, Base,
    Platform, RawStage, ResolveOptions, ResolvedArg, ResolvedInstruction, RunEnv, Scope, Stage,
    StageLookup, VarUse, COMMON_IMAGE_ENV, PROXY_ARGS,
};
use crate::error::{ErrorKind, SourceError};
use crate::instructions::{self, ArgDecl, Ctx, Instruction, KeyValues};
use crate::parser::{Ast, Node};
use crate::shell::Lexer;

/// The instructions after a FROM: (node index, instruction).
pub(super) type Body = Vec<(usize, Instruction)>;

/// Phase 1: parses every instruction and splits them into the global part (ARGs before the
/// first FROM) and the stages.
pub(super) fn split_stages(ast: &Ast) -> Result<(Body, Vec<RawStage>), SourceError> {
    let mut global: Body = Vec::new();
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
    Ok((global, raw_stages))
}

/// Phase 4: adds the stages named by COPY --from and RUN --mount from= to each stage's deps,
/// also those of the base stage's ONBUILD triggers, which run in this stage.
pub(super) fn link_stage_refs(
    ast: &Ast,
    stages: &mut [Stage],
    bodies: &[Body],
) -> Result<(), SourceError> {
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
            if let Some(dep) = find_stage(stages, &r, stages.len()) {
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
    Ok(())
}

/// Phase 5: the target stage (`--target`, by name; default: the last stage) and the stages it
/// needs, in Dockerfile order.
pub(super) fn target_and_needed(
    ast: &Ast,
    stages: &[Stage],
    target: Option<&str>,
) -> Result<(usize, Vec<usize>), SourceError> {
    let target = match target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .rev()
            .find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .map(|s| s.index)
            .ok_or_else(|| target_not_found(ast, stages, t))?,
    };
    let needed = needed_stages(stages, target).map_err(|cycle| {
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
    Ok((target, needed))
}

/// The error for a `--target` no stage is named.
fn target_not_found(ast: &Ast, stages: &[Stage], t: &str) -> SourceError {
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
        "the Dockerfile has no named stages; name one with FROM <image> AS <name>".to_string()
    } else {
        format!("stages: {}", names.join(", "))
    });
    e
}

/// What a stage whose FROM names `image` starts from. FROM refers to earlier stages by name
/// only (`FROM 0` is an image called "0").
fn stage_base(image: &str, earlier: &[Stage]) -> Base {
    if image.eq_ignore_ascii_case("scratch") {
        return Base::Scratch;
    }
    let by_name = earlier.iter().rev().find(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(image))
    });
    match by_name {
        Some(s) => Base::Stage(s.index),
        None => Base::Image(image.to_string()),
    }
}

/// A stage's FROM expanded with the global scope, and the variables it referred to.
struct ExpandedFrom {
    from: instructions::From,
    /// Variables it used that were set.
    matched: BTreeSet<String>,
    /// Variables it used that were unset.
    unmatched: BTreeSet<String>,
}

/// The variables in scope while one stage's instructions are expanded.
#[derive(Default)]
struct StageScope {
    /// ENV in effect.
    env: Scope,
    /// Whether `env` is the whole environment (the base image's config is known).
    image_env_known: bool,
    /// ARG values in effect.
    args: Scope,
    /// ARGs declared (with or without a value).
    declared: BTreeSet<String>,
    /// The RUN environment, rebuilt only after an ARG or ENV.
    snapshot: Option<RunEnv>,
}

impl StageScope {
    /// The lookup for expansion: ENV wins over ARG.
    fn lookup(&self) -> StageLookup<'_> {
        StageLookup {
            env: &self.env,
            args: &self.args,
        }
    }
}

/// The ARGs (values and declarations) at the end of an expanded stage: a stage built on it
/// inherits them, as BuildKit's child stage does.
type FinalArgs = Option<(Scope, BTreeSet<String>)>;

/// The state the phases of resolution share: the inputs, the global scope and what is
/// collected for [`super::Build`].
pub(super) struct Resolver<'a> {
    ast: &'a Ast,
    opts: &'a ResolveOptions,
    lexer: Lexer,
    budget: Budget,
    /// `--build-arg`s some ARG consumed.
    used_build_args: BTreeSet<String>,
    /// The built-in platform ARGs.
    builtins: Scope,
    /// Global ARG values in effect (built-ins, overrides, expanded defaults).
    pub(super) global_scope: Scope,
    /// Global ARG values from defaults alone (for InvalidDefaultArgInFrom).
    global_defaults: Scope,
    /// Names of the global ARGs.
    global_declared: BTreeSet<String>,
    /// Undeclared variables used in FROM lines.
    pub(super) undefined_in_from: Vec<VarUse>,
    /// FROM lines whose global-ARG defaults give an empty or invalid image name.
    pub(super) invalid_default_from: Vec<(usize, String)>,
    /// Undefined variables used in expanded instructions.
    pub(super) undefined_vars: Vec<VarUse>,
}

impl<'a> Resolver<'a> {
    /// A resolver whose global scope holds the built-in platform ARGs.
    pub(super) fn new(ast: &'a Ast, opts: &'a ResolveOptions) -> Self {
        let mut builtins = Scope::default();
        for (k, v) in platform_args(&opts.target_platform, "TARGET")
            .into_iter()
            .chain(platform_args(&opts.build_platform, "BUILD"))
        {
            builtins.set(&k, &v);
        }
        Resolver {
            ast,
            opts,
            lexer: Lexer::new(ast.escape),
            budget: Budget::new(),
            used_build_args: BTreeSet::new(),
            global_scope: builtins.clone(),
            global_defaults: builtins.clone(),
            builtins,
            global_declared: BTreeSet::new(),
            undefined_in_from: Vec::new(),
            invalid_default_from: Vec::new(),
            undefined_vars: Vec::new(),
        }
    }

    /// The `--build-arg` value for `name`, marking it used.
    fn take_build_arg(&mut self, name: &str) -> Option<String> {
        let v = self.opts.build_args.get(name)?;
        self.used_build_args.insert(name.to_string());
        Some(v.clone())
    }

    /// Phase 2: the global ARGs, in order; each default sees the ARGs before it.
    pub(super) fn global_args(&mut self, global: &Body) -> Result<Vec<ResolvedArg>, SourceError> {
        let mut out = Vec::new();
        for (node_i, ins) in global {
            let Instruction::Arg(decls) = ins else {
                continue;
            };
            for d in decls {
                out.push(self.global_arg(*node_i, d)?);
            }
        }
        Ok(out)
    }

    /// One global ARG: its value (override or expanded default) and its default alone.
    fn global_arg(&mut self, node_i: usize, d: &ArgDecl) -> Result<ResolvedArg, SourceError> {
        let node = &self.ast.children[node_i];
        self.global_declared.insert(d.name.clone());
        let default_only = self.expand_default(node, d, &self.global_defaults)?;
        let value = match self.take_build_arg(&d.name) {
            Some(v) => Some(v),
            None => self.expand_default(node, d, &self.global_scope)?,
        };
        if let Some(v) = &value {
            self.global_scope.set(&d.name, v);
        }
        if let Some(v) = &default_only {
            self.global_defaults.set(&d.name, v);
        }
        Ok(ResolvedArg {
            name: d.name.clone(),
            default: d.default.clone(),
            value,
            description: description(&node.prev_comment, &d.name),
            node: node_i,
        })
    }

    /// A global ARG's default expanded with `scope`.
    fn expand_default(
        &self,
        node: &Node,
        d: &ArgDecl,
        scope: &Scope,
    ) -> Result<Option<String>, SourceError> {
        let cx = Ctx {
            ast: self.ast,
            node,
        };
        match &d.default {
            Some(raw) => {
                let v = self
                    .lexer
                    .process_word(raw, scope)
                    .map_err(|e| cx.expansion_error(e.to_string()))?;
                self.budget.grew(raw, &v, &cx)?;
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }

    /// Phase 3: the stages with their FROM lines expanded and their bases; their bodies apart.
    pub(super) fn stages(
        &mut self,
        raw_stages: Vec<RawStage>,
    ) -> Result<(Vec<Stage>, Vec<Body>), SourceError> {
        let mut stages: Vec<Stage> = Vec::new();
        let mut bodies = Vec::new();
        for (index, (node_i, from, body)) in raw_stages.into_iter().enumerate() {
            let stage = self.stage(index, node_i, from, &stages)?;
            stages.push(stage);
            bodies.push(body);
        }
        Ok((stages, bodies))
    }

    /// One stage from its FROM line; `earlier` are the stages before it.
    fn stage(
        &mut self,
        index: usize,
        node_i: usize,
        from: instructions::From,
        earlier: &[Stage],
    ) -> Result<Stage, SourceError> {
        let ast = self.ast;
        let node = &ast.children[node_i];
        let cx = Ctx { ast, node };
        let ExpandedFrom {
            from: f,
            matched,
            unmatched,
        } = self.expand_from(&cx, &from)?;
        let undeclared_in_from = self.undefined_in_from(node_i, unmatched);
        if from.image.contains('$') && !undeclared_in_from {
            let with_defaults = self
                .lexer
                .process_word(&from.image, &self.global_defaults)
                .unwrap_or_default();
            if !looks_like_reference(&with_defaults) {
                self.invalid_default_from.push((node_i, from.image.clone()));
            }
        }
        // Checks report this as InvalidDefaultArgInFrom instead of failing.
        if f.image.is_empty() && !self.opts.all_stages {
            return Err(cx.error(
                ErrorKind::Stage,
                format!("base name ({}) should not be blank", from.image),
                Some("give the ARG used in FROM a default or pass it with --build-arg".into()),
            ));
        }
        let base = stage_base(&f.image, earlier);
        let mut deps = BTreeSet::new();
        if let Base::Stage(i) = base {
            deps.insert(i);
        }
        Ok(Stage {
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
        })
    }

    /// Expands a FROM's image and `--platform` with the global scope.
    fn expand_from(
        &self,
        cx: &Ctx,
        from: &instructions::From,
    ) -> Result<ExpandedFrom, SourceError> {
        let mut f = from.clone();
        let mut unmatched = BTreeSet::new();
        let mut matched = BTreeSet::new();
        let mut expand = |w: &str| -> Result<String, SourceError> {
            let e = self
                .lexer
                .expand(w, &self.global_scope)
                .map_err(|e| cx.expansion_error(e.to_string()))?;
            self.budget.grew(w, &e.result, cx)?;
            unmatched.extend(e.unmatched);
            matched.extend(e.matched);
            Ok(e.result)
        };
        f.image = expand(&from.image)?;
        if let Some(p) = &from.platform {
            let expanded = expand(p)?;
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
        Ok(ExpandedFrom {
            from: f,
            matched,
            unmatched,
        })
    }

    /// Records the unset variables of a FROM line that no global ARG declares; true if any.
    fn undefined_in_from(&mut self, node_i: usize, unmatched: BTreeSet<String>) -> bool {
        let mut any = false;
        for name in unmatched {
            if !self.global_declared.contains(&name) && self.builtins.get(&name).is_none() {
                any = true;
                let cands: Vec<&str> = self
                    .global_declared
                    .iter()
                    .map(String::as_str)
                    .chain(self.builtins.vars.iter().map(|(k, _)| k.as_str()))
                    .collect();
                self.undefined_in_from.push(VarUse {
                    suggestion: crate::suggest::closest(&name, cands, true).map(str::to_string),
                    name,
                    node: node_i,
                });
            }
        }
        any
    }

    /// Phase 6: expands the instructions of the stages the target needs (all with
    /// `all_stages`), in order, so a base stage is done before the stages built on it.
    pub(super) fn expand_stages(
        &mut self,
        stages: &mut [Stage],
        bodies: Vec<Body>,
        needed: &[usize],
    ) -> Result<(), SourceError> {
        let mut final_args: Vec<FinalArgs> = Vec::new();
        for (si, body) in bodies.into_iter().enumerate() {
            if !self.opts.all_stages && !needed.contains(&si) {
                stages[si].instructions = self.unexpanded(body);
                continue;
            }
            let scope = self.stage_scope(stages, si, &final_args)?;
            let (args, declared) = self.expand_stage(&mut stages[si], scope, body)?;
            final_args.resize(si, None);
            final_args.push(Some((args, declared)));
        }
        Ok(())
    }

    /// The instructions of a stage left unexpanded.
    fn unexpanded(&self, body: Body) -> Vec<ResolvedInstruction> {
        body.into_iter()
            .map(|(node_i, instruction)| ResolvedInstruction {
                instruction,
                span: self.ast.children[node_i].span,
                node: node_i,
                env: RunEnv::default(),
                proxy_env: Vec::new(),
            })
            .collect()
    }

    /// The scope a stage starts with: the ENV of its base (stage or known image config) and
    /// the ARGs of a base stage.
    fn stage_scope(
        &self,
        stages: &[Stage],
        si: usize,
        final_args: &[FinalArgs],
    ) -> Result<StageScope, SourceError> {
        let cx = Ctx {
            ast: self.ast,
            node: &self.ast.children[stages[si].node],
        };
        let mut scope = StageScope::default();
        match stages[si].base {
            Base::Stage(b) => {
                self.budget.spend(env_size(&stages[b].env), &cx)?;
                scope.env.vars = stages[b].env.clone();
                scope.image_env_known = true;
            }
            Base::Scratch => scope.image_env_known = true,
            Base::Image(ref image) => {
                if let Some(vars) = self.opts.base_env.get(image) {
                    scope.env.vars = vars.clone();
                    scope.image_env_known = true;
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
                        scope.image_env_known = self.opts.base_env.contains_key(image);
                        break;
                    }
                }
            }
        }
        if let Base::Stage(b) = stages[si].base {
            (scope.args, scope.declared) = final_args.get(b).cloned().flatten().unwrap_or_default();
        }
        if !scope.args.vars.is_empty() {
            self.budget.spend(env_size(&scope.args.vars), &cx)?;
        }
        Ok(scope)
    }

    /// Expands one stage's instructions in order, tracking its ARG and ENV scope; returns the
    /// ARGs at its end.
    fn expand_stage(
        &mut self,
        stage: &mut Stage,
        mut scope: StageScope,
        body: Body,
    ) -> Result<(Scope, BTreeSet<String>), SourceError> {
        let ast = self.ast;
        let mut out = Vec::new();
        let mut stage_args = Vec::new();
        for (node_i, mut ins) in body {
            let node = &ast.children[node_i];
            let cx = Ctx { ast, node };
            let mut unmatched: BTreeSet<String> = BTreeSet::new();
            match &mut ins {
                Instruction::Arg(decls) => {
                    for d in decls.iter() {
                        let arg = self.stage_arg(&cx, node_i, d, &mut scope, &mut unmatched)?;
                        stage_args.push(arg);
                    }
                }
                Instruction::Env(kv) => self.expand_env(&cx, kv, &mut scope, &mut unmatched)?,
                other => self.expand_instruction(&cx, other, &scope, &mut unmatched)?,
            }
            self.undefined_in_stage(node_i, unmatched, &scope);
            if matches!(ins, Instruction::Arg(_) | Instruction::Env(_)) {
                scope.snapshot = None;
            }
            let (run_env, proxy_env) = if matches!(ins, Instruction::Run(_)) {
                self.run_env(&cx, &mut scope)?
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
        stage.instructions = out;
        stage.args = stage_args;
        stage.env = scope.env.vars;
        stage.expanded = true;
        Ok((scope.args, scope.declared))
    }

    /// One ARG of a stage: the override, the default expanded with the stage scope, or the
    /// global value of that name.
    fn stage_arg(
        &mut self,
        cx: &Ctx,
        node_i: usize,
        d: &ArgDecl,
        scope: &mut StageScope,
        unmatched: &mut BTreeSet<String>,
    ) -> Result<ResolvedArg, SourceError> {
        scope.declared.insert(d.name.clone());
        let value = if let Some(v) = self.take_build_arg(&d.name) {
            Some(v)
        } else if let Some(raw) = &d.default {
            let e = self
                .lexer
                .expand(raw, &scope.lookup())
                .map_err(|e| cx.expansion_error(e.to_string()))?;
            self.budget.grew(raw, &e.result, cx)?;
            unmatched.extend(e.unmatched);
            Some(e.result)
        } else {
            self.global_scope.get(&d.name).map(str::to_string)
        };
        if let Some(v) = &value {
            scope.args.set(&d.name, v);
        }
        Ok(ResolvedArg {
            name: d.name.clone(),
            default: d.default.clone(),
            value,
            description: description(&cx.node.prev_comment, &d.name),
            node: node_i,
        })
    }

    /// Expands an ENV and applies it. Every value in one ENV sees the variables from before
    /// it: all pairs are expanded first, then applied.
    fn expand_env(
        &self,
        cx: &Ctx,
        kv: &mut KeyValues,
        scope: &mut StageScope,
        unmatched: &mut BTreeSet<String>,
    ) -> Result<(), SourceError> {
        {
            let lookup = scope.lookup();
            for p in kv.pairs.iter_mut() {
                for w in [&mut p.key, &mut p.value] {
                    let e = self
                        .lexer
                        .expand(w, &lookup)
                        .map_err(|e| cx.expansion_error(e.to_string()))?;
                    self.budget.grew(w, &e.result, cx)?;
                    unmatched.extend(e.unmatched);
                    *w = e.result;
                }
            }
        }
        for p in &kv.pairs {
            scope.env.set(&p.key, &p.value);
        }
        Ok(())
    }

    /// Expands any other instruction (words, then heredoc bodies) with the stage scope.
    fn expand_instruction(
        &self,
        cx: &Ctx,
        ins: &mut Instruction,
        scope: &StageScope,
        unmatched: &mut BTreeSet<String>,
    ) -> Result<(), SourceError> {
        let lookup = scope.lookup();
        let mut ex_with = |lex: Lexer, w: &str| -> Result<String, String> {
            let e = lex.expand(w, &lookup).map_err(|e| e.to_string())?;
            self.budget
                .grew(w, &e.result, cx)
                .map_err(|e| e.message.clone())?;
            unmatched.extend(e.unmatched);
            Ok(e.result)
        };
        let lexer = self.lexer;
        ins.expand(cx, &mut |w: &str| ex_with(lexer, w))?;
        ins.expand_heredocs(cx, &mut |w: &str| ex_with(Lexer::heredoc_body(), w))
    }

    /// Records the unset variables of an instruction that the stage does not know.
    fn undefined_in_stage(
        &mut self,
        node_i: usize,
        unmatched: BTreeSet<String>,
        scope: &StageScope,
    ) {
        for name in unmatched {
            let known = scope.declared.contains(&name)
                || scope.env.get(&name).is_some()
                || (!scope.image_env_known && COMMON_IMAGE_ENV.contains(&name.as_str()));
            if !known {
                let cands: Vec<&str> = scope
                    .env
                    .vars
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .chain(scope.declared.iter().map(String::as_str))
                    .collect();
                self.undefined_vars.push(VarUse {
                    suggestion: crate::suggest::closest(&name, cands, true).map(str::to_string),
                    name,
                    node: node_i,
                });
            }
        }
    }

    /// A RUN's environment (ARG values, then ENV which wins) and the undeclared proxy build
    /// args passed to it.
    fn run_env(
        &self,
        cx: &Ctx,
        scope: &mut StageScope,
    ) -> Result<(RunEnv, Vec<(String, String)>), SourceError> {
        let StageScope {
            env,
            args,
            snapshot,
            declared,
            ..
        } = scope;
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
        self.budget.spend(env_size(&env_now), cx)?;
        let proxy: Vec<(String, String)> = PROXY_ARGS
            .iter()
            .filter(|p| !declared.contains(**p))
            .filter_map(|p| {
                let v = self.opts.build_args.get(*p)?;
                Some((p.to_string(), v.clone()))
            })
            .collect();
        Ok((env_now, proxy))
    }

    /// Phase 7: the `--build-arg`s no ARG consumed (BuildKit warns about them), except the
    /// proxy and `BUILDKIT_*` args and `SOURCE_DATE_EPOCH`, which need no ARG.
    pub(super) fn unused_build_args(&self) -> Vec<String> {
        self.opts
            .build_args
            .keys()
            .filter(|k| !self.used_build_args.contains(*k))
            .filter(|k| {
                !PROXY_ARGS.contains(&k.as_str())
                    && !k.starts_with("BUILDKIT_")
                    && *k != "SOURCE_DATE_EPOCH"
            })
            .cloned()
            .collect()
    }
}
