//! `upmirror manifest DIR`: write `upmirror-manifest.json` for a directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::delta::{DELTAS_DIR, Delta, MAX_BASE};
use crate::disk::{remove_if_exists, write_atomic};
use crate::local_tree::describe_dir;
use crate::local_tree::hash_file;
use crate::manifest::Manifest;
use crate::output::{Reporter, escape, human_bytes};
use crate::snapshot::SNAPSHOT_MANIFEST;

pub(super) fn manifest(dir: &Path, sign: Option<&Path>, deltas: Option<(PathBuf, u64)>, out: Reporter) -> Result<()> {
    let signature_name = crate::signature::beside(SNAPSHOT_MANIFEST);
    let manifest = describe_dir(dir, &[SNAPSHOT_MANIFEST, &signature_name])?;
    let path = dir.join(SNAPSHOT_MANIFEST);
    let bytes = manifest.to_json();
    // The signature first: a reader never finds a new manifest beside an old signature that fails.
    if let Some(key) = sign {
        let signature = crate::signature::sign(&bytes, key)?;
        let sig_path = dir.join(&signature_name);
        remove_if_exists(&sig_path)?;
        write_atomic(&path, &bytes)?;
        write_atomic(&sig_path, signature.as_bytes())?;
        out.info(format!("wrote {}", escape(&sig_path.display().to_string())));
    } else {
        write_atomic(&path, &bytes)?;
    }
    out.info(format!(
        "wrote {}: {} files, {}",
        escape(&path.display().to_string()),
        manifest.files.len(),
        human_bytes(manifest.total_bytes())
    ));
    match deltas {
        Some((old, min)) => write_deltas(dir, &old, min, &manifest, out),
        None => Ok(()),
    }
}

/// Patches from `old` for the files of `manifest` (in `dir`) of at least
/// `min` bytes that `old` holds other bytes for, under `.upmirror-deltas/`,
/// listed in `upmirror-deltas.json`; the patches of an earlier run go.
fn write_deltas(dir: &Path, old: &Path, min: u64, manifest: &Manifest, out: Reporter) -> Result<()> {
    let patches = dir.join(DELTAS_DIR);
    match std::fs::remove_dir_all(&patches) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context(format!("could not remove {}", patches.display()))?
        }
        _ => {}
    }
    std::fs::create_dir(&patches).with_context(|| format!("could not create {}", patches.display()))?;
    let (mut deltas, mut full) = (Vec::new(), 0);
    for e in manifest.files.iter().filter(|e| e.size >= min) {
        let base = old.join(e.path.as_str());
        let Some(base_len) = std::fs::symlink_metadata(&base).ok().filter(|m| m.is_file()).map(|m| m.len()) else {
            continue;
        };
        let (from, _) = hash_file(&base)?;
        let Some(to) = e.sha256.filter(|to| *to != from && base_len <= MAX_BASE) else { continue };
        let name = format!("{}-{}.zst", &from.to_string()[..16], &to.to_string()[..16]);
        let size = crate::delta::make(&base, &dir.join(e.path.as_str()), &patches.join(&name))?;
        if size >= e.size {
            remove_if_exists(&patches.join(&name))?;
            continue;
        }
        let (patch_sha256, _) = hash_file(&patches.join(&name))?;
        full += e.size;
        let (path, patch) = (e.path.to_string(), format!("{DELTAS_DIR}/{name}"));
        let (from_sha256, sha256, patch_sha256) = (from.to_string(), to.to_string(), patch_sha256.to_string());
        deltas.push(Delta { path, from_sha256, sha256, patch, patch_size: size, patch_sha256 });
    }
    let bytes: u64 = deltas.iter().map(|d| d.patch_size).sum();
    out.info(format!(
        "wrote {} patches from {}: {} for {} of files",
        deltas.len(),
        escape(&old.display().to_string()),
        human_bytes(bytes),
        human_bytes(full)
    ));
    crate::delta::write_list(dir, deltas)
}
