//! `upmirror manifest DIR`: write `upmirror-manifest.json` for a directory.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::delta::{Change, MAX_BASE, write_patches};
use crate::disk::{remove_if_exists, write_atomic};
use crate::local_tree::describe_dir;
use crate::local_tree::hash_file;
use crate::manifest::Manifest;
use crate::output::{Reporter, escape, human_bytes};
use crate::snapshot::SNAPSHOT_MANIFEST;

pub(super) fn manifest(dir: &Path, sign: Option<&Path>, deltas: Option<(PathBuf, u64)>, out: Reporter) -> Result<()> {
    let signature_name = crate::signature::beside(SNAPSHOT_MANIFEST);
    let beside = |rel: &str| rel == SNAPSHOT_MANIFEST || rel == signature_name || crate::delta::is_sidecar(rel);
    let manifest = describe_dir(dir, beside)?;
    let path = dir.join(SNAPSHOT_MANIFEST);
    let bytes = manifest.to_json();
    // The signature first: a reader never finds a new manifest beside an old signature that fails.
    if let Some(key) = sign {
        let signature = crate::signature::sign(&bytes[..], key)?;
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
/// `min` bytes that `old` holds other bytes for.
fn write_deltas(dir: &Path, old: &Path, min: u64, manifest: &Manifest, out: Reporter) -> Result<()> {
    let mut changes = Vec::new();
    for e in manifest.files.iter().filter(|e| e.size >= min) {
        let base = old.join(e.path.as_str());
        if !std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_file() && m.len() <= MAX_BASE) {
            continue;
        }
        let (from, _) = hash_file(&base)?;
        if let Some(to) = e.sha256.filter(|to| *to != from) {
            changes.push(Change { path: e.path.as_str(), from, to, size: e.size });
        }
    }
    let made = write_patches(dir, old, &changes, None)?;
    out.info(format!("wrote {} from {}", made.describe(), escape(&old.display().to_string())));
    Ok(())
}
