//! `upmirror rollback`: publish the previous snapshot again and reject the
//! rolled-back listing.

use anyhow::{Context, Result};

use super::apply::{Outcome, Run, Snapshot, intact, publish, recorded};
use crate::config::Config;
use crate::output::Reporter;
use crate::snapshot::Store;
use crate::state::State;

struct RolledBack {
    from: String,
    to: String,
}

impl Outcome for RolledBack {
    fn outcome(&self) -> crate::status::Outcome {
        crate::status::Outcome::RolledBack
    }
}

pub(super) fn rollback(cfg: &Config, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    let done = recorded(cfg, &store, out, roll_back).0?;
    out.summary(format!(
        "published {} again; later syncs hold while the upstream offers the listing of {}, and publish the next newer one",
        done.to, done.from
    ));
    Ok(())
}

fn roll_back(run: &mut Run) -> Result<RolledBack> {
    let current = run.locked.published()?.context("nothing is published yet, so there is nothing to roll back")?;
    let ids = run.locked.snapshot_ids()?;
    let position = ids.iter().position(|id| *id == current.id).unwrap_or(0);
    let previous = position
        .checked_sub(1)
        .map(|p| ids[p].clone())
        .with_context(|| format!("no snapshot older than {} is kept (keep = {})", current.id, run.cfg.keep))?;
    // Never bring damage back: the target is checked whole first.
    let manifest = intact(run, &previous, "published again; a sync publishes a fresh snapshot from the upstream")?;
    let rejected = State::load(&run.locked.meta())?.snapshots.get(&current.id).map(|info| info.identity.clone());
    publish(run, Snapshot::Kept(&previous), |state, _| {
        if let Some(identity) = rejected
            && !state.rejected.contains(&identity)
        {
            state.rejected.push(identity);
        }
    })?;
    run.status.set_published(&previous, manifest.files.len(), manifest.total_bytes(), manifest.generated_at);
    Ok(RolledBack { from: current.id, to: previous })
}
