//! Downloads: every planned file streamed into `.upmirror/partial/` with
//! bounded concurrency, counted and hashed chunk by chunk in one place, and
//! accepted only when size and digest match the listing. A file that fails on
//! one upstream is tried on the next. Memory per download is one buffer,
//! whatever the file size. Files are not fsynced here: the snapshot is made
//! durable as a whole before it is published.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use filetime::FileTime;
use futures_util::{StreamExt, TryStreamExt, stream};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::manifest::{Digest, Entry};
use crate::upstream::Upstreams;

/// A verified file waiting in staging; `entry.sha256` is always set.
#[derive(Debug)]
pub struct Staged {
    pub entry: Entry,
    pub file: PathBuf,
}

/// The bytes did not match the listing (never retried on the same upstream).
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("body longer than the listed {0} bytes")]
    TooLong(u64),
    #[error("got {got} bytes, the listing says {want}")]
    Size { got: u64, want: u64 },
    #[error("sha256 mismatch: the listing says {want}, got {got}")]
    Digest { want: Digest, got: Digest },
    #[error("Last-Modified {got} differs from the listing's mtime {want} (a lagging upstream?)")]
    Mtime { got: i64, want: i64 },
}

/// Fetch every entry into `staging`, trying upstream `first` before the others.
/// An entry without a digest is accepted only if the body's `Last-Modified`,
/// cut to `precision` seconds, equals its listed mtime.
pub async fn fetch_all(
    up: &Upstreams,
    first: usize,
    entries: Vec<Entry>,
    precision: i64,
    staging: &Path,
    concurrency: usize,
) -> Result<Vec<Staged>> {
    tokio::fs::create_dir_all(staging).await.with_context(|| format!("could not create {}", staging.display()))?;
    let order: Vec<usize> = std::iter::once(first).chain((0..up.bases.len()).filter(|&i| i != first)).collect();
    stream::iter(entries)
        .map(|entry| fetch_one(up, &order, entry, precision, staging))
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

async fn fetch_one(
    up: &Upstreams,
    order: &[usize],
    mut entry: Entry,
    precision: i64,
    staging: &Path,
) -> Result<Staged> {
    let file = staging.join(staging_name(&entry));
    let mut failures = Vec::new();
    for &i in order {
        match download(up, i, &entry, precision, &file).await {
            Ok(digest) => {
                entry.sha256 = Some(digest);
                return Ok(Staged { entry, file });
            }
            Err(e) => {
                if e.is::<Mismatch>() {
                    let _ = tokio::fs::remove_file(&file).await;
                }
                failures.push(format!("{}: {e:#}", up.file_url(i, &entry.path)));
            }
        }
    }
    bail!("could not fetch {}: {}", entry.path, failures.join("; "))
}

/// Stream one body into `file`; return its digest once size and digest match.
async fn download(up: &Upstreams, i: usize, entry: &Entry, precision: i64, file: &Path) -> Result<Digest> {
    let mut body = up.open(i, &entry.path).await?;
    if entry.sha256.is_none()
        && let Some(got) = body.last_modified()
        && got - got.rem_euclid(precision) != entry.mtime
    {
        return Err(Mismatch::Mtime { got, want: entry.mtime }.into());
    }
    let out = tokio::fs::File::create(file).await.with_context(|| format!("could not create {}", file.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(256 << 10, out);
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = body.chunk().await? {
        got += chunk.len() as u64;
        if got > entry.size {
            return Err(Mismatch::TooLong(entry.size).into());
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.with_context(|| format!("could not write {}", file.display()))?;
    }
    out.flush().await.with_context(|| format!("could not write {}", file.display()))?;
    if got != entry.size {
        return Err(Mismatch::Size { got, want: entry.size }.into());
    }
    let digest = Digest(hasher.finalize().into());
    if let Some(want) = entry.sha256
        && want != digest
    {
        return Err(Mismatch::Digest { want, got: digest }.into());
    }
    // A listing that shows minutes gets the exact time from the body.
    let mtime = if precision > 1 { body.last_modified().unwrap_or(entry.mtime) } else { entry.mtime };
    let out = out.into_inner().into_std().await;
    filetime::set_file_handle_times(&out, None, Some(FileTime::from_unix_time(mtime, 0)))
        .with_context(|| format!("could not set the mtime of {}", file.display()))?;
    Ok(digest)
}

/// A staging name stable across runs for the same listed file, so a later run
/// can find what an earlier one left.
fn staging_name(e: &Entry) -> String {
    let mut h = Sha256::new();
    h.update(e.path.as_str().as_bytes());
    h.update(format!("\0{}\0{}\0{:?}", e.size, e.mtime, e.sha256).as_bytes());
    hex::encode(&h.finalize()[..16])
}
