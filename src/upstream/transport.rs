//! The HTTPS clients every request goes through (CA pin, mutual TLS,
//! https-only, same-origin redirects, proxies; HTTP/2 where a host takes
//! it), the requests in flight per host, and small whole answers: listing
//! pages, sums, HEADs.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow};
use reqwest::Client;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, LAST_MODIFIED, SERVER};
use url::Url;

use super::errors::{ListingsTooLarge, TooLarge, Transport, TransportKind, check_status, describe};
use super::hosts::{HostLimit, Place};
use super::listing::Document;
use super::{MAX_LISTING_BYTES, Pace, Stalled, Upstreams, host_key, origin, parse_http_date, proxy, resolve, tls};
use crate::config::Config;

const MAX_REDIRECTS: usize = 5;
/// Whether a plain TCP connection to `url`'s host and port opens within
/// 2 s: after a connect time-out, it tells a server that takes connections
/// but serves none from one that cannot be reached.
async fn accepts(url: &Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), connect).await, Ok(Ok(_)))
}

/// Connections at most to a server that takes few (see `few_connections`).
const FEW_CONNECTIONS: usize = 8;

/// Whether the answer comes from a server that must be given few
/// connections: webfs (one loop, 32 connections by default) stops
/// accepting for good once that many TLS handshakes failed, which is what
/// connections it never accepted become when a client gives up on them;
/// and it drops idle keep-alive connections under load, which a request
/// that picked one meets as "connection closed before message completed".
fn few_connections(resp: &reqwest::Response) -> bool {
    let server = resp.headers().get(reqwest::header::SERVER).and_then(|v| v.to_str().ok());
    server.is_some_and(|s| s.starts_with("webfs/"))
}

impl Upstreams {
    /// Send a request over the connections `route` names, unless its host
    /// is down for this run.
    pub(super) async fn send(&self, req: reqwest::RequestBuilder, route: Route) -> Result<reqwest::Response> {
        let mut req = req.build().map_err(describe)?;
        let url = req.url().clone();
        // A server held at a few connections closes idle ones at its own
        // pace: a request of its own on a connection of its own never meets one.
        if self.hosts.get(&host_key(&url)).is_some_and(|h| h.held()) {
            req.headers_mut().insert(reqwest::header::CONNECTION, reqwest::header::HeaderValue::from_static("close"));
        }
        if self.down.lock().unwrap_or_else(|e| e.into_inner()).contains(&host_key(&url)) {
            let message = format!("{}: skipped, it could not be reached earlier in this run", origin(&url));
            return Err(Transport { kind: TransportKind::HostDown, message }.into());
        }
        let host = self.hosts.get(&host_key(&url));
        let asked = std::time::Instant::now();
        let resp = match self.clients.pick(host.map(|h| &**h), route).execute(req).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.failed(e, &url).await),
        };
        if let Some(addr) = resp.remote_addr() {
            self.answered.lock().unwrap_or_else(|e| e.into_inner()).insert(host_key(resp.url()), addr);
        }
        if let Some(host) = host {
            if resp.version() == reqwest::Version::HTTP_2 {
                host.multiplexes(self.clients.streams);
            }
            if few_connections(&resp) {
                host.hold_at(FEW_CONNECTIONS);
            }
            match resp.status().as_u16() {
                429 | 503 => host.overrun(),
                _ if resp.status().is_success() => host.calm(asked.elapsed()),
                _ => {}
            }
        }
        Ok(resp)
    }

    /// What a failed request was. A host that could not be connected to is
    /// down for the rest of the run after a time-out, or at once when
    /// another upstream can serve instead; a connection that failed through
    /// an `http://` proxy asks the proxy why, and names it (never its
    /// credentials).
    async fn failed(&self, e: reqwest::Error, url: &Url) -> anyhow::Error {
        // Connecting covers the proxy, its CONNECT and both handshakes.
        let connect = e.is_connect();
        let e = describe(e);
        let Some(i) = self.bases.iter().position(|b| host_key(b) == host_key(url)) else { return e };
        if let (Some(proxy), true) = (&self.proxies[i], connect) {
            if let Some((status, reason)) = proxy::refusal(&proxy.url, url).await {
                let hint = match (status, proxy.url.username().is_empty()) {
                    (407, true) => "; the proxy wants credentials: set proxy_credentials_file",
                    (407, false) => "; the proxy refused the credentials of proxy_credentials_file",
                    (403, _) => "; the proxy's rules forbid this host or port",
                    _ => "",
                };
                let message =
                    format!("proxy {} refused CONNECT to {}: {status} {reason}{hint}", proxy.label, origin(url));
                return Transport { kind: TransportKind::ProxyRefused, message }.into();
            }
            return e.context(format!("through the proxy {}", proxy.label));
        }
        let kind = e.downcast_ref::<Transport>().map(|t| t.kind);
        let e = match kind {
            Some(TransportKind::ConnectTimeout) if accepts(url).await => {
                let message = format!(
                    "{}: it accepts connections but answers none within connect_timeout: a server at its \
                     connection limit (webfs over TLS stops for good after too many; restart it)",
                    origin(url)
                );
                Transport { kind: TransportKind::ConnectTimeout, message }.into()
            }
            _ => e,
        };
        let down = match kind {
            Some(TransportKind::ConnectTimeout) => true,
            Some(TransportKind::Connect) => self.bases.len() > 1,
            _ => false,
        };
        if !down {
            return e;
        }
        self.down.lock().unwrap_or_else(|e| e.into_inner()).insert(host_key(url));
        let message = format!("{}; it is skipped for the rest of this run", crate::output::error_line(&e));
        Transport { kind: TransportKind::HostDown, message }.into()
    }

    /// A place among the requests in flight to `url`'s host, held until
    /// the answer is read whole.
    pub(super) async fn slot(&self, url: &Url) -> Option<Place> {
        Some(self.hosts.get(&host_key(url))?.place().await)
    }

    /// GET a small document (a directory listing, a SHA256SUMS file) whole,
    /// at most `cap` bytes, retried as every request is. Listing pages ask
    /// for JSON first: Caddy answers it, other servers send their HTML.
    /// Also gives the `Server` header, clipped and escaped.
    pub(super) async fn get_small(&self, url: &Url, cap: u64) -> Result<(Vec<u8>, Option<String>)> {
        self.get_with(url, |resp| self.read_capped(resp, cap)).await
    }

    /// [`Self::get_small`] into an unnamed temporary file: many asked at
    /// once do not hold their bodies in memory. `spooled` counts the bytes
    /// of a run's documents together (see [`Self::spool_capped`]).
    pub(super) async fn get_spooled(
        &self,
        url: &Url,
        cap: u64,
        spooled: &AtomicU64,
    ) -> Result<(Document, Option<String>)> {
        self.get_with(url, |resp| self.spool_capped(resp, cap, spooled)).await
    }

    async fn get_with<T, F, Fut>(&self, url: &Url, read: F) -> Result<(T, Option<String>)>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retrying(|| async {
            let _slot = self.slot(url).await;
            let req =
                self.clients.first.get(url.clone()).header(ACCEPT, "application/json, text/html;q=0.9, */*;q=0.8");
            let resp = check_status(self.send(req, Route::First).await?)?;
            let server =
                resp.headers().get(SERVER).map(|v| crate::output::quote(&String::from_utf8_lossy(v.as_bytes()), 80));
            Ok((read(resp).await?, server))
        })
        .await
    }

    /// A whole small body, at most `cap` bytes, at the pace every transfer keeps.
    pub(super) async fn read_capped(&self, resp: reqwest::Response, cap: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(resp, cap, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// [`Self::read_capped`] into an unnamed temporary file, hashed as it
    /// arrives: a listing of a million files never sits in memory whole.
    /// Its bytes are added to `spooled`, the documents of a run together,
    /// which stop at [`MAX_LISTING_BYTES`] (so does the temporary space).
    pub(super) async fn spool_capped(
        &self,
        resp: reqwest::Response,
        cap: u64,
        spooled: &AtomicU64,
    ) -> Result<Document> {
        let mut doc = Document::new()?;
        self.read_into(resp, cap, |chunk| {
            let len = chunk.len() as u64;
            if spooled.fetch_add(len, Ordering::Relaxed) + len > MAX_LISTING_BYTES {
                return Err(ListingsTooLarge(MAX_LISTING_BYTES).into());
            }
            doc.write(chunk)
        })
        .await?;
        doc.finish()
    }

    /// Each chunk of a body of at most `cap` bytes to `sink`, at the pace
    /// every transfer keeps.
    async fn read_into(
        &self,
        mut resp: reqwest::Response,
        cap: u64,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (mut len, mut pace) = (0u64, Pace::new(&self.net));
        loop {
            let chunk = tokio::time::timeout(self.net.idle_timeout, resp.chunk())
                .await
                .map_err(|_| Stalled::Idle(self.net.idle_timeout))?
                .map_err(describe)?;
            let Some(chunk) = chunk else { return Ok(()) };
            len += chunk.len() as u64;
            if len > cap {
                return Err(TooLarge(cap).into());
            }
            pace.add(chunk.len())?;
            sink(&chunk)?;
        }
    }

    /// The exact length and `Last-Modified` of a file, from a HEAD request;
    /// a server that sends no length on HEAD (Apache, for an empty file) is
    /// asked with a GET whose body is left unread.
    pub(super) async fn head(&self, url: &Url) -> Result<(u64, Option<i64>)> {
        match self.head_kind(url).await? {
            Probed::File(len, modified) => Ok((len, modified)),
            Probed::Dir => Err(anyhow!("HEAD {url}: a directory (redirected to {url}/)")),
        }
    }

    /// What a name of a listing that does not mark directories is: a
    /// directory (the server redirects it to the same path with a `/`), or
    /// a file with its length and `Last-Modified`.
    pub(super) async fn head_kind(&self, url: &Url) -> Result<Probed> {
        self.retrying(|| async {
            let _slot = self.slot(url).await;
            let mut resp = check_status(self.send(self.clients.first.head(url.clone()), Route::First).await?)?;
            if resp.url().path() == format!("{}/", url.path()) {
                return Ok(Probed::Dir);
            }
            if !resp.headers().contains_key(CONTENT_LENGTH) {
                resp = check_status(self.send(self.clients.first.get(url.clone()), Route::First).await?)?;
            }
            let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let len = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
            let len = len.ok_or_else(|| anyhow!("{url}: no Content-Length on HEAD or GET"))?;
            Ok(Probed::File(len, header(LAST_MODIFIED).as_deref().and_then(parse_http_date)))
        })
        .await
        .with_context(|| format!("HEAD {url}"))
    }
}

/// What a HEAD found at a listed name.
pub(super) enum Probed {
    Dir,
    /// Its length, and its `Last-Modified` when the server sent one.
    File(u64, Option<i64>),
}

/// HTTP/2 flow-control windows: the bytes one stream and one connection
/// may have in flight, and so what an answer not yet read may hold in
/// memory. Eight connections fill 1 Gbit/s at 200 ms.
const H2_STREAM_WINDOW: u32 = 2 << 20;
const H2_CONNECTION_WINDOW: u32 = 4 << 20;

/// The clients requests go through: the first negotiates HTTP/1.1 or
/// HTTP/2 with each host (ALPN) and asks for listings; the others speak
/// HTTP/2 alone, each over one connection per host, and carry in turn the
/// downloads from a host that answered over HTTP/2. A connection whose protocol is known is opened
/// once, where a burst of requests on one not yet known would each open
/// their own (and all but one be dropped after the handshake).
pub(super) struct Clients {
    pub first: Client,
    multiplexed: Vec<Client>,
    /// HTTP/1.1 alone, for large bodies from a host that answered over
    /// HTTP/2: a stream's frames cost twice the CPU of a plain connection.
    bulk: Client,
    /// Requests in flight at most to a host that answered over HTTP/2.
    pub streams: usize,
    next: std::sync::atomic::AtomicUsize,
}

impl Clients {
    pub fn new(cfg: &Config) -> Result<Clients> {
        let h2 = |_| build_client(cfg, Protocol::Http2);
        let multiplexed = (0..cfg.h2_connections()).map(h2).collect::<Result<_>>()?;
        let (first, bulk) = (build_client(cfg, Protocol::Negotiated)?, build_client(cfg, Protocol::Http1)?);
        Ok(Clients { first, multiplexed, bulk, streams: cfg.requests_per_host(), next: 0.into() })
    }

    /// The client for a request to `host` (see [`Route`]).
    fn pick(&self, host: Option<&HostLimit>, route: Route) -> &Client {
        match (host, route) {
            (Some(host), Route::Spread) if host.multiplexed() && !self.multiplexed.is_empty() => {
                let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                &self.multiplexed[i % self.multiplexed.len()]
            }
            (Some(host), Route::Bulk) if host.multiplexed() && !self.multiplexed.is_empty() => &self.bulk,
            _ => &self.first,
        }
    }
}

/// Which connections a request goes over to a host that answered over
/// HTTP/2 (to any other host: the first client's).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The first client's connection: listings, HEADs.
    First,
    /// The next HTTP/2 connection: a download.
    Spread,
    /// An HTTP/1.1 connection of its own, one of those the host's
    /// connections left over allow: a large body.
    Bulk,
}

/// What a client speaks.
#[derive(Clone, Copy)]
enum Protocol {
    /// HTTP/2 when the host offers it (ALPN), else HTTP/1.1.
    Negotiated,
    Http2,
    Http1,
}

fn build_client(cfg: &Config, protocol: Protocol) -> Result<Client> {
    // One process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        .user_agent(concat!("upmirror/", env!("CARGO_PKG_VERSION")))
        .https_only(!cfg.allow_plain_http)
        .dns_resolver(std::sync::Arc::new(resolve::System))
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
    let mut tls = tls::client_config(cfg)?;
    (builder, tls.alpn_protocols) = match (cfg.http2, protocol) {
        (false, _) | (_, Protocol::Http1) => (builder.http1_only(), vec![b"http/1.1".to_vec()]),
        (true, Protocol::Negotiated) => (h2_windows(builder), vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
        (true, Protocol::Http2) => (h2_windows(builder).http2_prior_knowledge(), vec![b"h2".to_vec()]),
    };
    if let Some(proxy) = proxy::client_proxy(cfg)? {
        builder = builder.proxy(proxy);
    }
    builder = builder.tls_backend_preconfigured(tls);
    builder.build().map_err(|e| anyhow!("could not build the HTTPS client: {}", describe(e)))
}

fn h2_windows(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder
        .http2_initial_stream_window_size(H2_STREAM_WINDOW)
        .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
}
