//! Patches in a run: a changed file whose previous version the published
//! snapshot holds, and for which the upstream offers a patch from exactly
//! that version to exactly the listed one, is fetched as the patch (through
//! the same retries, pace and resume as any download), applied into
//! staging and accepted only when size and sha256 match the listing. Any
//! failure — no patch, a bad one, one for another base, one that makes too
//! much — falls back to the whole file, and is counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{LocalIo, Verified, create_nofollow};
use crate::delta::{Delta, MAX_BASE};
use crate::manifest::{Digest, Entry, Manifest, RelPath};

/// What the patches gave a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeltaStats {
    /// Files made from a patch.
    pub files: u64,
    /// Bytes of the patches fetched for them.
    pub patch_bytes: u64,
    /// Their whole sizes less the patches'.
    pub saved_bytes: u64,
    /// Patches that failed; their files came whole.
    pub fell_back: u64,
}

/// The patches that apply to this run's downloads.
pub struct Deltas {
    by_path: HashMap<String, Usable>,
    stats: Mutex<DeltaStats>,
}

/// A patch, its base in the published snapshot, and where the patch is.
#[derive(Clone)]
struct Usable {
    base: PathBuf,
    patch: Entry,
}

impl Deltas {
    /// Of `offered`, the patches from the published file at the same path
    /// (in `published`, a snapshot at `dir`) to a listed download.
    pub fn new<'a>(
        offered: &[Delta],
        downloads: impl Iterator<Item = &'a Entry>,
        published: (&Path, &Manifest),
    ) -> Deltas {
        let (dir, manifest) = published;
        let wanted: HashMap<&str, &Entry> = match offered.is_empty() {
            true => HashMap::new(),
            false => downloads.map(|e| (e.path.as_str(), e)).collect(),
        };
        let mut by_path = HashMap::new();
        for d in offered {
            let Some(entry) = wanted.get(d.path.as_str()) else { continue };
            let target = entry.sha256.is_some_and(|s| s.to_string() == d.sha256);
            let base = manifest
                .get(&d.path)
                .filter(|b| b.size <= MAX_BASE && b.sha256.is_some_and(|s| s.to_string() == d.from_sha256));
            let (Some(_), true, Ok(patch_path), Ok(sha)) =
                (base, target, RelPath::parse(&d.patch), Digest::parse(&d.patch_sha256))
            else {
                continue;
            };
            if d.patch_size >= entry.size {
                continue;
            }
            let patch = Entry { path: patch_path, size: d.patch_size, mtime: 0, sha256: Some(sha), local_mtime: None };
            by_path.insert(d.path.clone(), Usable { base: dir.join(&d.path), patch });
        }
        Deltas { by_path, stats: Mutex::new(DeltaStats::default()) }
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The patch for `entry` if there is one: its base and what to fetch.
    pub(super) fn for_entry(&self, entry: &Entry) -> Option<(PathBuf, Entry)> {
        self.by_path.get(entry.path.as_str()).map(|u| (u.base.clone(), u.patch.clone()))
    }

    /// The size of the patch for `path`, for the dry-run.
    pub fn patch_size(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).map(|u| u.patch.size)
    }

    pub fn stats(&self) -> DeltaStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    pub(super) fn note(&self, entry: &Entry, patch_bytes: Option<u64>) {
        if let Ok(mut s) = self.stats.lock() {
            match patch_bytes {
                Some(n) => {
                    (s.files, s.patch_bytes) = (s.files + 1, s.patch_bytes + n);
                    s.saved_bytes += entry.size.saturating_sub(n);
                }
                None => s.fell_back += 1,
            }
        }
    }
}

/// Apply the patch at `patch` to `base` for `entry`, written beside its
/// staging file `out` and renamed over it only once it matches the listing.
pub(super) fn make_from(base: &Path, patch: &Path, entry: Entry, out: PathBuf) -> anyhow::Result<Verified> {
    let tmp = out.with_extension("applying");
    let made = (|| {
        let file = create_nofollow(&tmp).map_err(|e| LocalIo(format!("could not create {}: {e}", tmp.display())))?;
        let mut writer = std::io::BufWriter::new(file);
        let patch_file =
            std::fs::File::open(patch).map_err(|e| LocalIo(format!("could not read {}: {e}", patch.display())))?;
        crate::delta::apply(base, patch_file, &mut writer, entry.size)?;
        writer.into_inner().map_err(|e| LocalIo(format!("could not write {}: {e}", tmp.display())))?;
        crate::disk::failpoint("patch-applied");
        let (digest, len) = crate::local_tree::hash_file(&tmp)?;
        let mtime = filetime::FileTime::from_unix_time(entry.disk_mtime(), 0);
        let verified = Verified::check(entry, out.clone(), len, digest)?;
        filetime::set_file_mtime(&tmp, mtime)
            .map_err(|e| LocalIo(format!("could not set the mtime of {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &out).map_err(|e| LocalIo(format!("could not rename {}: {e}", tmp.display())))?;
        Ok(verified)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}
