//! Checking a published snapshot against its own manifest, in parallel:
//! every listed file present, a regular file, of the listed size and digest,
//! and nothing unlisted beside them; or, within a budget, the next slice
//! of a cycle through the files. Blocking; rayon.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::local_tree::hash_file;
use crate::manifest::{Entry, Manifest};
use crate::snapshot::describes_snapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing(String),
    NotAFile(String),
    Size { path: String, want: u64, got: u64 },
    Digest(String),
    Unreadable { path: String, error: String },
    Extra(String),
}

impl Problem {
    /// The listed entry this problem makes bad, if any (an extra file has none).
    pub fn path(&self) -> Option<&str> {
        match self {
            Problem::Missing(p) | Problem::NotAFile(p) | Problem::Digest(p) => Some(p),
            Problem::Size { path, .. } | Problem::Unreadable { path, .. } => Some(path),
            Problem::Extra(_) => None,
        }
    }
}

impl Problem {
    /// `{"kind": …, "path": …}` with `listed`/`found` sizes or an `error`
    /// where there are.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Problem::Missing(p) => json!({"kind": "missing", "path": p}),
            Problem::NotAFile(p) => json!({"kind": "not-file", "path": p}),
            Problem::Size { path, want, got } => json!({"kind": "size", "path": path, "listed": want, "found": got}),
            Problem::Digest(p) => json!({"kind": "digest", "path": p}),
            Problem::Unreadable { path, error } => json!({"kind": "unreadable", "path": path, "error": error}),
            Problem::Extra(p) => json!({"kind": "extra", "path": p}),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::output::escape;
        match self {
            Problem::Missing(p) => write!(f, "missing   {}", escape(p)),
            Problem::NotAFile(p) => write!(f, "not-file  {}", escape(p)),
            Problem::Size { path, want, got } => write!(f, "size      {} (listed {want}, found {got})", escape(path)),
            Problem::Digest(p) => write!(f, "digest    {}", escape(p)),
            Problem::Unreadable { path, error } => write!(f, "unreadable {}: {error}", escape(path)),
            Problem::Extra(p) => write!(f, "extra     {}", escape(p)),
        }
    }
}

/// Every problem of the tree at `dir` against `manifest`, sorted by path.
pub fn check_tree(dir: &Path, manifest: &Manifest) -> Vec<Problem> {
    let mut problems = check_files(dir, &manifest.files);
    problems.extend(extras(dir, manifest));
    problems.sort_by(|a, b| a.path().cmp(&b.path()));
    problems
}

/// The problems of these listed files in the tree at `dir`, in their order.
pub fn check_files(dir: &Path, files: &[Entry]) -> Vec<Problem> {
    files.par_iter().filter_map(|e| check_file(dir, e)).collect()
}

/// The files in the tree at `dir` that `manifest` does not list.
pub fn extras(dir: &Path, manifest: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    let listed: HashSet<&str> = manifest.files.iter().map(|e| e.path.as_str()).collect();
    for item in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).into_iter().flatten() {
        if item.file_type().is_dir() {
            continue;
        }
        let rel = item.path().strip_prefix(dir).ok().and_then(Path::to_str).unwrap_or_default();
        if !describes_snapshot(rel) && !listed.contains(rel) {
            problems.push(Problem::Extra(rel.to_owned()));
        }
    }
    problems
}

/// How far a budgeted verify (`verify --budget`) has come through the
/// published files, in path order; kept in `.upmirror/verify.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// When the cycle under way began (RFC 3339).
    pub cycle_started_at: Option<String>,
    /// When the last cycle checked the last file.
    pub cycle_completed_at: Option<String>,
    /// The last path checked in the cycle under way; none: the next
    /// budgeted verify starts a cycle.
    pub position: Option<String>,
}

impl Cycle {
    const FILE: &str = "verify.json";

    /// One line: when the last cycle completed, where the one under way is.
    pub fn describe(&self) -> String {
        let done = match &self.cycle_completed_at {
            Some(t) => format!("last full cycle completed at {t}"),
            None => "no full cycle completed yet".to_owned(),
        };
        match (&self.position, &self.cycle_started_at) {
            (Some(at), Some(since)) => format!("{done}; the cycle since {since} is at {}", crate::output::escape(at)),
            _ => done,
        }
    }

    pub fn load(meta: &Path) -> anyhow::Result<Cycle> {
        crate::disk::read_json(&meta.join(Cycle::FILE))
    }

    pub fn save(&self, meta: &Path) -> anyhow::Result<()> {
        crate::disk::write_private(&meta.join(Cycle::FILE), &serde_json::to_vec_pretty(self)?)
    }
}

/// Of `files` (sorted by path), the next ones after `position`, up to
/// `budget` bytes but always one; and whether they end the list.
pub fn slice<'a>(files: &'a [Entry], position: Option<&str>, budget: u64) -> (&'a [Entry], bool) {
    let start = position.map_or(0, |p| files.partition_point(|e| e.path.as_str() <= p));
    let (mut bytes, mut end) = (0u64, start);
    while end < files.len() && (end == start || bytes.saturating_add(files[end].size) <= budget) {
        bytes = bytes.saturating_add(files[end].size);
        end += 1;
    }
    (&files[start..end], end == files.len())
}

fn check_file(dir: &Path, e: &Entry) -> Option<Problem> {
    let path = e.path.as_str().to_owned();
    let full = dir.join(e.path.as_str());
    let meta = match std::fs::symlink_metadata(&full) {
        Err(_) => return Some(Problem::Missing(path)),
        Ok(m) if !m.is_file() => return Some(Problem::NotAFile(path)),
        Ok(m) => m,
    };
    if meta.len() != e.size {
        return Some(Problem::Size { path, want: e.size, got: meta.len() });
    }
    match hash_file(&full) {
        Err(err) => Some(Problem::Unreadable { path, error: format!("{err:#}") }),
        Ok((digest, _)) if Some(digest) != e.sha256 => Some(Problem::Digest(path)),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::RelPath;

    fn entry(i: usize, size: u64) -> Entry {
        let path = RelPath::parse(&format!("d{}/f{i:04}", i % 7)).unwrap();
        Entry { path, size, mtime: 0, sha256: None, local_mtime: None }
    }

    #[test]
    fn slices_cover_every_file_once_per_cycle() {
        for (n, budget) in [(0, 10), (1, 0), (50, 1), (200, 1000), (200, 40_000), (333, 7)] {
            let mut files: Vec<Entry> = (0..n).map(|i| entry(i, (i as u64 * 7919) % 500)).collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let (mut seen, mut position, mut runs) = (Vec::new(), None::<String>, 0);
            loop {
                let (slice, ends) = slice(&files, position.as_deref(), budget);
                let bytes: u64 = slice.iter().map(|e| e.size).sum();
                assert!(slice.len() <= 1 || bytes <= budget, "{n} files, budget {budget}: {bytes} bytes");
                seen.extend(slice.iter().map(|e| e.path.to_string()));
                runs += 1;
                if ends {
                    break;
                }
                assert!(!slice.is_empty(), "a run that does not end the cycle checks something");
                position = slice.last().map(|e| e.path.to_string());
            }
            let all: Vec<String> = files.iter().map(|e| e.path.to_string()).collect();
            assert_eq!(seen, all, "{n} files, budget {budget}, {runs} runs: each exactly once, in order");
        }
    }
}
