//! Credentials and authentication: Docker's config.json, credential helpers,
//! `WWW-Authenticate` challenges and bearer tokens.

pub mod challenge;
pub mod config;
pub mod helper;
pub mod token;

/// A username and secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (`<token>` means `password` is an identity token).
    pub username: String,
    /// Password or identity token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of a `Basic` Authorization header.
    pub fn basic_header(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}
