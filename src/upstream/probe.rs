//! `upmirror mirrors`: one upstream checked without a crawl — its
//! manifest, or else its top directory listing — and what was seen of TLS,
//! the client certificate, the listing and its age.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use super::errors::{HttpStatus, Transport, TransportKind, is_not_found};
use super::{ListOutcome, Source, Upstreams, crawl, host_key};
use crate::config::ListingKind;

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

impl Upstreams {
    /// Check upstream `i` without crawling it: its manifest, or else its top
    /// directory listing.
    pub async fn probe(&self, i: usize) -> Probe {
        let start = Instant::now();
        // A probe has a deadline of its own: a trickling upstream cannot hold `mirrors`.
        let deadline = self.net.connect_timeout + self.net.low_speed_time;
        let (result, timed_out) = match tokio::time::timeout(deadline, self.probe_listing(i)).await {
            Ok(result) => (result, false),
            Err(_) => (Err(anyhow!("no whole answer within {deadline:?} (connect_timeout + low_speed_time)")), true),
        };
        let latency_ms = start.elapsed().as_millis() as u64;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let https = self.bases[i].scheme() == "https";
        let mut probe = Probe { url: self.bases[i].to_string(), usable: result.is_ok(), ..Probe::default() };
        probe.proxy = self.proxies[i].as_ref().map(|p| p.label.clone());
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
                // A status code, a client-certificate complaint or an answer that
                // is no listing (no transport error at all) means the handshake got that far.
                let handshake_done = client_rejected || status.is_some() || (kind.is_none() && !timed_out);
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
                let named = self.zone.as_ref().map(|z| format!("{} (listing_timezone)", z.iana_name().unwrap_or("?")));
                probe.listing_time_zone = named.or_else(|| (dates.offset != 0).then(|| dates.zone()));
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
}
