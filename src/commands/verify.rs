//! `upmirror verify [--repair]`: re-hash the published snapshot; with
//! `--repair`, re-fetch what is wrong into a new snapshot and publish it.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::apply::{Origin, Outcome, Run, apply, recorded};
use super::{now_rfc3339, runtime};
use crate::config::Config;
use crate::manifest::Entry;
use crate::output::{Progress, Reporter, error_line};
use crate::output::{escape, human_bytes};
use crate::plan::Plan;
use crate::snapshot::{About, Describe, Published, Store};
use crate::status::{RunStatus, Sinks};
use crate::upstream::Upstreams;
use crate::verify::{Cycle, Problem, check_files, check_tree, extras, slice};

struct Repaired {
    id: String,
}

impl Outcome for Repaired {
    fn outcome(&self) -> crate::status::Outcome {
        crate::status::Outcome::Repaired
    }
}

pub(super) fn verify(cfg: &Config, repair: bool, budget: Option<u64>, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    let published = store.published()?.context("nothing is published yet")?;
    let manifest = published.manifest.get()?;
    let (problems, checked) = match budget {
        None => (check_tree(&published.dir, manifest), None),
        Some(budget) => budgeted(cfg, &store, &published, budget, out).map(|(p, c)| (p, Some(c)))?,
    };
    if out.json {
        let list: Vec<serde_json::Value> = problems.iter().map(Problem::to_json).collect();
        crate::outln!("{}", serde_json::json!({"snapshot": published.id, "problems": list, "checked": checked}));
    } else {
        problems.iter().for_each(|p| crate::outln!("{p}"));
    }
    match &checked {
        Some(c) => out.info(format!("{}: {}", published.id, c.describe())),
        None if problems.is_empty() => {
            out.info(format!("{}: all {} files match the manifest", published.id, manifest.files.len()))
        }
        None => {}
    }
    if problems.is_empty() {
        return Ok(());
    }
    if !repair {
        bail!("{} problems in snapshot {}; `upmirror verify --repair` re-fetches them", problems.len(), published.id);
    }
    let done = recorded(cfg, &store, out, |run| {
        run.check_client_cert()?;
        repair_snapshot(run, &published, &problems)
    })
    .0?;
    out.summary(format!(
        "repaired {} problems of {} into snapshot {}, now published",
        problems.len(),
        published.id,
        done.id
    ));
    Ok(())
}

/// What a budgeted verify checked.
#[derive(serde::Serialize)]
struct Checked {
    files: usize,
    bytes: u64,
    from: Option<String>,
    to: Option<String>,
    /// This run checked the cycle's last file.
    cycle_completed: bool,
}

impl Checked {
    fn describe(&self) -> String {
        let range = match (&self.from, &self.to) {
            (Some(from), Some(to)) => format!(" ({} … {})", escape(from), escape(to)),
            _ => String::new(),
        };
        let cycle = if self.cycle_completed { "the cycle is complete" } else { "the next run goes on from there" };
        format!("checked {} files, {}{range}; {cycle}", self.files, human_bytes(self.bytes))
    }
}

/// Check the next `budget` bytes of the published files, going on from
/// where the last budgeted verify stopped (a new cycle checks for unlisted
/// files too), and record where this one stopped, under the store's lock.
fn budgeted(
    cfg: &Config,
    store: &Store,
    published: &Published,
    budget: u64,
    out: Reporter,
) -> Result<(Vec<Problem>, Checked)> {
    let locked = store.lock()?;
    let mut cycle = Cycle::load(&locked.meta())?;
    let starts = cycle.position.is_none();
    if starts {
        cycle.cycle_started_at = Some(now_rfc3339());
    }
    let manifest = published.manifest.get()?;
    let (files, ends) = slice(&manifest.files, cycle.position.as_deref(), budget);
    let mut problems = check_files(&published.dir, files);
    if starts {
        problems.extend(extras(&published.dir, manifest));
    }
    cycle.position = if ends { None } else { files.last().map(|e| e.path.to_string()) };
    if ends {
        cycle.cycle_completed_at = Some(now_rfc3339());
    }
    cycle.save(&locked.meta())?;
    if let Err(e) = RunStatus::amend(&Sinks::new(&store.root, cfg), |s| s.verify = Some(cycle)) {
        out.warn(format!("the status does not show this verify: {}", error_line(&e)));
    }
    let path = |e: Option<&Entry>| e.map(|e| e.path.to_string());
    let bytes = files.iter().map(|e| e.size).sum();
    let checked =
        Checked { files: files.len(), bytes, from: path(files.first()), to: path(files.last()), cycle_completed: ends };
    Ok((problems, checked))
}

/// Build the published snapshot again with every bad file fetched again (a
/// new inode) and extra files left out, and publish it: the same files
/// under the same id, so the mended tree takes the damaged one's place (an
/// older timestamp id gets a new one). Older snapshots that share a damaged
/// inode are mended too.
fn repair_snapshot(run: &mut Run, published: &Published, problems: &[Problem]) -> Result<Repaired> {
    if run.locked.published()?.map(|p| p.id).as_deref() != Some(published.id.as_str()) {
        bail!("the published snapshot changed while it was checked; run `upmirror verify` again");
    }
    let m = published.manifest.get()?;
    run.status.set_published(&published.id, m.files.len(), m.total_bytes(), m.generated_at);
    let bad: HashSet<&str> = problems.iter().filter_map(Problem::path).collect();
    let mut plan = Plan::default();
    for e in &m.files {
        match bad.contains(e.path.as_str()) {
            true => plan.change.push((e.clone(), e.size)),
            false => plan.keep.push(e.clone()),
        }
    }
    run.status.summary = plan.summary();
    let upstreams = Upstreams::new(run.cfg, run.out)?;
    let rt = runtime(true)?;
    // The same files again: the same manifest, and its signature if it has one.
    let signed = crate::signature::Signed::read(&published.dir.join(crate::snapshot::SNAPSHOT_MANIFEST))?;
    let origin = Origin {
        upstreams: &upstreams,
        first: 0,
        dates: crate::upstream::Dates::EXACT,
        about: About {
            // The same files from the same origin: the same id.
            origin: Some(crate::ids::origin_of(&published.id).unwrap_or(m.generated_at)),
            generated_at: m.generated_at,
            manifest: match &signed {
                Some(signed) => Describe::AsSigned(signed),
                None => Describe::Own(run.cfg.signing_key.as_deref()),
            },
            trace: crate::trace::read_above(&published.dir),
        },
        rt: &rt,
        deadline: tokio::time::Instant::now() + run.cfg.net.run_timeout,
        progress: Progress::hidden(),
        deltas: &[],
    };
    // Read before the rebuild, which may take the published snapshot's name.
    let damaged: Vec<&Entry> = m.files.iter().filter(|e| bad.contains(e.path.as_str())).collect();
    let broken = run.locked.inodes(&published.id, &damaged);
    let result = apply(run, plan, Some(published), origin, |state, id| {
        if let Some(info) = state.snapshots.get(&published.id).cloned() {
            state.snapshots.insert(id.to_owned(), info);
        }
    });
    run.status.upstreams = upstreams.health();
    let id = result?;
    run.status.set_published(&id, m.files.len(), m.total_bytes(), m.generated_at);
    mend_older(run, &broken, &id);
    Ok(Repaired { id })
}

/// Older snapshots share the damaged inodes through hardlinks: mend them
/// too, or a rollback would publish the damage again.
fn mend_older(run: &mut Run, broken: &[(&Entry, crate::snapshot::Inode)], id: &str) {
    match run.locked.relink_shared(broken, id) {
        Ok(relinked) => {
            if !relinked.mended.is_empty() {
                run.out.detail(format!("mended in older snapshots: {}", relinked.mended.join(", ")));
            }
            for (path, err) in relinked.failed {
                run.warn(format!("{path} could not be mended in older snapshots: {}", error_line(&err)));
            }
        }
        Err(err) => run.warn(format!("the older snapshots could not be mended: {}", error_line(&err))),
    }
}
