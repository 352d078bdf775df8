//! Upstreams: the ordered list of base URLs, the HTTPS clients shared by
//! every request (CA pin, mutual TLS, https-only, same-origin redirects) and
//! `file://` roots. Fetches listings — a manifest (conditionally) or a crawl
//! of directory listings — and opens file bodies; it never writes to disk.

mod apt;
pub mod autoindex;
mod body;
mod crawl;
mod errors;
mod health;
mod hosts;
mod listing;
mod pace;
mod probe;
mod proxy;
mod resolve;
mod retry;
mod sums;
mod tls;
mod transport;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{Config, ConfigError, ListingKind, Net};
use crate::manifest::{Digest, Manifest, RelPath};
use errors::is_not_found;
use health::Health;
use hosts::HostLimit;

pub use autoindex::parse_http_date;
pub use body::{Body, ContentRange};
pub use errors::{HttpStatus, TooLarge, Transport, TransportKind, describe};
pub use health::{UpstreamHealth, UpstreamState};
pub use pace::{Pace, Stalled};
pub use probe::Probe;
pub use retry::{Budget, Verdict, backoff, verdict};

/// The largest manifest accepted, a guard against endless or bloated bodies.
pub const MAX_LISTING_BYTES: u64 = 512 << 20;
/// Retry rounds a run has for its listing requests; downloads add their own.
pub const MIN_RETRY_BUDGET: usize = 100;

/// Validators from the last accepted listing of one upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The listing was fetched within a second or two of its
    /// `Last-Modified` (by the server's `Date`): a rewrite in that same
    /// second at the same size keeps both it and an `mtime-size` ETag, so
    /// these validators prove nothing and the next run fetches it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub racy: bool,
}

/// How close to its `Last-Modified` a listing may be fetched before its
/// validators are racy (the headers have a resolution of one second).
const RACY_SECONDS: i64 = 2;

impl Validators {
    /// From a response's `ETag`, `Last-Modified` and `Date`.
    pub fn of(etag: Option<String>, last_modified: Option<String>, date: Option<&str>) -> Validators {
        let modified = last_modified.as_deref().and_then(autoindex::parse_http_date);
        let served = date.and_then(autoindex::parse_http_date);
        let racy = modified.zip(served).is_some_and(|(m, d)| d - m < RACY_SECONDS);
        Validators { etag, last_modified, racy }
    }
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
    /// nginx `autoindex_format xml`.
    AutoindexXml,
    /// npm `serve`, asked for JSON.
    ServeJson,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Manifest => "manifest",
            Source::AutoindexJson => "autoindex-json",
            Source::CaddyJson => "caddy-json",
            Source::AutoindexHtml => "autoindex-html",
            Source::AutoindexXml => "autoindex-xml",
            Source::ServeJson => "serve-json",
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

impl Listing {
    /// When the origin made this listing: its `generated_at`, or for a
    /// crawl, the newest mtime it shows (a crawl is as old as its newest
    /// file, whenever it is read).
    pub fn origin(&self) -> SystemTime {
        let newest = self.manifest.files.iter().map(|e| e.mtime).max();
        match (&self.source, newest) {
            (Source::Manifest, _) | (_, None) => self.manifest.generated_at,
            (_, Some(t)) => UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
        }
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
    /// The id of the trusted key whose signature the manifest carries (of
    /// a crawl: the OpenPGP keys that signed its `SHA256SUMS`).
    pub signed_by: Option<String>,
    /// Of a crawl with `openpgp_keyring`: the files no signed `SHA256SUMS` covers.
    pub unsigned_files: Option<usize>,
    /// The patches the upstream offers beside its manifest.
    pub deltas: Vec<crate::delta::Delta>,
    /// The manifest and its signature as they came, when it was signed.
    pub signed: Option<crate::signature::Signed>,
    /// The tiers the listing came down through (none from the origin).
    pub trace: Vec<crate::trace::Tier>,
    pub dates: Dates,
    /// The `Server` header of a crawled listing's top page.
    pub server: Option<String>,
    /// For a crawl, what it asked again of the files its listing shows nothing of.
    pub rechecks: Rechecks,
}

/// The published snapshot's listing, which a crawl reuses: exact mtimes
/// and the sizes a listing rounds, the time-zone offset its listing showed,
/// and when that listing was last read (seconds since the epoch).
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    /// Read only when a crawl needs it.
    pub manifest: &'a crate::manifest::Lazy,
    pub offset: i64,
    pub listed_at: i64,
    /// Which of its files a listing shows nothing of are asked again.
    pub recheck: Recheck<'a>,
}

/// Of the files a listing shows neither size nor date of, those a crawl
/// asks again this run: `budget` of them, in path order after `from`
/// (where the last run stopped), wrapping around.
#[derive(Clone, Copy)]
pub struct Recheck<'a> {
    pub from: Option<&'a str>,
    pub budget: usize,
}

/// What a crawl asked again of the files its listing shows nothing of, and
/// how many wait for a later run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rechecks {
    pub asked: usize,
    pub deferred: usize,
    /// The last path asked: the next run goes on after it.
    #[serde(skip)]
    pub last: Option<String>,
}

pub enum ListOutcome {
    /// The upstream answered 304 to our validators.
    Unchanged {
        upstream: usize,
        url: Url,
    },
    Fetched(Box<Listing>),
}

/// Cheap to clone: the clients and the health record are shared.
#[derive(Clone)]
pub struct Upstreams {
    pub bases: Vec<Url>,
    manifest_name: String,
    listing: ListingKind,
    concurrency: usize,
    /// Listing pages asked at once, and held whole at once.
    pages_asked: usize,
    pages_held: std::sync::Arc<tokio::sync::Semaphore>,
    /// The proxy each upstream's requests go through.
    proxies: Vec<Option<proxy::Via>>,
    /// What the mirror carries: a crawl lists nothing else.
    filter: crate::filter::Filter,
    /// What server certificates are checked against, for reports.
    trust: String,
    has_client_cert: bool,
    trusted: crate::signature::TrustedKeys,
    /// The zone a directory listing's dates are in (`listing_timezone`).
    zone: Option<jiff::tz::TimeZone>,
    /// OpenPGP keys a crawl's `SHA256SUMS` must be signed by, when any.
    keyring: std::sync::Arc<crate::openpgp::Keyring>,
    net: Net,
    /// Requests are built with the first; [`transport::Clients`] picks the
    /// one each is sent by.
    clients: std::sync::Arc<transport::Clients>,
    /// Retry rounds left for the whole run, shared by every request.
    pub budget: Budget,
    /// Requests in flight to each upstream host (`max_connections_per_host`,
    /// fewer while the host says it is overrun).
    hosts: std::sync::Arc<std::collections::HashMap<String, std::sync::Arc<HostLimit>>>,
    /// What this run saw of each upstream.
    health: Health,
    /// The address that last answered, by host (of a host name with
    /// several, the one that took the connection).
    answered: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::SocketAddr>>>,
    /// Hosts that could not be reached: skipped for the rest of the run.
    down: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where retries and fail-overs are told as they happen.
    out: crate::output::Reporter,
}

impl Upstreams {
    pub fn new(cfg: &Config, out: crate::output::Reporter) -> Result<Upstreams> {
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
            concurrency: cfg.concurrency.unwrap_or(crawl::PAGES_HELD),
            pages_asked: cfg.concurrency.map_or(crawl::PAGES_ASKED, |n| n.min(crawl::PAGES_ASKED)),
            pages_held: std::sync::Arc::new(tokio::sync::Semaphore::new(crawl::PAGES_HELD)),
            filter: cfg.filter.clone(),
            proxies: (0..cfg.upstreams.len()).map(|i| proxy::via(cfg, i)).collect(),
            trust: cfg.tls.ca_file.as_ref().map_or("system roots".to_owned(), |f| format!("pinned {}", f.display())),
            has_client_cert: cfg.tls.client_cert.is_some(),
            net: cfg.net.clone(),
            trusted: crate::signature::TrustedKeys::load(&cfg.trusted_keys)?,
            keyring: std::sync::Arc::new(crate::openpgp::Keyring::load(&cfg.openpgp_keyring)?),
            zone: cfg.listing_timezone.clone(),
            clients: std::sync::Arc::new(transport::Clients::new(cfg)?),
            budget: Budget::new(MIN_RETRY_BUDGET),
            hosts: std::sync::Arc::new(
                cfg.upstreams
                    .iter()
                    .map(|url| {
                        let limit = HostLimit::new(
                            cfg.max_connections_per_host,
                            cfg.concurrency.is_none(),
                            cfg.bulk_connections(),
                        );
                        (host_key(url), limit)
                    })
                    .collect(),
            ),
            health: Health::new(&cfg.upstreams),
            answered: std::sync::Arc::default(),
            down: std::sync::Arc::default(),
            out,
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
                    let line = crate::output::error_line(&e);
                    if let Some(next) = self.bases.get(i + 1) {
                        self.tell(format!("{line}; trying the next upstream, {next}"));
                    }
                    self.note(i, Some(line.clone()));
                    failures.push(line);
                }
            }
        }
        Err(crate::output::Lines { head: "no upstream gave a valid listing".into(), lines: failures }.into())
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

    /// Tell a retry or a fail-over as it happens.
    pub fn tell(&self, line: String) {
        self.out.notice(line);
    }

    pub fn manifest_url(&self, i: usize) -> Result<Url> {
        self.bases[i].join(&self.manifest_name).context("manifest URL")
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
            let wait = backoff(self.net.retry_backoff, round, after);
            let line = crate::output::error_line(&e);
            self.tell(format!("{line}; retry {} of {} in {:.1} s", round + 1, self.net.retries, wait.as_secs_f64()));
            tokio::time::sleep(wait).await;
            round += 1;
        }
    }

    /// Where `rel` lives on upstream `i`.
    pub fn file_url(&self, i: usize, rel: &RelPath) -> Url {
        let mut url = self.bases[i].clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(rel.segments());
        }
        url
    }
}

/// `scheme://host:port` of `url`, for messages.
fn origin(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

/// What requests to one host share: scheme, host and port.
fn host_key(url: &Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

fn file_path(url: &Url) -> Result<PathBuf> {
    let path = url.to_file_path().ok().filter(|_| url.scheme() == "file");
    path.ok_or_else(|| anyhow!("{url}: not a local file path"))
}
