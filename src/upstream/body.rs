//! File bodies: a whole file, the rest of one from an offset (resumed
//! with `If-Range`), or one range of it, from an HTTPS or a `file://`
//! upstream, streamed chunk by chunk.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use tokio::io::AsyncReadExt;

use super::errors::{check_status, describe};
use super::hosts::Place;
use super::transport::Route;
use super::{Upstreams, file_path, parse_http_date};
use crate::manifest::RelPath;

/// A body from this size on comes over an HTTP/1.1 connection of its own
/// from a host that answered over HTTP/2 (see [`Route::Bulk`]).
const BULK: u64 = 8 << 20;

impl Upstreams {
    /// Open the body of `rel` on upstream `i`, from byte `from` onwards.
    /// A resumed request (`from > 0`) sends `If-Range: validator` when one is
    /// given; the answer says whether it resumed (206) or starts over (200).
    /// `len` is the bytes expected from `from` on.
    pub async fn open(
        &self,
        i: usize,
        rel: &RelPath,
        (from, len): (u64, u64),
        validator: Option<&str>,
    ) -> Result<Body> {
        let range = (from > 0).then(|| (format!("bytes={from}-"), validator));
        self.open_with(i, rel, (from..u64::MAX, len), range).await
    }

    /// Open bytes `range` of `rel` on upstream `i` (a segment of a large
    /// file); the caller checks the answer's `content_range`.
    pub async fn open_range(&self, i: usize, rel: &RelPath, range: std::ops::Range<u64>) -> Result<Body> {
        let header = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        let len = range.end.saturating_sub(range.start);
        self.open_with(i, rel, (range, len), Some((header, None))).await
    }

    async fn open_with(
        &self,
        i: usize,
        rel: &RelPath,
        (range, len): (std::ops::Range<u64>, u64),
        header: Option<(String, Option<&str>)>,
    ) -> Result<Body> {
        let url = self.file_url(i, rel);
        if url.scheme() == "file" {
            return open_local(file_path(&self.bases[i])?, rel, range).await;
        }
        let mut slot = self.slot(&url).await;
        let bulk = match slot.as_mut() {
            Some(slot) if len >= BULK => slot.take_bulk().await,
            _ => false,
        };
        let route = if bulk { Route::Bulk } else { Route::Spread };
        let mut req = self.clients.first.get(url);
        if let Some((range, validator)) = header {
            req = req.header(RANGE, range);
            if let Some(v) = validator {
                req = req.header(IF_RANGE, v);
            }
        }
        let resp = check_status(self.send(req, route).await?)?;
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
}

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
