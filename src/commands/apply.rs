//! The one way a change reaches what is served, whichever command asks for
//! it: a locked store → files fetched and verified → a snapshot built from
//! them → published → pruned → state saved. And the run wrapper that records
//! status and metrics on every exit path of a command that changes the store.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Instant, SystemTime};

use anyhow::{Result, anyhow};

use super::{before, now_rfc3339};
use crate::config::Config;
use crate::disk::failpoint;
use crate::error::Exit;
use crate::fetch::{Job, fetch_all};
use crate::output::{Progress, Reporter};
use crate::plan::Plan;
use crate::snapshot::{Locked, Published, Store};
use crate::state::State;
use crate::status::{RunStatus, Sinks};
use crate::upstream::Upstreams;

/// What a command that changes the store ended with.
pub(super) trait Outcome {
    /// The word status.json records: `published`, `unchanged`, `repaired`, `rolled-back`.
    fn label(&self) -> &'static str;
}

/// Lock the store, clean what a killed run left, run `body`, and record the
/// run's status whatever happens: success, refusal, failure, interruption,
/// or a panic in a stage. Returns the outcome with the status as recorded.
pub(super) fn recorded<T: Outcome>(
    cfg: &Config,
    store: &Store,
    out: Reporter,
    body: impl FnOnce(&Locked, &mut RunStatus) -> Result<T>,
) -> Result<(T, RunStatus)> {
    let locked = store.lock()?;
    let mut status = RunStatus { started: now_rfc3339(), ..RunStatus::default() };
    let result = locked.clean_leftovers().and_then(|()| {
        catch_unwind(AssertUnwindSafe(|| body(&locked, &mut status)))
            .unwrap_or_else(|panic| Err(anyhow!("a stage failed unexpectedly (a bug): {}", panic_text(&*panic))))
    });
    status.finished = now_rfc3339();
    match &result {
        Ok(done) => status.outcome = done.label().into(),
        Err(e) => {
            let exit = Exit::of(e);
            status.exit_code = exit.code();
            status.outcome = exit.outcome().into();
            status.error = Some(format!("{e:#}"));
        }
    }
    if let Err(e) = status.record(&Sinks::new(&store.root, cfg)) {
        out.warn(format!("could not write the run's status: {e:#}"));
    }
    result.map(|done| (done, status))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| s.to_string());
    text.or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into())
}

/// Where a new snapshot's files come from, and how long they may take.
pub(super) struct Origin<'a> {
    pub upstreams: &'a Upstreams,
    /// The upstream tried first (the one that gave the listing).
    pub first: usize,
    /// Resolution of the listing's mtimes, in seconds.
    pub precision: i64,
    /// The listing's `generated_at`, recorded in the new snapshot's manifest.
    pub generated_at: SystemTime,
    pub rt: &'a tokio::runtime::Runtime,
    pub deadline: tokio::time::Instant,
    pub progress: Progress,
}

/// Which snapshot a publish makes current.
pub(super) enum Snapshot<'a> {
    /// One this run built: removed again if its publish fails.
    New(&'a str),
    /// One already kept, published again.
    Kept(&'a str),
}

/// Fetch and verify the plan's downloads, build a snapshot of them beside
/// the kept files of `base`, and publish it. `record` notes it in the state.
pub(super) fn apply(
    locked: &Locked,
    cfg: &Config,
    plan: &Plan,
    base: Option<&Published>,
    source: Origin,
    out: Reporter,
    record: impl FnOnce(&mut State, &str),
) -> Result<String> {
    let partial = locked.partial_dir();
    let job = Job {
        first: source.first,
        precision: source.precision,
        staging: &partial,
        concurrency: cfg.concurrency,
        net: &cfg.net,
        progress: source.progress.clone(),
    };
    let clock = Instant::now();
    let fetch = fetch_all(source.upstreams, plan.downloads().cloned().collect(), job);
    let fetched = source.rt.block_on(before(source.deadline, fetch));
    source.progress.finish();
    let verified = fetched?;
    out.detail(format!("fetched {} files in {:.3} s", verified.len(), clock.elapsed().as_secs_f64()));
    failpoint("fetched");
    let clock = Instant::now();
    let id = locked.build(plan, verified, base, source.generated_at)?;
    out.detail(format!("built snapshot {id} in {:.3} s", clock.elapsed().as_secs_f64()));
    let clock = Instant::now();
    publish(locked, cfg, Snapshot::New(&id), record)?;
    out.detail(format!("flushed, published and pruned in {:.3} s", clock.elapsed().as_secs_f64()));
    Ok(id)
}

/// Make `snapshot` current, note it in the state with `record`, prune the
/// snapshots beyond `keep` and save the state.
pub(super) fn publish(
    locked: &Locked,
    cfg: &Config,
    snapshot: Snapshot,
    record: impl FnOnce(&mut State, &str),
) -> Result<()> {
    let id = match snapshot {
        Snapshot::New(id) => {
            locked.publish_new(id)?;
            locked.clear_partials()?;
            id
        }
        Snapshot::Kept(id) => {
            locked.publish(id)?;
            id
        }
    };
    let mut state = State::load(&locked.meta())?;
    record(&mut state, id);
    let pruned = locked.prune(cfg.keep, id)?;
    state.snapshots.retain(|k, _| !pruned.contains(k));
    state.save(&locked.meta())
}
