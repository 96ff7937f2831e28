//! The exec-form test: is an argument string a JSON array of strings, decoded as Go's
//! `encoding/json` would decode it into `[]interface{}`?
//!
//! BuildKit's rule: text starting with `[` that is valid JSON is the exec form when every element
//! is a string, and an error when some element is not; anything that is not valid JSON is the
//! shell form. Go's decoder differs from serde_json in the corners (lone UTF-16 surrogates become
//! U+FFFD, nesting up to 10000 levels, out-of-range numbers are a type error, not a syntax error),
//! so the decision is made here.

/// What the argument text is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonForm {
    /// A JSON array whose elements are all strings (decoded).
    Strings(Vec<String>),
    /// Valid JSON array with a non-string element.
    NotStrings,
    /// Not a (decodable) JSON array: shell form.
    NotJson,
}

/// Go's `encoding/json` maximum nesting depth.
const MAX_DEPTH: usize = 10_000;

/// Classifies `text` (leading whitespace already removed by the caller or not).
pub(crate) fn classify(text: &str) -> JsonForm {
    let mut p = Cursor {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    p.ws();
    if p.peek() != Some(b'[') {
        return JsonForm::NotJson;
    }
    p.i += 1;
    let mut strings = Vec::new();
    let mut all_strings = true;
    let mut type_error = false;
    p.ws();
    if p.peek() == Some(b']') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            match p.peek() {
                Some(b'"') => match p.string() {
                    Some(s) => strings.push(s),
                    None => return JsonForm::NotJson,
                },
                Some(_) => {
                    all_strings = false;
                    match p.skip_value() {
                        Some(ok) => type_error |= !ok,
                        None => return JsonForm::NotJson,
                    }
                }
                None => return JsonForm::NotJson,
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b']') => {
                    p.i += 1;
                    break;
                }
                _ => return JsonForm::NotJson,
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return JsonForm::NotJson;
    }
    if type_error {
        // Go reports the number overflow instead of the non-string element: shell form.
        return JsonForm::NotJson;
    }
    if all_strings {
        JsonForm::Strings(strings)
    } else {
        JsonForm::NotStrings
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        if self.s.get(self.i..self.i + lit.len())? == lit {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.i..self.i + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// Decodes a string at the cursor (which is on the opening quote).
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(self.text.get(start..self.i)?);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = self.peek()?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            out.push(self.utf16(unit));
                        }
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }

    /// Completes a `\u` escape the way Go does: a valid surrogate pair is joined, any other
    /// surrogate becomes U+FFFD (and the following escape is left for the next round).
    fn utf16(&mut self, unit: u32) -> char {
        if (0xD800..0xDC00).contains(&unit) {
            let save = self.i;
            if self.eat(b"\\u").is_some() {
                if let Some(low) = self.hex4() {
                    if (0xDC00..0xE000).contains(&low) {
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        return char::from_u32(c).unwrap_or('\u{fffd}');
                    }
                }
            }
            self.i = save;
            return '\u{fffd}';
        }
        char::from_u32(unit).unwrap_or('\u{fffd}')
    }

    /// Skips one JSON value. `Some(false)` when it is valid but holds a number Go cannot store
    /// in a float64; `None` on a syntax error.
    fn skip_value(&mut self) -> Option<bool> {
        let mut ok = true;
        // Containers are tracked on an explicit stack so deep nesting cannot overflow ours.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.ws();
            // A value.
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b't' => self.eat(b"true")?,
                b'f' => self.eat(b"false")?,
                b'n' => self.eat(b"null")?,
                b'-' | b'0'..=b'9' => ok &= self.number()?,
                open @ (b'[' | b'{') => {
                    self.i += 1;
                    stack.push(open);
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    self.ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => return None,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&top) = stack.last() else {
                    return Some(ok);
                };
                self.ws();
                match (self.peek()?, top) {
                    (b',', _) => {
                        self.i += 1;
                        if top == b'{' {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    (b']', b'[') | (b'}', b'{') => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b":")
    }

    /// Validates a number; `Some(false)` when it overflows a float64.
    fn number(&mut self) -> Option<bool> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let value: f64 = self.text.get(start..self.i)?.parse().ok()?;
        Some(value.is_finite())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonForm {
        JsonForm::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(classify("[]"), strings(&[]));
        assert_eq!(classify(" [ \"a\" ,\t\"b\" ] "), strings(&["a", "b"]));
        assert_eq!(
            classify(r#"["\" \\ \/ \b \f \n \r \t \u0000 \u2603"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \u{0} ☃"])
        );
        assert_eq!(classify(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(classify(r#"["\ud800x"]"#), strings(&["\u{fffd}x"]));
        assert_eq!(
            classify(r#"["\udc00\ud800\u0041"]"#),
            strings(&["\u{fffd}\u{fffd}A"])
        );
    }

    #[test]
    fn non_strings() {
        for t in [
            r#"["a", 1]"#,
            "[null]",
            "[true, false]",
            r#"[{"k": [1, {"x": null}]}]"#,
            "[[]]",
            "[-0.5e+3]",
        ] {
            assert_eq!(classify(t), JsonForm::NotStrings, "{t}");
        }
        assert_eq!(classify("[1e400]"), JsonForm::NotJson);
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(classify(&deep), JsonForm::NotJson);
        let ok_deep = format!("[{}{}]", "[".repeat(500), "]".repeat(500));
        assert_eq!(classify(&ok_deep), JsonForm::NotStrings);
    }

    #[test]
    fn not_json() {
        for t in [
            "",
            "x",
            "['a']",
            "[\"a\"",
            "[\"a\",]",
            "[\"a\"] b",
            "[01]",
            "[1.]",
            "[.5]",
            "[\"\t\"]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "[tru]",
            "[{\"a\" 1}]",
            "[{1: 2}]",
            "[1,]",
            "[,]",
            "[\u{a0}]",
        ] {
            assert_eq!(classify(t), JsonForm::NotJson, "{t:?}");
        }
    }

    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "[", "]", "{", "}", ",", ":", " ", "\t", "\"", "\"a\"", "\"k\":", "1", "-", "0", ".5",
        "e3", "true", "null", "fals", "\\", "\\n", "\\u0041", "x", "é", "\n",
    ];

    proptest! {
        /// Agrees with serde_json wherever Go and serde_json agree (no surrogates, shallow, finite).
        #[test]
        fn agrees_with_serde_json(parts in prop::collection::vec(prop::sample::select(PIECES), 0..16)) {
            let text = format!("[{}", parts.concat());
            let ours = classify(&text);
            match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                Ok(values) => {
                    let strings: Option<Vec<String>> =
                        values.iter().map(|v| v.as_str().map(str::to_string)).collect();
                    match strings {
                        Some(s) => prop_assert_eq!(ours, JsonForm::Strings(s)),
                        None => prop_assert_eq!(ours, JsonForm::NotStrings),
                    }
                }
                Err(_) => prop_assert_eq!(ours, JsonForm::NotJson),
            }
        }
    }
}
