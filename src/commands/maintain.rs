//! `upmirror verify [--repair]`, `upmirror status` and `upmirror rollback`:
//! looking after what is published.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{before, now_rfc3339, runtime, unix_seconds};
use crate::config::Config;
use crate::fetch::{Job, fetch_all};
use crate::output::{Reporter, human_bytes, human_duration};
use crate::plan::Plan;
use crate::snapshot::{Published, Store, read_manifest};
use crate::state::State;
use crate::status::RunStatus;
use crate::upstream::Upstreams;
use crate::verify::{Problem, check_tree};

pub(super) fn verify(cfg: &Config, repair: bool, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    let published = store.published()?.context("nothing is published yet")?;
    let problems = check_tree(&published.dir, &published.manifest);
    if out.json {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        println!("{}", serde_json::json!({"snapshot": published.id, "problems": list}));
    } else {
        problems.iter().for_each(|p| println!("{p}"));
    }
    if problems.is_empty() {
        out.info(format!("{}: all {} files match the manifest", published.id, published.manifest.files.len()));
        return Ok(());
    }
    if !repair {
        bail!("{} problems in snapshot {}; `upmirror verify --repair` re-fetches them", problems.len(), published.id);
    }
    let started = now_rfc3339();
    let id = repair_snapshot(cfg, &store, &published, &problems)?;
    let mut status = RunStatus { started, finished: now_rfc3339(), outcome: "repaired".into(), ..RunStatus::default() };
    let m = &published.manifest;
    status.set_published(&id, m.files.len(), m.total_bytes(), m.generated_at);
    status.record(&cfg.status_sinks(&store.root))?;
    out.info(format!("repaired {} problems of {} into snapshot {id}, now published", problems.len(), published.id));
    Ok(())
}

/// Build a new snapshot from the published one with every bad file fetched
/// again (a new inode: older snapshots sharing the old one are not touched)
/// and extra files left out, and publish it.
fn repair_snapshot(cfg: &Config, store: &Store, published: &Published, problems: &[Problem]) -> Result<String> {
    store.ensure_layout()?;
    let _lock = store.lock()?;
    if store.published()?.map(|p| p.id).as_deref() != Some(published.id.as_str()) {
        bail!("the published snapshot changed while it was checked; run `upmirror verify` again");
    }
    let bad: HashSet<&str> = problems.iter().filter_map(Problem::path).collect();
    let mut plan = Plan::default();
    for e in &published.manifest.files {
        match bad.contains(e.path.as_str()) {
            true => plan.change.push((e.clone(), e.size)),
            false => plan.keep.push(e.clone()),
        }
    }
    let upstreams = Upstreams::new(cfg)?;
    let rt = runtime(true)?;
    let deadline = tokio::time::Instant::now() + cfg.net.run_timeout;
    let partial = store.partial_dir();
    let progress = crate::output::Progress::hidden();
    let job = Job { first: 0, precision: 1, staging: &partial, concurrency: cfg.concurrency, net: &cfg.net, progress };
    let fetch = fetch_all(&upstreams, plan.downloads().cloned().collect(), job);
    let staged = rt.block_on(before(deadline, fetch))?;
    let id = store.build(&plan, staged, Some(published), published.manifest.generated_at)?;
    store.publish_new(&id)?;
    store.clear_partials()?;
    let mut state = State::load(&store.meta())?;
    if let Some(info) = state.snapshots.get(&published.id).cloned() {
        state.snapshots.insert(id.clone(), info);
    }
    let pruned = store.prune(cfg.keep, &id)?;
    state.snapshots.retain(|k, _| !pruned.contains(k));
    state.save(&store.meta())?;
    Ok(id)
}

pub(super) fn rollback(cfg: &Config, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    store.ensure_layout()?;
    let _lock = store.lock()?;
    let current = store.published()?.context("nothing is published yet, so there is nothing to roll back")?;
    let ids = store.snapshot_ids()?;
    let position = ids.iter().position(|id| *id == current.id).unwrap_or(0);
    let previous = position
        .checked_sub(1)
        .map(|p| ids[p].clone())
        .with_context(|| format!("no snapshot older than {} is kept (keep = {})", current.id, cfg.keep))?;
    read_manifest(&store.root.join("snapshots").join(&previous))
        .with_context(|| format!("snapshot {previous} is not intact; not publishing it"))?;
    let mut state = State::load(&store.meta())?;
    if let Some(info) = state.snapshots.get(&current.id)
        && !state.rejected.contains(&info.identity)
    {
        state.rejected.push(info.identity.clone());
    }
    store.publish(&previous)?;
    state.save(&store.meta())?;
    let mut status = RunStatus {
        started: now_rfc3339(),
        finished: now_rfc3339(),
        outcome: "rolled-back".into(),
        snapshot: Some(previous.clone()),
        ..RunStatus::default()
    };
    status.record(&cfg.status_sinks(&store.root))?;
    out.info(format!(
        "published {previous} again; later syncs refuse the listing of {} and publish the next newer one",
        current.id
    ));
    Ok(())
}

pub(super) fn init(cfg: &Config, dir: Option<&Path>, out: Reporter) -> Result<()> {
    let root = match dir {
        Some(d) => d,
        None => cfg.root()?,
    };
    let store = Store::new(root);
    store.ensure_layout()?;
    crate::disk::ensure_real_dir(&root.join("public"))?;
    out.info(format!("created the mirror root {} (snapshots/, .upmirror/, public/)", root.display()));
    println!(
        "next steps:\n\
         1. in /etc/upmirror/upmirror.toml set root = \"{}\", the upstreams, and ca_file / client_cert / client_key if needed\n\
         2. upmirror mirrors            # every upstream reachable, TLS verified?\n\
         3. upmirror sync --dry-run     # the first plan; then: upmirror sync\n\
         4. nginx/upmirror.conf and cron/upmirror.timer: see README, \"Install on a server\"",
        root.display()
    );
    Ok(())
}

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
