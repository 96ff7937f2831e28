//! Parsing `WWW-Authenticate` challenges (RFC 7235) as registries send them.

use std::collections::BTreeMap;

/// An authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic.
    Basic,
    /// Bearer token from `realm`, for `service`, optionally naming the `scope` needed.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to send back.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
        /// `error` parameter (e.g. `insufficient_scope`).
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value; `None` for schemes we don't speak.
pub fn parse(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
            error: params.get("error").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let c = parse(r#"Bearer realm="http://127.0.0.1:5003/token",service="kiln-test-registry",scope="repository:a/b:pull,push",error="insufficient_scope""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "http://127.0.0.1:5003/token".into(),
                service: Some("kiln-test-registry".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            }
        );
    }

    #[test]
    fn parses_basic_and_unknown() {
        assert_eq!(
            parse(r#"Basic realm="kiln-test-basic""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse("Negotiate"), None);
        assert_eq!(
            parse("Bearer service=x"),
            None,
            "bearer without realm is unusable"
        );
    }

    #[test]
    fn escaped_quotes_and_spaces() {
        let c = parse(r#"bearer  realm = "http://x/t\"q" , service=plain"#).unwrap();
        let Challenge::Bearer { realm, service, .. } = c else {
            panic!()
        };
        assert_eq!(realm, "http://x/t\"q");
        assert_eq!(service.as_deref(), Some("plain"));
    }
}
