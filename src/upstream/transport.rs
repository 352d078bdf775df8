//! The one HTTPS client every request goes through (CA pin, mutual TLS,
//! https-only, same-origin redirects, proxies), the requests in flight per
//! host, and small whole answers: listing pages, sums, HEADs.

use anyhow::{Context, Result, anyhow};
use reqwest::Client;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, LAST_MODIFIED, SERVER};
use url::Url;

use super::errors::{TooLarge, check_status, describe};
use super::hosts::Place;
use super::{Pace, Stalled, Upstreams, host_key, parse_http_date, proxy, tls};
use crate::config::Config;

const MAX_REDIRECTS: usize = 5;

impl Upstreams {
    /// Send a request; a connection that fails through a proxy names the
    /// proxy (never its credentials).
    pub(super) async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
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
    pub(super) async fn slot(&self, url: &Url) -> Option<Place> {
        Some(self.hosts.get(&host_key(url))?.place().await)
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
    pub(super) async fn read_capped(&self, mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>> {
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

pub(super) fn build_client(cfg: &Config) -> Result<Client> {
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
