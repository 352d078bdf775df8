//! Checking a published snapshot against its own manifest, in parallel:
//! every listed file present, a regular file, of the listed size and digest,
//! and nothing unlisted beside them. Blocking; rayon.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use rayon::prelude::*;

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
    let mut problems: Vec<Problem> = manifest.files.par_iter().filter_map(|e| check_file(dir, e)).collect();
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
    problems.sort_by(|a, b| a.path().cmp(&b.path()));
    problems
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
