//! Delta transfer: a changed big file travels as a zstd patch against its
//! previous version (`--patch-from` semantics: the old file is the
//! reference prefix, long-distance matching, a window that spans the file).
//! Patches sit beside a tree in `.upmirror-deltas/`, listed in
//! `upmirror-deltas.json` — a sidecar, like the signature: the manifest
//! stays whole, and a patch needs no signature of its own, since what it
//! makes is held to the manifest's sha256.
//!
//! Memory is bounded: a base (the old file, held whole as the reference)
//! is at most [`MAX_BASE`], and a patch's window at most 2^[`WINDOW_LOG_MAX`]
//! bytes; the decoder refuses a patch that asks for more.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::manifest::{Digest, RelPath};

pub const DELTAS_FILE: &str = "upmirror-deltas.json";
pub const DELTAS_DIR: &str = ".upmirror-deltas";
const FORMAT: &str = "upmirror-deltas/1";
/// The largest old file a patch is made from or applied to.
pub const MAX_BASE: u64 = 512 << 20;
/// The largest zstd window (1 GiB) a patch may use.
pub const WINDOW_LOG_MAX: u32 = 30;
/// The largest `upmirror-deltas.json` read.
pub const MAX_LIST_BYTES: u64 = 16 << 20;
/// zstd's level for patches, `zstd --patch-from`'s default. (The optimal
/// parsers of levels 16 and up, without the zstd tool's tuning, miss the
/// old file's matches: 36 MB instead of 0.67 MB for a 64 MiB image with 1 %
/// changed, in 16 s instead of 0.1 s.)
const LEVEL: i32 = 3;

/// One patch: it turns the file with `from_sha256` into `path`'s `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub path: String,
    pub from_sha256: String,
    pub sha256: String,
    /// Where the patch is, relative to the listing's base URL.
    pub patch: String,
    pub patch_size: u64,
    pub patch_sha256: String,
}

#[derive(Serialize, Deserialize)]
struct List {
    format: String,
    deltas: Vec<Delta>,
}

/// Whether `rel` is a delta sidecar: never listed in a manifest, never mirrored as a file.
pub fn is_sidecar(rel: &str) -> bool {
    rel == DELTAS_FILE || rel.strip_prefix(DELTAS_DIR).is_some_and(|rest| rest.starts_with('/'))
}

/// The deltas of an `upmirror-deltas.json`, each checked: paths that stay
/// below the base, digests that are digests, a patch under `.upmirror-deltas/`.
pub fn parse_list(bytes: &[u8]) -> Result<Vec<Delta>, String> {
    let list: List = serde_json::from_slice(bytes).map_err(|e| format!("not an {FORMAT} list: {e}"))?;
    if list.format != FORMAT {
        return Err(format!("format \"{}\" is not {FORMAT}", crate::output::quote(&list.format, 40)));
    }
    for d in &list.deltas {
        RelPath::parse(&d.path)?;
        let patch = RelPath::parse(&d.patch)?;
        if !is_sidecar(patch.as_str()) {
            return Err(format!("patch {} is not under {DELTAS_DIR}/", crate::output::quote(&d.patch, 80)));
        }
        for hex in [&d.from_sha256, &d.sha256, &d.patch_sha256] {
            Digest::parse(hex)?;
        }
    }
    Ok(list.deltas)
}

/// The window log that spans a file of `size` bytes (zstd's minimum 10).
fn window_log(size: u64) -> u32 {
    (64 - size.max(1).leading_zeros()).clamp(10, WINDOW_LOG_MAX)
}

/// Write a patch that turns `old` into `new` at `out`; its size.
pub fn make(old: &Path, new: &Path, out: &Path) -> Result<u64> {
    let base = read_base(old)?;
    let new_len = std::fs::metadata(new).with_context(|| format!("could not read {}", new.display()))?.len();
    if window_log(new_len.max(base.len() as u64) * 2) > WINDOW_LOG_MAX {
        bail!("{}: too large for a patch (the window would pass 2^{WINDOW_LOG_MAX} bytes)", new.display());
    }
    let file = std::fs::File::create(out).with_context(|| format!("could not create {}", out.display()))?;
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(std::io::BufWriter::new(file), LEVEL, &base)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(window_log(new_len.max(base.len() as u64) * 2))?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(new_len))?;
    let mut input = std::fs::File::open(new).with_context(|| format!("could not read {}", new.display()))?;
    std::io::copy(&mut input, &mut encoder).with_context(|| format!("could not write {}", out.display()))?;
    encoder.finish()?.flush()?;
    Ok(std::fs::metadata(out)?.len())
}

/// Apply `patch` to the base `old` into `out`, at most `max_len` bytes;
/// the bytes written.
pub fn apply(old: &Path, patch: impl Read, out: &mut impl Write, max_len: u64) -> Result<u64> {
    let base = read_base(old)?;
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(patch), &base)?;
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    let written = std::io::copy(&mut decoder.take(max_len + 1), out).map_err(|e| anyhow!("bad patch: {e}"))?;
    if written > max_len {
        bail!("the patch makes more than the listed {max_len} bytes");
    }
    Ok(written)
}

/// An old file, whole, if it is small enough to be a base.
fn read_base(old: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(old).with_context(|| format!("could not read {}", old.display()))?.len();
    if len > MAX_BASE {
        bail!("{}: larger than {MAX_BASE} bytes, too large to patch from", old.display());
    }
    std::fs::read(old).with_context(|| format!("could not read {}", old.display()))
}

/// A file that changed: its path (in the old tree and the new), its old
/// and new sha256, its new size.
pub struct Change<'a> {
    pub path: &'a str,
    pub from: Digest,
    pub to: Digest,
    pub size: u64,
}

/// What [`write_patches`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Made {
    pub patches: usize,
    pub patch_bytes: u64,
    /// The whole sizes of the files patched.
    pub whole_bytes: u64,
    /// Changes left without a patch when the deadline came.
    pub left: usize,
}

impl Made {
    pub fn describe(&self) -> String {
        let left =
            if self.left > 0 { format!("; {} left without one (time budget)", self.left) } else { String::new() };
        let (patch, whole) =
            (crate::output::human_bytes(self.patch_bytes), crate::output::human_bytes(self.whole_bytes));
        format!("{} patches, {patch} for {whole} of files{left}", self.patches)
    }
}

/// Patches for `changes` from the old tree `old` to the new one `new`, in
/// `new/.upmirror-deltas/` and `new/upmirror-deltas.json` (those of an
/// earlier run replaced), one at a time until `deadline`; a patch no
/// smaller than its file is not kept.
pub fn write_patches(new: &Path, old: &Path, changes: &[Change], deadline: Option<std::time::Instant>) -> Result<Made> {
    let dir = new.join(DELTAS_DIR);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context(format!("could not remove {}", dir.display()))?
        }
        _ => {}
    }
    std::fs::create_dir(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let (mut deltas, mut made) = (Vec::new(), Made::default());
    for (n, c) in changes.iter().enumerate() {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            made.left = changes.len() - n;
            break;
        }
        let name = format!("{}-{}.zst", &c.from.to_string()[..16], &c.to.to_string()[..16]);
        let size = make(&old.join(c.path), &new.join(c.path), &dir.join(&name))?;
        if size >= c.size {
            crate::disk::remove_if_exists(&dir.join(&name))?;
            continue;
        }
        let (patch_sha256, _) = crate::local_tree::hash_file(&dir.join(&name))?;
        (made.patches, made.patch_bytes, made.whole_bytes) =
            (made.patches + 1, made.patch_bytes + size, made.whole_bytes + c.size);
        let (from_sha256, sha256, patch_sha256) = (c.from.to_string(), c.to.to_string(), patch_sha256.to_string());
        let (path, patch) = (c.path.to_owned(), format!("{DELTAS_DIR}/{name}"));
        deltas.push(Delta { path, from_sha256, sha256, patch, patch_size: size, patch_sha256 });
    }
    let list = List { format: FORMAT.into(), deltas };
    crate::disk::write_atomic(&new.join(DELTAS_FILE), &serde_json::to_vec_pretty(&list)?)?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_turns_the_old_file_into_the_new_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, patch) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("patch"));
        let base: Vec<u8> = (0..400_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect();
        let mut changed = base.clone();
        changed[100_000..100_100].fill(7);
        std::fs::write(&old, &base).unwrap();
        std::fs::write(&new, &changed).unwrap();
        let size = make(&old, &new, &patch).unwrap();
        assert!(size < changed.len() as u64 / 20, "patch of {size} bytes");
        let mut out = Vec::new();
        let n = apply(&old, std::fs::File::open(&patch).unwrap(), &mut out, changed.len() as u64).unwrap();
        assert_eq!((n as usize, out == changed), (changed.len(), true));
        // Against another base, or bound tighter than its output: refused.
        std::fs::write(&old, b"another base").unwrap();
        assert!(apply(&old, std::fs::File::open(&patch).unwrap(), &mut Vec::new(), changed.len() as u64).is_err());
        std::fs::write(&old, &base).unwrap();
        let short = apply(&old, std::fs::File::open(&patch).unwrap(), &mut Vec::new(), 1000);
        assert!(short.unwrap_err().to_string().contains("more than the listed 1000 bytes"));
    }

    #[test]
    fn lists_are_checked() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let list = |path: &str, patch: &str| {
            format!(
                r#"{{"format":"upmirror-deltas/1","deltas":[{{"path":"{path}","from_sha256":"{hex}","sha256":"{hex}","patch":"{patch}","patch_size":1,"patch_sha256":"{hex}"}}]}}"#
            )
        };
        assert_eq!(parse_list(list("a/b.iso", ".upmirror-deltas/x.zst").as_bytes()).unwrap().len(), 1);
        assert!(parse_list(list("../b.iso", ".upmirror-deltas/x.zst").as_bytes()).is_err());
        assert!(parse_list(list("b.iso", "other/x.zst").as_bytes()).is_err());
        assert!(parse_list(list("b.iso", ".upmirror-deltas/../x").as_bytes()).is_err());
        assert!(parse_list(br#"{"format":"other","deltas":[]}"#).is_err());
    }
}
