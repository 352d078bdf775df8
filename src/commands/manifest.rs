//! `upmirror manifest DIR`: write `upmirror-manifest.json` for a directory.

use std::path::Path;

use anyhow::Result;

use crate::disk::write_atomic;
use crate::output::{Reporter, escape, human_bytes};
use crate::scan::describe_dir;
use crate::snapshot::SNAPSHOT_MANIFEST;

pub(super) fn manifest(dir: &Path, out: Reporter) -> Result<()> {
    let manifest = describe_dir(dir, SNAPSHOT_MANIFEST)?;
    let path = dir.join(SNAPSHOT_MANIFEST);
    write_atomic(&path, &manifest.to_json())?;
    out.info(format!(
        "wrote {}: {} files, {}",
        escape(&path.display().to_string()),
        manifest.files.len(),
        human_bytes(manifest.total_bytes())
    ));
    Ok(())
}
