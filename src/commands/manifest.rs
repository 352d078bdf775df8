//! `upmirror manifest DIR`: write `upmirror-manifest.json` for a directory.

use std::path::Path;

use anyhow::Result;

use crate::disk::{remove_if_exists, write_atomic};
use crate::local_tree::describe_dir;
use crate::output::{Reporter, escape, human_bytes};
use crate::snapshot::SNAPSHOT_MANIFEST;

pub(super) fn manifest(dir: &Path, sign: Option<&Path>, out: Reporter) -> Result<()> {
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
    Ok(())
}
