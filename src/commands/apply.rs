//! The one way a change reaches what is served, whichever command asks for
//! it: a locked store → files fetched and verified → a snapshot built from
//! them → published → pruned → state saved. And the run wrapper that records
//! status and metrics on every exit path of a command that changes the store.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Result, anyhow};

use super::{before, client_identity, now_rfc3339, unix_seconds};
use crate::config::Config;
use crate::delta::{Change, write_patches};
use crate::disk::failpoint;
use crate::error::{Exit, Refused};
use crate::fetch::{DeltaStats, Deltas, Job, SeedStats, Seeds, Verified, fetch_all};
use crate::hooks;
use crate::manifest::{Entry, RelPath};
use crate::output::{Progress, Reporter, error_line, human_bytes, rfc3339};
use crate::plan::{Plan, handing_back};
use crate::snapshot::{About, Built, Locked, Published, Store};
use crate::state::State;
use crate::status::{Kept, RunStatus, Sinks};
use crate::upstream::Upstreams;

/// What a command that changes the store ended with.
pub(super) trait Outcome {
    /// How status.json records it.
    fn outcome(&self) -> crate::status::Outcome;
}

/// A run that changes the store: the store under its lock, the
/// configuration, the reporter, and the status being gathered.
pub(super) struct Run<'a> {
    pub locked: Locked<'a>,
    pub cfg: &'a Config,
    pub out: Reporter,
    pub status: RunStatus,
}

impl Run<'_> {
    /// Check the client certificate before any request, and note when it
    /// expires in the status.
    pub fn check_client_cert(&mut self) -> Result<()> {
        self.status.client_cert_expires = client_identity(self.cfg, self.out)?.map(|c| c.expires());
        Ok(())
    }

    /// What a failed hook ran and printed: on the operator's terminal and
    /// in the private status, never in the public one.
    pub fn hook_failed(&mut self, e: &anyhow::Error) {
        if let Some(hook) = e.downcast_ref::<crate::hooks::HookFailed>() {
            self.out.warn(&hook.detail);
            self.status.hook_output = Some(hook.detail.clone());
        }
    }

    /// A problem that does not fail the run: printed, and kept in its status.
    pub fn warn(&mut self, line: String) {
        self.out.warn(&line);
        self.status.warnings.push(line);
    }
}

/// Lock the store, clean what a killed run left, run `body`, and record the
/// run's status whatever happens: success, refusal, failure, interruption,
/// or a panic in a stage. Returns the outcome, and the status as recorded
/// (none when the store could not even be locked).
pub(super) fn recorded<T: Outcome>(
    cfg: &Config,
    store: &Store,
    out: Reporter,
    body: impl FnOnce(&mut Run) -> Result<T>,
) -> (Result<T>, Option<RunStatus>) {
    let locked = match store.lock() {
        Ok(locked) => locked,
        Err(e) => return (Err(e), None),
    };
    let status = RunStatus { started: now_rfc3339(), ..RunStatus::default() };
    let mut run = Run { locked, cfg, out, status };
    if let Some(warning) = store.owner_warning() {
        run.warn(warning);
    }
    let result = run.locked.clean_leftovers().and_then(|stuck| {
        for e in stuck {
            run.warn(format!("a leftover of an earlier run stays: {}", error_line(&e)));
        }
        catch_unwind(AssertUnwindSafe(|| body(&mut run)))
            .unwrap_or_else(|panic| Err(anyhow!("a stage failed unexpectedly (a bug): {}", panic_text(&*panic))))
    });
    refresh_grace(&mut run);
    let mut status = run.status;
    if let Some(id) = &status.snapshot {
        status.trace = crate::trace::read(&store.snapshots().join(id));
    }
    status.finished = now_rfc3339();
    match &result {
        Ok(done) => status.outcome = done.outcome(),
        Err(e) => {
            let exit = Exit::of(e);
            status.exit_code = exit.code();
            status.outcome = crate::status::Outcome::of_exit(exit);
            status.error = Some(error_line(e));
        }
    }
    // Monitoring must not go silent: a status or metrics file that cannot
    // be written fails the run (exit 4) and is printed even under --quiet.
    let recorded = status.record(&Sinks::new(&store.root, cfg));
    let result = match (result, recorded) {
        (Ok(done), Ok(())) => Ok(done),
        (Ok(_), Err(unrecorded)) => Err(unrecorded),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(unrecorded)) => {
            crate::output::after_error(error_line(&unrecorded));
            Err(e)
        }
    };
    (result, Some(status))
}

/// Point the grace links at the snapshots still inside their window, mark
/// the withdrawn ones, move the `auto_promote` channels, and list the kept
/// snapshots and the channels in the status; whatever the run's outcome,
/// as windows close and cooldowns pass between publishes too.
fn refresh_grace(run: &mut Run) {
    let now = unix_seconds(SystemTime::now());
    let (mut state, ids) = match (State::load(&run.locked.meta()), run.locked.snapshot_ids()) {
        (Ok(state), Ok(ids)) => (state, ids),
        (Err(e), _) | (_, Err(e)) => {
            return run.warn(format!("the grace links were not refreshed: {}", error_line(&e)));
        }
    };
    let current = run.locked.current_id();
    let grace = in_grace(run, &state, &ids, now);
    if let Err(e) = run.locked.set_grace_links(&grace) {
        run.warn(format!("the grace links were not refreshed: {}", error_line(&e)));
    }
    // A kept snapshot whose listing was rolled back is withdrawn from its pinned URL.
    let rolled_back = |id: &&String| state.snapshots.get(*id).is_some_and(|i| state.rejected.contains(&i.identity));
    let withdrawn: Vec<String> =
        ids.iter().filter(|id| Some(*id) != current.as_ref()).filter(rolled_back).cloned().collect();
    if let Err(e) = run.locked.set_withdrawn(&withdrawn) {
        run.warn(format!("the withdrawn snapshots were not marked: {}", error_line(&e)));
    }
    if super::promote::auto_promote(run, &mut state, (&ids, &withdrawn), now)
        && let Err(e) = state.save(&run.locked.meta())
    {
        run.warn(format!("the channels' state was not saved: {}", error_line(&e)));
    }
    refresh_channel_grace(run, &state, &ids, now);
    run.status.verify = crate::verify::Cycle::load(&run.locked.meta()).ok().filter(|c| *c != Default::default());
    run.status.snapshots = ids
        .iter()
        .map(|id| Kept {
            id: id.clone(),
            published_at: state.snapshots.get(id).and_then(|i| i.published_at).map(|t| rfc3339(t as i64)),
            current: Some(id) == current.as_ref(),
            in_grace: grace.contains(id),
            withdrawn: withdrawn.contains(id),
        })
        .collect();
    run.status.channels = channels(run, &state);
}

/// The snapshots the grace links name: those replaced within `grace`,
/// newest first, kept and not current, at most one per link.
pub(super) fn in_grace(run: &Run, state: &State, ids: &[String], now: u64) -> Vec<String> {
    let current = run.locked.current_id();
    let replaced = state.in_grace(now, run.cfg.grace.as_secs()).into_iter();
    replaced.filter(|id| ids.contains(id) && Some(id) != current.as_ref()).take(crate::snapshot::GRACE_LINKS).collect()
}

/// Point each channel's grace links at the kept snapshots it left within
/// `grace`, other than the one it names now.
fn refresh_channel_grace(run: &mut Run, state: &State, ids: &[String], now: u64) {
    let grace = run.cfg.grace.as_secs();
    let links: Vec<(String, Vec<String>)> = (run.locked.channels().unwrap_or_default().into_iter())
        .map(|(name, at)| {
            let left = state.channel_grace(&name, now, grace).into_iter();
            let kept: Vec<String> = left.filter(|id| ids.contains(id) && *id != at).collect();
            (name, kept)
        })
        .collect();
    if let Err(e) = run.locked.set_channel_grace(&links) {
        run.warn(format!("the channels' grace links were not refreshed: {}", error_line(&e)));
    }
}

/// Each channel with its snapshot and when it was pointed there.
fn channels(run: &mut Run, state: &State) -> Vec<crate::channels::Channel> {
    let linked = run.locked.channels().unwrap_or_else(|e| {
        run.warn(format!("the channels could not be read: {}", error_line(&e)));
        Vec::new()
    });
    let at = |name: &str| state.channels.get(name).map(|t| rfc3339(*t as i64));
    linked
        .into_iter()
        .map(|(name, snapshot)| crate::channels::Channel { promoted_at: at(&name), name, snapshot })
        .collect()
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
    /// How the listing shows mtimes.
    pub dates: crate::upstream::Dates,
    /// What the new snapshot says of itself.
    pub about: About<'a>,
    pub rt: &'a tokio::runtime::Runtime,
    pub deadline: tokio::time::Instant,
    pub progress: Progress,
    /// The patches the upstream offers (`upmirror-deltas.json`).
    pub deltas: &'a [crate::delta::Delta],
}

/// Which snapshot a publish makes current.
#[derive(Clone, Copy)]
pub(super) enum Snapshot<'a> {
    /// One this run built: removed again if its publish fails.
    New(&'a Built),
    /// One already kept, published again.
    Kept(&'a str),
}

/// The manifest of kept snapshot `id` once the whole snapshot is checked
/// against it; refused (exit 3) when it is not kept, its manifest is
/// unreadable or a file differs: such a snapshot is never `what` (published
/// again, promoted).
pub(super) fn intact(run: &Run, id: &str, what: &str) -> Result<crate::manifest::Manifest> {
    let dir = run.locked.snapshots().join(id);
    if !crate::snapshot::is_snapshot_id(id) || !dir.is_dir() {
        return Err(Refused(format!(
            "no snapshot {} is kept in {}",
            crate::output::escape(id),
            run.locked.root.display()
        ))
        .into());
    }
    let manifest = crate::snapshot::read_manifest(&dir)
        .map_err(|e| Refused(format!("snapshot {id} is not intact ({}), so it is not {what}", error_line(&e))))?;
    if let Some(problem) = crate::verify::check_tree(&dir, &manifest).first() {
        let problem = problem.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(Refused(format!("snapshot {id} is damaged ({problem}), so it is not {what}")).into());
    }
    Ok(manifest)
}

/// The seeds of `seed_from` for these downloads; a seed that is no
/// directory is left out, with a warning.
fn seeds<'a>(run: &mut Run, downloads: impl Iterator<Item = &'a Entry>) -> Option<Arc<Seeds>> {
    let (dirs, missing): (Vec<PathBuf>, Vec<PathBuf>) = run.cfg.seed_from.iter().cloned().partition(|d| d.is_dir());
    for dir in missing {
        run.warn(format!("seed_from {} is not a directory; not used this run", dir.display()));
    }
    (!dirs.is_empty()).then(|| Arc::new(Seeds::new(&dirs, downloads)))
}

/// Say what the seeds gave, in the output and the status.
fn note_seeded(run: &mut Run, seeds: Option<&Seeds>) {
    let Some(stats) = seeds.map(Seeds::stats).filter(|s| *s != SeedStats::default()) else { return };
    let mismatched = match stats.mismatched {
        0 => String::new(),
        n => format!("; {n} of the right size held other bytes and were passed over"),
    };
    run.out.info(format!("took {} files ({}) from seed_from{mismatched}", stats.files, human_bytes(stats.bytes)));
    run.status.seeded = Some(stats);
}

/// How long a run spends on patches for the tiers below (`make_deltas`);
/// files it does not reach have none.
const MAKE_DELTAS_BUDGET: std::time::Duration = std::time::Duration::from_secs(600);

/// With `make_deltas`, patches from the published snapshot for the new
/// snapshot's changed files of at least that size, written into it before
/// it is published, on one thread at the lowest priority, within
/// [`MAKE_DELTAS_BUDGET`]. A failure leaves the snapshot without patches.
fn make_deltas(run: &mut Run, id: &str, changed: &[RelPath], base: Option<&Published>) {
    let (Some(min), Some(base)) = (run.cfg.make_deltas, base) else { return };
    let dir = run.locked.snapshots().join(id);
    let (Ok(new), Ok(old)) = (crate::snapshot::read_manifest(&dir), base.manifest.get()) else { return };
    let changes: Vec<Change> = (changed.iter())
        .filter_map(|path| {
            let (old, new) = (old.get(path.as_str())?, new.get(path.as_str())?);
            let fits = new.size >= min && old.size <= crate::delta::MAX_BASE;
            fits.then_some(Change { path: path.as_str(), from: old.sha256?, to: new.sha256?, size: new.size })
        })
        .collect();
    if changes.is_empty() {
        return;
    }
    let deadline = Instant::now() + MAKE_DELTAS_BUDGET;
    let made = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
            write_patches(&dir, &base.dir, &changes, Some(deadline))
        });
        worker.join().unwrap_or_else(|_| Err(anyhow!("the patch maker failed unexpectedly (a bug)")))
    });
    match made {
        Ok(made) => run.out.info(format!("wrote {} for the tiers below", made.describe())),
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir.join(crate::delta::DELTAS_DIR));
            let _ = crate::disk::remove_if_exists(&dir.join(crate::delta::DELTAS_FILE));
            run.warn(format!("no patches for the tiers below: {}", error_line(&e)));
        }
    }
}

/// Say what the patches gave, in the output and the status.
fn note_patched(run: &mut Run, deltas: Option<&Deltas>) {
    let Some(stats) = deltas.map(Deltas::stats).filter(|s| *s != DeltaStats::default()) else { return };
    let failed = match stats.fell_back {
        0 => String::new(),
        n => format!("; {n} did not apply and came whole"),
    };
    let (files, patches, saved) = (stats.files, human_bytes(stats.patch_bytes), human_bytes(stats.saved_bytes));
    run.out.info(format!("made {files} files from patches ({patches}, {saved} not downloaded){failed}"));
    run.status.deltas = Some(stats);
}

/// Fetch and verify the plan's downloads, build a snapshot of them beside
/// the kept files of `base`, and publish it. `record` notes it in the state.
/// The plan's entries move into the new snapshot's manifest, never copied.
pub(super) fn apply(
    run: &mut Run,
    plan: Plan,
    base: Option<&Published>,
    source: Origin,
    record: impl FnOnce(&mut State, &str),
) -> Result<String> {
    let changed = changed_files(run, &plan)?;
    let patchable: Vec<RelPath> = match (run.cfg.make_deltas, base) {
        (Some(_), Some(_)) => plan.change.iter().map(|(e, _)| e.path.clone()).collect(),
        _ => Vec::new(),
    };
    let Plan { add, change, keep, .. } = plan;
    let verified = fetch(run, (add, change), base, &source)?;
    failpoint("fetched");
    let clock = Instant::now();
    let built = run.locked.build(keep, verified, base, source.about)?;
    let id = built.id.clone();
    run.out.detail(format!("built snapshot {id} in {:.3} s", clock.elapsed().as_secs_f64()));
    make_deltas(run, &id, &patchable, base);
    let env = hook_env(run, &id, changed);
    if let Some(command) = &run.cfg.hooks.pre_publish
        && let Err(e) = hooks::run("pre_publish", command, &env, run.cfg.hooks.timeout, &run.locked.meta())
    {
        run.locked.discard(&built);
        if e.is::<crate::interrupt::Interrupted>() {
            return Err(e);
        }
        run.hook_failed(&e);
        return Err(Refused(format!("{}; snapshot {id} was not published", error_line(&e))).into());
    }
    let clock = Instant::now();
    publish(run, Snapshot::New(&built), record)?;
    run.out.detail(format!("flushed, published and pruned in {:.3} s", clock.elapsed().as_secs_f64()));
    if let Some(command) = &run.cfg.hooks.post_publish
        && let Err(e) = hooks::run("post_publish", command, &env, run.cfg.hooks.timeout, &run.locked.meta())
    {
        run.hook_failed(&e);
        run.warn(format!("{id} is published, but {}", error_line(&e)));
    }
    Ok(id)
}

/// Fetch and verify the added and changed files, which move into the
/// downloads as they start: seeds and patches first, the upstreams else.
fn fetch(
    run: &mut Run,
    (add, change): (Vec<Entry>, Vec<(Entry, u64)>),
    base: Option<&Published>,
    source: &Origin,
) -> Result<Vec<Verified>> {
    let partial = run.locked.partial_dir();
    let wanted = || add.iter().chain(change.iter().map(|(e, _)| e));
    let count = add.len() + change.len();
    let seeds = if count == 0 { None } else { seeds(run, wanted()) };
    let deltas = match base.filter(|_| !source.deltas.is_empty()) {
        Some(b) => Some(Arc::new(Deltas::new(source.deltas, wanted(), (&b.dir, b.manifest.get()?)))),
        None => None,
    };
    let deltas = deltas.filter(|d| !d.is_empty());
    let job = Job {
        first: source.first,
        dates: source.dates,
        staging: &partial,
        concurrency: run.cfg.files_in_flight(),
        net: &run.cfg.net,
        progress: source.progress.clone(),
        seeds: seeds.clone(),
        deltas: deltas.clone(),
    };
    let clock = Instant::now();
    let entries = handing_back(add).chain(handing_back(change).map(|(e, _)| e));
    let fetched = source.rt.block_on(before(source.deadline, fetch_all(source.upstreams, entries, count, job)));
    source.progress.finish();
    note_seeded(run, seeds.as_deref());
    note_patched(run, deltas.as_deref());
    let verified = fetched?;
    run.out.detail(format!("fetched {} files in {:.3} s", verified.len(), clock.elapsed().as_secs_f64()));
    Ok(verified)
}

/// For the hooks, a file of the added and changed paths, NUL-separated;
/// none without hooks.
fn changed_files(run: &Run, plan: &Plan) -> Result<Option<PathBuf>> {
    let hooks = &run.cfg.hooks;
    if hooks.pre_publish.is_none() && hooks.post_publish.is_none() {
        return Ok(None);
    }
    let list = run.locked.meta().join("changed-files");
    let names: Vec<u8> = plan.downloads().flat_map(|e| [e.path.as_str().as_bytes(), b"\0"].concat()).collect();
    crate::disk::write_private(&list, &names)?;
    Ok(Some(list))
}

/// What a hook is told of the snapshot: the root, its id and directory, and
/// the file of the added and changed paths.
fn hook_env(run: &Run, id: &str, changed: Option<PathBuf>) -> Vec<(&'static str, String)> {
    let Some(list) = changed else { return Vec::new() };
    let root = run.locked.root.display().to_string();
    let dir = run.locked.root.join("snapshots").join(id).display().to_string();
    vec![
        ("UPMIRROR_ROOT", root),
        ("UPMIRROR_SNAPSHOT_ID", id.to_owned()),
        ("UPMIRROR_SNAPSHOT_DIR", dir),
        ("UPMIRROR_CHANGED_FILES", list.display().to_string()),
    ]
}

/// Make `snapshot` current; then note it in the state with `record`, save
/// that, clear staging and prune the snapshots beyond `keep`. Past the swap
/// the snapshot is served: what fails there is a warning in the status, not
/// a failed run, and the state is saved whatever else fails.
pub(super) fn publish(run: &mut Run, snapshot: Snapshot, record: impl FnOnce(&mut State, &str)) -> Result<()> {
    let before = run.locked.current_id();
    let id = match snapshot {
        Snapshot::New(built) => run.locked.publish_new(built).map(|()| built.id.as_str())?,
        Snapshot::Kept(id) => run.locked.publish(id).map(|()| id)?,
    };
    let meta = run.locked.meta();
    let failed = |run: &mut Run, what: &str, result: Result<()>| {
        if let Err(e) = result {
            run.warn(format!("{id} is published, but {what} failed: {}", error_line(&e)));
        }
    };
    let now = unix_seconds(SystemTime::now());
    let mut state = State::load(&meta);
    if let Ok(state) = &mut state {
        record(state, id);
        // A rolled-back snapshot keeps no grace window: its files are not wanted.
        state.published(id, before.as_deref(), now, matches!(snapshot, Snapshot::New(_)));
    }
    let saved = state.as_ref().map_err(|e| anyhow!("{e:#}")).and_then(|s| s.save(&meta));
    failed(run, "saving the state", saved);
    if matches!(snapshot, Snapshot::New(_)) {
        let cleared = run.locked.clear_partials();
        failed(run, "clearing staging", cleared);
    }
    // What the grace links and the channels name stays; nothing else beyond `keep`.
    let ids = run.locked.snapshot_ids().unwrap_or_default();
    let mut protect = state.as_ref().map(|s| in_grace(run, s, &ids, now)).unwrap_or_default();
    let (removed, pruned) = match run.locked.named_by_channels() {
        Ok(named) => {
            protect.extend(named);
            run.locked.prune(run.cfg.keep, id, &protect)
        }
        Err(e) => (Vec::new(), Err(e.context("the channels could not be read, so nothing was pruned"))),
    };
    if let Ok(state) = &mut state
        && !removed.is_empty()
    {
        state.snapshots.retain(|k, _| !removed.contains(k));
        failed(run, "saving the state", state.save(&meta));
    }
    failed(run, "pruning old snapshots", pruned);
    Ok(())
}
