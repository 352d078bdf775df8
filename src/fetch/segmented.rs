//! Large files fetched as several byte ranges at once, over separate
//! connections and, with several upstreams, from several of them (aria2's
//! segmented, multi-source download): one connection's window no longer
//! bounds a long link.
//!
//! The file is cut into pieces written in place in the staging file; how far
//! each piece has come is kept beside it (`<name>.pieces`), so a killed or
//! failed run resumes every piece where it stopped. The file is accepted only
//! when its whole sha256 and size match the listing. An upstream that answers
//! a range with the whole file or with another range than asked sends the
//! file back to the one-stream-at-a-time path, with its resume rules. When
//! the whole does not match, bytes an earlier run left are suspected first
//! (the file starts over), then each upstream in turn, lowest first: its
//! pieces are asked again from the others until the whole matches, and the
//! one that sent wrong bytes is ruled out and named in status.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Result, anyhow};
use filetime::FileTime;
use sha2::Digest as _;

use super::{Fetcher, Flusher, LocalIo, Range, Tries, Verified, discard, hash_prefix, own_file};
use crate::disk::nofollow;
use crate::manifest::{Digest, Entry};
use crate::upstream::{Stalled, Upstreams};

/// Files from this size are fetched in pieces.
pub const SEGMENT_MIN: u64 = 64 << 20;
/// The size of a piece: one range request.
const PIECE: u64 = 8 << 20;
/// Ranges of one file in flight at once.
const CONNECTIONS: usize = 8;
/// Arrived bytes are written, and recorded, this many at a time.
const RECORD_EVERY: usize = 64 << 10;

/// What a round of a segmented download came to.
pub enum Segmented {
    Done(Verified),
    /// Pieces are missing: another round (after the wait in `Tries`).
    Again,
    /// Fetch the file whole, one upstream at a time.
    Whole,
}

/// An upstream did not serve the range asked for: ranges cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("asked for bytes {}-{}, {got}", asked.start, asked.end - 1)]
struct RangeRefused {
    asked: Range<u64>,
    got: String,
}

/// Whether `entry` is fetched in pieces: a large file with a digest to
/// check the assembled whole against, from an upstream over the network.
pub fn fits(up: &Upstreams, entry: &Entry) -> bool {
    entry.size >= SEGMENT_MIN && entry.sha256.is_some() && up.bases.iter().any(|b| b.scheme() != "file")
}

impl Fetcher {
    /// One round: every piece not yet on disk fetched by up to
    /// [`CONNECTIONS`] workers, spread over the upstreams still in the running.
    pub(super) async fn segmented(&self, entry: &Entry, file: &Path, tries: &mut Tries) -> Result<Segmented> {
        let roots: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| !tries.ruled_out[i] && self.up.bases[i].scheme() != "file")
            .collect();
        if roots.is_empty() {
            return Ok(Segmented::Whole);
        }
        let board = Mutex::new(Board::open(file, entry.size)?);
        let out = std::fs::File::options()
            .write(true)
            .custom_flags(nofollow())
            .open(file)
            .map_err(|e| LocalIo(format!("could not open {}: {e}", file.display())))?;
        let pieces = Pieces { entry, file, out: &out, board: &board };
        if !self.fetch_left(&pieces, &roots, tries).await? {
            discard(file, &Board::record_path(file))?;
            return Ok(Segmented::Whole);
        }
        if lock(&board).left() > 0 {
            return Ok(Segmented::Again);
        }
        self.assembled(&pieces, tries).await
    }

    /// Fetch every piece left, by up to [`CONNECTIONS`] workers spread over
    /// `roots`; false when an upstream does not serve ranges.
    async fn fetch_left(&self, pieces: &Pieces<'_>, roots: &[usize], tries: &mut Tries) -> Result<bool> {
        let Pieces { entry, out, board, .. } = *pieces;
        let workers = CONNECTIONS.min(lock(board).left());
        let results = futures_util::future::join_all(
            (0..workers).map(|w| self.worker(entry, out, board, roots[w % roots.len()])),
        )
        .await;
        let mut ranges = true;
        for (root, result) in results {
            match result {
                Ok(()) => {}
                Err(e) if e.is::<LocalIo>() => return Err(e),
                Err(e) if e.is::<RangeRefused>() => {
                    ranges = false;
                    self.up.note(root, Some(format!("{}: {e:#}", self.up.file_url(root, &entry.path))));
                }
                Err(e) => self.failed(tries, root, entry, e),
            }
        }
        let flusher = std::mem::take(&mut lock(board).flusher);
        flusher.finish().await?;
        Ok(ranges)
    }

    /// Fetch pieces from upstream `root` until none is left or one fails.
    async fn worker(
        &self,
        entry: &Entry,
        out: &std::fs::File,
        board: &Mutex<Board>,
        root: usize,
    ) -> (usize, Result<()>) {
        loop {
            let Some((k, range)) = lock(board).take() else { return (root, Ok(())) };
            let len = range.end - range.start;
            if let Err(e) = self.piece(entry, out, board, root, (k, range)).await {
                lock(board).release(k);
                return (root, Err(e));
            }
            self.up.delivered(root, len);
            lock(board).from[k] = Some(root);
        }
    }

    /// Fetch `range`, what is missing of piece `k`, into place.
    async fn piece(
        &self,
        entry: &Entry,
        out: &std::fs::File,
        board: &Mutex<Board>,
        root: usize,
        (k, range): (usize, Range<u64>),
    ) -> Result<()> {
        let open = self.up.open_range(root, &entry.path, range.clone());
        let mut body = match tokio::time::timeout(self.net.idle_timeout, open).await {
            Err(_) => return Err(Stalled::Idle(self.net.idle_timeout).into()),
            Ok(body) => body?,
        };
        match body.content_range {
            Some(r) if r.is(&range, entry.size) => {}
            got => {
                let got = got.map_or("got the whole file (the server ignores Range)".into(), |r| {
                    format!("got a 206 for {}-{}/{}", r.start, r.end, r.total.map_or("*".into(), |t| t.to_string()))
                });
                return Err(RangeRefused { asked: range, got }.into());
            }
        }
        let (mut at, mut buf) = (range.start, Vec::with_capacity(RECORD_EVERY));
        let mut put = |buf: &mut Vec<u8>| -> Result<()> {
            let write = out.write_all_at(buf, at);
            write.map_err(|e| LocalIo(format!("could not write piece {k} of {}: {e}", entry.path)))?;
            let mut board = lock(board);
            board.advance(k, buf.len() as u64)?;
            if board.flusher.due(buf.len()) {
                board.flusher.start(out)?;
            }
            at += buf.len() as u64;
            buf.clear();
            Ok(())
        };
        let pumped = self
            .pump(&mut body, range.clone(), |chunk| {
                buf.extend_from_slice(chunk);
                if buf.len() >= RECORD_EVERY { put(&mut buf) } else { Ok(()) }
            })
            .await;
        // Keep what arrived for the next attempt, whatever happened.
        put(&mut buf)?;
        match pumped? {
            end if end == range.end => Ok(()),
            end => Err(anyhow!("the range ended after {} of {} bytes", end - range.start, range.end - range.start)),
        }
    }

    /// Every piece is on disk: accept the file if the whole matches. If it
    /// does not: bytes an earlier run left are suspect first (the file
    /// starts over, nobody blamed); pieces from one upstream rule it out
    /// for the file; from several, each one's pieces are asked again from
    /// the others until the whole matches, and the one that sent wrong
    /// bytes is ruled out and named. Else the file is fetched whole.
    async fn assembled(&self, pieces: &Pieces<'_>, tries: &mut Tries) -> Result<Segmented> {
        let Pieces { entry, file, board, .. } = *pieces;
        let record = Board::record_path(file);
        let mismatch = match self.whole(entry, file).await? {
            Ok(verified) => {
                discard(&record, &record)?;
                for i in lock(board).sources() {
                    self.up.note(i, None);
                }
                return Ok(Segmented::Done(verified));
            }
            Err(mismatch) => mismatch,
        };
        let (resumed, mut sources) = {
            let board = lock(board);
            (board.resumed, board.sources())
        };
        sources.sort_by_key(|s| self.order.iter().position(|o| o == s));
        match sources.as_slice() {
            // Start over at once; no upstream is blamed for what a disk kept.
            _ if resumed => tries.wait = tries.wait.max(Some(std::time::Duration::ZERO)),
            [one] => self.failed(tries, *one, entry, mismatch.into()),
            _ => {
                if let Some(verified) = self.find_wrong_source(pieces, &sources, tries).await? {
                    discard(&record, &record)?;
                    return Ok(Segmented::Done(verified));
                }
                discard(file, &record)?;
                return Ok(Segmented::Whole);
            }
        }
        discard(file, &record)?;
        Ok(Segmented::Again)
    }

    /// The assembled file, verified with its mtime set, or why it does not match.
    async fn whole(&self, entry: &Entry, file: &Path) -> Result<Result<Verified, super::Mismatch>> {
        let (hasher, len) = hash_prefix(file).await?;
        let checked = Verified::check(entry.clone(), file.to_path_buf(), len, Digest(hasher.finalize().into()));
        if checked.is_ok() {
            let f = std::fs::File::options().write(true).custom_flags(nofollow()).open(file);
            let mtime = FileTime::from_unix_time(entry.disk_mtime(), 0);
            f.and_then(|f| filetime::set_file_handle_times(&f, None, Some(mtime)))
                .map_err(|e| LocalIo(format!("could not set the mtime of {}: {e}", file.display())))?;
        }
        Ok(checked)
    }

    /// Ask each source's pieces again from the other sources (the first
    /// upstream suspected last) until the whole matches: the source whose
    /// pieces were replaced sent wrong bytes, and is ruled out for the file.
    async fn find_wrong_source(
        &self,
        pieces: &Pieces<'_>,
        sources: &[usize],
        tries: &mut Tries,
    ) -> Result<Option<Verified>> {
        for &suspect in sources.iter().rev() {
            let others: Vec<usize> = sources.iter().copied().filter(|&r| r != suspect).collect();
            lock(pieces.board).forget(suspect);
            if !self.fetch_left(pieces, &others, tries).await? || lock(pieces.board).left() > 0 {
                return Ok(None);
            }
            if let Ok(verified) = self.whole(pieces.entry, pieces.file).await? {
                let url = self.up.file_url(suspect, &pieces.entry.path);
                let failure = format!(
                    "{url}: sent pieces whose bytes do not match the listing's sha256 \
                     (asked again from another upstream, the file matched)"
                );
                tries.ruled_out[suspect] = true;
                self.up.note(suspect, Some(failure.clone()));
                tries.failures.push(failure);
                return Ok(Some(verified));
            }
        }
        Ok(None)
    }
}

/// One segmented download's parts, passed together.
#[derive(Clone, Copy)]
struct Pieces<'a> {
    entry: &'a Entry,
    file: &'a Path,
    out: &'a std::fs::File,
    board: &'a Mutex<Board>,
}

/// The pieces of one file and how far each has come, shared by the workers
/// and mirrored in the record beside the staging file: the file's size, then
/// one count per piece, each a little-endian u64.
struct Board {
    size: u64,
    done: Vec<u64>,
    taken: Vec<bool>,
    /// No piece before this one is free to take: taking is O(1) amortised.
    cursor: usize,
    /// The file starts its way to the disk while it downloads.
    flusher: Flusher,
    /// The upstream that completed each piece in this run.
    from: Vec<Option<usize>>,
    /// Whether bytes an earlier run left were taken up.
    resumed: bool,
    record: std::fs::File,
    path: PathBuf,
}

impl Board {
    fn record_path(file: &Path) -> PathBuf {
        file.with_extension("pieces")
    }

    /// The board of `file`, resumed from its record when the record fits
    /// (else from a partial file left by a one-stream download, which holds
    /// a prefix), with the staging file made `size` bytes long.
    fn open(file: &Path, size: u64) -> Result<Board> {
        let path = Board::record_path(file);
        let io = |e: std::io::Error| LocalIo(format!("could not prepare {}: {e}", file.display()));
        let pieces = size.div_ceil(PIECE) as usize;
        let have = own_file(file, &path)?;
        let done = match (have, read_record(&path, size, pieces)) {
            (Some(len), Some(done)) if len == size => done,
            (Some(len), _) if len <= size => prefix(len, size, pieces),
            (Some(_), _) => {
                discard(file, &path)?;
                vec![0; pieces]
            }
            (None, _) => vec![0; pieces],
        };
        // The record first: a file of the full length without one is taken
        // for a finished download.
        let record = super::create_nofollow(&path).map_err(io)?;
        let mut bytes = size.to_le_bytes().to_vec();
        bytes.extend(done.iter().flat_map(|d| d.to_le_bytes()));
        record.write_all_at(&bytes, 0).map_err(io)?;
        let data = match std::fs::symlink_metadata(file) {
            Ok(_) => std::fs::File::options().write(true).custom_flags(nofollow()).open(file),
            Err(_) => super::create_nofollow(file),
        };
        data.and_then(|f| f.set_len(size)).map_err(io)?;
        let resumed = done.iter().any(|&d| d > 0);
        let (from, flusher) = (vec![None; pieces], Flusher::default());
        Ok(Board { size, taken: vec![false; pieces], cursor: 0, flusher, from, resumed, done, record, path })
    }

    /// The upstreams that completed pieces in this run.
    fn sources(&self) -> Vec<usize> {
        let mut seen = Vec::new();
        for &i in self.from.iter().flatten() {
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
        seen
    }

    /// The pieces `root` completed are to be fetched again.
    fn forget(&mut self, root: usize) {
        for k in 0..self.done.len() {
            if self.from[k] == Some(root) {
                (self.done[k], self.taken[k], self.from[k]) = (0, false, None);
            }
        }
        self.cursor = 0;
    }

    /// The first piece nobody fetches that is not complete, and its missing range.
    fn take(&mut self) -> Option<(usize, Range<u64>)> {
        let k = (self.cursor..self.done.len()).find(|&k| !self.taken[k] && self.done[k] < self.len(k))?;
        (self.taken[k], self.cursor) = (true, k + 1);
        let start = k as u64 * PIECE;
        Some((k, start + self.done[k]..start + self.len(k)))
    }

    /// Piece `k` is free to take again (its fetch failed).
    fn release(&mut self, k: usize) {
        (self.taken[k], self.cursor) = (false, self.cursor.min(k));
    }

    /// `n` more bytes of piece `k` are written.
    fn advance(&mut self, k: usize, n: u64) -> Result<()> {
        self.done[k] += n;
        let at = 8 + 8 * k as u64;
        let write = self.record.write_all_at(&self.done[k].to_le_bytes(), at);
        write.map_err(|e| LocalIo(format!("could not write {}: {e}", self.path.display())).into())
    }

    /// Pieces not complete.
    fn left(&self) -> usize {
        (0..self.done.len()).filter(|&k| self.done[k] < self.len(k)).count()
    }

    fn len(&self, k: usize) -> u64 {
        PIECE.min(self.size - k as u64 * PIECE)
    }
}

/// The record at `path`, if it describes a file of `size` bytes in `pieces`
/// pieces, none past its end.
fn read_record(path: &Path, size: u64, pieces: usize) -> Option<Vec<u64>> {
    let mut bytes = Vec::new();
    let mut f = std::fs::File::options().read(true).custom_flags(nofollow()).open(path).ok()?;
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, 8 * (pieces as u64 + 2)), &mut bytes).ok()?;
    let words: Vec<u64> = bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default())).collect();
    let (&first, done) = words.split_first()?;
    let fits = |(k, &d): (usize, &u64)| d <= PIECE.min(size - k as u64 * PIECE);
    (bytes.len() == 8 * (pieces + 1) && first == size && done.iter().enumerate().all(fits)).then(|| done.to_vec())
}

/// The pieces of a file whose first `len` bytes are on disk.
fn prefix(len: u64, size: u64, pieces: usize) -> Vec<u64> {
    (0..pieces as u64).map(|k| len.saturating_sub(k * PIECE).min(PIECE.min(size - k * PIECE))).collect()
}

fn lock(board: &Mutex<Board>) -> std::sync::MutexGuard<'_, Board> {
    board.lock().unwrap_or_else(|e| e.into_inner())
}
