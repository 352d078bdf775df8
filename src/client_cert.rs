//! The client certificate, checked before any request: it and its key
//! belong together, it is valid now, and when it expires (shown by
//! `mirrors` and `status`, a metric, and a warning 30 days ahead).

use std::path::Path;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::output::rfc3339;

/// Warn this long before the client certificate expires.
pub const EXPIRY_WARNING: i64 = 30 * 86_400;

/// What the checked client certificate says of itself.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Unix time it stops being valid.
    pub not_after: i64,
    pub subject: String,
}

impl ClientCert {
    /// When it expires, in RFC 3339.
    pub fn expires(&self) -> String {
        rfc3339(self.not_after)
    }
}

/// Check `cert` and `key` as a pair, and the certificate's dates at `now`:
/// a mismatch or an expired certificate is a configuration error naming both
/// files, before any request is made.
pub fn check(cert: &Path, key: &Path, now: SystemTime) -> Result<ClientCert, ConfigError> {
    let named =
        |why: String| ConfigError(format!("client_cert {} / client_key {}: {why}", cert.display(), key.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| named(format!("no readable PEM certificate ({e})")))?;
    let first = chain.first().cloned().ok_or_else(|| named("no certificate in the PEM file".into()))?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| named(format!("no readable PEM private key ({e})")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| named(format!("the key is not usable ({e})")))?;
    rustls::sign::CertifiedKey::new(chain, signing).keys_match().map_err(|_| {
        named("the key does not belong to the certificate; fix: give the key the certificate was issued for".into())
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| named(format!("the certificate cannot be parsed ({e})")))?;
    let validity = parsed.validity();
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if now > not_after {
        return Err(named(format!("the certificate expired at {}; fix: renew it", rfc3339(not_after))));
    }
    if now < not_before {
        return Err(named(format!("the certificate is not valid before {}; is the clock right?", rfc3339(not_before))));
    }
    Ok(ClientCert { not_after, subject: parsed.subject().to_string() })
}
