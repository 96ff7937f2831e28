//! Bearer tokens: asking the realm for a scope and caching the answer until it expires.

use super::Credentials;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Tokens without `expires_in` live 60 s (distribution spec default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a little before the registry would reject the token.
const EARLY_RENEWAL: Duration = Duration::from_secs(10);

/// A token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    /// The bearer token.
    pub value: String,
    /// When to ask again.
    pub renew_at: Instant,
}

/// Tokens of one registry, keyed by the requested scopes.
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, Token>,
}

impl TokenCache {
    /// A still-valid token for these scopes.
    pub fn get(&self, scopes: &str) -> Option<&Token> {
        self.tokens
            .get(scopes)
            .filter(|t| t.renew_at > Instant::now())
    }

    /// Remembers a token.
    pub fn put(&mut self, scopes: &str, token: Token) {
        self.tokens.insert(scopes.to_string(), token);
    }

    /// Forgets a token (after the registry refused it).
    pub fn forget(&mut self, scopes: &str) {
        self.tokens.remove(scopes);
    }
}

#[derive(serde::Deserialize)]
struct Reply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Parses a token endpoint reply.
pub fn parse_reply(body: &[u8]) -> Option<Token> {
    let r: Reply = serde_json::from_slice(body).ok()?;
    let value = r.token.filter(|t| !t.is_empty()).or(r.access_token)?;
    let lifetime = r
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME);
    let lifetime = lifetime
        .saturating_sub(EARLY_RENEWAL)
        .max(Duration::from_secs(1));
    Some(Token {
        value,
        renew_at: Instant::now() + lifetime,
    })
}

/// Asks `realm` for a token covering `scopes` (GET with service and scope parameters, Basic
/// credentials when we have them).
pub async fn fetch(
    http: &reqwest::Client,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<Token> {
    let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: format!("bad token realm {realm:?}: {e}"),
    })?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", s);
        }
    }
    let mut req = http.get(url);
    if let Some(c) = creds {
        req = req.header(reqwest::header::AUTHORIZATION, c.basic_header());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::http(format!("token request to {realm}"), e))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Error::http(format!("token reply from {realm}"), e))?;
    if status.as_u16() == 401 || status.as_u16() == 403 {
        let who = creds
            .map(|c| format!("user {:?}", c.username))
            .unwrap_or_else(|| "anonymous access".to_string());
        return Err(Error::Auth {
            reference: registry.to_string(),
            registry: registry.to_string(),
            code: "UNAUTHORIZED".into(),
            message: format!("token server {realm} refused {who} (wrong username or password?)"),
            scope: scopes.join(" "),
            anonymous: creds.is_none(),
        });
    }
    if !status.is_success() {
        return Err(Error::Protocol {
            registry: registry.to_string(),
            reason: format!("token server {realm} answered {status}"),
        });
    }
    parse_reply(&body).ok_or_else(|| Error::Protocol {
        registry: registry.to_string(),
        reason: format!("token server {realm} sent no token"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_and_expiry() {
        let t = parse_reply(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.renew_at > Instant::now() + Duration::from_secs(200));
        let t = parse_reply(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value, "xyz");
        assert!(parse_reply(br#"{"nothing":1}"#).is_none());
    }

    #[test]
    fn cache_expires() {
        let mut c = TokenCache::default();
        c.put(
            "s",
            Token {
                value: "old".into(),
                renew_at: Instant::now() - Duration::from_secs(1),
            },
        );
        assert!(c.get("s").is_none());
        c.put(
            "s",
            Token {
                value: "new".into(),
                renew_at: Instant::now() + Duration::from_secs(60),
            },
        );
        assert_eq!(c.get("s").unwrap().value, "new");
        c.forget("s");
        assert!(c.get("s").is_none());
    }
}
