//! Local trees: hashing files and describing a directory as a manifest
//! (`upmirror manifest DIR`). Blocking; parallel with rayon.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::manifest::{Digest, Entry, Manifest, RelPath};

/// The sha256 and length of a file's content.
pub fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let f = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let (hasher, len) = hash_reader(f).with_context(|| format!("could not read {}", path.display()))?;
    Ok((Digest(hasher.finalize().into()), len))
}

/// The hash state and length of everything `r` yields, for callers that go
/// on hashing (a resumed download) or finalise it.
/// The buffer is the thread's own, reused: a million small files cost no
/// million allocations of it.
pub fn hash_reader(mut r: impl Read) -> std::io::Result<(Sha256, u64)> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 << 10]);
    }
    BUF.with_borrow_mut(|buf| {
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        loop {
            let n = r.read(buf)?;
            if n == 0 {
                return Ok((hasher, len));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    })
}

/// Describe every regular file below `dir` except those `skip` names by
/// their path (the manifest and what travels beside it).
/// Symlinks and special files are not followed and not listed.
pub fn describe_dir(dir: &Path, skip: impl Fn(&str) -> bool) -> Result<Manifest> {
    let mut found = Vec::new();
    for item in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
        let item = item.with_context(|| format!("could not walk {}", dir.display()))?;
        if !item.file_type().is_file() {
            continue;
        }
        let rel = item.path().strip_prefix(dir).context("walk left the directory")?;
        let rel = rel.to_str().ok_or_else(|| anyhow!("{}: file name is not UTF-8", item.path().display()))?;
        if skip(rel) {
            continue;
        }
        let path = RelPath::parse(rel).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
        found.push((path, item.into_path()));
    }
    let files = found
        .into_par_iter()
        .map(|(path, full)| {
            let meta =
                std::fs::symlink_metadata(&full).with_context(|| format!("could not stat {}", full.display()))?;
            let mtime = filetime::FileTime::from_last_modification_time(&meta).unix_seconds();
            let (digest, size) = hash_file(&full)?;
            Ok(Entry { path, size, mtime, sha256: Some(digest), local_mtime: None })
        })
        .collect::<Result<Vec<_>>>()?;
    Manifest::new(SystemTime::now(), files).map_err(|e| anyhow!("{}: {e}", dir.display()))
}
