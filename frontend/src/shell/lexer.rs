//! The shell-word lexer: BuildKit's `ProcessWord`/`ProcessWords` (quotes, escapes, `$` expansion,
//! word splitting after expansion).

use std::collections::BTreeSet;

use super::pattern::Pattern;
use super::vars::VarLookup;

/// Nesting limit for `${a:-${b:-...}}` so adversarial input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// How much larger than the word as written its expansion may grow (1 MiB):
/// values that double from ARG to ARG would otherwise exhaust memory.
pub const MAX_WORD_GROWTH: usize = 1 << 20;

/// Why a word could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// `${` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${v/p` without the `/` after the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:..}`, `${{..}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier the lexer does not know, such as `:=`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` / `${v:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// Variable name.
        name: String,
        /// The message from the word, or the default one.
        message: String,
    },
    /// A quote or `${...}` part that is never closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// A bad `#`/`%`/`/` pattern.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern text.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Substitutions nested too deeply.
    #[error("substitutions nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// The expansion grew more than [`MAX_WORD_GROWTH`] bytes beyond the word.
    #[error("the expanded value is too large (more than 1 MiB larger than the word as written)")]
    TooLarge,
    /// A `#`, `%` or `/` pattern would take too long to match against the value.
    #[error("the pattern substitution is too large to compute (value or pattern too long)")]
    TooExpensive,
}

/// A processing failure together with the word it happened in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process \"{}\": {source}", shorten(word))]
pub struct WordError {
    /// The input word.
    pub word: String,
    /// The cause.
    #[source]
    pub source: ShellError,
}

/// The word for an error message: at most 200 characters.
fn shorten(word: &str) -> String {
    const MAX: usize = 200;
    match word.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &word[..i]),
        None => word.to_string(),
    }
}

/// The outcome of processing one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word with quotes removed and variables expanded.
    pub result: String,
    /// The same, split into words on unquoted whitespace after expansion.
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// Shell-word lexer with the active escape character and BuildKit's processing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape character and default modes.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The lexer of COPY/ADD heredoc bodies (BuildKit's `ExpandRaw`): `\`
    /// escapes whatever the Dockerfile's escape is, quotes are literal.
    pub fn heredoc_body() -> Self {
        Lexer {
            skip_process_quotes: true,
            ..Lexer::new('\\')
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, WordError> {
        self.process(word, env).map(|e| e.result)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn VarLookup) -> Result<Vec<String>, WordError> {
        self.process(word, env).map(|e| e.words)
    }

    /// Expands `word`, returning the result, the words and which variables were used.
    pub fn process(&self, word: &str, env: &dyn VarLookup) -> Result<Expansion, WordError> {
        self.run(word, env, true)
    }

    /// Like [`Lexer::process`] but without word splitting (`words` stays empty): cheaper when
    /// only the expanded string and the variables are needed.
    pub fn expand(&self, word: &str, env: &dyn VarLookup) -> Result<Expansion, WordError> {
        self.run(word, env, false)
    }

    fn run(
        &self,
        word: &str,
        env: &dyn VarLookup,
        want_words: bool,
    ) -> Result<Expansion, WordError> {
        // Fast path: nothing to expand, unquote or unescape (most words of a Dockerfile).
        if !word.contains(['$', '\'', '"', self.escape]) {
            return Ok(Expansion {
                result: word.to_string(),
                words: if !want_words {
                    Vec::new()
                } else {
                    word.split(char::is_whitespace)
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                        .collect()
                },
                matched: BTreeSet::new(),
                unmatched: BTreeSet::new(),
            });
        }
        let mut sw = ShellWord {
            lex: *self,
            src: word,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
            want_words,
            limit: word.len().saturating_add(MAX_WORD_GROWTH),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(source) => Err(WordError {
                word: word.to_string(),
                source,
            }),
        }
    }
}

/// Accumulates words: unquoted whitespace from the source or from an expansion separates words.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
    /// Splitting not wanted (nested parts, or the caller only needs the string).
    off: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if self.off {
            return;
        }
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        if self.off {
            return;
        }
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        if self.off {
            return;
        }
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        if self.off {
            return;
        }
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct ShellWord<'a> {
    lex: Lexer,
    /// The word; `pos` is a byte offset into it.
    src: &'a str,
    pos: usize,
    env: &'a dyn VarLookup,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
    want_words: bool,
    /// The largest result (bytes) the word may expand to.
    limit: usize,
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|r| r.chars().next())
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += c.map_or(0, char::len_utf8);
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_string());
                }
                Some(v.to_string())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_string());
                }
                None
            }
        }
    }

    /// Fails once a (partial) result of `len` bytes passes the word's limit.
    fn check_size(&self, len: usize) -> Result<(), ShellError> {
        if len > self.limit {
            return Err(ShellError::TooLarge);
        }
        Ok(())
    }

    /// Processes up to `stop` (consumed) or the end of input when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ShellError::TooDeep);
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words {
            off: !self.want_words || stop.is_some(),
            ..Words::default()
        };
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += c.len_utf8();
                return Ok((result, words.finish()));
            }
            let quotes = !self.lex.skip_process_quotes;
            if c == '$' {
                let s = self.process_dollar()?;
                self.check_size(result.len() + s.len())?;
                result.push_str(&s);
                words.add_string(&s);
            } else if quotes && c == '\'' {
                let s = self.process_single_quote()?;
                result.push_str(&s);
                words.add_raw_string(&s);
            } else if quotes && c == '"' {
                let s = self.process_double_quote()?;
                self.check_size(result.len() + s.len())?;
                result.push_str(&s);
                words.add_raw_string(&s);
            } else {
                self.pos += c.len_utf8();
                if c == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // The escape escapes the next character; at the end of input it disappears.
                    let Some(e) = self.next() else { break };
                    words.add_raw_char(e);
                    result.push(e);
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        if stop.is_some() {
            return Err(ShellError::Unterminated(match stop {
                Some('}') => "}",
                Some('/') => "/",
                _ => "delimiter",
            }));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellError::Unterminated("single-quote")),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ShellError> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::Unterminated("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    self.check_size(result.len() + v.len())?;
                    result.push_str(&v);
                }
                Some(mut c) => {
                    self.pos += c.len_utf8();
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            // An escape at the very end is dropped.
                            None => continue,
                            // Only `"`, `$` and the escape itself can be escaped; other escapes stay.
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += n.len_utf8();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    /// Expands the `$name` or `${...}` at the cursor (on the `$`).
    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.pos += 1; // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // the `{`
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.process_modifier(name, ch),
            '/' => self.process_replace(name),
            _ => Err(ShellError::UnsupportedModifier(ch.to_string())),
        }
    }

    /// `${name<op>word}` after the operator's first character `ch`: `:-` `-` `:+` `+` `:?`
    /// `?` and the prefix/suffix trims `#` `##` `%` `%%`.
    fn process_modifier(&mut self, name: String, mut ch: char) -> Result<String, ShellError> {
        let mut modifier = ch.to_string();
        let null_is_unset = ch == ':';
        if null_is_unset {
            match self.next() {
                Some(c) => {
                    ch = c;
                    modifier.push(c);
                }
                None => return Err(ShellError::MissingBrace),
            }
        }
        let raw = ch == '#' || ch == '%';
        let word = match self.process_stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(ShellError::Unterminated(_)) if self.peek().is_none() => {
                return Err(ShellError::MissingBrace)
            }
            Err(e) => return Err(e),
        };
        let value = self.get_env(&name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let empty = value
            .as_deref()
            .is_none_or(|v| null_is_unset && v.is_empty());
        match ch {
            '-' => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => match value {
                None => Err(ShellError::Required {
                    name,
                    message: or_default(word, "is not allowed to be unset"),
                }),
                Some(v) if null_is_unset && v.is_empty() => Err(ShellError::Required {
                    name,
                    message: or_default(word, "is not allowed to be empty"),
                }),
                Some(v) => Ok(v),
            },
            '#' | '%' => trim_affix(ch, word, value.unwrap_or_default()),
            _ => Err(ShellError::UnsupportedModifier(modifier)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}` (every match).
    fn process_replace(&mut self, name: String) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pat = match self.process_stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(ShellError::Unterminated(_)) if self.peek().is_none() => {
                return Err(ShellError::MissingSlash)
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(ShellError::Unterminated(_)) if self.peek().is_none() => {
                return Err(ShellError::MissingBrace)
            }
            Err(e) => return Err(e),
        };
        let value = self.get_env(&name);
        let Some(value) = value else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pat}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        compile(&pat)?
            .replace(&value, &replacement, all, self.limit)
            .map_err(|_| ShellError::TooExpensive)?
            .ok_or(ShellError::TooLarge)
    }

    /// Reads a variable name: letters, digits and `_`; a leading digit run is a positional
    /// parameter; a special parameter (`@*#?-$!0`) is one character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += d.len_utf8();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += c.len_utf8();
        }
        name
    }
}

/// `${name#pat}` / `##` (prefix) or `%` / `%%` (suffix) trimmed from `value`; a doubled
/// operator selects the longest match.
fn trim_affix(ch: char, word: String, value: String) -> Result<String, ShellError> {
    let (pat, longest) = match word.strip_prefix(ch) {
        Some(rest) => (rest.to_string(), true),
        None => (word, false),
    };
    let pattern = compile(&pat)?;
    if ch == '%' {
        pattern.trim_suffix(&value, longest)
    } else {
        pattern.trim_prefix(&value, longest)
    }
    .ok_or(ShellError::TooExpensive)
}

fn or_default(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_string()
    } else {
        word
    }
}

fn compile(pat: &str) -> Result<Pattern, ShellError> {
    Pattern::compile(pat).map_err(|e| ShellError::InvalidPattern {
        pattern: pat.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::vars::env_from_pairs;

    fn word(s: &str, env: &[&str]) -> Result<String, WordError> {
        Lexer::default().process_word(s, &env_from_pairs(env))
    }

    #[test]
    fn expansion_forms() {
        let env = ["A=hello world", "E=", "P=/usr/local/bin"];
        assert_eq!(word("${A}", &env).unwrap(), "hello world");
        assert_eq!(word("${E-x}", &env).unwrap(), "");
        assert_eq!(word("${E:-x}", &env).unwrap(), "x");
        assert_eq!(word("${E+x}", &env).unwrap(), "x");
        assert_eq!(word("${E:+x}", &env).unwrap(), "");
        assert_eq!(word("${P#*/}", &env).unwrap(), "usr/local/bin");
        assert_eq!(word("${P##*/}", &env).unwrap(), "bin");
        assert_eq!(word("${P%/*}", &env).unwrap(), "/usr/local");
        assert_eq!(word("${P%%/*}", &env).unwrap(), "");
        assert_eq!(word("${A/o/0}", &env).unwrap(), "hell0 world");
        assert_eq!(word("${A//o/0}", &env).unwrap(), "hell0 w0rld");
        assert_eq!(
            word("${U?need U}", &env).unwrap_err().source,
            ShellError::Required {
                name: "U".into(),
                message: "need U".into()
            }
        );
    }

    #[test]
    fn expansion_growth_is_bounded() {
        let big = format!("A={}", "a".repeat(MAX_WORD_GROWTH / 2 + 100));
        let env = [big.as_str()];
        assert_eq!(word("$A", &env).unwrap().len(), MAX_WORD_GROWTH / 2 + 100);
        for w in ["$A$A", "\"$A$A\"", "${A//a/aa}", "${A}x${A:-y}"] {
            assert_eq!(
                word(w, &env).unwrap_err().source,
                ShellError::TooLarge,
                "{w}"
            );
        }
        let msg = word("$A$A", &env).unwrap_err().to_string();
        assert!(
            msg.len() < 400,
            "the error does not repeat the value: {msg}"
        );
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let env = env_from_pairs(["X=1"]);
        assert_eq!(lex.process_word("a`$X", &env).unwrap(), "a$X");
        assert_eq!(lex.process_word("c:\\dir", &env).unwrap(), "c:\\dir");
    }

    #[test]
    fn used_variables_are_reported() {
        let env = env_from_pairs(["A=1"]);
        let e = Lexer::default().process("$A ${B:-x}", &env).unwrap();
        assert!(e.matched.contains("A"));
        assert!(e.unmatched.contains("B"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let w = "${a:-".repeat(10_000);
        assert!(word(&w, &[]).is_err());
    }
}
