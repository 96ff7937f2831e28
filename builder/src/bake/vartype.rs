//! Variable types (`type = list(string)`): read from their expression, values converted
//! to them as cty converts (a default, or an environment override given as CSV or JSON).

use super::funcs::{kind, text};
use hcl::{Expression, Value};

/// A type constraint, as HCL's `typeexpr` reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    /// `any`.
    Any,
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<Type>),
    /// `set(T)`.
    Set(Box<Type>),
    /// `map(T)`.
    Map(Box<Type>),
    /// `tuple([T, …])`.
    Tuple(Vec<Type>),
    /// `object({k = T, …})`.
    Object(Vec<(String, Type)>),
}

impl Type {
    /// Reads a type expression; an error says what is wrong with it.
    pub fn parse(e: &Expression) -> Result<Type, String> {
        let bad = || {
            format!(
                "{} is not a type (string, number, bool, any, list(T), set(T), map(T), tuple([…]), object({{…}}))",
                hcl::format::to_string(e).unwrap_or_default()
            )
        };
        match e {
            Expression::Variable(v) => match v.as_str() {
                "any" => Ok(Type::Any),
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                _ => Err(bad()),
            },
            // JSON bake files write the type as a string.
            Expression::String(s) => s
                .parse::<Expression>()
                .map_err(|_| bad())
                .and_then(|e| Type::parse(&e)),
            Expression::FuncCall(f) if f.name.namespace.is_empty() && f.args.len() == 1 => {
                let arg = &f.args[0];
                match (f.name.name.as_str(), arg) {
                    ("list", a) => Ok(Type::List(Box::new(Type::parse(a)?))),
                    ("set", a) => Ok(Type::Set(Box::new(Type::parse(a)?))),
                    ("map", a) => Ok(Type::Map(Box::new(Type::parse(a)?))),
                    ("tuple", Expression::Array(items)) => items
                        .iter()
                        .map(Type::parse)
                        .collect::<Result<_, _>>()
                        .map(Type::Tuple),
                    ("object", Expression::Object(attrs)) => attrs
                        .iter()
                        .map(|(k, v)| {
                            let key = match k {
                                hcl::expr::ObjectKey::Identifier(i) => i.as_str().to_string(),
                                hcl::expr::ObjectKey::Expression(Expression::String(s)) => {
                                    s.clone()
                                }
                                hcl::expr::ObjectKey::Expression(Expression::Variable(v)) => {
                                    v.as_str().to_string()
                                }
                                _ => return Err(bad()),
                            };
                            Ok((key, Type::parse(v)?))
                        })
                        .collect::<Result<_, _>>()
                        .map(Type::Object),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }

    /// cty's friendly name (`list of string`).
    pub fn name(&self) -> String {
        match self {
            Type::Any => "any".into(),
            Type::String => "string".into(),
            Type::Number => "number".into(),
            Type::Bool => "bool".into(),
            Type::List(t) => format!("list of {}", t.name()),
            Type::Set(t) => format!("set of {}", t.name()),
            Type::Map(t) => format!("map of {}", t.name()),
            Type::Tuple(_) => "tuple".into(),
            Type::Object(_) => "object".into(),
        }
    }

    fn is_primitive(&self) -> bool {
        matches!(self, Type::String | Type::Number | Type::Bool)
    }

    /// `v` converted to this type (null stays null).
    pub fn convert(&self, v: &Value) -> Result<Value, String> {
        let mismatch = || format!("{} is required, not {}", self.name(), kind(v));
        if v.is_null() {
            return Ok(Value::Null);
        }
        match (self, v) {
            (Type::Any, v) => Ok(v.clone()),
            (Type::String, Value::Array(_) | Value::Object(_)) => Err(mismatch()),
            (Type::String, v) => text(v).map(Value::from),
            (Type::Number, Value::Number(_)) => Ok(v.clone()),
            (Type::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("a number is required, not {s:?}"))
                .and_then(super::funcs::num),
            (Type::Bool, Value::Bool(_)) => Ok(v.clone()),
            (Type::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (Type::List(t) | Type::Set(t), Value::Array(items)) => {
                let mut out = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| t.convert(x).map_err(|e| format!("element {i}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(self, Type::Set(_)) {
                    let mut seen = Vec::new();
                    out.retain(|x| {
                        let new = !seen.contains(x);
                        seen.push(x.clone());
                        new
                    });
                }
                Ok(Value::Array(out))
            }
            (Type::Tuple(ts), Value::Array(items)) if ts.len() == items.len() => ts
                .iter()
                .zip(items)
                .enumerate()
                .map(|(i, (t, x))| t.convert(x).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (Type::Tuple(ts), Value::Array(items)) => Err(format!(
                "a tuple of {} elements is required, not {}",
                ts.len(),
                items.len()
            )),
            (Type::Map(t), Value::Object(m)) => m
                .iter()
                .map(|(k, x)| Ok((k.clone(), t.convert(x).map_err(|e| format!("{k:?}: {e}"))?)))
                .collect::<Result<hcl::Map<_, _>, String>>()
                .map(Value::Object),
            (Type::Object(attrs), Value::Object(m)) => attrs
                .iter()
                .map(|(k, t)| {
                    let x = m
                        .get(k)
                        .ok_or_else(|| format!("attribute {k:?} is required"))?;
                    Ok((k.clone(), t.convert(x).map_err(|e| format!("{k:?}: {e}"))?))
                })
                .collect::<Result<hcl::Map<_, _>, String>>()
                .map(Value::Object),
            _ => Err(mismatch()),
        }
    }

    /// An environment value as this type: primitives as text, lists, sets and tuples of
    /// primitives as comma-separated values (buildx's CSV form).
    pub fn read_env(&self, v: &str) -> Result<Value, String> {
        match self {
            Type::Any | Type::String => Ok(Value::from(v)),
            Type::Bool => crate::cli::parse_bool(v.trim()).map(Value::from),
            Type::Number => self.convert(&Value::from(v)),
            Type::List(t) | Type::Set(t) if t.is_primitive() => {
                let fields = csv(v)?;
                self.convert(&Value::Array(
                    fields
                        .iter()
                        .map(|f| t.read_env(f))
                        .collect::<Result<_, _>>()?,
                ))
            }
            Type::Tuple(ts) if ts.iter().all(Type::is_primitive) => {
                let fields = csv(v)?;
                if fields.len() != ts.len() {
                    return Err(format!(
                        "a tuple of {} values is required, not {}",
                        ts.len(),
                        fields.len()
                    ));
                }
                ts.iter()
                    .zip(&fields)
                    .map(|(t, f)| t.read_env(f))
                    .collect::<Result<_, _>>()
                    .map(Value::Array)
            }
            other => Err(format!(
                "type {} cannot be read from the environment except as JSON (set NAME_JSON)",
                other.name()
            )),
        }
    }

    /// An environment value given as JSON (`NAME_JSON`), converted to this type.
    pub fn read_json(&self, v: &str) -> Result<Value, String> {
        let j: serde_json::Value = serde_json::from_str(v).map_err(|e| e.to_string())?;
        let value: Value = hcl::to_value(&j).map_err(|e| e.to_string())?;
        self.convert(&value)
    }
}

fn csv(v: &str) -> Result<Vec<String>, String> {
    if v.is_empty() {
        return Ok(vec![]);
    }
    kiln_frontend::instructions::mount::split_csv(v)
        .map(|f| f.into_iter().map(|c| c.into_owned()).collect())
        .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> Type {
        Type::parse(&s.parse::<Expression>().unwrap()).unwrap()
    }

    #[test]
    fn types_read_and_convert_as_cty() {
        assert_eq!(ty("list(string)"), Type::List(Box::new(Type::String)));
        assert!(Type::parse(&"lst(string)".parse::<Expression>().unwrap()).is_err());
        assert_eq!(
            ty("list(string)").convert(&Value::Array(vec![1.into(), true.into()])),
            Ok(Value::Array(vec!["1".into(), "true".into()]))
        );
        assert!(ty("number").convert(&"x".into()).is_err());
        assert!(ty("list(number)").convert(&"x".into()).is_err());
        let o = ty("object({a = number, b = list(string)})");
        assert_eq!(
            serde_json::to_string(&o.read_json(r#"{"a": "2", "b": ["x"], "c": 1}"#).unwrap())
                .unwrap(),
            r#"{"a":2,"b":["x"]}"#
        );
        assert!(o.read_json(r#"{"a": 1}"#).is_err());
        assert_eq!(
            ty("set(number)").read_env("1,2,1"),
            Ok(Value::Array(vec![1.into(), 2.into()]))
        );
        assert_eq!(
            ty("tuple([string, bool])").read_env("a,true"),
            Ok(Value::Array(vec!["a".into(), true.into()]))
        );
        assert!(ty("map(string)").read_env("a=b").is_err());
    }
}
