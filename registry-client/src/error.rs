//! Typed errors of the registry client.

use std::path::PathBuf;

/// One entry of a registry's `{"errors": [...]}` body (distribution spec error codes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RegistryErrorEntry {
    /// Error code such as `UNAUTHORIZED`, `DENIED`, `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`.
    #[serde(default)]
    pub code: String,
    /// Human message from the registry.
    #[serde(default)]
    pub message: String,
}

/// Everything that can go wrong talking to a registry or reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an error status.
    #[error("{reference}: {status} from registry {registry}{}", codes_suffix(.errors))]
    Registry {
        /// Reference (or repository) being worked on.
        reference: String,
        /// Registry host.
        registry: String,
        /// HTTP status code.
        status: u16,
        /// Parsed error entries of the body (may be empty).
        errors: Vec<RegistryErrorEntry>,
    },
    /// Authentication failed or access was denied.
    #[error("{reference}: {code}: {message} (registry {registry}, scope {scope})")]
    Auth {
        /// Reference (or repository) being worked on.
        reference: String,
        /// Registry host.
        registry: String,
        /// `UNAUTHORIZED` or `DENIED`.
        code: String,
        /// Explanation.
        message: String,
        /// The scope that was asked for (`repository:name:pull,push`).
        scope: String,
        /// Whether no credentials were offered (logging in may help).
        anonymous: bool,
    },
    /// A network error after all retries; `cause` says what kind (refused, DNS, TLS, ...).
    #[error("{context}: {cause}")]
    Http {
        /// What was being done.
        context: String,
        /// The kind of failure, read off the source chain.
        cause: NetCause,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry stopped sending data and the idle timeout ran out on every attempt.
    #[error("no data from {registry} for {} s while {doing} (gave up after {attempts} attempts)", secs(.idle))]
    Stalled {
        /// Registry host.
        registry: String,
        /// The idle timeout that ran out.
        idle: std::time::Duration,
        /// What was being done (`downloading sha256:…`).
        doing: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A malformed reference, digest, platform or manifest, or content that failed
    /// verification (nothing was stored).
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    /// No manifest of an index matches the requested platform.
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        /// Reference being worked on.
        reference: String,
        /// Platform asked for.
        platform: String,
        /// Platforms the index offers.
        available: String,
    },
    /// Reading or writing the Docker client configuration failed.
    #[error("docker config {path}: {reason}")]
    Config {
        /// The config.json path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A `docker-credential-*` helper failed.
    #[error("credential helper docker-credential-{helper}: {reason}")]
    CredentialHelper {
        /// Helper name (suffix of the program).
        helper: String,
        /// What went wrong.
        reason: String,
    },
    /// A TLS certificate file could not be used.
    #[error("certificate {path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What went wrong (reading it, parsing it).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The registry broke the protocol (missing Location header, bad range, ...).
    #[error("registry {registry}: protocol error: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// What was wrong.
        reason: String,
    },
}

/// What kind of network failure a `reqwest::Error` is, for the message and the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCause {
    /// Nothing listens on the port (or a firewall rejected the connection).
    Refused,
    /// The host name did not resolve.
    Dns(String),
    /// The server's certificate is not trusted (unknown authority, expired, wrong name).
    Certificate(String),
    /// The server answered the TLS handshake with something else (it speaks plain HTTP).
    NotTls(String),
    /// The TLS handshake failed for another reason.
    Tls(String),
    /// The connection was reset or closed early.
    Reset(String),
    /// Connecting or reading timed out.
    Timeout,
    /// Anything else: the innermost message of the chain.
    Other(String),
}

impl std::fmt::Display for NetCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetCause::Refused => f.write_str("connection refused"),
            NetCause::Dns(d) => write!(f, "DNS lookup failed: {d}"),
            NetCause::Certificate(d) => write!(f, "TLS certificate not trusted: {d}"),
            NetCause::NotTls(d) => write!(
                f,
                "TLS handshake failed: {d} (the server seems to speak plain HTTP)"
            ),
            NetCause::Tls(d) => write!(f, "TLS handshake failed: {d}"),
            NetCause::Reset(d) => write!(f, "connection broken: {d}"),
            NetCause::Timeout => f.write_str("timed out"),
            NetCause::Other(d) => f.write_str(d),
        }
    }
}

impl NetCause {
    /// Reads the kind of failure off `e`'s source chain (reqwest only says "error sending
    /// request"; the io, DNS and rustls errors underneath say what happened).
    pub fn of(e: &reqwest::Error) -> NetCause {
        let mut innermost = e.to_string();
        let mut dns = false;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            // io::Error::source() skips the error it wraps, so look inside explicitly.
            let mut inner = err;
            while let Some(io) = inner.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return NetCause::Refused,
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof => return NetCause::Reset(io.to_string()),
                    std::io::ErrorKind::TimedOut => return NetCause::Timeout,
                    _ => {}
                }
                match io.get_ref() {
                    Some(i) => inner = i,
                    None => break,
                }
            }
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return tls_cause(tls);
            }
            // hyper-util's resolver error type is private; its message is stable.
            dns |= err.to_string() == "dns error";
            innermost = err.to_string();
            next = err.source();
        }
        if dns {
            NetCause::Dns(innermost)
        } else if innermost.starts_with("connection closed before message completed") {
            // hyper's IncompleteMessage: its type is not public through reqwest.
            NetCause::Reset(innermost)
        } else if e.is_timeout() {
            NetCause::Timeout
        } else {
            NetCause::Other(innermost)
        }
    }

    /// Whether trying again soon may help: not for refused connections, failed lookups or
    /// certificates, which fail the same way until someone changes something.
    pub fn is_transient(&self) -> bool {
        match self {
            NetCause::Refused
            | NetCause::Certificate(_)
            | NetCause::NotTls(_)
            | NetCause::Tls(_) => false,
            // "Temporary failure in name resolution" (EAI_AGAIN) is the one lookup worth retrying.
            NetCause::Dns(d) => d.contains("Temporary failure"),
            NetCause::Reset(_) | NetCause::Timeout | NetCause::Other(_) => true,
        }
    }
}

fn tls_cause(e: &rustls::Error) -> NetCause {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => NetCause::Certificate(match c {
            C::UnknownIssuer => "certificate signed by unknown authority".to_string(),
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".to_string(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate is not valid for this host name ({e})")
            }
            _ => e.to_string(),
        }),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            NetCause::NotTls(e.to_string())
        }
        _ => NetCause::Tls(e.to_string()),
    }
}

fn secs(d: &std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

fn codes_suffix(errors: &[RegistryErrorEntry]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{}: {}", e.code, e.message)
            }
        })
        .collect();
    format!(": {}", parts.join("; "))
}

impl Error {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A network error, its kind read off the chain.
    pub fn http(context: impl Into<String>, source: reqwest::Error) -> Self {
        Error::Http {
            context: context.into(),
            cause: NetCause::of(&source),
            source,
        }
    }

    /// Names `what` (the reference being worked on) in errors that only named the registry.
    pub fn about(self, what: &str) -> Self {
        match self {
            Error::Http {
                context,
                cause,
                source,
            } if !context.starts_with(what) => Error::Http {
                context: format!("{what}: {context}"),
                cause,
                source,
            },
            Error::Registry {
                registry,
                status,
                errors,
                ..
            } => Error::Registry {
                reference: what.to_string(),
                registry,
                status,
                errors,
            },
            e => e,
        }
    }

    /// The first registry error code, if the registry sent one.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            Error::Registry { errors, .. } => errors.first().map(|e| e.code.as_str()),
            Error::Auth { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// The HTTP status, when the registry answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a distribution-spec error body; unknown shapes give an empty list.
pub(crate) fn parse_error_body(body: &[u8]) -> Vec<RegistryErrorEntry> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<RegistryErrorEntry>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_names_code_and_reference() {
        let errors = parse_error_body(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        let e = Error::Registry {
            reference: "127.0.0.1:5000/x:latest".into(),
            registry: "127.0.0.1:5000".into(),
            status: 404,
            errors,
        };
        let s = e.to_string();
        assert!(s.contains("127.0.0.1:5000/x:latest"), "{s}");
        assert!(s.contains("MANIFEST_UNKNOWN"), "{s}");
        assert!(s.contains("404"), "{s}");
        assert_eq!(e.registry_code(), Some("MANIFEST_UNKNOWN"));
    }

    #[test]
    fn garbage_error_body_is_empty() {
        assert!(parse_error_body(b"<html>").is_empty());
    }
}
