//! Per-instruction argument parsing (BuildKit's line parsers): JSON (exec) form, shell form,
//! whitespace lists, ENV/LABEL key-value forms, HEALTHCHECK and ONBUILD.

use super::command::split_whitespace_runs;
use super::json_form::{classify, JsonForm};

/// The arguments of one instruction.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Arguments {
    pub args: Vec<String>,
    pub json: bool,
}

/// Why the arguments of an instruction could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ArgumentError {
    /// `ENV name` / `LABEL name` without value.
    MissingValue(&'static str),
    /// A word without `=` in the `k=v` form.
    NoEquals(String),
    /// A JSON array with a non-string element.
    NotStringArray,
}

/// How an instruction's arguments are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// ADD, COPY, VOLUME: JSON array or whitespace-separated list.
    MaybeJsonToList,
    /// ARG: words (quotes kept).
    NameOrNameVal,
    /// CMD, ENTRYPOINT, RUN, SHELL: JSON array or the whole string.
    MaybeJson,
    /// ENV.
    Env,
    /// LABEL.
    Label,
    /// EXPOSE, FROM: whitespace-separated list.
    WhitespaceList,
    /// HEALTHCHECK: a type word then MaybeJson.
    Healthcheck,
    /// MAINTAINER, STOPSIGNAL, USER, WORKDIR: the whole string.
    String,
    /// ONBUILD: a nested instruction.
    SubCommand,
    /// An unknown instruction: BuildKit records one empty argument.
    Ignore,
}

/// The argument form of instruction `keyword` (lower-case).
pub(crate) fn form_of(keyword: &str) -> Form {
    match keyword {
        "add" | "copy" | "volume" => Form::MaybeJsonToList,
        "arg" => Form::NameOrNameVal,
        "cmd" | "entrypoint" | "run" | "shell" => Form::MaybeJson,
        "env" => Form::Env,
        "label" => Form::Label,
        "expose" | "from" => Form::WhitespaceList,
        "healthcheck" => Form::Healthcheck,
        "maintainer" | "stopsignal" | "user" | "workdir" => Form::String,
        "onbuild" => Form::SubCommand,
        _ => Form::Ignore,
    }
}

/// Parses `rest` (flags already removed) in `form`; `SubCommand` is handled by the caller.
pub(crate) fn parse_arguments(
    form: Form,
    rest: &str,
    escape: char,
) -> Result<Arguments, ArgumentError> {
    let plain = |args: Vec<String>| Ok(Arguments { args, json: false });
    match form {
        Form::MaybeJsonToList => match parse_json(rest)? {
            Some(args) => Ok(Arguments { args, json: true }),
            None => plain(whitespace_list(rest)),
        },
        Form::NameOrNameVal => plain(parse_words(rest, escape)),
        Form::MaybeJson => maybe_json(rest),
        Form::Env => plain(parse_name_val(rest, "ENV", escape)?),
        Form::Label => plain(parse_name_val(rest, "LABEL", escape)?),
        Form::WhitespaceList => plain(whitespace_list(rest)),
        Form::Healthcheck => parse_health(rest),
        Form::String => plain(if rest.is_empty() {
            Vec::new()
        } else {
            vec![rest.to_string()]
        }),
        Form::SubCommand => plain(Vec::new()),
        Form::Ignore => plain(vec![String::new()]),
    }
}

fn whitespace_list(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_whitespace_runs(rest, 0)
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn maybe_json(rest: &str) -> Result<Arguments, ArgumentError> {
    if rest.is_empty() {
        return Ok(Arguments::default());
    }
    Ok(match parse_json(rest)? {
        Some(args) => Arguments { args, json: true },
        None => Arguments {
            args: vec![rest.to_string()],
            json: false,
        },
    })
}

/// `Ok(Some(..))` when `rest` is a JSON array of strings, `Ok(None)` when it is not JSON (shell
/// form), an error when it is a JSON array holding something other than strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, ArgumentError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match classify(rest) {
        JsonForm::Strings(args) => Ok(Some(args)),
        JsonForm::NotStrings => Err(ArgumentError::NotStringArray),
        JsonForm::NotJson => Ok(None),
    }
}

fn parse_health(rest: &str) -> Result<Arguments, ArgumentError> {
    let sep = rest
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i);
    if sep == 0 {
        return Ok(Arguments::default());
    }
    let typ = &rest[..sep];
    let cmd = rest[sep..].trim_start();
    let mut parsed = maybe_json(cmd)?;
    parsed.args.insert(0, typ.to_string());
    Ok(parsed)
}

/// BuildKit's `parseWords`: splits on whitespace, keeping quotes and escapes in the words.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(mut ch) = chars.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                match chars.next() {
                    None => continue,
                    Some(next) => {
                        word.push(ch);
                        ch = next;
                    }
                }
            }
            word.push(ch);
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            match chars.next() {
                None => {
                    phase = Phase::Word;
                    continue;
                }
                Some(next) => {
                    word.push(ch);
                    ch = next;
                }
            }
        }
        word.push(ch);
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV/LABEL: legacy `KEY name value` or `KEY a=b c=d`; returns `key value sep` triples.
fn parse_name_val(
    rest: &str,
    key: &'static str,
    escape: char,
) -> Result<Vec<String>, ArgumentError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let parts = split_whitespace_runs(rest, 2);
        return match parts.as_slice() {
            [name, value] => Ok(vec![name.to_string(), value.to_string(), String::new()]),
            _ => Err(ArgumentError::MissingValue(key)),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(ArgumentError::NoEquals(word));
        };
        out.push(name.to_string());
        out.push(value.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="x y" b=c\ d"#, '\\'),
            vec![r#"a="x y""#, r"b=c\ d"]
        );
        assert_eq!(parse_words("'a\\'b'", '\\'), vec!["'a\\'b'"]);
        assert_eq!(parse_words("x \\", '\\'), vec!["x"]);
    }

    #[test]
    fn env_forms() {
        let p = |s| parse_arguments(Form::Env, s, '\\');
        assert_eq!(
            p("name value more").unwrap().args,
            vec!["name", "value more", ""]
        );
        assert_eq!(
            p("a=1 b=2").unwrap().args,
            vec!["a", "1", "=", "b", "2", "="]
        );
        assert_eq!(p("PATH"), Err(ArgumentError::MissingValue("ENV")));
        assert_eq!(p("a=1 b"), Err(ArgumentError::NoEquals("b".into())));
        assert!(p("").unwrap().args.is_empty());
    }

    #[test]
    fn json_or_shell() {
        let p = |s| parse_arguments(Form::MaybeJson, s, '\\');
        let j = p(r#"["a", "b"]"#).unwrap();
        assert!(j.json);
        assert_eq!(j.args, vec!["a", "b"]);
        let s = p("['a']").unwrap();
        assert!(!s.json);
        assert_eq!(s.args, vec!["['a']"]);
        assert_eq!(p(r#"["a", ["b"]]"#), Err(ArgumentError::NotStringArray));
        assert_eq!(p(r#"["a"] x"#).unwrap().args, vec![r#"["a"] x"#]);
    }

    #[test]
    fn healthcheck() {
        let p = |s| parse_arguments(Form::Healthcheck, s, '\\').unwrap().args;
        assert_eq!(p("CMD   a b"), vec!["CMD", "a b"]);
        assert_eq!(p("NONE"), vec!["NONE"]);
        assert!(p("").is_empty());
    }
}
