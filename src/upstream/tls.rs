//! The TLS settings of every connection: the upstreams' roots (the pinned
//! `ca_file`, else the system's), the client certificate, and for a TLS
//! proxy the proxy's own roots (`proxy_ca_file`). The proxy's roots vouch for
//! the proxy's name alone: trusting a proxy never widens the upstream pin,
//! and the upstream's chain is checked end to end inside the CONNECT tunnel.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{Config, ConfigError};

/// The client's TLS configuration, or a one-line error naming the file.
pub fn client_config(cfg: &Config) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trust = match &cfg.tls.ca_file {
        Some(ca) => format!("ca_file {}", ca.display()),
        None => "the system's roots".to_owned(),
    };
    let upstream: Arc<dyn ServerCertVerifier> = match &cfg.tls.ca_file {
        Some(ca) => pinned("ca_file", ca, &provider)?,
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| ConfigError(format!("the system's certificate roots: {e}")))?,
        ),
    };
    let proxy = match &cfg.proxy_ca_file {
        Some(ca) => {
            let pinned = pinned("proxy_ca_file", ca, &provider)?;
            Some((proxy_name(cfg, ca)?, pinned, format!("proxy_ca_file {}", ca.display())))
        }
        None => None,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ByName { proxy, upstream: (upstream, trust) }));
    let tls = match (&cfg.tls.client_cert, &cfg.tls.client_key) {
        (Some(cert), Some(key)) => {
            let both = || format!("client_cert {} / client_key {}", cert.display(), key.display());
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ConfigError(format!("{}: {e}", both())))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ConfigError(format!("{}: {e}", both())))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| ConfigError(format!("{}: {e}", both())))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tls)
}

/// The name of the proxy that `proxy_ca_file` (`ca`) vouches for: the
/// `proxy`, else `HTTPS_PROXY`'s. It must name no upstream.
fn proxy_name(cfg: &Config, ca: &Path) -> Result<ServerName<'static>, ConfigError> {
    let Some(host) = super::proxy::configured(cfg).and_then(|u| u.host_str().map(str::to_owned)) else {
        return Err(ConfigError(format!("proxy_ca_file {}: set without a proxy; set proxy too", ca.display())));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    if cfg
        .upstreams
        .iter()
        .any(|u| u.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']')) == Some(&host))
    {
        return Err(ConfigError(format!(
            "proxy_ca_file {}: the proxy {host} has the name of an upstream, so its CA would vouch for that upstream; \
             reach the proxy by another name",
            ca.display()
        )));
    }
    ServerName::try_from(host.clone()).map_err(|e| ConfigError(format!("proxy {host}: {e}")))
}

/// A verifier trusting the PEM roots in `file` (the config `key` names it).
fn pinned(key: &str, file: &Path, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, ConfigError> {
    let err = |e: &dyn std::fmt::Display| ConfigError(format!("{key} {}: {e}", file.display()));
    let pem = std::fs::read(file).map_err(|e| err(&e))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    if roots.is_empty() {
        return Err(err(&"no PEM certificate in it"));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(|e| err(&e))
}

/// The proxy's roots for the proxy's name, the upstreams' for every other;
/// each with the words that name it (`ca_file /etc/…`).
#[derive(Debug)]
struct ByName {
    proxy: Option<(ServerName<'static>, Arc<WebPkiServerVerifier>, String)>,
    upstream: (Arc<dyn ServerCertVerifier>, String),
}

/// A server certificate that was refused, said in the operator's words:
/// which roots refused it and what the certificate showed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(String);

/// `e` (from checking `cert`, presented by `name`, against `trust`) in words
/// that name the file and what the certificate showed.
fn explain(e: rustls::Error, cert: &CertificateDer<'_>, name: &ServerName<'_>, trust: &str) -> rustls::Error {
    use rustls::CertificateError as C;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else { return e };
    let name = crate::output::quote(&name.to_str(), 200);
    let issuer = crate::output::quote(&parsed.issuer().to_string(), 200);
    let subject = crate::output::quote(&parsed.subject().to_string(), 200);
    let text = match &e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("{trust} does not sign the certificate {name} presented (issuer {issuer})")
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the certificate {name} presented is for another name ({subject}, issuer {issuer})")
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the certificate {name} presented expired {} (subject {subject})", parsed.validity().not_after)
        }
        _ => return e,
    };
    rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(Untrusted(text)))))
}

impl ServerCertVerifier for ByName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (verifier, trust): (&dyn ServerCertVerifier, &str) = match &self.proxy {
            Some((name, proxy, trust)) if name == server_name => (proxy.as_ref(), trust),
            _ => (self.upstream.0.as_ref(), &self.upstream.1),
        };
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| explain(e, end_entity, server_name, trust))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.upstream.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.upstream.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.upstream.0.supported_verify_schemes()
    }
}
