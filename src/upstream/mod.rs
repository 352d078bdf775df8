//! Upstreams: the ordered list of base URLs, the one HTTPS client shared by
//! every request (CA pin, mutual TLS, https-only, same-origin redirects) and
//! `file://` roots. Fetches listings — a manifest (conditionally) or a crawl
//! of directory listings — and opens file bodies; it never writes to disk.

pub mod autoindex;
mod crawl;
mod hosts;
mod pace;
mod proxy;
mod retry;
mod tls;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hosts::{HostLimit, Place};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
    SERVER,
};
use reqwest::{Client, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::cli::ListingKind;
use crate::config::{Config, ConfigError, Net};
use crate::manifest::{Digest, Manifest, RelPath};

pub use autoindex::parse_http_date;
pub use pace::{Pace, Stalled};
pub use retry::{Budget, Verdict, backoff, verdict};

/// The largest manifest accepted, a guard against endless or bloated bodies.
pub const MAX_LISTING_BYTES: u64 = 512 << 20;
const MAX_REDIRECTS: usize = 5;
/// Retry rounds a run has for its listing requests; downloads add their own.
pub const MIN_RETRY_BUDGET: usize = 100;

/// Validators from the last accepted listing of one upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Where a listing came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Manifest,
    /// nginx `autoindex_format json`.
    AutoindexJson,
    /// Caddy's `file_server browse`, asked for JSON.
    CaddyJson,
    /// An HTML directory listing (nginx, Apache, lighttpd, rclone, python, webfs).
    AutoindexHtml,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Manifest => "manifest",
            Source::AutoindexJson => "autoindex-json",
            Source::CaddyJson => "caddy-json",
            Source::AutoindexHtml => "autoindex-html",
        }
    }
}

/// How a listing shows mtimes: their resolution, and how far ahead of UTC
/// they are (a listing in local time), both in seconds. Listed mtimes are
/// already set back by the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dates {
    pub precision: i64,
    pub offset: i64,
}

impl Dates {
    pub const EXACT: Dates = Dates { precision: 1, offset: 0 };

    /// The offset as a time zone, `UTC+05:30`.
    pub fn zone(self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.abs() / 60;
        format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

/// A listing as fetched: where from, its identity and the parsed entries.
pub struct Listing {
    pub upstream: usize,
    pub url: Url,
    pub source: Source,
    /// sha256 of the manifest bytes, or of the normalised crawled listing.
    pub identity: Digest,
    pub validators: Validators,
    /// For a crawl, `generated_at` is when the crawl began.
    pub manifest: Manifest,
    /// The id of the trusted key whose signature the manifest carries.
    pub signed_by: Option<String>,
    /// The manifest and its signature as they came, when it was signed.
    pub signed: Option<crate::signature::Signed>,
    /// The tiers the listing came down through (none from the origin).
    pub trace: Vec<crate::trace::Tier>,
    pub dates: Dates,
    /// The `Server` header of a crawled listing's top page.
    pub server: Option<String>,
}

/// The published snapshot's listing, which a crawl reuses: exact mtimes
/// and the sizes a listing rounds, the time-zone offset its listing showed,
/// and when that listing was last read (seconds since the epoch).
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    pub manifest: &'a Manifest,
    pub offset: i64,
    pub listed_at: i64,
}

/// What `upmirror mirrors` reports of one upstream.
#[derive(Debug, Default, Serialize)]
pub struct Probe {
    pub url: String,
    pub usable: bool,
    /// `verified, pinned FILE`, `verified, system roots` or `FAILED`; none
    /// when not known (no TLS, or no handshake).
    pub tls: Option<String>,
    /// `accepted` or `REJECTED`; none without a client certificate.
    pub client_cert: Option<String>,
    /// When the client certificate expires (RFC 3339).
    pub client_cert_expires: Option<String>,
    /// The trusted key whose signature the manifest carries.
    pub signed_by: Option<String>,
    pub latency_ms: Option<u64>,
    pub listing: Option<&'static str>,
    /// The server that wrote a directory listing (its `Server` header).
    pub server: Option<String>,
    /// The time zone a directory listing shows, when not UTC.
    pub listing_time_zone: Option<String>,
    /// The proxy requests go through (without credentials).
    pub proxy: Option<String>,
    /// The address that answered (without a proxy).
    pub address: Option<String>,
    /// Seconds since `generated_at`, or since the newest mtime of the top listing.
    pub age_secs: Option<i64>,
    /// Files in the manifest (a crawl is not run to count them).
    pub files: Option<usize>,
    pub error: Option<String>,
}

fn is_not_found(e: &anyhow::Error) -> bool {
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

pub enum ListOutcome {
    /// The upstream answered 304 to our validators.
    Unchanged {
        upstream: usize,
        url: Url,
    },
    Fetched(Box<Listing>),
}

/// Cheap to clone: the client and the health record are shared.
#[derive(Clone)]
pub struct Upstreams {
    pub bases: Vec<Url>,
    manifest_name: String,
    listing: ListingKind,
    concurrency: usize,
    /// The proxy each upstream's requests go through, as `scheme://host:port`.
    proxies: Vec<Option<String>>,
    /// What the mirror carries: a crawl lists nothing else.
    filter: crate::filter::Filter,
    /// What server certificates are checked against, for reports.
    trust: String,
    has_client_cert: bool,
    trusted: crate::signature::TrustedKeys,
    net: Net,
    client: Client,
    /// Retry rounds left for the whole run, shared by every request.
    pub budget: Budget,
    /// Requests in flight to each upstream host (`max_connections_per_host`,
    /// fewer while the host says it is overrun).
    hosts: std::sync::Arc<std::collections::HashMap<String, std::sync::Arc<HostLimit>>>,
    /// What this run saw of each upstream: used, and its first error.
    health: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    /// The address that last answered, by host (of a host name with
    /// several, the one that took the connection).
    answered: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::SocketAddr>>>,
}

/// Whether an upstream was used this run, its first error, and the bytes
/// of the files it delivered.
type Seen = (bool, Option<String>, u64);

impl Upstreams {
    pub fn new(cfg: &Config) -> Result<Upstreams> {
        if cfg.upstreams.is_empty() {
            return Err(ConfigError(
                "no upstream: set upstreams in the config, --upstream or UPMIRROR_UPSTREAMS".into(),
            )
            .into());
        }
        Ok(Upstreams {
            bases: cfg.upstreams.clone(),
            manifest_name: cfg.manifest_name.clone(),
            listing: cfg.listing,
            concurrency: cfg.concurrency.unwrap_or(crawl::PAGES_IN_FLIGHT),
            filter: cfg.filter.clone(),
            proxies: (0..cfg.upstreams.len()).map(|i| proxy::label(cfg, i)).collect(),
            trust: cfg.tls.ca_file.as_ref().map_or("system roots".to_owned(), |f| format!("pinned {}", f.display())),
            has_client_cert: cfg.tls.client_cert.is_some(),
            net: cfg.net.clone(),
            trusted: crate::signature::TrustedKeys::load(&cfg.trusted_keys)?,
            client: build_client(cfg)?,
            budget: Budget::new(MIN_RETRY_BUDGET),
            hosts: std::sync::Arc::new(
                cfg.upstreams
                    .iter()
                    .map(|url| (host_key(url), HostLimit::new(cfg.max_connections_per_host, cfg.concurrency.is_none())))
                    .collect(),
            ),
            health: std::sync::Arc::new(std::sync::Mutex::new(vec![(false, None, 0); cfg.upstreams.len()])),
            answered: std::sync::Arc::default(),
        })
    }

    /// The listing from the first upstream that answers correctly. `known`
    /// gives each manifest URL's validators from the last accepted listing;
    /// a crawl reuses what it can of the `previous` listing.
    pub async fn list(
        &self,
        known: impl Fn(&Url) -> Option<Validators>,
        previous: Option<Previous<'_>>,
    ) -> Result<ListOutcome> {
        let mut failures = Vec::new();
        for i in 0..self.bases.len() {
            match self.list_one(i, &known, previous).await {
                Ok(outcome) => {
                    self.note(i, None);
                    return Ok(outcome);
                }
                Err(e) => {
                    self.note(i, Some(format!("{e:#}")));
                    failures.push(format!("{e:#}"));
                }
            }
        }
        bail!("no upstream gave a valid listing: {}", failures.join("; "))
    }

    /// The listing of upstream `i` alone, as configured by `listing`.
    pub async fn list_one(
        &self,
        i: usize,
        known: impl Fn(&Url) -> Option<Validators>,
        previous: Option<Previous<'_>>,
    ) -> Result<ListOutcome> {
        let url = self.manifest_url(i)?;
        let crawl = || async {
            if !self.trusted.is_empty() {
                bail!(
                    "{}: no manifest, and a directory listing cannot be signed; trusted_keys requires a signed manifest",
                    self.bases[i]
                );
            }
            crawl::crawl(self, i, previous).await.map(|l| ListOutcome::Fetched(Box::new(l)))
        };
        match self.listing {
            ListingKind::Autoindex => crawl().await,
            ListingKind::Manifest => self.fetch_manifest(i, &url, known(&url)).await.with_context(|| url.to_string()),
            ListingKind::Auto => match self.fetch_manifest(i, &url, known(&url)).await {
                Err(e) if is_not_found(&e) => crawl().await,
                other => other.with_context(|| url.to_string()),
            },
        }
    }

    /// Check upstream `i` without crawling it: its manifest, or else its top
    /// directory listing.
    pub async fn probe(&self, i: usize) -> Probe {
        let start = Instant::now();
        // A probe has a deadline of its own: a trickling upstream cannot hold `mirrors`.
        let deadline = self.net.connect_timeout + self.net.low_speed_time;
        let result = match tokio::time::timeout(deadline, self.probe_listing(i)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!("no whole answer within {deadline:?} (connect_timeout + low_speed_time)")),
        };
        let latency_ms = start.elapsed().as_millis() as u64;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let https = self.bases[i].scheme() == "https";
        let mut probe = Probe { url: self.bases[i].to_string(), usable: result.is_ok(), ..Probe::default() };
        probe.proxy = self.proxies[i].clone();
        match result {
            Ok(listed) => {
                probe = Probe { url: probe.url, usable: true, proxy: probe.proxy, ..listed };
                probe.latency_ms = Some(latency_ms);
                probe.age_secs = probe.age_secs.map(|t| now - t);
                probe.tls = https.then(|| format!("verified, {}", self.trust));
                probe.client_cert = self.has_client_cert.then(|| "accepted".into());
                let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
                probe.address =
                    answered.get(&host_key(&self.bases[i])).filter(|_| probe.proxy.is_none()).map(|a| a.to_string());
            }
            Err(e) => {
                let kind = e.downcast_ref::<Transport>().map(|t| t.kind);
                let status = e.downcast_ref::<HttpStatus>().map(|s| s.status);
                let tls_failed = kind == Some(TransportKind::ServerCertificate);
                let client_rejected =
                    kind == Some(TransportKind::ClientCertificate) || matches!(status, Some(400 | 495 | 496));
                // A status code or a client-certificate complaint means the handshake got that far.
                let handshake_done = client_rejected || status.is_some();
                probe.tls = match (https, tls_failed, handshake_done) {
                    (true, true, _) => Some("FAILED".into()),
                    (true, false, true) => Some(format!("verified, {}", self.trust)),
                    _ => None,
                };
                probe.client_cert = client_rejected.then(|| "REJECTED".into());
                probe.error = Some(format!("{e:#}"));
            }
        }
        probe
    }

    /// What `mirrors` shows of upstream `i`'s listing: its manifest, or else
    /// its top directory listing (and one file's dates, for the time zone).
    async fn probe_listing(&self, i: usize) -> Result<Probe> {
        let url = self.manifest_url(i)?;
        let mut probe = Probe::default();
        match self.fetch_manifest(i, &url, None).await {
            Err(e) if self.listing != ListingKind::Manifest && is_not_found(&e) => {
                let (source, newest, dates, server) = crawl::probe_top(self, i).await?;
                probe.listing = Some(source.label());
                probe.age_secs = newest;
                probe.listing_time_zone = (dates.offset != 0).then(|| dates.zone());
                probe.server = server;
            }
            Ok(ListOutcome::Fetched(l)) => {
                probe.listing = Some(Source::Manifest.label());
                probe.age_secs =
                    Some(l.manifest.generated_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
                probe.files = Some(l.manifest.files.len());
                probe.signed_by = l.signed_by;
            }
            Ok(ListOutcome::Unchanged { .. }) => bail!("{url}: answered 304 to a request without validators"),
            Err(e) => return Err(e),
        }
        Ok(probe)
    }

    /// Remember that upstream `i` was used, and its first failure if any.
    pub fn note(&self, i: usize, error: Option<String>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let entry = &mut health[i];
        entry.0 = true;
        if entry.1.is_none() {
            entry.1 = error.map(|e| crate::output::clip(&e, crate::output::MAX_ERROR_BYTES).to_owned());
        }
    }

    /// Count `bytes` of a file that upstream `i` delivered.
    pub fn delivered(&self, i: usize, bytes: u64) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health[i].2 = health[i].2.saturating_add(bytes);
    }

    /// Each upstream as this run found it.
    pub fn health(&self) -> Vec<crate::status::UpstreamHealth> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        self.bases
            .iter()
            .zip(health.iter())
            .map(|(url, (used, error, bytes))| crate::status::UpstreamHealth {
                url: url.to_string(),
                state: match (used, error) {
                    (false, _) => "not used",
                    (true, None) => "ok",
                    (true, Some(_)) => "failed",
                }
                .into(),
                error: error.clone(),
                bytes: *bytes,
                bytes_total: 0,
            })
            .collect()
    }

    pub fn manifest_url(&self, i: usize) -> Result<Url> {
        self.bases[i].join(&self.manifest_name).context("manifest URL")
    }

    async fn fetch_manifest(&self, upstream: usize, url: &Url, known: Option<Validators>) -> Result<ListOutcome> {
        let (bytes, validators) = if url.scheme() == "file" {
            (
                read_local(&file_path(&self.bases[upstream])?, &self.manifest_name, MAX_LISTING_BYTES).await?,
                Validators::default(),
            )
        } else {
            match self.retrying(|| self.get_manifest(url, known.as_ref())).await? {
                Some(fetched) => fetched,
                None => return Ok(ListOutcome::Unchanged { upstream, url: url.clone() }),
            }
        };
        let signature = self.check_signature(upstream, &bytes).await?;
        let manifest = Manifest::parse(&bytes).map_err(anyhow::Error::msg)?;
        let trace = self.fetch_trace(upstream).await;
        let identity = Digest(Sha256::digest(&bytes).into());
        Ok(ListOutcome::Fetched(Box::new(Listing {
            upstream,
            url: url.clone(),
            source: Source::Manifest,
            identity,
            validators,
            manifest,
            signed_by: signature.as_ref().map(|(id, _)| id.clone()),
            signed: signature.map(|(_, signature)| crate::signature::Signed { manifest: bytes, signature }),
            dates: Dates::EXACT,
            server: None,
            trace,
        })))
    }

    /// Send a request; a connection that fails through a proxy names the
    /// proxy (never its credentials).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            // Connecting covers the proxy, its CONNECT and both handshakes.
            let connect = e.is_connect();
            let host = e.url().map(host_key);
            let e = describe(e);
            let i = self.bases.iter().position(|b| Some(host_key(b)) == host);
            match i.and_then(|i| self.proxies[i].as_ref()) {
                Some(proxy) if connect => e.context(format!("through the proxy {proxy}")),
                _ => e,
            }
        })?;
        if let Some(addr) = resp.remote_addr() {
            self.answered.lock().unwrap_or_else(|e| e.into_inner()).insert(host_key(resp.url()), addr);
        }
        if let Some(host) = self.hosts.get(&host_key(resp.url())) {
            match resp.status().as_u16() {
                429 | 503 => host.overrun(),
                _ if resp.status().is_success() => host.calm(),
                _ => {}
            }
        }
        Ok(resp)
    }

    /// A place among the requests in flight to `url`'s host, held until
    /// the answer is read whole.
    async fn slot(&self, url: &Url) -> Option<Place> {
        Some(self.hosts.get(&host_key(url))?.place().await)
    }

    /// The manifest's bytes and validators, or `None` when the upstream
    /// answers 304 to the validators we sent.
    async fn get_manifest(&self, url: &Url, known: Option<&Validators>) -> Result<Option<(Vec<u8>, Validators)>> {
        let _slot = self.slot(url).await;
        let mut req = self.client.get(url.clone());
        if let Some(v) = known {
            if let Some(etag) = &v.etag {
                req = req.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_MODIFIED && known.is_some() {
            return Ok(None);
        }
        let resp = check_status(resp)?;
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let validators = Validators { etag: header(ETAG), last_modified: header(LAST_MODIFIED) };
        Ok(Some((self.read_capped(resp, MAX_LISTING_BYTES).await?, validators)))
    }

    /// Run `attempt` until it succeeds, with the run's retry rule: errors a
    /// retry can fix wait a backoff and try again, within `retries` rounds
    /// and the run's retry budget.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut round = 0;
        loop {
            let e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Verdict::Retry(after) = verdict(&e) else { return Err(e) };
            if round >= self.net.retries || !self.budget.take() {
                return Err(e);
            }
            tokio::time::sleep(backoff(self.net.retry_backoff, round, after)).await;
            round += 1;
        }
    }

    /// The trace of the tiers beside upstream `i`'s manifest; none when there
    /// is none, or it cannot be read: it informs, it never fails a run.
    async fn fetch_trace(&self, i: usize) -> Vec<crate::trace::Tier> {
        let bytes = self.read_beside(i, crate::trace::TRACE_FILE, crate::trace::MAX_TRACE_BYTES).await;
        bytes.ok().and_then(|b| crate::trace::parse(&b)).unwrap_or_default()
    }

    /// A small file at upstream `i`'s base, beside its manifest (the
    /// signature, the trace), at most `cap` bytes.
    async fn read_beside(&self, i: usize, name: &str, cap: u64) -> Result<Vec<u8>> {
        let base = &self.bases[i];
        if base.scheme() == "file" {
            return read_local(&file_path(base)?, name, cap).await;
        }
        let url = base.join(name).with_context(|| format!("{name} at {base}"))?;
        Ok(self.get_small(&url, cap).await?.0)
    }

    /// With trusted keys, the manifest's detached signature must verify by
    /// one of them; the key's id and the signature. Nothing is asked
    /// without trusted keys.
    async fn check_signature(&self, upstream: usize, bytes: &[u8]) -> Result<Option<(String, Vec<u8>)>> {
        if self.trusted.is_empty() {
            return Ok(None);
        }
        let name = crate::signature::beside(&self.manifest_name);
        let signature = self.read_beside(upstream, &name, crate::signature::MAX_SIGNATURE_BYTES).await;
        // A new error, not a context: a missing signature must not read as a missing manifest.
        let signature = signature.map_err(|e| {
            anyhow!(
                "no signature {name} beside the manifest ({}); trusted_keys requires one",
                crate::output::error_line(&e)
            )
        })?;
        let id = self.trusted.verify(bytes, &signature)?;
        Ok(Some((id, signature)))
    }

    /// Where `rel` lives on upstream `i`.
    pub fn file_url(&self, i: usize, rel: &RelPath) -> Url {
        let mut url = self.bases[i].clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(rel.segments());
        }
        url
    }

    /// Open the body of `rel` on upstream `i`, from byte `from` onwards.
    /// A resumed request (`from > 0`) sends `If-Range: validator` when one is
    /// given; the answer says whether it resumed (206) or starts over (200).
    pub async fn open(&self, i: usize, rel: &RelPath, from: u64, validator: Option<&str>) -> Result<Body> {
        let range = (from > 0).then(|| (format!("bytes={from}-"), validator));
        self.open_with(i, rel, from..u64::MAX, range).await
    }

    /// Open bytes `range` of `rel` on upstream `i` (a segment of a large
    /// file); the caller checks the answer's `content_range`.
    pub async fn open_range(&self, i: usize, rel: &RelPath, range: std::ops::Range<u64>) -> Result<Body> {
        let header = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        self.open_with(i, rel, range, Some((header, None))).await
    }

    async fn open_with(
        &self,
        i: usize,
        rel: &RelPath,
        range: std::ops::Range<u64>,
        header: Option<(String, Option<&str>)>,
    ) -> Result<Body> {
        let url = self.file_url(i, rel);
        if url.scheme() == "file" {
            return open_local(file_path(&self.bases[i])?, rel, range).await;
        }
        let slot = self.slot(&url).await;
        let mut req = self.client.get(url);
        if let Some((range, validator)) = header {
            req = req.header(RANGE, range);
            if let Some(v) = validator {
                req = req.header(IF_RANGE, v);
            }
        }
        let resp = check_status(self.send(req).await?)?;
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_range = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let parsed = header(CONTENT_RANGE).as_deref().and_then(ContentRange::parse);
            Some(parsed.ok_or_else(|| anyhow!("206 without a readable Content-Range"))?)
        } else {
            None
        };
        let last_modified = header(LAST_MODIFIED);
        let validator = header(ETAG).filter(|e| !e.starts_with("W/")).or_else(|| last_modified.clone());
        let last_modified = last_modified.as_deref().and_then(parse_http_date);
        let kind = BodyKind::Http { resp, slot };
        Ok(Body { kind, range_start: content_range.map(|r| r.start), content_range, validator, last_modified })
    }

    /// GET a small document (a directory listing, a SHA256SUMS file) whole,
    /// at most `cap` bytes, retried as every request is. Listing pages ask
    /// for JSON first: Caddy answers it, other servers send their HTML.
    /// Also gives the `Server` header, clipped and escaped.
    pub(super) async fn get_small(&self, url: &Url, cap: u64) -> Result<(Vec<u8>, Option<String>)> {
        self.retrying(|| async {
            let _slot = self.slot(url).await;
            let req = self.client.get(url.clone()).header(ACCEPT, "application/json, text/html;q=0.9, */*;q=0.8");
            let resp = check_status(self.send(req).await?)?;
            let server =
                resp.headers().get(SERVER).map(|v| crate::output::quote(&String::from_utf8_lossy(v.as_bytes()), 80));
            Ok((self.read_capped(resp, cap).await?, server))
        })
        .await
    }

    /// A whole small body, at most `cap` bytes, at the pace every transfer keeps.
    async fn read_capped(&self, mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>> {
        let (mut out, mut pace) = (Vec::new(), Pace::new(&self.net));
        loop {
            let chunk = tokio::time::timeout(self.net.idle_timeout, resp.chunk())
                .await
                .map_err(|_| Stalled::Idle(self.net.idle_timeout))?
                .map_err(describe)?;
            let Some(chunk) = chunk else { return Ok(out) };
            if out.len() as u64 + chunk.len() as u64 > cap {
                return Err(TooLarge(cap).into());
            }
            pace.add(chunk.len())?;
            out.extend_from_slice(&chunk);
        }
    }

    /// The exact length and `Last-Modified` of a file, from a HEAD request;
    /// a server that sends no length on HEAD (Apache, for an empty file) is
    /// asked with a GET whose body is left unread.
    pub(super) async fn head(&self, url: &Url) -> Result<(u64, Option<i64>)> {
        self.retrying(|| async {
            let _slot = self.slot(url).await;
            let mut resp = check_status(self.send(self.client.head(url.clone())).await?)?;
            if !resp.headers().contains_key(CONTENT_LENGTH) {
                resp = check_status(self.send(self.client.get(url.clone())).await?)?;
            }
            let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let len = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
            let len = len.ok_or_else(|| anyhow!("{url}: no Content-Length on HEAD or GET"))?;
            Ok((len, header(LAST_MODIFIED).as_deref().and_then(parse_http_date)))
        })
        .await
        .with_context(|| format!("HEAD {url}"))
    }
}

/// A body larger than its cap: retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// A file body being streamed, from either kind of upstream.
pub struct Body {
    kind: BodyKind,
    /// Where a 206 answer starts; `None` for a whole body.
    pub range_start: Option<u64>,
    /// A 206 answer's `Content-Range`.
    pub content_range: Option<ContentRange>,
    /// The strong ETag, else the Last-Modified text, for a later `If-Range`.
    pub validator: Option<String>,
    /// `Last-Modified` in seconds since the epoch.
    pub last_modified: Option<i64>,
}

enum BodyKind {
    /// A response, and its place among the requests to its host.
    Http {
        resp: reqwest::Response,
        slot: Option<Place>,
    },
    File(tokio::io::Take<tokio::fs::File>),
}

/// `Content-Range: bytes START-END/TOTAL` (END inclusive; TOTAL may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    fn parse(text: &str) -> Option<ContentRange> {
        let (span, total) = text.strip_prefix("bytes ")?.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        (start <= end).then_some(ContentRange { start, end, total })
    }

    /// Whether this is exactly `range` of a file of `size` bytes.
    pub fn is(&self, range: &std::ops::Range<u64>, size: u64) -> bool {
        self.start == range.start && self.end.checked_add(1) == Some(range.end) && self.total == Some(size)
    }
}

/// Open `range` of `rel` beneath the `file://` root `base`: regular files
/// only, never through a symlink.
async fn open_local(base: PathBuf, rel: &RelPath, range: std::ops::Range<u64>) -> Result<Body> {
    let rel = rel.as_str().to_owned();
    let from = range.start;
    let open = move || -> Result<std::fs::File> {
        let mut f = crate::disk::open_regular_beneath(&base, &rel)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
        Ok(f)
    };
    let f = tokio::task::spawn_blocking(open).await.map_err(|e| anyhow!("open task failed: {e}"))??;
    Ok(Body {
        kind: BodyKind::File(tokio::fs::File::from_std(f).take(range.end - range.start)),
        range_start: (from > 0).then_some(from),
        content_range: None,
        validator: None,
        last_modified: None,
    })
}

impl Body {
    /// The next chunk, or `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        match &mut self.kind {
            BodyKind::Http { resp, slot } => {
                let chunk = resp.chunk().await.map_err(describe)?;
                if let (Some(place), Some(chunk)) = (slot, &chunk) {
                    place.received(chunk.len());
                }
                Ok(chunk)
            }
            BodyKind::File(f) => {
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
        .pool_max_idle_per_host(cfg.max_connections_per_host.max(cfg.concurrency.unwrap_or(0)))
        .connect_timeout(cfg.net.connect_timeout)
        .read_timeout(cfg.net.idle_timeout)
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
    // HTTP/1.1 over a pool of connections by default: TLS then runs in
    // parallel on both ends, which measured faster than multiplexing every
    // transfer over one HTTP/2 connection.
    if !cfg.http2 {
        builder = builder.http1_only();
    }
    if let Some(proxy) = proxy::client_proxy(cfg)? {
        builder = builder.proxy(proxy);
    }
    builder = builder.tls_backend_preconfigured(tls::client_config(cfg)?);
    builder.build().map_err(|e| anyhow!("could not build the HTTPS client: {}", describe(e)))
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

/// A manifest (or its signature) from a `file://` upstream, at most `cap` bytes.
async fn read_local(base: &std::path::Path, name: &str, cap: u64) -> Result<Vec<u8>> {
    let (base, name) = (base.to_path_buf(), name.to_owned());
    let read = move || -> Result<Vec<u8>> {
        let f = crate::disk::open_regular_beneath(&base, &name)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, cap + 1), &mut out)
            .with_context(|| format!("{}/{name}", base.display()))?;
        if out.len() as u64 > cap {
            bail!("{}/{name} is larger than {cap} bytes", base.display());
        }
        Ok(out)
    };
    tokio::task::spawn_blocking(read).await.map_err(|e| anyhow!("read task failed: {e}"))?
}

/// What requests to one host share: scheme, host and port.
fn host_key(url: &Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

fn file_path(url: &Url) -> Result<PathBuf> {
    url.to_file_path().map_err(|_| anyhow!("{url}: not a local file path"))
}
