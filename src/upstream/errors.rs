//! What a failed request was, by type: an HTTP status that is not
//! success, a body over its cap, or a transport failure classified from
//! reqwest's error kinds and rustls' error types (never from its text).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::parse_http_date;

pub(super) fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<HttpStatus>().is_some_and(|s| s.status == 404)
}

/// An HTTP status that is not success.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}{hint}")]
pub struct HttpStatus {
    pub status: u16,
    hint: &'static str,
    /// The server's `Retry-After`, if it gave one.
    pub retry_after: Option<Duration>,
}

/// A body larger than its cap: retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// Map a non-success status to an error that says what it likely means.
pub(super) fn check_status(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let hint = match status.as_u16() {
        400 | 495 | 496 => " (the upstream may require a client certificate, or rejected ours)",
        401 | 403 => " (access denied)",
        _ => "",
    };
    let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        v.trim().parse::<u64>().ok().or_else(|| parse_http_date(v).map(|t| (t - now).max(0) as u64))
    });
    Err(HttpStatus { status: status.as_u16(), hint, retry_after: retry_after.map(Duration::from_secs) }.into())
}

/// A request that got no usable HTTP answer, classified by what went wrong
/// (from reqwest's error kinds and rustls' error types, never its text).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Transport {
    pub kind: TransportKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The server's certificate was not accepted (pin, name, dates).
    ServerCertificate,
    /// The server refused our client certificate, or wants one.
    ClientCertificate,
    /// A redirect that is not followed (another origin, too many hops).
    Redirect,
    /// The connection could not be made (refused, unreachable, handshake timeout).
    Connect,
    /// An answer did not come in time.
    Timeout,
    /// Anything else: a reset, a malformed answer, a body cut short.
    Other,
}

impl TransportKind {
    /// A retry on the same upstream cannot help.
    pub fn is_permanent(self) -> bool {
        matches!(self, TransportKind::ServerCertificate | TransportKind::ClientCertificate | TransportKind::Redirect)
    }
}

/// The whole error chain on one line (reqwest hides the TLS cause in its
/// sources), typed by its kind.
pub fn describe(e: reqwest::Error) -> anyhow::Error {
    let kind = classify(&e);
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        src = s.source();
    }
    if kind == TransportKind::ClientCertificate {
        message.push_str(" (the upstream requires a client certificate, or rejected ours)");
    }
    Transport { kind, message }.into()
}

fn classify(e: &reqwest::Error) -> TransportKind {
    use rustls::AlertDescription as A;
    if e.is_redirect() {
        return TransportKind::Redirect;
    }
    match rustls_cause(e) {
        Some(rustls::Error::InvalidCertificate(_)) => return TransportKind::ServerCertificate,
        Some(rustls::Error::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        )) => return TransportKind::ClientCertificate,
        _ => {}
    }
    if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

/// The rustls error behind `e`, if any. The chain is walked by `source()`
/// and into each `io::Error`, whose own `source()` skips what it wraps.
fn rustls_cause(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}
