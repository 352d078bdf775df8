//! Staging, `.upmirror/partial/`: where downloads wait until a snapshot
//! takes them, in 256 shards. Each listed file has a name there stable
//! across runs (so a later run resumes what an earlier one left); a run
//! finds what is there once, reclaims what its plan no longer wants, and
//! never follows or writes through anything it did not create.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest as _, Sha256};

use super::LocalIo;
use crate::disk::nofollow;
use crate::manifest::Entry;

/// A file in staging: by its name, as [`staging_name`] makes them (16
/// bytes, no allocation), or by its path when it has another.
#[derive(Debug)]
pub(super) enum Staged {
    Name([u8; 16]),
    Path(Box<Path>),
}

impl Staged {
    pub(super) fn of(file: PathBuf) -> Staged {
        let shard = file.parent().and_then(Path::file_name).and_then(|s| s.to_str());
        let named = file.file_name().and_then(|n| n.to_str()).filter(|n| shard.is_some_and(|s| n.starts_with(s)));
        match named.and_then(name_bytes) {
            Some(name) => Staged::Name(name),
            None => Staged::Path(file.into_boxed_path()),
        }
    }

    pub(super) fn path(&self, staging: &Path) -> PathBuf {
        match self {
            Staged::Name(name) => {
                let name = hex::encode(name);
                staging.join(&name[..2]).join(name)
            }
            Staged::Path(path) => path.to_path_buf(),
        }
    }
}

/// Create a staging file afresh: whatever was at `path` is unlinked (never
/// followed, never written through), and the new file is created exclusively.
pub(super) fn create_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let create = || std::fs::File::options().write(true).create_new(true).custom_flags(nofollow()).open(path);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create()
        }
        created => created,
    }
}

/// The length of the partial file at `file`, if it is one this process
/// could have written: a regular file of this user with no other link.
/// Anything else found there (a symlink, a hardlink to a file elsewhere, a
/// file of another user) is unlinked with its validator, never used.
pub(super) fn own_file(file: &Path, meta_path: &Path) -> Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(file) else { return Ok(None) };
    let me = rustix::process::geteuid().as_raw();
    if m.file_type().is_file() && m.nlink() == 1 && m.uid() == me {
        return Ok(Some(m.len()));
    }
    discard(file, meta_path)?;
    Ok(None)
}

/// The validator saved beside a partial file, if any (never through a symlink).
pub(super) fn read_validator(path: &Path) -> Option<String> {
    let mut f = std::fs::File::options().read(true).custom_flags(nofollow()).open(path).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Remove a partial file and its validator.
pub(super) fn discard(file: &Path, meta: &Path) -> Result<()> {
    for p in [file, meta] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LocalIo(format!("could not remove {}: {e}", p.display())).into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A staging name stable across runs for the same listed file, so a later run
/// can resume what an earlier one left; its first two characters name its
/// shard directory.
pub(super) fn staging_name(e: &Entry) -> String {
    hex::encode(&Sha256::digest(e.identity_line().as_bytes())[..16])
}

/// Remove from `staging` what the plan no longer needs — any file but the
/// partial downloads of `wanted` — and then, past `cap` bytes, the oldest of
/// those too (they start over). Without this, an upstream that fails each
/// run differently grows staging until the free-space guard refuses every
/// run.
pub fn reclaim_staging<'a>(
    staging: &Path,
    wanted: impl Iterator<Item = &'a Entry>,
    cap: Option<u64>,
) -> Result<Reclaimed> {
    let files = staged_files(staging)?;
    let stems: Vec<String> = files.iter().map(stem).collect();
    let keep = wanted_among(&stems, wanted);
    let (mut freed, mut kept) = (0, Vec::new());
    // A partial file, its validator, its record of pieces.
    for (file, stem) in files.into_iter().zip(stems) {
        let meta = file.metadata().ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        if keep.contains(stem.as_str()) {
            let partial = meta.as_ref().is_some_and(|m| m.is_file()) && file.file_name() == stem.as_str();
            let modified = meta.and_then(|m| m.modified().ok()).unwrap_or(std::time::UNIX_EPOCH);
            kept.push((modified, len, file.path(), partial));
            continue;
        }
        crate::disk::remove_if_exists(&file.path())?;
        freed += len;
    }
    kept.sort();
    let mut total: u64 = kept.iter().map(|k| k.1).sum();
    let mut dropped = 0;
    while let Some((_, len, path, _)) = kept.get(dropped).filter(|_| cap.is_some_and(|cap| total > cap)) {
        crate::disk::remove_if_exists(path)?;
        (total, freed, dropped) = (total - len, freed + len, dropped + 1);
    }
    let staged = kept[dropped..].iter().filter(|k| k.3).map(|k| k.1).sum();
    Ok(Reclaimed { freed, staged })
}

/// What [`reclaim_staging`] did: the bytes it freed, and the bytes of the
/// partial downloads it kept (room the free-space guard need not find again).
pub struct Reclaimed {
    pub freed: u64,
    pub staged: u64,
}

/// Every file in the shards of `staging`.
fn staged_files(staging: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut files = Vec::new();
    let shards = crate::disk::read_dir(staging)?.into_iter().filter(|d| d.file_type().is_ok_and(|t| t.is_dir()));
    for shard in shards {
        files.extend(crate::disk::read_dir(&shard.path())?);
    }
    Ok(files)
}

/// The staging names that had a file in staging when the fetch began,
/// sorted: a file of another name has nothing to resume, and costs no
/// lookup (a million on a first sync).
pub(super) struct Present(Vec<[u8; 16]>);

impl Present {
    pub(super) fn list(staging: &Path) -> Result<Present> {
        let mut names: Vec<[u8; 16]> = staged_files(staging)?.iter().filter_map(|f| name_bytes(&stem(f))).collect();
        names.sort_unstable();
        names.dedup();
        Ok(Present(names))
    }

    /// Whether something may be staged at `file` (a name not made by
    /// [`staging_name`] may always be).
    pub(super) fn holds(&self, file: &Path) -> bool {
        let name = file.file_name().and_then(|n| n.to_str()).and_then(name_bytes);
        name.is_none_or(|n| self.0.binary_search(&n).is_ok())
    }
}

/// The 16 bytes a staging name spells in hex.
fn name_bytes(name: &str) -> Option<[u8; 16]> {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(name, &mut bytes).ok().map(|()| bytes)
}

/// A staged file's name up to its first dot: the staging name it belongs to.
fn stem(file: &std::fs::DirEntry) -> String {
    let name = file.file_name().to_string_lossy().into_owned();
    name.split('.').next().unwrap_or_default().to_owned()
}

/// The staging names of `wanted` among `stems`, those of the files in
/// staging. Staging holds few files, the plan maybe millions: only the few
/// are held in a set, and an empty staging costs no name at all.
fn wanted_among<'a>(stems: &[String], wanted: impl Iterator<Item = &'a Entry>) -> HashSet<String> {
    let present: HashSet<&str> = stems.iter().map(String::as_str).collect();
    if present.is_empty() {
        return HashSet::new();
    }
    wanted.map(staging_name).filter(|name| present.contains(name.as_str())).collect()
}

/// Bytes already downloaded of `wanted` (their partial files in `staging`):
/// room the free-space guard need not find again.
pub fn staged_bytes<'a>(staging: &Path, wanted: impl Iterator<Item = &'a Entry>) -> u64 {
    let files = staged_files(staging).unwrap_or_default();
    let wanted = wanted_among(&files.iter().map(stem).collect::<Vec<_>>(), wanted);
    files
        .iter()
        .filter(|f| wanted.contains(f.file_name().to_string_lossy().as_ref()))
        .filter_map(|f| f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_file_is_found_again_by_its_name_or_its_path() {
        let staging = Path::new("/srv/m/.upmirror/partial");
        let e = Entry {
            path: crate::manifest::RelPath::parse("a/b").unwrap(),
            size: 1,
            mtime: 1,
            sha256: None,
            local_mtime: None,
        };
        let name = staging_name(&e);
        let file = staging.join(&name[..2]).join(&name);
        let staged = Staged::of(file.clone());
        assert!(matches!(staged, Staged::Name(_)));
        assert_eq!(staged.path(staging), file);
        let patch = file.with_extension("patch.zst");
        assert_eq!(Staged::of(patch.clone()).path(staging), patch);
        let elsewhere = staging.join("zz").join(&name);
        assert_eq!(Staged::of(elsewhere.clone()).path(staging), elsewhere);
    }
}
