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

/// The listing documents of a run larger than their cap together.
#[derive(Debug, thiserror::Error)]
#[error("directory listings larger than {0} bytes in all")]
pub struct ListingsTooLarge(pub u64);

/// This machine could not keep what the upstream sent (the temporary file
/// of a listing): retrying the request cannot help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Spool(pub String);

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
/// (from reqwest's error kinds and the types of its causes, never its text).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Transport {
    pub kind: TransportKind,
    pub(super) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The server's certificate was not accepted (pin, name, dates).
    ServerCertificate,
    /// The server refused our client certificate, or wants one.
    ClientCertificate,
    /// The TLS handshake found nothing in common (protocol version, ciphers).
    Handshake,
    /// A redirect that is not followed (another origin, too many hops).
    Redirect,
    /// The host name does not resolve.
    NoSuchHost,
    /// The proxy refused to open a tunnel (403, 407, …).
    ProxyRefused,
    /// No connection within `connect_timeout`: the host is skipped for the rest of the run.
    ConnectTimeout,
    /// The host was skipped: an earlier connection to it timed out in this run.
    HostDown,
    /// The connection could not be made (refused, unreachable).
    Connect,
    /// An answer did not come in time.
    Timeout,
    /// Anything else: a reset, a malformed answer, a body cut short.
    Other,
}

impl TransportKind {
    /// A retry on the same upstream cannot help.
    pub fn is_permanent(self) -> bool {
        !matches!(self, TransportKind::Connect | TransportKind::Timeout | TransportKind::Other)
    }
}

/// One short line for a failed request, typed by its kind: the origin and
/// the cause for what is known, the whole chain for anything else.
pub fn describe(e: reqwest::Error) -> anyhow::Error {
    let kind = classify(&e);
    let origin = e.url().map(super::origin).unwrap_or_default();
    let message = match (kind, own_cause(&e)) {
        (_, Some(ours)) => format!("{origin}: {ours}"),
        (TransportKind::ClientCertificate, _) => {
            format!("{origin}: the upstream requires a client certificate, or rejected ours ({})", last_cause(&e))
        }
        (TransportKind::Handshake, _) => format!(
            "{origin}: the TLS handshake failed, the server shares no protocol version or cipher with TLS 1.2/1.3 ({})",
            last_cause(&e)
        ),
        (TransportKind::ConnectTimeout, _) => {
            format!("{origin}: no connection within connect_timeout")
        }
        (TransportKind::Connect | TransportKind::Timeout | TransportKind::ServerCertificate, _) => {
            format!("{origin}: {}", last_cause(&e))
        }
        _ => chain(&e),
    };
    Transport { kind, message }.into()
}

/// The whole error chain on one line (reqwest hides the cause in its sources).
fn chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        src = s.source();
    }
    message
}

/// The innermost cause's text: the one that says what happened.
fn last_cause(e: &reqwest::Error) -> String {
    causes(e).last().map_or_else(|| e.to_string(), |c| c.to_string())
}

/// The errors behind `e`, outermost first. The chain is walked by `source()`
/// and into each `io::Error`, whose own `source()` skips what it wraps.
fn causes(e: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        out.push(c);
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    out
}

/// A cause of our own making (a name that does not resolve, a certificate
/// explained), which already says what happened.
fn own_cause(e: &reqwest::Error) -> Option<String> {
    causes(e).into_iter().find_map(|c| {
        if let Some(no) = c.downcast_ref::<super::resolve::NoSuchHost>() {
            return Some(no.to_string());
        }
        match c.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
                Some(other.0.downcast_ref::<super::tls::Untrusted>()?.to_string())
            }
            _ => None,
        }
    })
}

fn classify(e: &reqwest::Error) -> TransportKind {
    use rustls::AlertDescription as A;
    if e.is_redirect() {
        return TransportKind::Redirect;
    }
    let causes = causes(e);
    if causes.iter().any(|c| c.is::<super::resolve::NoSuchHost>()) {
        return TransportKind::NoSuchHost;
    }
    match causes.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
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
        Some(
            rustls::Error::PeerIncompatible(_)
            | rustls::Error::AlertReceived(A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity),
        ) => return TransportKind::Handshake,
        _ => {}
    }
    match (e.is_connect(), e.is_timeout()) {
        (true, true) => TransportKind::ConnectTimeout,
        (true, false) => TransportKind::Connect,
        (false, true) => TransportKind::Timeout,
        (false, false) => TransportKind::Other,
    }
}
