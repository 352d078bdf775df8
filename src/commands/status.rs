//! `upmirror status [--check]`: the published snapshot, a run in progress,
//! the last run, the snapshots kept and the mirror's size; with `--check`,
//! one line and an exit code for monitoring.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

use super::unix_seconds;
use crate::config::{Config, ConfigError};
use crate::output::{Reporter, human_bytes, human_duration};
use crate::snapshot::{Published, Store};
use crate::status::RunStatus;

pub(super) fn status(cfg: &Config, check: Option<Duration>, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    if !store.meta().is_dir() {
        return Err(ConfigError(format!("{} is not a mirror root (no .upmirror/ in it)", store.root.display())).into());
    }
    let last: Option<RunStatus> =
        std::fs::read(store.meta().join("status.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(stale_after) = check {
        return check_health(last.as_ref(), stale_after);
    }
    let published = store.published()?;
    let running = store.running();
    let ids = store.snapshot_ids()?;
    let size = mirror_bytes(&store.root.join("snapshots"));
    if out.json {
        let current = published.as_ref().map(|p| -> Result<serde_json::Value> {
            let m = p.manifest.get()?;
            Ok(serde_json::json!({
                "id": p.id,
                "files": m.files.len(),
                "bytes": m.total_bytes(),
                "generated_at": humantime::format_rfc3339_seconds(m.generated_at).to_string(),
            }))
        });
        let current = current.transpose()?;
        let running = running.map(|(pid, since)| serde_json::json!({"pid": pid, "since": since}));
        let doc = serde_json::json!({"published": current, "running": running, "last_run": last, "snapshots": ids, "mirror_bytes": size});
        crate::outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let manifest = published.as_ref().map(|p| p.manifest.get()).transpose()?;
    print_status(published.as_ref().zip(manifest), running, last.as_ref(), &ids);
    crate::outln!("mirror size {}", human_bytes(size));
    Ok(())
}

fn print_status(
    published: Option<(&Published, &crate::manifest::Manifest)>,
    running: Option<(u32, String)>,
    last: Option<&RunStatus>,
    ids: &[String],
) {
    match published {
        Some((p, m)) => {
            let age = unix_seconds(SystemTime::now()).saturating_sub(unix_seconds(m.generated_at));
            crate::outln!(
                "published   {}: {} files, {}, listing generated {} ago",
                p.id,
                m.files.len(),
                human_bytes(m.total_bytes()),
                human_duration(age)
            );
        }
        None => crate::outln!("published   nothing yet"),
    }
    if let Some((pid, since)) = running {
        crate::outln!("running     a run (pid {pid}) since {since}");
    }
    match last {
        Some(r) => {
            crate::outln!("last run    {} at {} (exit {})", r.outcome, r.finished, r.exit_code);
            if let Some(why) = r.error.as_ref().or(r.held.as_ref()) {
                crate::outln!("            {why}");
            }
        }
        None => crate::outln!("last run    none"),
    }
    if let Some(key) = last.and_then(|r| r.signed_by.as_deref()) {
        crate::outln!("signed by   key {key}");
    }
    if let Some(manifest) = last.and_then(|r| r.snapshot_manifest.as_deref()) {
        crate::outln!("manifest    {manifest}");
    }
    if let Some(expires) = last.and_then(|r| r.client_cert_expires.as_deref()) {
        crate::outln!("client cert expires {expires}");
    }
    if let Some(trace) = last.map(|r| &r.trace).filter(|t| t.len() > 1) {
        let chain: Vec<String> = trace.iter().map(|t| crate::output::escape(&t.name)).collect();
        crate::outln!(
            "origin      listed at {}, {} tiers down: {}",
            trace[0].origin_generated_at,
            trace.len(),
            chain.join(" > ")
        );
    }
    if let Some(cycle) = last.and_then(|r| r.verify.as_ref()) {
        crate::outln!("verify      {}", cycle.describe());
    }
    let current = published.map(|(p, _)| &p.id);
    let marked: Vec<String> =
        ids.iter().map(|id| if Some(id) == current { format!("{id} (current)") } else { id.clone() }).collect();
    crate::outln!("snapshots   {} kept: {}", ids.len(), marked.join(", "));
}

/// `--check`: exit 0 when the last run succeeded (or is held) and the
/// mirror synced within `stale_after`; exit 1 otherwise; one line either way.
fn check_health(last: Option<&RunStatus>, stale_after: Duration) -> Result<()> {
    let Some(last) = last else { bail!("no run has been recorded yet") };
    if !last.succeeded() {
        let head = format!("the last run {} (exit {}) at {}", last.outcome, last.exit_code, last.finished);
        let failed = last.upstreams.iter().filter_map(|u| Some(format!("{}: {}", u.url, u.error.as_deref()?)));
        let lines: Vec<String> = failed.collect();
        match lines.len() {
            0 | 1 => bail!("{head}: {}", last.error.as_deref().unwrap_or("")),
            _ => return Err(crate::output::Lines { head, lines }.into()),
        }
    }
    if let Some(b) = last.buckets.iter().find(|b| b.error.is_some()) {
        bail!("the last run did not publish to {}: {}", b.target, b.error.as_deref().unwrap_or(""));
    }
    let finished = humantime::parse_rfc3339_weak(&last.finished).map_or(0, unix_seconds);
    let age = unix_seconds(SystemTime::now()).saturating_sub(finished);
    if age > stale_after.as_secs() {
        bail!(
            "stale: the last run finished {} ago, more than {}",
            human_duration(age),
            human_duration(stale_after.as_secs())
        );
    }
    crate::outln!(
        "ok: {} {} ago{}",
        last.outcome,
        human_duration(age),
        last.snapshot.as_deref().map(|s| format!(", snapshot {s}")).unwrap_or_default()
    );
    Ok(())
}

/// Bytes of every distinct file below `dir` (hardlinks counted once).
fn mirror_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
        .map(|m| m.len())
        .sum()
}
