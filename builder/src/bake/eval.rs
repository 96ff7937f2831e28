//! HCL bake files (and JSON ones, read as HCL) evaluated: `variable` (defaults, environment
//! overrides, `validation`), `function`, `target` (with `matrix` and `name`) and `group`.

use super::error::{definition, line_col, BakeError};
use super::funcs::{self, kind, text};
use super::target::{Config, Group, Target};
use super::vartype::Type;
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Expression, Structure, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

/// One parsed HCL (or JSON) bake file.
pub struct HclFile {
    /// The file name, for errors.
    pub name: String,
    text: String,
    body: hcl::Body,
    /// Byte offsets of blocks (`target/app`) and attributes (`target/app/tags`).
    positions: HashMap<String, usize>,
}

impl HclFile {
    /// Parses an HCL file; a syntax error names its line and column.
    pub fn parse(name: &str, text: String) -> Result<HclFile, BakeError> {
        let edit = hcl::edit::parser::parse_body(&text).map_err(|e| BakeError::Syntax {
            file: name.to_string(),
            line: e.location().line(),
            column: e.location().column(),
            message: e.message().to_string(),
        })?;
        let mut positions = HashMap::new();
        collect_positions(&edit, "", &mut positions);
        let mut body: hcl::Body = edit.into();
        super::tryfunc::rewrite_body(&mut body);
        Ok(HclFile {
            name: name.to_string(),
            text,
            body,
            positions,
        })
    }

    /// Reads a JSON bake file (`{"variable": …, "target": …, "group": …}`) as HCL: its strings
    /// are templates (`${VAR}`), as in buildx.
    pub fn from_json(name: &str, text: String) -> Result<HclFile, BakeError> {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| BakeError::Syntax {
            file: name.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let top = v
            .as_object()
            .ok_or_else(|| definition(format!("{name}: a bake file in JSON must be an object")))?;
        let mut body = hcl::Body::builder();
        for (kind, blocks) in top {
            let blocks = blocks.as_object().ok_or_else(|| {
                definition(format!(
                    "{name}: {kind:?} must be an object of named blocks"
                ))
            })?;
            for (label, attrs) in blocks {
                let attrs = attrs.as_object().ok_or_else(|| {
                    definition(format!("{name}: {kind} {label:?} must be an object"))
                })?;
                let mut block =
                    hcl::Block::builder(hcl::Identifier::sanitized(kind)).add_label(label.as_str());
                for (key, value) in attrs {
                    block =
                        block.add_attribute((hcl::Identifier::sanitized(key), json_expr(value)));
                }
                body = body.add_block(block.build());
            }
        }
        let mut body = body.build();
        super::tryfunc::rewrite_body(&mut body);
        Ok(HclFile {
            name: name.to_string(),
            text,
            body,
            positions: HashMap::new(),
        })
    }

    /// `file:line:column` of a block or attribute, or the file alone.
    fn at(&self, key: &str) -> String {
        match self.positions.get(key) {
            Some(&off) => {
                let (line, col) = line_col(&self.text, off);
                format!("{}:{line}:{col}", self.name)
            }
            None => self.name.clone(),
        }
    }
}

fn collect_positions(
    body: &hcl::edit::structure::Body,
    prefix: &str,
    out: &mut HashMap<String, usize>,
) {
    use hcl::edit::Span;
    for s in body.iter() {
        if let Some(attr) = s.as_attribute() {
            if let Some(span) = attr.span() {
                out.insert(format!("{prefix}{}", attr.key.as_str()), span.start);
            }
        } else if let Some(block) = s.as_block() {
            let key = match block.labels.first() {
                Some(l) => format!("{prefix}{}/{}", block.ident.as_str(), l.as_str()),
                None => format!("{prefix}{}", block.ident.as_str()),
            };
            if let Some(span) = block.span() {
                out.entry(key.clone()).or_insert(span.start);
            }
            // Nested blocks (`validation`) are keyed under their parent.
            collect_positions(&block.body, &format!("{key}/"), out);
        }
    }
}

/// A JSON value as an HCL expression; strings are templates.
fn json_expr(v: &serde_json::Value) -> Expression {
    use serde_json::Value as J;
    match v {
        J::Null => Expression::Null,
        J::Bool(b) => Expression::Bool(*b),
        J::Number(n) => n
            .as_f64()
            .and_then(hcl::Number::from_f64)
            .map(Expression::Number)
            .unwrap_or(Expression::Null),
        J::String(s) if s.contains("${") || s.contains("%{") => {
            // The template is taken as it is (hcl-rs reads no escapes in it).
            let raw = s.clone();
            Expression::TemplateExpr(Box::new(hcl::expr::TemplateExpr::QuotedString(raw)))
        }
        J::String(s) => Expression::String(s.clone()),
        J::Array(a) => Expression::Array(a.iter().map(json_expr).collect()),
        J::Object(o) => Expression::Object(
            o.iter()
                .map(|(k, v)| {
                    (
                        hcl::ObjectKey::Expression(Expression::String(k.clone())),
                        json_expr(v),
                    )
                })
                .collect(),
        ),
    }
}

/// A variable as `--list=variables` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariableInfo {
    /// Its name.
    pub name: String,
    /// `description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `type`, as written.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The value, as a string (JSON for lists and objects); none for null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Everything the HCL files define.
pub struct Evaluated {
    /// Targets and groups.
    pub config: Config,
    /// The variables, in file order.
    pub variables: Vec<VariableInfo>,
}

#[derive(Default)]
struct VarDef {
    file: usize,
    default: Option<Expression>,
    type_: Option<Expression>,
    description: Option<String>,
    validations: Vec<(usize, String, Expression, Option<Expression>)>,
    /// A top-level attribute (`TAG = "x"`) rather than a block: no environment override.
    attribute: bool,
}

#[derive(Clone)]
struct UserFunc {
    params: Vec<String>,
    variadic: Option<String>,
    result: Expression,
}

/// How deeply user functions may call each other.
const MAX_CALL_DEPTH: usize = 64;

thread_local! {
    // hcl-rs takes plain `fn` pointers as functions: user functions go through a fixed set
    // of trampolines that find their definition and the variables here.
    static USER_FUNCS: RefCell<Vec<UserFunc>> = const { RefCell::new(Vec::new()) };
    static BASE: RefCell<Option<Context<'static>>> = const { RefCell::new(None) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

macro_rules! trampolines {
    ($($n:literal)*) => { const TRAMPOLINES: &[hcl::eval::Func] = &[$(|a| call_user($n, a)),*]; };
}
trampolines!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);

fn call_user(i: usize, args: FuncArgs) -> Result<Value, String> {
    let f = USER_FUNCS
        .with(|f| f.borrow().get(i).cloned())
        .ok_or("no such function")?;
    let mut ctx = base_context();
    let mut values = args.into_values().into_iter();
    for p in &f.params {
        ctx.declare_var(p.as_str(), values.next().unwrap_or(Value::Null));
    }
    if let Some(v) = &f.variadic {
        ctx.declare_var(v.as_str(), Value::Array(values.collect()));
    }
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_CALL_DEPTH {
        return Err(format!(
            "functions call each other more than {MAX_CALL_DEPTH} deep"
        ));
    }
    DEPTH.with(|d| d.set(depth + 1));
    let out = f.result.evaluate(&ctx).map_err(|e| e.to_string());
    DEPTH.with(|d| d.set(depth));
    out
}

/// The variables and functions user functions see (the base context has no parent).
fn set_base(ctx: &Context<'static>) {
    BASE.with(|b| *b.borrow_mut() = Some(ctx.clone()));
}

/// The file's variables and functions, for expressions evaluated inside a function
/// (`try`, `can`).
pub(super) fn base_context() -> Context<'static> {
    BASE.with(|b| b.borrow().clone()).unwrap_or_default()
}

#[cfg(test)]
pub(super) fn set_base_for_tests(ctx: &Context<'static>) {
    set_base(ctx);
}

/// Built-in variables (`BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`) and the environment.
pub struct Inputs<'a> {
    /// Built-ins: not overridable.
    pub builtins: Vec<(String, String)>,
    /// Environment lookup for variable overrides.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Evaluates the HCL files together (variables of one file are visible in all).
pub fn evaluate(files: &[HclFile], inputs: &Inputs<'_>) -> Result<Evaluated, BakeError> {
    let mut vars: indexmap::IndexMap<String, VarDef> = indexmap::IndexMap::new();
    let mut user_funcs: Vec<(String, UserFunc)> = Vec::new();
    let mut blocks: Vec<(usize, &hcl::Block)> = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        for s in file.body.iter() {
            match s {
                Structure::Attribute(a) => {
                    vars.insert(
                        a.key.to_string(),
                        VarDef {
                            file: fi,
                            default: Some(a.expr.clone()),
                            attribute: true,
                            ..VarDef::default()
                        },
                    );
                }
                Structure::Block(b) => {
                    match b.identifier.as_str() {
                        "variable" => {
                            let name = label(file, b)?;
                            let def = vars.entry(name.clone()).or_default();
                            read_variable(file, fi, &name, b, def)?;
                        }
                        "function" => {
                            let name = label(file, b)?;
                            user_funcs.retain(|(n, _)| *n != name);
                            user_funcs.push((name.clone(), read_function(file, &name, b)?));
                        }
                        "target" | "group" => blocks.push((fi, b)),
                        other => return Err(BakeError::Eval {
                            at: file.at(&format!("{other}/{}", first_label(b))),
                            what: format!("block {other:?}"),
                            message:
                                "unknown block type (expected variable, function, target or group)"
                                    .into(),
                        }),
                    }
                }
            }
        }
    }
    if user_funcs.len() > TRAMPOLINES.len() {
        return Err(definition(format!(
            "{} functions are defined; at most {} are supported",
            user_funcs.len(),
            TRAMPOLINES.len()
        )));
    }
    let mut ctx: Context<'static> = Context::new();
    funcs::declare(&mut ctx);
    super::tryfunc::declare(&mut ctx);
    for (i, (name, f)) in user_funcs.iter().enumerate() {
        let mut def = FuncDef::builder().params(f.params.iter().map(|_| ParamType::Any));
        if f.variadic.is_some() {
            def = def.variadic_param(ParamType::Any);
        }
        ctx.declare_func(name.as_str(), def.build(TRAMPOLINES[i]));
    }
    USER_FUNCS.with(|u| *u.borrow_mut() = user_funcs.into_iter().map(|(_, f)| f).collect());
    for (k, v) in &inputs.builtins {
        ctx.declare_var(k.as_str(), v.as_str());
    }
    set_base(&ctx);
    let values = resolve_variables(files, &vars, &mut ctx, inputs)?;
    validate_variables(files, &vars, &ctx)?;
    let variables = vars
        .iter()
        .filter(|(_, d)| !d.attribute)
        .map(|(name, d)| VariableInfo {
            name: name.clone(),
            description: d.description.clone(),
            type_: d.type_.as_ref().map(type_name),
            value: values.get(name).and_then(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(
                    text(other)
                        .unwrap_or_else(|_| serde_json::to_string(other).unwrap_or_default()),
                ),
            }),
        })
        .collect();
    let mut config = Config::default();
    let mut targets = Vec::new();
    for (fi, b) in blocks {
        let file = &files[fi];
        if b.identifier.as_str() == "group" {
            let name = label(file, b)?;
            let g = read_group(file, &name, b, &ctx)?;
            config.add_group(name, g);
        } else {
            targets.push((fi, b));
        }
    }
    read_all_targets(files, targets, &ctx, &mut config)?;
    Ok(Evaluated { config, variables })
}

/// Evaluates the target blocks; a block whose attributes refer to other targets
/// (`target.NAME.ATTR`) waits for a later round, when those are known (at most one round
/// per block).
fn read_all_targets(
    files: &[HclFile],
    mut pending: Vec<(usize, &hcl::Block)>,
    ctx: &Context<'static>,
    config: &mut Config,
) -> Result<(), BakeError> {
    let mut values = hcl::Map::new();
    while !pending.is_empty() {
        let mut c = ctx.clone();
        c.declare_var("target", Value::Object(values.clone()));
        // A block whose references name targets still to come waits for them, so that
        // `try(target.other.x, …)` sees `other` rather than falling back; unless every
        // block waits (a cycle), when they are all tried.
        let labels: Vec<&str> = pending.iter().map(|(_, b)| first_label(b)).collect();
        let waits = |b: &hcl::Block| {
            referenced_targets(b).iter().any(|n| {
                n != first_label(b) && !values.contains_key(n) && labels.contains(&n.as_str())
            })
        };
        let (mut round, mut later): (Vec<_>, Vec<_>) =
            pending.iter().copied().partition(|(_, b)| !waits(b));
        if round.is_empty() {
            round = std::mem::take(&mut later);
        }
        let mut deferred = later;
        let mut first_error = None;
        let mut progress = false;
        for (fi, b) in round {
            let mut scratch = Config::default();
            let mut vals = hcl::Map::new();
            match read_targets(&files[fi], b, &c, &mut scratch, &mut vals) {
                Ok(()) => {
                    for (name, g) in scratch.groups {
                        config.add_group(name, g);
                    }
                    for (name, t) in scratch.targets {
                        config.add_target(name, t);
                    }
                    values.extend(vals);
                    progress = true;
                }
                Err(e) if refers_to_targets(b) => {
                    first_error.get_or_insert(e);
                    deferred.push((fi, b));
                }
                Err(e) => return Err(e),
            }
        }
        if !progress {
            // No progress: the references cannot be resolved (unknown target or a cycle).
            return Err(first_error.unwrap_or_else(|| definition("target references")));
        }
        pending = deferred;
    }
    Ok(())
}

/// The names `target.NAME` mentions in a block's attributes.
fn referenced_targets(b: &hcl::Block) -> Vec<String> {
    let Ok(re) = regex::Regex::new(r"\btarget\.([A-Za-z0-9_-]+)") else {
        return Vec::new();
    };
    b.body
        .attributes()
        .filter_map(|a| hcl::format::to_string(&a.expr).ok())
        .flat_map(|t| {
            re.captures_iter(&t)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a target block's attributes mention `target.` (another target's attributes).
fn refers_to_targets(b: &hcl::Block) -> bool {
    b.body
        .attributes()
        .any(|a| hcl::format::to_string(&a.expr).is_ok_and(|t| t.contains("target.")))
}

fn first_label(b: &hcl::Block) -> &str {
    b.labels.first().map(|l| l.as_str()).unwrap_or("")
}

/// The one label of a `variable`, `function`, `target` or `group` block.
fn label(file: &HclFile, b: &hcl::Block) -> Result<String, BakeError> {
    match b.labels.as_slice() {
        [l] => Ok(l.as_str().to_string()),
        _ => Err(BakeError::Eval {
            at: file.at(&format!("{}/{}", b.identifier.as_str(), first_label(b))),
            what: format!("{} block", b.identifier.as_str()),
            message: "needs exactly one label (its name)".into(),
        }),
    }
}

fn read_variable(
    file: &HclFile,
    fi: usize,
    name: &str,
    b: &hcl::Block,
    def: &mut VarDef,
) -> Result<(), BakeError> {
    def.file = fi;
    def.attribute = false;
    let key = format!("variable/{name}");
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => match a.key.as_str() {
                "default" => def.default = Some(a.expr.clone()),
                "type" => def.type_ = Some(a.expr.clone()),
                "description" => {
                    def.description = Some(literal_string(file, &key, "description", &a.expr)?)
                }
                other => {
                    return Err(BakeError::Eval {
                        at: file.at(&format!("{key}/{other}")),
                        what: format!("variable {name:?}"),
                        message: format!(
                            "unknown attribute {other:?} (expected default, type, description)"
                        ),
                    })
                }
            },
            Structure::Block(v) if v.identifier.as_str() == "validation" => {
                let attr = |k: &str| {
                    v.body
                        .attributes()
                        .find(|a| a.key.as_str() == k)
                        .map(|a| a.expr.clone())
                };
                let cond = attr("condition").ok_or_else(|| BakeError::Eval {
                    at: file.at(&key),
                    what: format!("variable {name:?} validation"),
                    message: "needs a condition".into(),
                })?;
                def.validations.push((
                    fi,
                    format!("{key}/validation/"),
                    cond,
                    attr("error_message"),
                ));
            }
            Structure::Block(v) => {
                return Err(BakeError::Eval {
                    at: file.at(&key),
                    what: format!("variable {name:?}"),
                    message: format!("unknown block {:?}", v.identifier.as_str()),
                })
            }
        }
    }
    Ok(())
}

fn literal_string(
    file: &HclFile,
    key: &str,
    attr: &str,
    e: &Expression,
) -> Result<String, BakeError> {
    let ctx = Context::new();
    e.evaluate(&ctx)
        .map_err(|err| err.to_string())
        .and_then(|v| text(&v))
        .map_err(|message| BakeError::Eval {
            at: file.at(&format!("{key}/{attr}")),
            what: format!("attribute {attr:?}"),
            message,
        })
}

/// A parameter name: a bare identifier (HCL) or a string (JSON).
fn param_name(e: &Expression) -> Option<String> {
    match e {
        Expression::Variable(v) => Some(v.as_str().to_string()),
        Expression::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn read_function(file: &HclFile, name: &str, b: &hcl::Block) -> Result<UserFunc, BakeError> {
    let key = format!("function/{name}");
    let err = |attr: &str, message: &str| BakeError::Eval {
        at: file.at(&format!("{key}/{attr}")),
        what: format!("function {name:?}"),
        message: message.to_string(),
    };
    let mut f = UserFunc {
        params: Vec::new(),
        variadic: None,
        result: Expression::Null,
    };
    let mut has_result = false;
    for a in b.body.attributes() {
        match a.key.as_str() {
            "params" => {
                let Expression::Array(items) = &a.expr else {
                    return Err(err("params", "params must be a list of names"));
                };
                for item in items {
                    f.params.push(
                        param_name(item)
                            .ok_or_else(|| err("params", "params must be a list of names"))?,
                    );
                }
            }
            "variadic_params" => {
                f.variadic = Some(
                    param_name(&a.expr)
                        .ok_or_else(|| err("variadic_params", "variadic_params must be a name"))?,
                )
            }
            "result" => {
                f.result = a.expr.clone();
                has_result = true;
            }
            other => {
                return Err(err(
                    other,
                    &format!(
                        "unknown attribute {other:?} (expected params, variadic_params, result)"
                    ),
                ))
            }
        }
    }
    if !has_result {
        return Err(err("", "needs a result"));
    }
    Ok(f)
}

/// A `type` expression as written (`string`, `list(string)`).
fn type_name(e: &Expression) -> String {
    match e {
        Expression::Variable(v) => v.as_str().to_string(),
        Expression::FuncCall(f) => format!(
            "{}({})",
            f.name,
            f.args.iter().map(type_name).collect::<Vec<_>>().join(",")
        ),
        Expression::String(s) => s.clone(),
        other => hcl::format::to_string(other).unwrap_or_else(|_| "?".into()),
    }
}

/// Why a variable could not be evaluated yet.
enum VarFailure {
    /// It refers to another variable not resolved yet.
    Waits(String),
    Error(BakeError),
}

/// Evaluates every variable, each after those it refers to (in rounds: at most one per
/// variable), and declares it in `ctx`.
fn resolve_variables(
    files: &[HclFile],
    vars: &indexmap::IndexMap<String, VarDef>,
    ctx: &mut Context<'static>,
    inputs: &Inputs<'_>,
) -> Result<HashMap<String, Value>, BakeError> {
    let builtin = |n: &str| inputs.builtins.iter().any(|(k, _)| k == n);
    let mut pending: Vec<&String> = vars.keys().filter(|n| !builtin(n)).collect();
    let mut values = HashMap::new();
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut still = Vec::new();
        for name in pending.iter().copied() {
            match resolve_variable(files, name, &vars[name], ctx, inputs, &|n| {
                vars.contains_key(n)
            }) {
                Ok(v) => {
                    ctx.declare_var(name.as_str(), v.clone());
                    set_base(ctx);
                    values.insert(name.clone(), v);
                }
                Err(VarFailure::Waits(dep))
                    if vars.contains_key(&dep) && !values.contains_key(&dep) =>
                {
                    waiting.push((name, dep));
                    still.push(name);
                }
                Err(VarFailure::Waits(dep)) => {
                    let def = &vars[name];
                    return Err(BakeError::Eval {
                        at: files[def.file].at(&default_key(name, def)),
                        what: format!("variable {name:?}"),
                        message: format!("refers to {dep:?}, which is not defined"),
                    });
                }
                Err(VarFailure::Error(e)) => return Err(e),
            }
        }
        if still.len() == pending.len() {
            let (name, dep) = waiting[0].clone();
            let def = &vars[name];
            return Err(BakeError::Eval {
                at: files[def.file].at(&default_key(name, def)),
                what: format!("variable {name:?}"),
                message: format!(
                    "variable cycle: {name} needs {dep}, which needs {name} (directly or not)"
                ),
            });
        }
        pending = still;
    }
    Ok(values)
}

/// Where a variable's default is written (its `default`, or the top-level attribute).
fn default_key(name: &str, def: &VarDef) -> String {
    if def.attribute {
        name.to_string()
    } else {
        format!("variable/{name}/default")
    }
}

fn var_key(name: &str, def: &VarDef) -> String {
    if def.attribute {
        name.to_string()
    } else {
        format!("variable/{name}")
    }
}

fn resolve_variable(
    files: &[HclFile],
    name: &str,
    def: &VarDef,
    ctx: &Context<'static>,
    inputs: &Inputs<'_>,
    declared: &dyn Fn(&str) -> bool,
) -> Result<Value, VarFailure> {
    let file = &files[def.file];
    let fail = |message: String| {
        VarFailure::Error(BakeError::Eval {
            at: file.at(&var_key(name, def)),
            what: format!("variable {name:?}"),
            message,
        })
    };
    let fail_at = |key: String, message: String| {
        VarFailure::Error(BakeError::Eval {
            at: file.at(&key),
            what: format!("variable {name:?}"),
            message,
        })
    };
    let fail_default = |message: String| fail_at(default_key(name, def), message);
    let ty = match &def.type_ {
        Some(e) => Some(Type::parse(e).map_err(|m| {
            fail_at(
                format!("variable/{name}/type"),
                format!("invalid type: {m}"),
            )
        })?),
        None => None,
    };
    let default = match &def.default {
        Some(e) => {
            let v = e.evaluate(ctx).map_err(|e| waits_or(e, &fail_default))?;
            match &ty {
                Some(t) => Some(t.convert(&v).map_err(|m| {
                    fail_default(format!(
                        "invalid type {} for the default value: {m}",
                        t.name()
                    ))
                })?),
                None => Some(v),
            }
        }
        None => None,
    };
    // A typed variable prefers `NAME_JSON` (unless a variable has that name); an untyped
    // one reads it only without a plain `NAME` (buildx's `valueHasOverride`).
    let (env, json) = if def.attribute {
        (None, false)
    } else {
        let plain = (inputs.env)(name);
        let json_name = format!("{name}_JSON");
        let json = (plain.is_none() || ty.is_some()) && !declared(&json_name);
        match json.then(|| (inputs.env)(&json_name)).flatten() {
            Some(j) => (Some(j), ty.is_some()),
            None => (plain, false),
        }
    };
    let Some(env) = env else {
        return Ok(default.unwrap_or(if ty.is_some() {
            Value::Null
        } else {
            Value::from("")
        }));
    };
    let ty = match (ty, &default) {
        (Some(t), _) => t,
        (None, Some(Value::Bool(_))) => Type::Bool,
        (None, Some(Value::Number(_))) => Type::Number,
        (None, Some(v @ (Value::Array(_) | Value::Object(_)))) => {
            return Err(fail(format!(
                "cannot take {name} from the environment: the default is {} and no type is given",
                kind(v)
            )))
        }
        _ => Type::String,
    };
    if json {
        return ty
            .read_json(&env)
            .map_err(|m| fail(format!("from the environment ({name}_JSON={env:?}): {m}")));
    }
    ty.read_env(&env)
        .map_err(|m| fail(format!("from the environment ({name}={env:?}): {m}")))
}

fn waits_or(e: hcl::eval::Error, fail: &dyn Fn(String) -> VarFailure) -> VarFailure {
    match e.kind() {
        hcl::eval::ErrorKind::UndefinedVar(v) => VarFailure::Waits(v.to_string()),
        _ => fail(e.to_string()),
    }
}

fn validate_variables(
    files: &[HclFile],
    vars: &indexmap::IndexMap<String, VarDef>,
    ctx: &Context<'static>,
) -> Result<(), BakeError> {
    for (name, def) in vars {
        for (fi, key, cond, msg) in &def.validations {
            let file = &files[*fi];
            let err = |message: String| BakeError::Eval {
                at: file.at(&format!("{key}condition")),
                what: format!("variable {name:?} validation"),
                message,
            };
            match cond.evaluate(ctx).map_err(|e| err(e.to_string()))? {
                Value::Bool(true) => {}
                Value::Bool(false) => {
                    let message = match msg {
                        Some(m) => {
                            let v = m.evaluate(ctx).map_err(|e| err(e.to_string()))?;
                            text(&v).unwrap_or_else(|_| v.to_string())
                        }
                        None => "This check failed, but has an invalid error message.".into(),
                    };
                    return Err(err(format!("validation failed: {message}")));
                }
                other => {
                    return Err(err(format!(
                        "the condition must be true or false, not {}",
                        kind(&other)
                    )))
                }
            }
        }
    }
    Ok(())
}

fn read_group(
    file: &HclFile,
    name: &str,
    b: &hcl::Block,
    ctx: &Context<'static>,
) -> Result<Group, BakeError> {
    let mut g = Group::default();
    for a in b.body.attributes() {
        let at = || file.at(&format!("group/{name}/{}", a.key.as_str()));
        let what = || format!("group {name:?} attribute {:?}", a.key.as_str());
        let v = a.expr.evaluate(ctx).map_err(|e| BakeError::Eval {
            at: at(),
            what: what(),
            message: e.to_string(),
        })?;
        let conv = |message: String| BakeError::Eval {
            at: at(),
            what: what(),
            message,
        };
        match a.key.as_str() {
            "targets" => g.targets = strings(&v).map_err(conv)?,
            "description" => g.description = Some(text(&v).map_err(conv)?),
            other => {
                return Err(BakeError::Eval {
                    at: at(),
                    what: format!("group {name:?}"),
                    message: format!("unknown attribute {other:?} (a group has targets and description; name and matrix are not supported for groups)"),
                })
            }
        }
    }
    Ok(g)
}

/// A valid target name, as buildx checks it.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Every matrix combination: the first key varies slowest.
fn combinations(matrix: &hcl::Map<String, Value>) -> Result<Vec<Vec<(String, Value)>>, String> {
    let mut out: Vec<Vec<(String, Value)>> = vec![vec![]];
    for (k, values) in matrix {
        let values = values
            .as_array()
            .ok_or_else(|| format!("matrix values must be lists ({k} is {})", kind(values)))?;
        let mut next = Vec::with_capacity(out.len() * values.len());
        for combo in &out {
            for v in values {
                let mut c = combo.clone();
                c.push((k.clone(), v.clone()));
                next.push(c);
            }
        }
        if next.len() > 10_000 {
            return Err("the matrix has more than 10000 combinations".into());
        }
        out = next;
    }
    Ok(out)
}

/// A `target` block: one target, or one per matrix combination (and then a group of them
/// under the block's label, as buildx makes).
fn read_targets(
    file: &HclFile,
    b: &hcl::Block,
    ctx: &Context<'static>,
    config: &mut Config,
    values: &mut hcl::Map<String, Value>,
) -> Result<(), BakeError> {
    let label = label(file, b)?;
    let key = format!("target/{label}");
    let attr = |k: &str| b.body.attributes().find(|a| a.key.as_str() == k);
    let fail = |k: &str, message: String| BakeError::Eval {
        at: file.at(&format!("{key}/{k}")),
        what: format!("target {label:?} attribute {k:?}"),
        message,
    };
    let Some(matrix) = attr("matrix") else {
        if attr("name").is_some() {
            return Err(fail("name", "name requires matrix".into()));
        }
        if !valid_name(&label) {
            return Err(fail(
                "",
                format!("invalid target name {label:?}: letters, digits, '_', '-' and '.' only"),
            ));
        }
        let (t, v) = read_target(file, &key, &label, b, ctx)?;
        values.insert(label.clone(), named(v, &label));
        config.add_target(label, t);
        return Ok(());
    };
    let m = matrix
        .expr
        .evaluate(ctx)
        .map_err(|e| fail("matrix", e.to_string()))?;
    let m = m.as_object().ok_or_else(|| {
        fail(
            "matrix",
            format!("matrix must be an object, not {}", kind(&m)),
        )
    })?;
    let combos = combinations(m).map_err(|e| fail("matrix", e))?;
    let mut names = Vec::new();
    for combo in combos {
        let mut c = ctx.clone();
        for (k, v) in &combo {
            c.declare_var(k.as_str(), v.clone());
        }
        let name = match attr("name") {
            Some(a) => a
                .expr
                .evaluate(&c)
                .map_err(|e| e.to_string())
                .and_then(|v| text(&v))
                .map_err(|e| fail("name", e))?,
            None => label.clone(),
        };
        if !valid_name(&name) {
            return Err(fail(
                "name",
                format!("invalid target name {name:?}: letters, digits, '_', '-' and '.' only"),
            ));
        }
        if names.contains(&name) {
            return Err(fail(
                "name",
                format!("duplicate name {name:?} (the name template must use the matrix values)"),
            ));
        }
        let (t, v) = read_target(file, &key, &label, b, &c)?;
        values.insert(name.clone(), named(v, &name));
        config.add_target(name.clone(), t);
        names.push(name);
    }
    if names != [label.clone()] {
        config.add_group(
            label,
            Group {
                description: None,
                targets: names,
            },
        );
    }
    Ok(())
}

fn read_target(
    file: &HclFile,
    key: &str,
    label: &str,
    b: &hcl::Block,
    ctx: &Context<'_>,
) -> Result<(Target, hcl::Map<String, Value>), BakeError> {
    let mut t = Target::default();
    let mut values = hcl::Map::new();
    if let Some(inner) = b.body.blocks().next() {
        return Err(BakeError::Eval {
            at: file.at(key),
            what: format!("target {label:?}"),
            message: format!(
                "unexpected block {:?} in a target",
                inner.identifier.as_str()
            ),
        });
    }
    for a in b.body.attributes() {
        let k = a.key.as_str();
        if k == "matrix" || k == "name" {
            continue;
        }
        let fail = |message: String| BakeError::Eval {
            at: file.at(&format!("{key}/{k}")),
            what: format!("target {label:?} attribute {k:?}"),
            message,
        };
        let v = a.expr.evaluate(ctx).map_err(|e| fail(e.to_string()))?;
        set_attribute(&mut t, k, &v).map_err(fail)?;
        values.insert(k.to_string(), v);
    }
    Ok((t, values))
}

/// A target's attribute values as other targets see them (`target.NAME.ATTR`), with its name.
fn named(mut values: hcl::Map<String, Value>, name: &str) -> Value {
    values.insert("name".into(), name.into());
    Value::Object(values)
}

/// Sets one target attribute from its evaluated value (null leaves it unset).
pub fn set_attribute(t: &mut Target, k: &str, v: &Value) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let s = || text(v);
    let b = || match v {
        Value::Bool(b) => Ok(*b),
        other => text(other).and_then(|s| crate::cli::parse_bool(&s)),
    };
    match k {
        "description" => t.description = Some(s()?),
        "inherits" => t.inherits = strings(v)?,
        "annotations" => t.annotations = Some(strings(v)?),
        "attest" => t.attest = Some(entries(v, false)?),
        "context" => t.context = Some(s()?),
        "contexts" => t.contexts = Some(string_map(v)?),
        "dockerfile" => t.dockerfile = Some(s()?),
        "dockerfile-inline" => t.dockerfile_inline = Some(s()?),
        "args" => t.args = Some(string_map(v)?),
        "labels" => t.labels = Some(string_map(v)?),
        "tags" => t.tags = Some(strings(v)?),
        "cache-from" => t.cache_from = Some(entries(v, false)?),
        "cache-to" => t.cache_to = Some(entries(v, false)?),
        "target" => t.target = Some(s()?),
        "secret" => t.secret = Some(entries(v, false)?),
        "ssh" => t.ssh = Some(entries(v, true)?),
        "platforms" => t.platforms = Some(strings(v)?),
        "output" => t.output = Some(entries(v, false)?),
        "pull" => t.pull = Some(b()?),
        "no-cache" => t.no_cache = Some(b()?),
        "network" => t.network = Some(s()?),
        "no-cache-filter" => t.no_cache_filter = Some(strings(v)?),
        "shm-size" => t.shm_size = Some(s()?),
        "ulimits" => t.ulimits = Some(strings(v)?),
        "call" => t.call = Some(s()?),
        "entitlements" => t.entitlements = Some(strings(v)?),
        "extra-hosts" => t.extra_hosts = Some(string_map(v)?),
        other => return Err(format!("unknown target attribute {other:?}")),
    }
    Ok(())
}

/// A list of strings (a lone string is a list of one).
pub fn strings(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items.iter().filter(|i| !i.is_null()).map(text).collect(),
        Value::String(s) => Ok(vec![s.clone()]),
        other => Err(format!(
            "a list of strings is required, not {}",
            kind(other)
        )),
    }
}

/// `output`, `cache-*`, `secret`, `attest`: CSV strings, or objects written as CSV
/// (newer buildx accepts both); `ssh` objects are `{id, paths}`.
fn entries(v: &Value, ssh: bool) -> Result<Vec<String>, String> {
    let items = match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let joined = |v: &Value| match v {
        Value::Array(a) => a
            .iter()
            .map(text)
            .collect::<Result<Vec<_>, _>>()
            .map(|l| l.join(",")),
        other => text(other),
    };
    items
        .iter()
        .filter(|i| !i.is_null())
        .map(|i| match i {
            Value::Object(m) if ssh => {
                let id = m.get("id").map(text).transpose()?.unwrap_or_default();
                match m.get("paths").filter(|p| !p.is_null()) {
                    Some(p) => Ok(format!("{id}={}", joined(p)?)),
                    None => Ok(id),
                }
            }
            Value::Object(m) => {
                let mut fields: Vec<String> = Vec::new();
                if let Some(t) = m.get("type") {
                    fields.push(format!("type={}", text(t)?));
                }
                for (k, v) in m.iter().filter(|(k, v)| *k != "type" && !v.is_null()) {
                    let val = joined(v)?;
                    // A value with a comma or quote is quoted, as CSV needs.
                    if val.contains([',', '"']) {
                        fields.push(format!("\"{k}={}\"", val.replace('"', "\"\"")));
                    } else {
                        fields.push(format!("{k}={val}"));
                    }
                }
                Ok(fields.join(","))
            }
            other => text(other),
        })
        .collect()
}

fn string_map(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let m = v
        .as_object()
        .ok_or_else(|| format!("an object is required, not {}", kind(v)))?;
    m.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| Ok((k.clone(), text(v)?)))
        .collect()
}
