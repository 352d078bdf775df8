//! The listing of an upstream without a manifest: its directory listings
//! crawled breadth first from the base URL, a bounded number of pages at a
//! time, with caps on page size, depth and entry count. Sizes a listing shows
//! rounded are taken from the published snapshot when the mtime is unchanged,
//! else from a HEAD request; `SHA256SUMS` files name digests to verify.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::autoindex::{Item, Kind, parse_html, parse_nginx_json, parse_sha256sums};
use super::{Listing, MAX_LISTING_BYTES, Source, Upstreams, Validators};
use crate::manifest::{Digest, Entry, MAX_DEPTH, Manifest, RelPath};
use crate::output::quote;

const MAX_PAGE_BYTES: u64 = 16 << 20;
const MAX_ENTRIES: usize = 5_000_000;
const SUMS_FILE: &str = "SHA256SUMS";

/// A file found by the crawl, before sizes and digests are settled.
struct Found {
    path: RelPath,
    size: Option<u64>,
    mtime: i64,
}

pub(super) async fn crawl(up: &Upstreams, i: usize, published: Option<&Manifest>) -> Result<Listing> {
    let base = &up.bases[i];
    if base.scheme() == "file" {
        bail!("{base}: a file:// upstream needs a manifest (write one with `upmirror manifest DIR`)");
    }
    let mut crawl = Crawl { found: Vec::new(), frontier: vec![String::new()], source: None, bytes: 0 };
    for depth in 0.. {
        if crawl.frontier.is_empty() {
            break;
        }
        if depth >= MAX_DEPTH {
            bail!("{base}: directories nested deeper than {MAX_DEPTH} levels (a symlink loop?)");
        }
        // Pages are taken as they arrive and counted at once: a hostile
        // level is stopped at the first page past a cap, not held whole.
        let mut pages = stream::iter(std::mem::take(&mut crawl.frontier))
            .map(|prefix| async move {
                let (items, source, len) = fetch_page(up, &dir_url(base, &prefix)).await?;
                Ok::<_, anyhow::Error>((prefix, items, source, len))
            })
            .buffer_unordered(up.concurrency);
        while let Some((prefix, items, source, len)) = pages.try_next().await? {
            crawl.take(base, &prefix, items, source, len)?;
        }
    }
    let Crawl { found, source, bytes, .. } = crawl;
    let source = source.unwrap_or(Source::AutoindexJson);
    let digests = fetch_sums(up, i, &found, bytes).await?;
    let files = settle_sizes(up, i, found, published, digests).await?;
    let manifest = Manifest::new(SystemTime::now(), files).map_err(|e| anyhow!("{base}: {e}"))?;
    Ok(Listing {
        upstream: i,
        url: base.clone(),
        source,
        identity: identity(&manifest),
        validators: Validators::default(),
        manifest,
        signed_by: None,
    })
}

/// What the crawl has found so far.
struct Crawl {
    found: Vec<Found>,
    /// Directories of the next level, as path prefixes ending in `/`.
    frontier: Vec<String>,
    source: Option<Source>,
    /// Listing bytes read this run.
    bytes: u64,
}

impl Crawl {
    /// Add one page's items below `prefix`, checking every cap as it goes.
    fn take(&mut self, base: &Url, prefix: &str, items: Vec<Item>, source: Source, len: u64) -> Result<()> {
        self.source.get_or_insert(source);
        self.bytes += len;
        if self.bytes > MAX_LISTING_BYTES {
            bail!("{base}: directory listings larger than {MAX_LISTING_BYTES} bytes in all");
        }
        let page = || dir_url(base, prefix);
        let mut names = HashSet::with_capacity(items.len());
        if let Some(twice) = items.iter().find(|item| !names.insert(item.name.as_str())) {
            bail!("{}: \"{}\" is listed twice", page(), quote(&twice.name, 200));
        }
        for item in items {
            let path = format!("{prefix}{}", item.name);
            let rel = RelPath::parse(&path).map_err(|e| anyhow!("{}: {e}", page()))?;
            match item.kind {
                Kind::Dir => self.frontier.push(format!("{path}/")),
                Kind::File => self.found.push(Found { path: rel, size: item.size, mtime: item.mtime.unwrap_or(0) }),
            }
            if self.found.len() + self.frontier.len() > MAX_ENTRIES {
                bail!("{base}: more than {MAX_ENTRIES} entries");
            }
        }
        Ok(())
    }
}

/// The format of the top listing and the newest mtime in it.
pub(super) async fn probe_top(up: &Upstreams, i: usize) -> Result<(Source, i64)> {
    let base = &up.bases[i];
    if base.scheme() == "file" {
        bail!("{base}: no manifest");
    }
    let (items, source, _) = fetch_page(up, base).await?;
    Ok((source, items.iter().filter_map(|i| i.mtime).max().unwrap_or(0)))
}

/// One directory page, parsed by its format, and its length in bytes.
async fn fetch_page(up: &Upstreams, url: &Url) -> Result<(Vec<Item>, Source, u64)> {
    let bytes = up.get_small(url, MAX_PAGE_BYTES).await.with_context(|| url.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("{url}: listing is not UTF-8"))?;
    let parsed = if text.trim_start().starts_with('[') {
        parse_nginx_json(text).map(|items| (items, Source::AutoindexJson))
    } else if text.contains("Index of ") {
        parse_html(text).map(|items| (items, Source::AutoindexHtml))
    } else {
        Err("not a directory listing (an index.html page, or a login page?)".to_owned())
    };
    parsed.map(|(items, source)| (items, source, bytes.len() as u64)).map_err(|e| anyhow!("{url}: {e}"))
}

/// Digests from every `SHA256SUMS` the crawl found, by full path. They
/// count against the run's listing bytes, `listed` of which are spent.
async fn fetch_sums(up: &Upstreams, i: usize, found: &[Found], listed: u64) -> Result<HashMap<String, Digest>> {
    let sums = found.iter().filter(|f| f.path.as_str().rsplit('/').next() == Some(SUMS_FILE));
    let mut lists = stream::iter(sums)
        .map(|f| async move {
            let url = up.file_url(i, &f.path);
            let bytes = up.get_small(&url, MAX_PAGE_BYTES).await.with_context(|| url.to_string())?;
            let prefix = &f.path.as_str()[..f.path.as_str().len() - SUMS_FILE.len()];
            let text = String::from_utf8_lossy(&bytes);
            let pairs = parse_sha256sums(&text).map_err(|e| anyhow!("{url}: {e}"))?;
            let pairs: Vec<(String, Digest)> =
                pairs.into_iter().map(|(name, d)| (format!("{prefix}{name}"), d)).collect();
            Ok::<_, anyhow::Error>((pairs, bytes.len() as u64))
        })
        .buffer_unordered(up.concurrency);
    let (mut digests, mut bytes) = (HashMap::new(), listed);
    while let Some((pairs, len)) = lists.try_next().await? {
        bytes += len;
        if bytes > MAX_LISTING_BYTES {
            bail!("{}: listings and {SUMS_FILE} files larger than {MAX_LISTING_BYTES} bytes in all", up.bases[i]);
        }
        digests.extend(pairs);
    }
    Ok(digests)
}

/// Give every file an exact size and, where known, its digest.
async fn settle_sizes(
    up: &Upstreams,
    i: usize,
    found: Vec<Found>,
    published: Option<&Manifest>,
    digests: HashMap<String, Digest>,
) -> Result<Vec<Entry>> {
    let known: HashMap<&str, &Entry> =
        published.map(|m| m.files.iter().map(|e| (e.path.as_str(), e)).collect()).unwrap_or_default();
    stream::iter(found)
        .map(|f| {
            let old = known.get(f.path.as_str()).filter(|old| old.mtime == f.mtime).map(|old| old.size);
            let sha256 = digests.get(f.path.as_str()).copied();
            async move {
                let size = match f.size.or(old) {
                    Some(size) => size,
                    None => up.content_length(&up.file_url(i, &f.path)).await?,
                };
                Ok(Entry { path: f.path, size, mtime: f.mtime, sha256, local_mtime: None })
            }
        })
        .buffer_unordered(up.concurrency)
        .try_collect()
        .await
}

fn dir_url(base: &Url, prefix: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend(prefix.split('/'));
    }
    url
}

/// The identity of a crawled listing: sha256 of its normalised entries.
fn identity(m: &Manifest) -> Digest {
    let mut h = Sha256::new();
    for e in &m.files {
        h.update(e.identity_line().as_bytes());
        h.update(b"\n");
    }
    Digest(h.finalize().into())
}
