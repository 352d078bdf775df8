//! The listing of an upstream without a manifest: its directory listings
//! crawled from the base URL down, a bounded number of pages at a time
//! (each directory asked as soon as its parent's page is read), with caps
//! on page size, depth and entry count, and never into a directory the
//! filters exclude. Sizes a listing shows rounded are taken
//! from the published snapshot when the mtime is unchanged; sizes and dates
//! a listing does not show come from a HEAD request. A listing in local time
//! is found from one file's `Last-Modified` and set right; `SHA256SUMS` files
//! name digests to verify.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::stream::{self, FuturesUnordered};
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::autoindex::{Item, JsonKind, Kind, parse_html, parse_json, parse_serve_json, parse_xml};
use super::sums::{Sums, fetch_sums};
use super::transport::Probed;
use super::{Dates, Listing, Previous, Source, Upstreams, Validators};
use crate::manifest::{Digest, Entry, MAX_DEPTH, Manifest, RelPath};
use crate::output::quote;

const MAX_PAGE_BYTES: u64 = 16 << 20;
const MAX_ENTRIES: usize = 5_000_000;
/// How often a long crawl tells how far it has come.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The largest offset of a local time from UTC (UTC+14, Kiribati).
const MAX_OFFSET: i64 = 14 * 3600;

/// A file found by the crawl, before sizes and dates are settled.
struct Found {
    path: RelPath,
    size: Option<u64>,
    mtime: Option<i64>,
    /// Listed as a symlink: it may point nowhere.
    link: bool,
}

impl Found {
    /// The listing shows neither its size nor its date.
    fn shows_nothing(&self) -> bool {
        self.size.is_none() && self.mtime.is_none()
    }
}

/// One directory page: its items, the format, the resolution of its dates,
/// the `Server` header and its length in bytes; one of the pages held.
struct Page {
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
    items: Vec<Item>,
    source: Source,
    precision: i64,
    server: Option<String>,
    len: u64,
    /// Its directories are not marked (see `HtmlPage::unmarked`).
    unmarked: bool,
}

/// Listing pages held whole at once (up to 16 MiB each) while they are
/// parsed and taken: this bounds a hostile crawl's memory.
pub(super) const PAGES_HELD: usize = 16;
/// Listing pages asked at once (fewer with a lower fixed `concurrency`),
/// each spooled to an unnamed temporary file as it arrives: a long link
/// needs many in flight. Together they stop at the 512 MiB a listing may
/// take, in flight or read.
pub(super) const PAGES_ASKED: usize = 128;

pub(super) async fn crawl(up: &Upstreams, i: usize, previous: Option<Previous<'_>>) -> Result<Listing> {
    let base = &up.bases[i];
    if base.scheme() == "file" {
        bail!("{base}: a file:// upstream needs a manifest (write one with `upmirror manifest DIR`)");
    }
    let previous = previous.map(Known::of).transpose()?;
    // The crawl's time is when it began: a file rewritten while it ran is
    // then racy for the next run (see `settle_one`).
    let started = SystemTime::now();
    let mut crawl = Crawl { frontier: VecDeque::from([(String::new(), 0)]), precision: 1, ..Crawl::default() };
    list_all(up, base, &mut crawl).await?;
    let Crawl { mut found, source, bytes, precision, server, .. } = crawl;
    let offset = set_back(up, i, &mut found, precision, previous).await?;
    let paths: Vec<&RelPath> = found.iter().map(|f| &f.path).collect();
    let (sums, unsigned) = digests(up, i, &paths, bytes).await?;
    let signed_by = (!sums.signers.is_empty()).then(|| sums.signers.join(", "));
    let (asked, rechecks) = rechecked(&found, previous);
    let files = settle(up, i, found, previous, sums.digests, (precision, &asked)).await?;
    let manifest = Manifest::new(started, files).map_err(|e| anyhow!("{base}: {e}"))?;
    Ok(Listing {
        upstream: i,
        url: base.clone(),
        source: source.unwrap_or(Source::AutoindexJson),
        identity: identity(&manifest),
        validators: Validators::default(),
        manifest,
        signed_by,
        unsigned_files: unsigned,
        signed: None,
        dates: Dates { precision, offset },
        server,
        trace: Vec::new(),
        rechecks,
        deltas: Vec::new(),
    })
}

/// Every directory from the base down, up to `pages_asked` pages in
/// flight, each asked as soon as its parent's page is read: levels overlap,
/// so a deep tree pays no round trip per level. Pages are taken as they
/// arrive and counted at once: a hostile page is stopped at the first cap
/// it passes, not held whole.
async fn list_all(up: &Upstreams, base: &Url, crawl: &mut Crawl) -> Result<()> {
    let spooled = &AtomicU64::new(0);
    let mut pages = FuturesUnordered::new();
    loop {
        while pages.len() < up.pages_asked
            && let Some((prefix, depth)) = crawl.frontier.pop_front()
        {
            if depth >= MAX_DEPTH {
                bail!("{base}: directories nested deeper than {MAX_DEPTH} levels (a symlink loop?)");
            }
            pages.push(list_dir(up, base, prefix, depth, spooled));
        }
        let Some(listed) = pages.next().await else { return Ok(()) };
        let (page, prefix, depth) = listed?;
        crawl.take(up, base, (&prefix, depth), page)?;
    }
}

/// The page of the directory at `prefix`, its directories marked.
async fn list_dir(
    up: &Upstreams,
    base: &Url,
    prefix: String,
    depth: usize,
    spooled: &AtomicU64,
) -> Result<(Page, String, usize)> {
    let url = dir_url(base, &prefix);
    let page = fetch_page(up, &url, spooled).await;
    let mut page = page.map_err(|e| unlisted(e, prefix.is_empty()))?;
    if page.unmarked {
        mark_dirs(up, &url, &mut page.items).await?;
    }
    Ok((page, prefix, depth))
}

/// The digests the crawl's lists name (`SHA256SUMS`; with a keyring, signed
/// ones only, and apt's signed releases too), and with a keyring how many
/// of the files none of them covers.
async fn digests(up: &Upstreams, i: usize, paths: &[&RelPath], listed: u64) -> Result<(Sums, Option<usize>)> {
    let mut sums = fetch_sums(up, i, paths, listed, MAX_PAGE_BYTES).await?;
    if up.keyring.is_empty() {
        return Ok((sums, None));
    }
    let all: HashSet<&str> = paths.iter().map(|p| p.as_str()).collect();
    sums.merge(super::apt::apt_digests(up, i, &all).await?);
    let covered = |p: &&&RelPath| sums.digests.contains_key(p.as_str()) || Sums::is_own(p.as_str());
    let unsigned = paths.iter().filter(|p| !covered(p)).count();
    Ok((sums, Some(unsigned)))
}

/// The published listing a crawl compares with, its manifest read (the
/// one time a run reads it for a crawl).
#[derive(Clone, Copy)]
struct Known<'a> {
    manifest: &'a Manifest,
    offset: i64,
    listed_at: i64,
    recheck: super::Recheck<'a>,
}

impl<'a> Known<'a> {
    fn of(p: Previous<'a>) -> Result<Known<'a>> {
        Ok(Known { manifest: p.manifest.get()?, offset: p.offset, listed_at: p.listed_at, recheck: p.recheck })
    }
}

/// Of the files the listing shows neither size nor date of and that the
/// published snapshot holds, those asked again this run: the budget's
/// worth in path order after where the last run stopped, wrapping around.
/// The others keep what was published until their turn.
fn rechecked(found: &[Found], previous: Option<Known<'_>>) -> (HashSet<String>, super::Rechecks) {
    let Some(prev) = previous else { return Default::default() };
    let published = |f: &&Found| prev.manifest.get(f.path.as_str()).is_some();
    let mut blind: Vec<&str> =
        found.iter().filter(|f| f.shows_nothing()).filter(published).map(|f| f.path.as_str()).collect();
    blind.sort_unstable();
    let start = prev.recheck.from.map_or(0, |from| blind.partition_point(|p| *p <= from));
    let take = prev.recheck.budget.min(blind.len());
    let asked: Vec<&str> = blind.iter().cycle().skip(start).take(take).copied().collect();
    let rechecks =
        super::Rechecks { asked: take, deferred: blind.len() - take, last: asked.last().map(|p| p.to_string()) };
    (asked.into_iter().map(str::to_owned).collect(), rechecks)
}

/// What the crawl has found so far.
#[derive(Default)]
struct Crawl {
    found: Vec<Found>,
    /// Directories found and not yet asked, as path prefixes ending in
    /// `/`, each with its depth.
    frontier: VecDeque<(String, usize)>,
    source: Option<Source>,
    server: Option<String>,
    /// The coarsest resolution of the dates seen, in seconds.
    precision: i64,
    /// Listing bytes read this run.
    bytes: u64,
    /// Directory pages read, and when progress was last told.
    pages: u64,
    told: Option<std::time::Instant>,
}

impl Crawl {
    /// Add the items of one page, at `prefix` and `depth`, checking every
    /// cap as it goes; directories and files the filters leave out are
    /// dropped here.
    fn take(&mut self, up: &Upstreams, base: &Url, (prefix, depth): (&str, usize), page: Page) -> Result<()> {
        self.source.get_or_insert(page.source);
        if self.server.is_none() {
            self.server = page.server;
        }
        self.precision = self.precision.max(page.precision);
        self.bytes += page.len;
        self.pages += 1;
        let told = *self.told.get_or_insert_with(std::time::Instant::now);
        if told.elapsed() >= PROGRESS_EVERY {
            self.told = Some(std::time::Instant::now());
            let (pages, files) = (self.pages, self.found.len());
            up.out.progress_line(format!("listing {base}: {pages} directories read, {files} files found so far"));
        }
        let url = || dir_url(base, prefix);
        let mut names = HashSet::with_capacity(page.items.len());
        if let Some(twice) = page.items.iter().find(|item| !names.insert(item.name.as_str())) {
            bail!("{}: \"{}\" is listed twice", url(), quote(&twice.name, 200));
        }
        for item in page.items {
            let path = format!("{prefix}{}", item.name);
            let rel = RelPath::parse(&path).map_err(|e| anyhow!("{}: {e}", url()))?;
            match item.kind {
                Kind::Dir if up.filter.may_hold(&path) => self.frontier.push_back((format!("{path}/"), depth + 1)),
                Kind::File | Kind::Link if up.filter.allows(&path) => {
                    let link = item.kind == Kind::Link;
                    self.found.push(Found { path: rel, size: item.size, mtime: item.mtime, link })
                }
                _ => {}
            }
            if self.found.len() + self.frontier.len() > MAX_ENTRIES {
                bail!("{base}: more than {MAX_ENTRIES} entries");
            }
        }
        Ok(())
    }
}

/// How far the listing's dates are ahead of UTC, in seconds: a listing in
/// local time (nginx `autoindex_localtime`, Apache and lighttpd by default)
/// is off by a whole offset, found from the `Last-Modified` of one file
/// (the first by path) as a multiple of a quarter hour within ±14 h. While
/// that file is listed as the previous listing showed it, the offset is the
/// previous one and nothing is asked. A file whose dates differ otherwise
/// (rewritten since it was listed) shows no offset; the download then checks
/// it as usual.
/// Set the listed dates back to UTC: by the zone's rules for each date
/// (daylight saving included) when `listing_timezone` names it, else by the
/// one offset found from a file's `Last-Modified`, which is returned.
async fn set_back(
    up: &Upstreams,
    i: usize,
    found: &mut [Found],
    precision: i64,
    previous: Option<Known<'_>>,
) -> Result<i64> {
    let offset = match &up.zone {
        Some(_) => 0,
        None => find_offset(up, i, found, precision, previous).await?,
    };
    for f in found.iter_mut() {
        f.mtime = f.mtime.map(|wall| match &up.zone {
            Some(zone) => in_zone(zone, wall),
            None => wall - offset,
        });
    }
    Ok(offset)
}

/// The UTC time of `wall`, a listing's date in `zone` read as if it were
/// UTC; in the hour a clock turns back, the earlier of the two.
fn in_zone(zone: &jiff::tz::TimeZone, wall: i64) -> i64 {
    let Ok(at) = jiff::Timestamp::from_second(wall) else { return wall };
    let civil = jiff::tz::TimeZone::UTC.to_datetime(at);
    zone.to_ambiguous_timestamp(civil).compatible().map_or(wall, |t| t.as_second())
}

async fn find_offset(
    up: &Upstreams,
    i: usize,
    found: &[Found],
    precision: i64,
    previous: Option<Known<'_>>,
) -> Result<i64> {
    let first = found.iter().filter_map(|f| Some((f, f.mtime?))).min_by(|a, b| a.0.path.cmp(&b.0.path));
    let Some((f, listed)) = first else { return Ok(0) };
    if let Some(prev) = previous
        && prev.manifest.get(f.path.as_str()).is_some_and(|e| {
            e.mtime - e.mtime.rem_euclid(precision) == listed - prev.offset && f.size.is_none_or(|size| size == e.size)
        })
    {
        return Ok(prev.offset);
    }
    let Some(exact) = up.head(&up.file_url(i, &f.path)).await?.1 else { return Ok(0) };
    // A listing at minute resolution shows the minute the file's time falls in.
    let ahead = listed - exact + precision / 2;
    let offset = (ahead + 450).div_euclid(900) * 900;
    let clean = (ahead - offset).abs() <= precision / 2 && offset.abs() <= MAX_OFFSET;
    Ok(if clean { offset } else { 0 })
}

/// A top directory the server will not list (403, 404), after no manifest
/// was found: the server lists no directories at all.
fn unlisted(e: anyhow::Error, top: bool) -> anyhow::Error {
    let status = e.downcast_ref::<super::errors::HttpStatus>().map(|s| s.status);
    if !top || !matches!(status, Some(403 | 404)) {
        return e;
    }
    e.context(
        "no manifest, and the server lists no directories (BusyBox httpd, or listings turned off): publish one \
         beside the tree with `upmirror manifest DIR`, or turn directory listings on",
    )
}

/// The format of the top listing, the newest mtime in it (if it shows
/// dates), its dates and the server's name.
pub(super) async fn probe_top(up: &Upstreams, i: usize) -> Result<(Source, Option<i64>, Dates, Option<String>)> {
    let base = &up.bases[i];
    if base.scheme() == "file" {
        bail!("{base}: no manifest");
    }
    let page = fetch_page(up, base, &Default::default()).await.map_err(|e| unlisted(e, true))?;
    let mut found: Vec<Found> = page
        .items
        .iter()
        .filter(|item| item.kind == Kind::File)
        .filter_map(|item| {
            let path = RelPath::parse(&item.name).ok()?;
            Some(Found { path, size: item.size, mtime: item.mtime, link: false })
        })
        .collect();
    // As a sync reads the dates: by listing_timezone when it is set.
    let offset = set_back(up, i, &mut found, page.precision, None).await?;
    let newest = found.iter().filter_map(|f| f.mtime).max();
    Ok((page.source, newest, Dates { precision: page.precision, offset }, page.server))
}

/// One directory page, spooled (its bytes counted in `spooled`), then held
/// whole while it is parsed by its format.
async fn fetch_page(up: &Upstreams, url: &Url, spooled: &AtomicU64) -> Result<Page> {
    let (doc, server) = up.get_spooled(url, MAX_PAGE_BYTES, spooled).await.with_context(|| url.to_string())?;
    let held = up.pages_held.clone().acquire_owned().await.ok();
    let bytes = doc.bytes()?;
    drop(doc);
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("{url}: listing is not UTF-8"))?;
    let exact = |source| move |items| (items, source, 1, false);
    let head = text.trim_start();
    let parsed = if head.starts_with("<?xml") {
        parse_xml(text).map(exact(Source::AutoindexXml))
    } else if head.starts_with('{') {
        parse_serve_json(text).map(exact(Source::ServeJson))
    } else if head.starts_with('[') {
        parse_json(text).map(|(items, kind)| match kind {
            JsonKind::Caddy => exact(Source::CaddyJson)(items),
            JsonKind::Nginx => exact(Source::AutoindexJson)(items),
        })
    } else {
        parse_html(text, url.path()).map(|page| (page.items, Source::AutoindexHtml, page.precision, page.unmarked))
    };
    let (items, source, precision, unmarked) = parsed.map_err(|e| anyhow!("{url}: {e}"))?;
    Ok(Page { _held: held, items, source, precision, server, len: bytes.len() as u64, unmarked })
}
/// On a page that does not mark its directories, ask each name with a
/// HEAD: a directory is redirected to itself with a `/`; a file's exact
/// size and date come with the answer.
async fn mark_dirs(up: &Upstreams, dir: &Url, items: &mut [Item]) -> Result<()> {
    let mut asked = stream::iter(items.iter_mut().filter(|item| item.kind == Kind::File))
        .map(|item| async move {
            let mut url = dir.clone();
            if let Ok(mut segs) = url.path_segments_mut() {
                segs.pop_if_empty().push(&item.name);
            }
            Ok::<_, anyhow::Error>((item, up.head_kind(&url).await?))
        })
        .buffer_unordered(up.concurrency);
    while let Some((item, probed)) = asked.try_next().await? {
        (item.kind, item.size, item.mtime) = match probed {
            Probed::Dir => (Kind::Dir, None, None),
            Probed::File(len, modified) => (Kind::File, Some(len), modified.or(item.mtime)),
        };
    }
    Ok(())
}

/// Give every file an exact size and mtime and, where known, its digest.
async fn settle(
    up: &Upstreams,
    i: usize,
    found: Vec<Found>,
    previous: Option<Known<'_>>,
    digests: HashMap<String, Digest>,
    (precision, asked): (i64, &HashSet<String>),
) -> Result<Vec<Entry>> {
    let known: HashMap<&str, &Entry> =
        previous.map(|p| p.manifest.files.iter().map(|e| (e.path.as_str(), e)).collect()).unwrap_or_default();
    let listed_at = previous.map_or(0, |p| p.listed_at);
    stream::iter(found)
        .map(|f| {
            let old = known.get(f.path.as_str()).copied();
            let sha256 = digests.get(f.path.as_str()).copied();
            // Shown nothing of, and not its turn: as published.
            let waits = f.shows_nothing() && !asked.contains(f.path.as_str());
            async move {
                let (size, mtime) = match old.filter(|_| waits) {
                    Some(o) => (o.size, o.mtime),
                    None => match settle_one(up, i, &f, old, precision, listed_at).await {
                        Err(e) if f.link && gone(&e) => {
                            up.out.warn(format!("{}: a symlink that points nowhere; skipped", f.path));
                            return Ok(None);
                        }
                        other => other?,
                    },
                };
                Ok(Some(Entry { path: f.path, size, mtime, sha256, local_mtime: None }))
            }
        })
        .buffer_unordered(up.concurrency)
        .try_filter_map(|e| async move { Ok(e) })
        .try_collect()
        .await
}

/// The server has nothing at that path.
fn gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<super::HttpStatus>().is_some_and(|s| matches!(s.status, 404 | 410))
}

/// The size and mtime of one file. The published entry holds while the
/// listing shows it unchanged: its exact mtime, and its size where the
/// listing rounds it — unless it is racy, listed in the minute the previous
/// listing was made (or later), when a rewrite of the same size would not
/// show: such a file, like anything the listing does not show, is asked
/// with a HEAD (the git index's answer to the same race).
async fn settle_one(
    up: &Upstreams,
    i: usize,
    f: &Found,
    old: Option<&Entry>,
    precision: i64,
    listed_at: i64,
) -> Result<(u64, i64)> {
    let shown = |o: &&Entry| {
        f.mtime == Some(o.mtime - o.mtime.rem_euclid(precision)) && f.size.is_none_or(|size| size == o.size)
    };
    match (old.filter(shown), f.size, f.mtime) {
        (Some(o), _, Some(m)) if precision == 1 || m + precision <= listed_at => return Ok((o.size, o.mtime)),
        (None, Some(size), Some(mtime)) => return Ok((size, mtime)),
        _ => {}
    }
    let url = up.file_url(i, &f.path);
    let (len, modified) = up.head(&url).await?;
    let mtime = modified.or(f.mtime).ok_or_else(|| {
        anyhow!(
            "{url}: the listing shows no date, and the server sends no Last-Modified: it cannot be mirrored \
                 without a manifest; write one beside the tree (upmirror manifest DIR), or serve it with a server \
                 that sends dates"
        )
    })?;
    Ok((f.size.unwrap_or(len), mtime))
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
