//! Upstreams: the ordered list of base URLs, the one HTTPS client shared by
//! every request (CA pin, mutual TLS, https-only, same-origin redirects) and
//! `file://` roots. Fetches listings (conditionally) and opens file bodies;
//! it never writes to disk.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{Certificate, Client, Identity, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::config::{Config, ConfigError};
use crate::manifest::{Digest, Manifest, RelPath};

/// The largest manifest accepted, a guard against endless or bloated bodies.
pub const MAX_LISTING_BYTES: u64 = 512 << 20;
const MAX_REDIRECTS: usize = 5;

/// Validators from the last accepted listing of one upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A listing as fetched: where from, its identity and the parsed manifest.
pub struct Listing {
    pub upstream: usize,
    pub url: Url,
    /// sha256 of the manifest bytes: the listing's identity.
    pub identity: Digest,
    pub validators: Validators,
    pub manifest: Manifest,
}

pub enum ListOutcome {
    /// The upstream answered 304 to our validators.
    Unchanged { upstream: usize, url: Url },
    Fetched(Listing),
}

pub struct Upstreams {
    pub bases: Vec<Url>,
    manifest_name: String,
    client: Client,
}

impl Upstreams {
    pub fn new(cfg: &Config) -> Result<Upstreams> {
        if cfg.upstreams.is_empty() {
            return Err(ConfigError("no upstream: set upstreams in the config, --upstream or UPMIRROR_UPSTREAMS".into()).into());
        }
        Ok(Upstreams { bases: cfg.upstreams.clone(), manifest_name: cfg.manifest_name.clone(), client: build_client(cfg)? })
    }

    /// The listing from the first upstream that answers correctly. `known`
    /// gives each upstream's validators from the last accepted listing.
    pub async fn list(&self, known: impl Fn(&Url) -> Option<Validators>) -> Result<ListOutcome> {
        let mut failures = Vec::new();
        for (i, base) in self.bases.iter().enumerate() {
            let url = base.join(&self.manifest_name).context("manifest URL")?;
            match self.fetch_listing(i, &url, known(&url)).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) => failures.push(format!("{url}: {e:#}")),
            }
        }
        bail!("no upstream gave a valid listing: {}", failures.join("; "))
    }

    async fn fetch_listing(&self, upstream: usize, url: &Url, known: Option<Validators>) -> Result<ListOutcome> {
        let (bytes, validators) = if url.scheme() == "file" {
            (read_local(&file_path(url)?).await?, Validators::default())
        } else {
            let mut req = self.client.get(url.clone());
            if let Some(v) = &known {
                if let Some(etag) = &v.etag {
                    req = req.header(IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &v.last_modified {
                    req = req.header(IF_MODIFIED_SINCE, lm);
                }
            }
            let resp = send(req).await?;
            if resp.status() == StatusCode::NOT_MODIFIED && known.is_some() {
                return Ok(ListOutcome::Unchanged { upstream, url: url.clone() });
            }
            let resp = check_status(resp)?;
            let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let validators = Validators { etag: header(ETAG), last_modified: header(LAST_MODIFIED) };
            (read_capped(resp, MAX_LISTING_BYTES).await?, validators)
        };
        let manifest = Manifest::parse(&bytes).map_err(anyhow::Error::msg)?;
        let identity = Digest(Sha256::digest(&bytes).into());
        Ok(ListOutcome::Fetched(Listing { upstream, url: url.clone(), identity, validators, manifest }))
    }

    /// Where `rel` lives on upstream `i`.
    pub fn file_url(&self, i: usize, rel: &RelPath) -> Url {
        let mut url = self.bases[i].clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(rel.segments());
        }
        url
    }

    /// Open the body of `rel` on upstream `i`.
    pub async fn open(&self, i: usize, rel: &RelPath) -> Result<Body> {
        let url = self.file_url(i, rel);
        if url.scheme() == "file" {
            let path = file_path(&url)?;
            let f = tokio::fs::File::open(&path).await.with_context(|| format!("{}", path.display()))?;
            return Ok(Body::File(f));
        }
        let resp = check_status(send(self.client.get(url)).await?)?;
        Ok(Body::Http(resp))
    }
}

/// A file body being streamed, from either kind of upstream.
pub enum Body {
    Http(reqwest::Response),
    File(tokio::fs::File),
}

impl Body {
    /// The next chunk, or `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        match self {
            Body::Http(resp) => Ok(resp.chunk().await.map_err(describe)?),
            Body::File(f) => {
                let mut buf = vec![0u8; 256 << 10];
                let n = f.read(&mut buf).await?;
                buf.truncate(n);
                Ok((n > 0).then(|| Bytes::from(buf)))
            }
        }
    }
}

fn build_client(cfg: &Config) -> Result<Client> {
    // One process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .user_agent(concat!("upmirror/", env!("CARGO_PKG_VERSION")))
        .https_only(!cfg.allow_plain_http)
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let origin = &attempt.previous()[0];
            let next = attempt.url();
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if (next.scheme(), next.host_str(), next.port_or_known_default())
                != (origin.scheme(), origin.host_str(), origin.port_or_known_default())
            {
                let refused = format!("redirect to another origin refused: {next}");
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        }));
    if let Some(ca) = &cfg.tls.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("ca_file {}", ca.display()))?;
        let certs = Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError(format!("ca_file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ConfigError(format!("ca_file {}: no PEM certificate in it", ca.display())).into());
        }
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls.client_cert, &cfg.tls.client_key) {
        let mut pem = std::fs::read(cert).with_context(|| format!("client_cert {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("client_key {}", key.display()))?);
        let id = Identity::from_pem(&pem)
            .map_err(|e| ConfigError(format!("client_cert {} / client_key {}: {e}", cert.display(), key.display())))?;
        builder = builder.identity(id);
    }
    builder.build().map_err(|e| anyhow!("could not build the HTTPS client: {}", describe(e)))
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
    req.send().await.map_err(describe)
}

/// Map a non-success status to an error that says what it likely means.
fn check_status(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let hint = match status.as_u16() {
        400 | 495 | 496 => " (the upstream may require a client certificate, or rejected ours)",
        401 | 403 => " (access denied)",
        _ => "",
    };
    bail!("HTTP {status}{hint}")
}

/// The whole error chain on one line: reqwest hides the TLS cause in sources.
pub fn describe(e: reqwest::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    if msg.contains("CertificateRequired") || msg.contains("certificate required") {
        msg.push_str(" (the upstream requires a client certificate)");
    }
    anyhow!(msg)
}

async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if out.len() as u64 + chunk.len() as u64 > cap {
            bail!("listing larger than {cap} bytes");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn read_local(path: &std::path::Path) -> Result<Vec<u8>> {
    let f = tokio::fs::File::open(path).await.with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    f.take(MAX_LISTING_BYTES + 1).read_to_end(&mut out).await.with_context(|| format!("{}", path.display()))?;
    if out.len() as u64 > MAX_LISTING_BYTES {
        bail!("listing larger than {MAX_LISTING_BYTES} bytes");
    }
    Ok(out)
}

fn file_path(url: &Url) -> Result<PathBuf> {
    url.to_file_path().map_err(|_| anyhow!("{url}: not a local file path"))
}
