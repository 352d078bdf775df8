//! Downloads: every planned file streamed into `.upmirror/partial/` with
//! bounded concurrency, counted and hashed chunk by chunk in one place, and
//! accepted only when size and digest (or, without a digest, `Last-Modified`)
//! match the listing.
//!
//! A failed attempt moves on to the next upstream at once; when every
//! upstream has failed, the file waits (exponential backoff with jitter,
//! honouring `Retry-After`) and tries again, up to `retries` rounds and a
//! retry budget shared by the run. Errors that a retry cannot fix (a 4xx, a
//! certificate, bytes that do not match) rule that upstream out for the file.
//!
//! Partial files survive failures and runs: the next attempt asks for the
//! rest with `Range` (and `If-Range`), and extends the file only on a 206
//! that starts exactly there. Large files come in ranges over several
//! connections at once (`segmented`). Files are not fsynced here: the
//! snapshot is made durable as a whole before it is published.
//!
//! Writes go to the page cache from the download task itself, through a
//! 64 KiB buffer: they never wait on the disk, and handing each one to a
//! blocking thread cost more (futex wake-ups) than the write.

mod delta;
mod seed;
mod segmented;
mod staging;

use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use filetime::FileTime;
use futures_util::{StreamExt, stream};
use sha2::{Digest as _, Sha256};

use crate::config::Net;
use crate::disk::{ensure_real_dir, nofollow};
use crate::local_tree::hash_reader;
use crate::manifest::{Digest, Entry};
use crate::output::{Progress, rfc3339};
use crate::upstream::{self, Body, Dates, HttpStatus, Pace, Stalled, Upstreams, Verdict, backoff};
pub use delta::{DeltaStats, Deltas};
pub use seed::{SeedStats, Seeds};
use segmented::Segmented;
use staging::{Present, Staged, create_nofollow, discard, own_file, read_validator, staging_name};
pub use staging::{Reclaimed, reclaim_staging, staged_bytes};

/// A file in staging whose bytes matched the listing: its size, and its
/// digest when the listing gives one (else its `Last-Modified`). Only this
/// module can make one, by [`Verified::check`]; building a snapshot takes
/// nothing else, so unverified bytes cannot be published:
///
/// ```compile_fail
/// # use upmirror::{fetch::Verified, manifest::{Entry, RelPath}};
/// let entry = Entry { path: RelPath::parse("a").unwrap(), size: 1, mtime: 0, sha256: None, local_mtime: None };
/// let forged = Verified { entry, staged: "/tmp/a".into() }; // private fields: does not compile
/// ```
#[derive(Debug)]
pub struct Verified {
    entry: Entry,
    /// Where the bytes wait, below staging (a million of these are held
    /// until the snapshot is built).
    staged: Staged,
}

impl Verified {
    /// Accept `file`, `got` bytes hashing to `digest`, as `entry` if they match it.
    fn check(mut entry: Entry, file: PathBuf, got: u64, digest: Digest) -> Result<Verified, Mismatch> {
        if got != entry.size {
            return Err(Mismatch::Size { got, want: entry.size });
        }
        if let Some(want) = entry.sha256
            && want != digest
        {
            return Err(Mismatch::Digest { want, got: digest });
        }
        entry.sha256 = Some(digest);
        Ok(Verified { entry, staged: Staged::of(file) })
    }

    /// The listed entry, with its digest.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Where the verified bytes wait in `staging`.
    pub fn file(&self, staging: &Path) -> PathBuf {
        self.staged.path(staging)
    }

    /// The entry, once the file has been moved into a snapshot.
    pub fn into_entry(self) -> Entry {
        self.entry
    }
}

/// The bytes did not match the listing.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("body longer than the listed {0} bytes")]
    TooLong(u64),
    #[error("got {got} bytes, the listing says {want}")]
    Size { got: u64, want: u64 },
    #[error("sha256 mismatch: the listing says {want}, got {got}")]
    Digest { want: Digest, got: Digest },
    #[error("Last-Modified {} differs from the listing's mtime {}{}", rfc3339(*got), rfc3339(*want), mtime_hint(*got, *want, *dates))]
    Mtime { got: i64, want: i64, dates: Dates },
    #[error("asked for bytes from {want}, got a 206 from {got}; the partial file was discarded")]
    RangeStart { want: u64, got: u64 },
    #[error("answered a request for the whole file with a 206 (partial content)")]
    UnaskedRange,
    #[error("no Last-Modified to confirm the listed mtime, and no digest; only the listing's own upstream is trusted")]
    Unconfirmed,
}

/// What a body's date that differs from the listing's likely means.
fn mtime_hint(got: i64, want: i64, dates: Dates) -> String {
    if dates.offset != 0 && matches!((got - want).abs(), 1800 | 3600) {
        format!(
            " (the listing shows local time {}, found from another file, and this file is off by the change of \
             daylight saving: name the server's zone, listing_timezone = \"Area/City\")",
            dates.zone()
        )
    } else if dates.offset != 0 {
        format!(" (the listing shows local time {}, found from another file; this file disagrees)", dates.zone())
    } else if want > got {
        " (the listing is ahead of the file: a listing in local time, or a file replaced by an older one?)".into()
    } else {
        " (the file changed after it was listed, or the upstream lags)".into()
    }
}

/// What is left to try for one file.
struct Tries {
    /// Upstreams that cannot give this file.
    ruled_out: Vec<bool>,
    failures: Vec<String>,
    /// The wait before the next round; `None`: no round will help.
    wait: Option<Duration>,
    /// Nothing is staged for this file: no run or try left a part of it.
    fresh: bool,
}

/// A local disk error: the run stops, no retry helps.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LocalIo(String);

/// Smaller files are fetched whole on every attempt: resuming them would cost
/// more in bookkeeping than it saves.
const RESUME_MIN: u64 = 256 << 10;
/// A large download is flushed in the background every this many bytes.
const FLUSH_EVERY: u64 = 64 << 20;

struct Fetcher {
    up: Upstreams,
    order: Vec<usize>,
    dates: Dates,
    staging: PathBuf,
    net: Net,
    limiter: Option<Limiter>,
    progress: Progress,
    seeds: Option<Arc<Seeds>>,
    deltas: Option<Arc<Deltas>>,
    present: Present,
}

/// How one run fetches.
pub struct Job<'a> {
    /// The upstream tried first (the one that gave the listing).
    pub first: usize,
    /// How the listing shows mtimes (see [`fetch_all`]).
    pub dates: Dates,
    /// Where files are staged (`.upmirror/partial/`).
    pub staging: &'a Path,
    pub concurrency: usize,
    pub net: &'a Net,
    pub progress: Progress,
    /// Local trees tried before the network (`seed_from`).
    pub seeds: Option<Arc<Seeds>>,
    /// Patches from the published snapshot tried before whole files.
    pub deltas: Option<Arc<Deltas>>,
}

/// Fetch every entry into `job.staging`, trying upstream `job.first` before
/// the others. An entry without a digest is accepted only if the body's
/// `Last-Modified`, cut to the listing's resolution, equals its listed mtime.
pub async fn fetch_all(
    up: &Upstreams,
    entries: impl Iterator<Item = Entry>,
    count: usize,
    job: Job<'_>,
) -> Result<Vec<Verified>> {
    let staging = job.staging;
    // 256 shards: thousands of files created at once in one directory
    // contend for its lock and crowd one inode group.
    for shard in 0..=255u8 {
        ensure_real_dir(&staging.join(format!("{shard:02x}")))?;
    }
    up.budget.grant(count);
    let fetcher = Arc::new(Fetcher {
        up: up.clone(),
        order: std::iter::once(job.first).chain((0..up.bases.len()).filter(|&i| i != job.first)).collect(),
        dates: job.dates,
        staging: staging.to_path_buf(),
        net: job.net.clone(),
        limiter: job.net.bandwidth_limit.clone().map(Limiter::new),
        progress: job.progress,
        seeds: job.seeds,
        deltas: job.deltas,
        present: Present::list(staging)?,
    });
    // Each download is a task of its own, so hashing and writing spread over
    // the runtime's threads. Every file is tried even when one fails, so the
    // next run finds the rest verified in staging; only a local disk error
    // stops at once.
    let mut results = stream::iter(entries)
        .map(|entry| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move { fetcher.fetch_one(entry).await })
        })
        .buffer_unordered(job.concurrency);
    // Sized once: doubling a million entries would hold both copies a while.
    let (mut staged, mut failures) = (Vec::with_capacity(count), Vec::new());
    while let Some(joined) = results.next().await {
        let result = joined.unwrap_or_else(|e| Err(anyhow!("a download task failed: {e}")));
        match result {
            Ok(s) => staged.push(s),
            Err(e) if e.is::<LocalIo>() => return Err(e),
            Err(e) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Ok(staged),
        1 => Err(failures.remove(0)),
        n => Err(failures.remove(0).context(format!("{n} files failed; the first"))),
    }
}

impl Fetcher {
    async fn fetch_one(&self, entry: Entry) -> Result<Verified> {
        let (path, size) = (entry.path.as_str().to_owned(), entry.size);
        self.progress.start_file(&path, size);
        let result = match self.seeded(&entry).await {
            Some(verified) => Ok(verified),
            None => match self.patched(&entry).await {
                Some(verified) => Ok(verified),
                None => self.fetch_retrying(entry).await,
            },
        };
        self.progress.end_file(&path, size, result.is_ok());
        result
    }

    /// Where `entry` is staged.
    fn staged(&self, entry: &Entry) -> PathBuf {
        let name = staging_name(entry);
        self.staging.join(&name[..2]).join(&name)
    }

    /// `entry` from a seed, when one holds its bytes.
    async fn seeded(&self, entry: &Entry) -> Option<Verified> {
        let seeds = self.seeds.clone()?;
        let (entry, file) = (entry.clone(), self.staged(entry));
        tokio::task::spawn_blocking(move || seeds.place(&entry, &file)).await.ok().flatten()
    }

    /// `entry` made from its patch, when one applies and works; a patch
    /// that fails is told, and the whole file fetched instead.
    async fn patched(&self, entry: &Entry) -> Option<Verified> {
        let deltas = self.deltas.clone()?;
        let (base, patch) = deltas.for_entry(entry)?;
        let size = patch.size;
        let made = self.apply_patch(entry, base, patch).await;
        deltas.note(entry, made.as_ref().ok().map(|_| size));
        match made {
            Ok(verified) => Some(verified),
            Err(e) if e.is::<LocalIo>() => None,
            Err(e) => {
                let why = crate::output::error_line(&e);
                self.up.tell(format!("{}: its patch did not apply ({why}); fetching the whole file", entry.path));
                None
            }
        }
    }

    /// Fetch `patch` beside `entry`'s staging file (kept for resuming as
    /// a part of it), apply it to `base` and check the result.
    async fn apply_patch(&self, entry: &Entry, base: PathBuf, patch: Entry) -> Result<Verified> {
        let staged = self.staged(entry);
        let fetched = self.fetch_retrying_to(patch, staged.with_extension("patch.zst")).await?;
        let (entry, patch_file) = (entry.clone(), fetched.file(&self.staging));
        let apply = move || delta::make_from(&base, &patch_file, entry, staged);
        let made = tokio::task::spawn_blocking(apply).await.map_err(|e| anyhow!("patch task failed: {e}"))?;
        let _ = std::fs::remove_file(fetched.file(&self.staging));
        made
    }

    async fn fetch_retrying(&self, entry: Entry) -> Result<Verified> {
        let file = self.staged(&entry);
        self.fetch_retrying_to(entry, file).await
    }

    async fn fetch_retrying_to(&self, entry: Entry, file: PathBuf) -> Result<Verified> {
        let ruled_out = vec![false; self.up.bases.len()];
        let fresh = !self.present.holds(&file);
        let mut tries = Tries { ruled_out, failures: Vec::new(), wait: None, fresh };
        let mut segmented = segmented::fits(&self.up, &entry);
        for round in 0..=self.net.retries {
            tries.wait = None;
            if segmented {
                tries.fresh = false;
                match self.segmented(&entry, &file, &mut tries).await? {
                    Segmented::Done(verified) => return Ok(verified),
                    Segmented::Again => {}
                    Segmented::Whole => segmented = false,
                }
            }
            if !segmented && let Some(verified) = self.each_upstream(&entry, &file, &mut tries).await? {
                return Ok(verified);
            }
            let Some(after) = tries.wait else { break };
            if round == self.net.retries || !self.up.budget.take() {
                break;
            }
            let wait = backoff(self.net.retry_backoff, round, Some(after));
            let last = tries.failures.last().map_or("", String::as_str);
            let (n, of) = (round + 1, self.net.retries);
            self.up.tell(format!("{last}; retry {n} of {of} in {:.1} s", wait.as_secs_f64()));
            tokio::time::sleep(wait).await;
        }
        tries.failures.dedup();
        bail!("could not fetch {}: {}", entry.path, tries.failures.join("; "))
    }

    /// One round over the upstreams in order, each asked for the whole file.
    async fn each_upstream(&self, entry: &Entry, file: &Path, tries: &mut Tries) -> Result<Option<Verified>> {
        for &i in &self.order {
            if tries.ruled_out[i] {
                continue;
            }
            let fresh = std::mem::replace(&mut tries.fresh, false);
            match self.attempt(i, entry, file, fresh).await {
                Ok(verified) => {
                    self.up.note(i, None);
                    self.up.delivered(i, verified.entry.size);
                    return Ok(Some(verified));
                }
                Err(e) if e.is::<LocalIo>() => return Err(e),
                Err(e) => self.failed(tries, i, entry, e),
            }
        }
        Ok(None)
    }

    /// Record a failed try on upstream `i`: ruled out for the file when no
    /// retry can help, else a wait before the next round.
    fn failed(&self, tries: &mut Tries, i: usize, entry: &Entry, e: anyhow::Error) {
        match verdict(&e) {
            Verdict::Fatal => tries.ruled_out[i] = true,
            Verdict::Retry(after) => tries.wait = tries.wait.max(Some(after.unwrap_or_default())),
        }
        let failure = format!("{}: {e:#}", self.up.file_url(i, &entry.path));
        self.up.note(i, Some(failure.clone()));
        tries.failures.push(failure);
    }

    /// One try on upstream `i`: resume the partial file if there is one
    /// (none when `fresh`), and return it once the whole file matches the
    /// listing.
    async fn attempt(&self, i: usize, entry: &Entry, file: &Path, fresh: bool) -> Result<Verified> {
        let meta_path = file.with_extension("validator");
        let existing = if fresh { None } else { own_file(file, &meta_path)? };
        if existing.is_some_and(|have| have >= entry.size)
            && let Some(verified) = self.check_complete(entry, file).await?
        {
            return Ok(verified);
        }
        let have = existing.unwrap_or(0);
        let big = entry.size >= RESUME_MIN;
        let validator = if big && have > 0 { read_validator(&meta_path) } else { None };
        let resumable = big && have > 0 && have < entry.size && (entry.sha256.is_some() || validator.is_some());
        let from = if resumable { have } else { 0 };
        let open = self.up.open(i, &entry.path, (from, entry.size.saturating_sub(from)), validator.as_deref());
        let body = match tokio::time::timeout(self.net.idle_timeout, open).await {
            Err(_) => return Err(Stalled::Idle(self.net.idle_timeout).into()),
            Ok(Err(e)) if e.downcast_ref::<HttpStatus>().is_some_and(|s| s.status == 416) => {
                discard(file, &meta_path)?;
                return Err(e);
            }
            Ok(result) => result?,
        };
        // Without a digest, the listing's mtime vouches for the body: from
        // another upstream than the listing's, it must be confirmed.
        if entry.sha256.is_none() {
            match body.last_modified {
                Some(got) if got.div_euclid(self.dates.precision) != entry.mtime.div_euclid(self.dates.precision) => {
                    return Err(Mismatch::Mtime { got, want: entry.mtime, dates: self.dates }.into());
                }
                None if i != self.order[0] => return Err(Mismatch::Unconfirmed.into()),
                _ => {}
            }
        }
        let verified = self.receive(body, entry, file, &meta_path, from).await?;
        if big {
            let _ = std::fs::remove_file(&meta_path);
        }
        Ok(verified)
    }

    /// Stream `body` into `file` (appending when it resumes at `from`).
    async fn receive(
        &self,
        mut body: Body,
        entry: &Entry,
        file: &Path,
        meta_path: &Path,
        from: u64,
    ) -> Result<Verified> {
        let io = |what: &str, e: std::io::Error| LocalIo(format!("could not {what} {}: {e}", file.display()));
        let (out, mut hasher, mut got) = start_output(&body, entry, file, meta_path, from).await?;
        let mut out = std::io::BufWriter::with_capacity((entry.size as usize).clamp(4096, 64 << 10), out);
        let mut flusher = Flusher::default();
        let streamed = self
            .pump(&mut body, got..entry.size, |chunk| {
                hasher.update(chunk);
                out.write_all(chunk).map_err(|e| io("write", e))?;
                if flusher.due(chunk.len()) {
                    out.flush().map_err(|e| io("write", e))?;
                    flusher.start(out.get_ref())?;
                }
                Ok(())
            })
            .await;
        // Keep what arrived for the next attempt, whatever happened.
        out.flush().map_err(|e| io("write", e))?;
        let streamed = match streamed {
            Ok(n) => flusher.finish().await.map(|()| n),
            Err(e) => Err(e),
        };
        match streamed {
            Ok(n) => got = n,
            Err(e) => {
                if e.is::<Mismatch>() {
                    discard(file, meta_path)?;
                }
                return Err(e);
            }
        }
        let digest = Digest(hasher.finalize().into());
        let mut verified = match Verified::check(entry.clone(), file.to_path_buf(), got, digest) {
            Ok(verified) => verified,
            Err(mismatch) => {
                discard(file, meta_path)?;
                return Err(mismatch.into());
            }
        };
        // A listing that shows minutes gets the exact time from the body,
        // which the snapshot's manifest keeps for the next crawl.
        let listed = if self.dates.precision > 1 { body.last_modified.unwrap_or(entry.mtime) } else { entry.mtime };
        verified.entry.mtime = listed;
        let mtime = entry.local_mtime.unwrap_or(listed);
        let out = out.into_inner().map_err(|e| io("write", e.into_error()))?;
        filetime::set_file_handle_times(&out, None, Some(FileTime::from_unix_time(mtime, 0)))
            .map_err(|e| io("set the mtime of", e))?;
        Ok(verified)
    }

    /// Hand `body`'s chunks, bytes `span` of the file, to `sink` until the
    /// end, counting, pacing and watching for a stall or a trickle; bytes
    /// past `span.end` are a mismatch. Returns where the body ended.
    async fn pump(&self, body: &mut Body, span: Range<u64>, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut pace = Pace::new(&self.net);
        let (mut got, cap) = (span.start, span.end);
        loop {
            let chunk = match tokio::time::timeout(self.net.idle_timeout, body.chunk()).await {
                Err(_) => return Err(Stalled::Idle(self.net.idle_timeout).into()),
                Ok(chunk) => chunk?,
            };
            let Some(chunk) = chunk else { return Ok(got) };
            got += chunk.len() as u64;
            if got > cap {
                return Err(Mismatch::TooLong(cap).into());
            }
            pace.add(chunk.len())?;
            if let Some(limiter) = &self.limiter {
                limiter.take(chunk.len()).await;
            }
            self.progress.add_bytes(chunk.len() as u64);
            sink(&chunk)?;
        }
    }

    /// A partial file as long as the listed size is the whole file when its
    /// digest matches (or, without a digest, when it is exactly that long: it
    /// was started for this very size and mtime, and resumed only under
    /// `If-Range`); otherwise it is discarded.
    async fn check_complete(&self, entry: &Entry, file: &Path) -> Result<Option<Verified>> {
        let (hasher, len) = hash_prefix(file).await?;
        let digest = Digest(hasher.finalize().into());
        if let Ok(verified) = Verified::check(entry.clone(), file.to_path_buf(), len, digest) {
            let f = std::fs::File::options()
                .write(true)
                .custom_flags(nofollow())
                .open(file)
                .map_err(|e| LocalIo(format!("could not open {}: {e}", file.display())))?;
            filetime::set_file_handle_times(&f, None, Some(FileTime::from_unix_time(entry.disk_mtime(), 0)))
                .map_err(|e| LocalIo(format!("could not set the mtime of {}: {e}", file.display())))?;
            return Ok(Some(verified));
        }
        discard(file, &file.with_extension("validator"))?;
        Ok(None)
    }
}

/// The verdict on a failed attempt: bytes that do not match rule the
/// upstream out for the file (a range that starts elsewhere may be retried);
/// anything else follows the rule for every request.
fn verdict(e: &anyhow::Error) -> Verdict {
    match e.downcast_ref::<Mismatch>() {
        Some(Mismatch::RangeStart { .. }) => Verdict::Retry(None),
        Some(_) => Verdict::Fatal,
        None => upstream::verdict(e),
    }
}

/// The staging file a body goes to: appended to when the body resumes it
/// at `from`, else created afresh; with the hash state and length of what
/// it holds. The body's validator is kept beside a large file for a later
/// `If-Range`.
async fn start_output(
    body: &Body,
    entry: &Entry,
    file: &Path,
    meta_path: &Path,
    from: u64,
) -> Result<(std::fs::File, Sha256, u64)> {
    let io = |what: &str, e: std::io::Error| LocalIo(format!("could not {what} {}: {e}", file.display()));
    let output = match body.range_start {
        Some(_) if from == 0 => return Err(Mismatch::UnaskedRange.into()),
        Some(start) if start == from => {
            let (hasher, len) = hash_prefix(file).await?;
            let out =
                std::fs::File::options().append(true).custom_flags(nofollow()).open(file).map_err(|e| io("open", e))?;
            (out, hasher, len)
        }
        Some(start) => {
            discard(file, meta_path)?;
            return Err(Mismatch::RangeStart { want: from, got: start }.into());
        }
        None => (create_nofollow(file).map_err(|e| io("create", e))?, Sha256::new(), 0),
    };
    if entry.size >= RESUME_MIN {
        let _ = std::fs::remove_file(meta_path);
        if let Some(v) = &body.validator {
            create_nofollow(meta_path).and_then(|mut f| f.write_all(v.as_bytes())).map_err(|e| io("write", e))?;
        }
    }
    Ok(output)
}

/// The hash state and length of what a partial file already holds.
async fn hash_prefix(file: &Path) -> Result<(Sha256, u64)> {
    let path = file.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        hash_reader(std::fs::File::options().read(true).custom_flags(nofollow()).open(&path)?)
    });
    let joined = task.await.map_err(|e| anyhow!("hashing task failed: {e}"))?;
    joined.map_err(|e| LocalIo(format!("could not read {}: {e}", file.display())).into())
}

/// Large files start their way to the disk while they download, one flush
/// at a time, so the flush before the publish finds little left to write.
/// That final `syncfs` is what makes them durable; this only starts it early.
#[derive(Default)]
struct Flusher {
    unflushed: u64,
    flushing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Flusher {
    /// `n` more bytes were written: whether a flush is due (start it then).
    fn due(&mut self, n: usize) -> bool {
        self.unflushed += n as u64;
        self.unflushed >= FLUSH_EVERY && self.flushing.as_ref().is_none_or(|job| job.is_finished())
    }

    fn start(&mut self, file: &std::fs::File) -> Result<()> {
        let file = file.try_clone().map_err(|e| LocalIo(format!("could not flush {e}")))?;
        self.flushing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.unflushed = 0;
        Ok(())
    }

    /// Wait for the flush in progress.
    async fn finish(self) -> Result<()> {
        if let Some(job) = self.flushing {
            job.await
                .map_err(|e| anyhow!("flush task failed: {e}"))?
                .map_err(|e| LocalIo(format!("could not flush: {e}")))?;
        }
        Ok(())
    }
}

/// A pace shared by all transfers: each chunk waits for its slot.
struct Limiter {
    schedule: crate::bandwidth::Schedule,
    next: Mutex<Instant>,
}

impl Limiter {
    fn new(schedule: crate::bandwidth::Schedule) -> Limiter {
        Limiter { schedule, next: Mutex::new(Instant::now()) }
    }

    /// Wait for `n` bytes' turn at the rate the timetable gives now.
    async fn take(&self, n: usize) {
        let Some(rate) = self.schedule.rate_now() else { return };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(at.into()).await;
    }
}
