//! Seeds (`seed_from`): local trees — another mirror's `current`, a mounted
//! DVD — that may already hold files a run would download. Before a file
//! with a listed digest is downloaded, a file of its size is looked for at
//! the same path in each seed, then among the seed's files of that size; a
//! candidate is placed in staging and accepted only when its sha256 matches
//! the listing. Seeds are only read: a candidate is hardlinked only when
//! that changes nothing of it (same file system, this user's, the listed
//! mtime already, written by no one else), else copied (the file system
//! may reflink the copy).
//!
//! The index of a seed's files by size is built on the first lookup that
//! needs it, from the sizes the run wants only, at most [`PER_SIZE`]
//! candidates each: its memory is bounded by the plan's.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use filetime::FileTime;
use sha2::Digest as _;

use super::{Verified, create_nofollow};
use crate::disk::nofollow;
use crate::manifest::{Digest, Entry};

/// Candidates of one size kept per seed.
const PER_SIZE: usize = 8;

/// What the seeds gave a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedStats {
    pub files: u64,
    pub bytes: u64,
    /// Candidates of the right size whose bytes were not the listed ones.
    pub mismatched: u64,
}

pub struct Seeds {
    dirs: Vec<PathBuf>,
    wanted: HashSet<u64>,
    by_size: OnceLock<HashMap<u64, Vec<PathBuf>>>,
    stats: Mutex<SeedStats>,
}

impl Seeds {
    /// Seeds for a run that downloads `entries` (those with a digest only).
    pub fn new<'a>(dirs: &[PathBuf], entries: impl Iterator<Item = &'a Entry>) -> Seeds {
        Seeds {
            dirs: dirs.to_vec(),
            wanted: entries.filter(|e| e.sha256.is_some()).map(|e| e.size).collect(),
            by_size: OnceLock::new(),
            stats: Mutex::new(SeedStats::default()),
        }
    }

    pub fn stats(&self) -> SeedStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// The files of the seeds that could be `entry`, by size alone: the
    /// same path first, then the others of its size.
    pub fn candidates(&self, entry: &Entry) -> Vec<PathBuf> {
        let mut found = self.same_path(entry);
        found.extend(self.by_size(entry, &found));
        found
    }

    fn same_path(&self, entry: &Entry) -> Vec<PathBuf> {
        if entry.sha256.is_none() {
            return Vec::new();
        }
        let paths = self.dirs.iter().map(|d| d.join(entry.path.as_str()));
        paths.filter(|p| regular_len(p) == Some(entry.size)).collect()
    }

    /// The seeds' other files of `entry`'s size (the index is built here,
    /// on the first call).
    fn by_size(&self, entry: &Entry, besides: &[PathBuf]) -> Vec<PathBuf> {
        if entry.sha256.is_none() {
            return Vec::new();
        }
        let index = self.by_size.get_or_init(|| index(&self.dirs, &self.wanted));
        let found = index.get(&entry.size).into_iter().flatten();
        found.filter(|p| !besides.contains(p)).cloned().collect()
    }

    /// `entry` placed at `file` from a seed whose bytes match it; `None`
    /// when no seed holds it. Blocking.
    pub fn place(&self, entry: &Entry, file: &Path) -> Option<Verified> {
        let near = self.same_path(entry);
        self.place_from(&near, entry, file).or_else(|| self.place_from(&self.by_size(entry, &near), entry, file))
    }

    fn place_from(&self, seeds: &[PathBuf], entry: &Entry, file: &Path) -> Option<Verified> {
        for seed in seeds {
            let Ok((got, digest, linked)) = place_one(seed, entry, file) else { continue };
            match Verified::check(entry.clone(), file.to_path_buf(), got, digest) {
                Ok(verified) if linked || set_mtime(file, entry.disk_mtime()) => {
                    if let Ok(mut s) = self.stats.lock() {
                        (s.files, s.bytes) = (s.files + 1, s.bytes + entry.size);
                    }
                    return Some(verified);
                }
                _ => {
                    let _ = std::fs::remove_file(file);
                    if let Ok(mut s) = self.stats.lock() {
                        s.mismatched += 1;
                    }
                }
            }
        }
        None
    }
}

/// The seeds' regular files whose sizes are `wanted`, by size.
fn index(dirs: &[PathBuf], wanted: &HashSet<u64>) -> HashMap<u64, Vec<PathBuf>> {
    let mut by_size: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for dir in dirs {
        let mut here: HashMap<u64, usize> = HashMap::new();
        for item in walkdir::WalkDir::new(dir).follow_links(false).into_iter().flatten() {
            let Some(len) = item.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()) else { continue };
            let n = here.entry(len).or_default();
            if wanted.contains(&len) && *n < PER_SIZE {
                *n += 1;
                by_size.entry(len).or_default().push(item.into_path());
            }
        }
    }
    by_size
}

fn regular_len(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// Put `seed` at `file`, linked when that leaves the seed as it is, else
/// copied, hashing what lands there: (length, digest, linked).
fn place_one(seed: &Path, entry: &Entry, file: &Path) -> std::io::Result<(u64, Digest, bool)> {
    let source = std::fs::File::options().read(true).custom_flags(nofollow()).open(seed)?;
    let meta = source.metadata()?;
    let staging = file.parent().and_then(|p| std::fs::metadata(p).ok());
    let me = rustix::process::geteuid().as_raw();
    let linkable = meta.is_file()
        && staging.is_some_and(|s| s.dev() == meta.dev())
        && meta.uid() == me
        && meta.mode() & 0o022 == 0
        && meta.mtime() == entry.disk_mtime();
    let _ = std::fs::remove_file(file);
    if linkable && std::fs::hard_link(seed, file).is_ok() {
        let (len, digest) = hash(std::fs::File::open(file)?)?;
        return Ok((len, digest, true));
    }
    let mut out = create_nofollow(file)?;
    std::io::copy(&mut (&source), &mut out)?;
    drop(out);
    let (len, digest) = hash(std::fs::File::options().read(true).custom_flags(nofollow()).open(file)?)?;
    Ok((len, digest, false))
}

fn hash(f: std::fs::File) -> std::io::Result<(u64, Digest)> {
    let (hasher, len) = crate::local_tree::hash_reader(f)?;
    Ok((len, Digest(hasher.finalize().into())))
}

fn set_mtime(file: &Path, mtime: i64) -> bool {
    filetime::set_file_mtime(file, FileTime::from_unix_time(mtime, 0)).is_ok()
}
