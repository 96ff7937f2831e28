//! `try` and `can` (HCL's `tryfunc`): their arguments must be evaluated lazily, which
//! hcl-rs functions cannot do (they receive values). So each call is rewritten, once after
//! parsing, into a call of an internal function that receives its argument expressions as
//! text and the values of the variables they use, and evaluates them itself.

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::expr::{FuncCall, ObjectKey, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Expression, Structure, Value};
use std::collections::BTreeSet;
use std::str::FromStr;

/// The internal functions `try` and `can` become.
const TRY: &str = "kiln_internal_try";
const CAN: &str = "kiln_internal_can";

/// Rewrites every `try(…)` and `can(…)` call in a body's attributes.
pub fn rewrite_body(body: &mut hcl::Body) {
    for s in body.iter_mut() {
        match s {
            Structure::Attribute(a) => rewrite(&mut a.expr),
            Structure::Block(b) => rewrite_body(&mut b.body),
        }
    }
}

/// Declares the functions the rewritten calls use; `base` gives them the variables and
/// functions of the file (the call site's own variables are passed as an argument).
pub fn declare(ctx: &mut Context<'_>) {
    let def = |f: hcl::eval::Func| FuncDef::new(f, vec![ParamType::Any, ParamType::Any]);
    ctx.declare_func(TRY, def(call_try));
    ctx.declare_func(CAN, def(call_can));
}

/// Rewrites `try`/`can` calls inside `e`, innermost first.
fn rewrite(e: &mut Expression) {
    match e {
        Expression::Array(items) => items.iter_mut().for_each(rewrite),
        Expression::Object(o) => {
            for (k, v) in o.iter_mut() {
                // Keys of an `Object` cannot be borrowed mutably; only values hold calls
                // that matter in bake files.
                let _ = k;
                rewrite(v);
            }
        }
        Expression::TemplateExpr(t) => rewrite_template_expr(t),
        Expression::Traversal(t) => {
            rewrite(&mut t.expr);
            for op in &mut t.operators {
                if let TraversalOperator::Index(i) = op {
                    rewrite(i);
                }
            }
        }
        Expression::FuncCall(f) => {
            f.args.iter_mut().for_each(rewrite);
            let name = f.name.name.as_str();
            if f.name.namespace.is_empty() && (name == "try" || name == "can") {
                let internal = if name == "try" { TRY } else { CAN };
                *e = lazy_call(internal, f);
            }
        }
        Expression::Parenthesis(p) => rewrite(p),
        Expression::Conditional(c) => {
            rewrite(&mut c.cond_expr);
            rewrite(&mut c.true_expr);
            rewrite(&mut c.false_expr);
        }
        Expression::Operation(op) => match op.as_mut() {
            hcl::expr::Operation::Unary(u) => rewrite(&mut u.expr),
            hcl::expr::Operation::Binary(b) => {
                rewrite(&mut b.lhs_expr);
                rewrite(&mut b.rhs_expr);
            }
        },
        Expression::ForExpr(f) => {
            rewrite(&mut f.collection_expr);
            if let Some(k) = &mut f.key_expr {
                rewrite(k);
            }
            rewrite(&mut f.value_expr);
            if let Some(c) = &mut f.cond_expr {
                rewrite(c);
            }
        }
        _ => {}
    }
}

/// `try(a, b)` as `kiln_internal_try(["a", "b"], {v = v, …})`: the arguments as text and
/// the variables they use, evaluated where the call is.
fn lazy_call(internal: &str, f: &FuncCall) -> Expression {
    let mut vars = BTreeSet::new();
    for a in &f.args {
        free_vars(a, &mut Vec::new(), &mut vars);
    }
    let texts = f
        .args
        .iter()
        .map(|a| Expression::String(hcl::format::to_string(a).unwrap_or_default()))
        .collect();
    let scope = vars
        .into_iter()
        .map(|v| {
            let var = Expression::Variable(hcl::expr::Variable::unchecked(v.as_str()));
            (ObjectKey::Expression(Expression::String(v)), var)
        })
        .collect();
    let mut call = FuncCall::new(hcl::Identifier::unchecked(internal));
    call.args = vec![Expression::Array(texts), Expression::Object(scope)];
    Expression::FuncCall(Box::new(call))
}

fn rewrite_template_expr(t: &mut TemplateExpr) {
    let raw = match t {
        TemplateExpr::QuotedString(s) => s,
        TemplateExpr::Heredoc(h) => &mut h.template,
    };
    if !raw.contains("try") && !raw.contains("can") {
        return;
    }
    let Ok(mut template) = Template::from_str(raw) else {
        return; // evaluation reports the error
    };
    rewrite_template(&mut template);
    if let Ok(text) = hcl::format::to_string(&template) {
        *raw = text;
    }
}

fn rewrite_template(t: &mut Template) {
    for el in t.elements_mut() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => rewrite(&mut i.expr),
            Element::Directive(d) => match d.as_mut() {
                Directive::If(d) => {
                    rewrite(&mut d.cond_expr);
                    rewrite_template(&mut d.true_template);
                    if let Some(f) = &mut d.false_template {
                        rewrite_template(f);
                    }
                }
                Directive::For(d) => {
                    rewrite(&mut d.collection_expr);
                    rewrite_template(&mut d.template);
                }
            },
        }
    }
}

/// The variables `e` uses that it does not bind itself (`for` variables).
fn free_vars(e: &Expression, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match e {
        Expression::Variable(v) if !bound.iter().any(|b| b == v.as_str()) => {
            out.insert(v.as_str().to_string());
        }
        Expression::Array(items) => items.iter().for_each(|i| free_vars(i, bound, out)),
        Expression::Object(o) => {
            for (k, v) in o {
                if let ObjectKey::Expression(k) = k {
                    free_vars(k, bound, out);
                }
                free_vars(v, bound, out);
            }
        }
        Expression::TemplateExpr(t) => {
            let raw = match t.as_ref() {
                TemplateExpr::QuotedString(s) => s.as_str(),
                TemplateExpr::Heredoc(h) => h.template.as_str(),
            };
            if let Ok(t) = Template::from_str(raw) {
                template_vars(&t, bound, out);
            }
        }
        Expression::Traversal(t) => {
            free_vars(&t.expr, bound, out);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    free_vars(i, bound, out);
                }
            }
        }
        Expression::FuncCall(f) => f.args.iter().for_each(|a| free_vars(a, bound, out)),
        Expression::Parenthesis(p) => free_vars(p, bound, out),
        Expression::Conditional(c) => {
            free_vars(&c.cond_expr, bound, out);
            free_vars(&c.true_expr, bound, out);
            free_vars(&c.false_expr, bound, out);
        }
        Expression::Operation(op) => match op.as_ref() {
            hcl::expr::Operation::Unary(u) => free_vars(&u.expr, bound, out),
            hcl::expr::Operation::Binary(b) => {
                free_vars(&b.lhs_expr, bound, out);
                free_vars(&b.rhs_expr, bound, out);
            }
        },
        Expression::ForExpr(f) => {
            free_vars(&f.collection_expr, bound, out);
            let n = bound.len();
            bound.extend(f.key_var.iter().map(|k| k.as_str().to_string()));
            bound.push(f.value_var.as_str().to_string());
            for x in [&f.key_expr, &Some(f.value_expr.clone()), &f.cond_expr]
                .into_iter()
                .flatten()
            {
                free_vars(x, bound, out);
            }
            bound.truncate(n);
        }
        _ => {}
    }
}

fn template_vars(t: &Template, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => free_vars(&i.expr, bound, out),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    free_vars(&d.cond_expr, bound, out);
                    template_vars(&d.true_template, bound, out);
                    if let Some(f) = &d.false_template {
                        template_vars(f, bound, out);
                    }
                }
                Directive::For(d) => {
                    free_vars(&d.collection_expr, bound, out);
                    let n = bound.len();
                    bound.extend(d.key_var.iter().map(|k| k.as_str().to_string()));
                    bound.push(d.value_var.as_str().to_string());
                    template_vars(&d.template, bound, out);
                    bound.truncate(n);
                }
            },
        }
    }
}

/// Evaluates each argument (text) with the file's context and the call site's variables.
fn attempts(args: FuncArgs) -> Result<Vec<Result<Value, String>>, String> {
    let mut values = args.into_values().into_iter();
    let (Some(Value::Array(texts)), Some(Value::Object(scope))) = (values.next(), values.next())
    else {
        return Err("try and can take expressions".into());
    };
    let mut ctx = super::eval::base_context();
    for (k, v) in scope {
        ctx.declare_var(k, v);
    }
    Ok(texts
        .iter()
        .map(|t| {
            let text = t.as_str().unwrap_or_default();
            let e = Expression::from_str(text).map_err(|e| e.to_string())?;
            e.evaluate(&ctx).map_err(|e| e.to_string())
        })
        .collect())
}

fn call_try(args: FuncArgs) -> Result<Value, String> {
    let results = attempts(args)?;
    if results.is_empty() {
        return Err("try needs at least one argument".into());
    }
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => return Ok(v),
            Err(e) => errors.push(e),
        }
    }
    Err(format!(
        "try: no expression succeeded:\n- {}",
        errors.join("\n- ")
    ))
}

fn call_can(args: FuncArgs) -> Result<Value, String> {
    let results = attempts(args)?;
    match results.as_slice() {
        [r] => Ok(Value::Bool(r.is_ok())),
        _ => Err("can takes one argument".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, vars: &[(&str, Value)]) -> Result<Value, String> {
        let mut e = Expression::from_str(src).unwrap();
        rewrite(&mut e);
        let mut ctx = Context::new();
        super::super::funcs::declare(&mut ctx);
        declare(&mut ctx);
        super::super::eval::set_base_for_tests(&ctx);
        for (k, v) in vars {
            ctx.declare_var(*k, v.clone());
        }
        e.evaluate(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn try_returns_the_first_argument_that_evaluates() {
        let obj = Value::Object(hcl::Map::from_iter([("a".to_string(), Value::from(1))]));
        assert_eq!(
            eval("try(o.b, o.a, 3)", &[("o", obj.clone())]),
            Ok(Value::from(1))
        );
        assert_eq!(
            eval("try(o.b, \"x\")", &[("o", obj.clone())]),
            Ok("x".into())
        );
        assert_eq!(eval("can(o.b)", &[("o", obj.clone())]), Ok(false.into()));
        assert_eq!(eval("can(o.a)", &[("o", obj)]), Ok(true.into()));
        assert!(eval("try(1 + \"x\")", &[])
            .unwrap_err()
            .contains("no expression succeeded"));
    }

    #[test]
    fn loop_variables_templates_and_nesting_reach_the_arguments() {
        let list = Value::Array(vec![
            Value::Object(hcl::Map::from_iter([("v".to_string(), Value::from("a"))])),
            Value::Object(hcl::Map::new()),
        ]);
        assert_eq!(
            eval("[for x in l: try(x.v, \"-\")]", &[("l", list.clone())]),
            Ok(Value::Array(vec!["a".into(), "-".into()]))
        );
        assert_eq!(
            eval(
                "\"${try(l[1].v, \"q\\\"\")}/%{ for x in l }${can(x.v)}%{ endfor }\"",
                &[("l", list.clone())]
            ),
            Ok("q\"/truefalse".into())
        );
        assert_eq!(
            eval("try(try(l[5], l[0].v), 1)", &[("l", list.clone())]),
            Ok("a".into())
        );
        assert_eq!(
            eval("try([for y in l: y.v], [])", &[("l", list)]),
            Ok(Value::Array(vec![]))
        );
        // A variable that is not defined at all stays an error, as in HCL.
        assert!(eval("try(nope, 1)", &[]).unwrap_err().contains("nope"));
    }
}
