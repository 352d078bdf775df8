//! `upmirror status`: the published snapshot, the last run, the snapshots
//! kept and the disk used.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;

use super::unix_seconds;
use crate::config::Config;
use crate::output::{Reporter, human_bytes, human_duration};
use crate::snapshot::Store;
use crate::status::RunStatus;

pub(super) fn status(cfg: &Config, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    let published = store.published()?;
    let last: Option<RunStatus> =
        std::fs::read(store.meta().join("status.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let ids = store.snapshot_ids()?;
    let disk = disk_used(&store.root.join("snapshots"));
    let current = published.as_ref().map(|p| {
        serde_json::json!({
            "id": p.id,
            "files": p.manifest.files.len(),
            "bytes": p.manifest.total_bytes(),
            "generated_at": humantime::format_rfc3339_seconds(p.manifest.generated_at).to_string(),
        })
    });
    if out.json {
        let doc =
            serde_json::json!({"published": current, "last_run": last, "snapshots": ids, "disk_used_bytes": disk});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match &published {
        Some(p) => {
            let age = unix_seconds(std::time::SystemTime::now()).saturating_sub(unix_seconds(p.manifest.generated_at));
            println!(
                "published   {}: {} files, {}, listing generated {} ago",
                p.id,
                p.manifest.files.len(),
                human_bytes(p.manifest.total_bytes()),
                human_duration(age)
            );
        }
        None => println!("published   nothing yet"),
    }
    match &last {
        Some(r) => {
            println!("last run    {} at {} (exit {})", r.outcome, r.finished, r.exit_code);
            if let Some(e) = &r.error {
                println!("            {e}");
            }
        }
        None => println!("last run    none"),
    }
    let marked: Vec<String> = ids
        .iter()
        .map(|id| if Some(id) == published.as_ref().map(|p| &p.id) { format!("{id} (current)") } else { id.clone() })
        .collect();
    println!("snapshots   {} kept: {}", ids.len(), marked.join(", "));
    println!("disk used   {}", human_bytes(disk));
    Ok(())
}

/// Bytes of every distinct file below `dir` (hardlinks counted once).
fn disk_used(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
        .map(|m| m.len())
        .sum()
}
