//! `upmirror sync`: lock, list, plan, guard, fetch, build, publish, record.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::apply::{Origin, Outcome, Run, apply, recorded};
use super::{before, client_identity, runtime, unix_seconds};
use crate::cli::SyncArgs;
use crate::config::Config;
use crate::error::{Exit, Refused};
use crate::fetch::{Reclaimed, reclaim_staging, staged_bytes};
use crate::manifest::Lazy;
use crate::output::{Reporter, human_bytes, rfc3339};
use crate::plan::{self, Plan, Summary};
use crate::snapshot::{About, Current, Describe, Published, SNAPSHOT_MANIFEST, Store, describes_snapshot};
use crate::state::{Conditional, State};
use crate::upstream::{ListOutcome, Listing, Previous, Recheck, Source, Upstreams};

/// How far in the future a listing's `generated_at` may be (clock skew).
const MAX_FUTURE: Duration = Duration::from_secs(24 * 3600);

/// What a sync ended with, for the report and status.json.
enum Done {
    Unchanged {
        upstream: String,
    },
    /// The upstream still offers the listing that was rolled back.
    Held {
        reason: String,
    },
    Published {
        id: String,
        upstream: String,
        summary: Summary,
    },
}

impl Outcome for Done {
    fn outcome(&self) -> crate::status::Outcome {
        use crate::status::Outcome;
        match self {
            Done::Unchanged { .. } => Outcome::Unchanged,
            Done::Held { .. } => Outcome::Held,
            Done::Published { .. } => Outcome::Published,
        }
    }
}

pub(super) fn sync(cfg: &Config, args: &SyncArgs, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    if args.dry_run {
        return dry_run(cfg, args, &store, out);
    }
    let (result, status) = recorded(cfg, &store, out, |run| {
        run.check_client_cert()?;
        let upstreams = Upstreams::new(cfg, out)?;
        let result = sync_with(run, args, &upstreams);
        run.status.upstreams = upstreams.health();
        if result.is_ok() {
            super::buckets::publish(run);
        }
        result
    });
    if result.is_ok() {
        super::buckets::publish_status(cfg, &store.root, out);
    }
    if let (Err(e), Some(command)) = (&result, &cfg.hooks.on_failure)
        && Exit::of(e) != Exit::Locked
    {
        let env = [
            ("UPMIRROR_ROOT", store.root.display().to_string()),
            ("UPMIRROR_EXIT_CODE", Exit::of(e).code().to_string()),
            ("UPMIRROR_ERROR", crate::output::error_line(e)),
        ];
        if let Err(hook) = crate::hooks::run("on_failure", command, &env, cfg.hooks.timeout, &store.meta()) {
            eprintln!("upmirror: {}", crate::output::error_line(&hook));
            if let Some(failed) = hook.downcast_ref::<crate::hooks::HookFailed>() {
                eprintln!("upmirror: {}", failed.detail);
            }
        }
    }
    // --json prints the status as recorded, for a failed run too.
    if out.json
        && let Some(status) = &status
    {
        crate::outln!("{}", serde_json::to_string_pretty(status)?);
    }
    let done = result?;
    match done {
        Done::Unchanged { upstream } => out.summary(format!("nothing to do: {upstream} is unchanged")),
        Done::Held { reason } => out.summary(format!("held: {reason}")),
        Done::Published { id, upstream, summary: s } => out.summary(format!(
            "published {id} from {upstream}: {} added, {} changed, {} removed, {} downloaded",
            s.added,
            s.changed,
            s.removed,
            human_bytes(s.download_bytes)
        )),
    }
    Ok(())
}

fn sync_with(run: &mut Run, args: &SyncArgs, upstreams: &Upstreams) -> Result<Done> {
    let (cfg, out) = (run.cfg, run.out);
    let mut state = State::load(&run.locked.meta())?;
    let last = Last::of(&run.locked)?;
    let summary = last.as_ref().map(|l| l.summary(&state)).transpose()?;
    if let (Some(l), Some((files, bytes, at))) = (&last, summary) {
        run.status.set_published(&l.current.id, files, bytes, at);
    }
    let rt = runtime(true)?;
    let deadline = tokio::time::Instant::now() + cfg.net.run_timeout;
    let whole = args.plan.is_some() || args.recheck;
    let mut listing = match list(&rt, deadline, upstreams, (&state, cfg), last.as_ref(), whole)? {
        ListOutcome::Unchanged { url, .. } => {
            run.status.upstream = Some(url.to_string());
            check_age(cfg, &url, summary.map(|s| s.2))?;
            return Ok(Done::Unchanged { upstream: url.to_string() });
        }
        ListOutcome::Fetched(listing) => listing,
    };
    let published = last.map(Last::published);
    let upstream = listing.url.to_string();
    note_listing(run, &listing);
    if let Some(reason) = held(&state, &listing, args) {
        run.status.held = Some(reason.clone());
        return Ok(Done::Held { reason });
    }
    let (plan, exact) = accept(args, &state, published.as_ref(), &mut listing, cfg, out)?;
    check_carried(&state, published.as_ref(), &listing, &plan)?;
    ready_staging(run, args, &plan)?;
    if let Some(file) = &args.plan {
        SavedPlan::load(file)?.check(&listing, published.as_ref(), &plan, file)?;
    }
    if plan.is_empty() {
        if let Some(p) = &published {
            state.record(&p.id, &listing, None);
            state.save(&run.locked.meta())?;
        }
        return Ok(Done::Unchanged { upstream });
    }
    let summary = plan.summary();
    run.status.summary = summary;
    let about = about(&listing, exact, cfg);
    run.status.snapshot_manifest = about.manifest.label(listing.signed.is_some()).map(Into::into);
    let source = Origin {
        upstreams,
        first: listing.upstream,
        dates: listing.dates,
        about,
        rt: &rt,
        deadline,
        progress: out.progress(summary.added + summary.changed, summary.download_bytes),
        deltas: &listing.deltas,
    };
    let bytes = plan.keep.iter().chain(plan.downloads()).map(|e| e.size).sum();
    let files = plan.result_len();
    let id =
        apply(run, plan, published.as_ref(), source, |state, id| state.record(id, &listing, Some((files, bytes))))?;
    run.status.set_published(&id, files, bytes, listing.manifest.generated_at);
    Ok(Done::Published { id, upstream, summary })
}

/// Clear from staging what the plan does not want (or what passes
/// `max_partial_size`), then hold the plan to the guards, counting what
/// staging already holds.
fn ready_staging(run: &Run, args: &SyncArgs, plan: &Plan) -> Result<()> {
    let (cfg, out, partial) = (run.cfg, run.out, run.locked.partial_dir());
    let Reclaimed { freed, staged } = reclaim_staging(&partial, plan.downloads(), cfg.max_partial_size)?;
    if freed > 0 {
        out.detail(format!("removed {} of partial downloads (unneeded, or past max_partial_size)", human_bytes(freed)));
    }
    check_plan(cfg, args, plan, (plan.published_len(), staged), &run.locked.root)
}

/// What the status says of the listing: where it came from, who signed it,
/// and what a crawl left to ask again in later runs.
fn note_listing(run: &mut Run, listing: &Listing) {
    run.status.upstream = Some(listing.url.to_string());
    run.status.signed_by = listing.signed_by.clone();
    run.status.unsigned_files = listing.unsigned_files;
    if listing.rechecks.deferred > 0 {
        let r = &listing.rechecks;
        run.out.info(format!(
            "asked {} of {} files whose listing shows no size or date again (recheck_budget); the rest in later runs",
            r.asked,
            r.asked + r.deferred
        ));
        run.status.rechecks = Some(r.clone());
    }
}

fn dry_run(cfg: &Config, args: &SyncArgs, store: &Store, out: Reporter) -> Result<()> {
    client_identity(cfg, out)?;
    let state = State::load(&store.meta())?;
    let last = Last::of(store)?;
    let upstreams = Upstreams::new(cfg, out)?;
    let rt = runtime(false)?;
    let deadline = tokio::time::Instant::now() + cfg.net.run_timeout;
    let whole = args.save_plan.is_some() || args.recheck;
    let mut listing = match list(&rt, deadline, &upstreams, (&state, cfg), last.as_ref(), whole)? {
        ListOutcome::Fetched(listing) => listing,
        ListOutcome::Unchanged { url, .. } => {
            let summary = last.as_ref().map(|l| l.summary(&state)).transpose()?;
            check_age(cfg, &url, summary.map(|s| s.2))?;
            // The upstream says nothing changed since the published listing.
            let plan = Plan::default();
            print_plan(&plan, out);
            out.info(format!("{url} is unchanged"));
            return Ok(());
        }
    };
    if let Some(reason) = held(&state, &listing, args) {
        print_plan(&Plan::default(), out);
        out.info(format!("held: {reason}"));
        return Ok(());
    }
    let published = last.map(Last::published);
    let (plan, _) = accept(args, &state, published.as_ref(), &mut listing, cfg, out)?;
    check_carried(&state, published.as_ref(), &listing, &plan)?;
    print_plan(&plan, out);
    print_seeds(cfg, &plan, out);
    print_deltas(&plan, &listing, published.as_ref(), out);
    let staged = staged_bytes(&store.meta().join("partial"), plan.downloads());
    check_plan(cfg, args, &plan, (plan.published_len(), staged), &store.root)?;
    if let Some(file) = &args.save_plan {
        SavedPlan::new(&listing, published.as_ref(), &plan).save(file)?;
        out.info(format!("plan saved to {}; apply it with `upmirror sync --plan {}`", file.display(), file.display()));
    }
    Ok(())
}

/// The changed files a patch from the published snapshot would make.
fn print_deltas(plan: &Plan, listing: &Listing, published: Option<&Published>, out: Reporter) {
    let Some(p) = published.filter(|_| !listing.deltas.is_empty()) else { return };
    let Ok(manifest) = p.manifest.get() else { return };
    let deltas = crate::fetch::Deltas::new(&listing.deltas, plan.downloads(), (&p.dir, manifest));
    let (mut patches, mut whole) = (0, 0);
    for e in plan.downloads() {
        if let Some(size) = deltas.patch_size(e.path.as_str()) {
            out.info(format!(
                "~ {} (delta {} of {})",
                crate::output::escape(e.path.as_str()),
                human_bytes(size),
                human_bytes(e.size)
            ));
            (patches, whole) = (patches + size, whole + e.size);
        }
    }
    if whole > 0 {
        out.info(format!("patches: {} instead of {} of whole files", human_bytes(patches), human_bytes(whole)));
    }
}

/// What the seeds may give of the plan's downloads: the files a seed holds
/// one of the same size of; each is hashed when a run takes it.
fn print_seeds(cfg: &Config, plan: &Plan, out: Reporter) {
    let dirs: Vec<std::path::PathBuf> = cfg.seed_from.iter().filter(|d| d.is_dir()).cloned().collect();
    if dirs.is_empty() {
        return;
    }
    let seeds = crate::fetch::Seeds::new(&dirs, plan.downloads());
    let (files, bytes) =
        plan.downloads().filter(|e| !seeds.candidates(e).is_empty()).fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    let rest = plan.summary().download_bytes.saturating_sub(bytes);
    out.info(format!(
        "seed_from may give {files} files ({}), each checked by its sha256 when taken; the rest, {}, is downloaded",
        human_bytes(bytes),
        human_bytes(rest)
    ));
}

/// A plan saved by `--dry-run --save-plan`, applied by `--plan` only while
/// the upstream listing, the published snapshot and the plan are unchanged.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPlan {
    format: String,
    listing: String,
    published: Option<String>,
    plan_sha256: String,
    plan: serde_json::Value,
}

const PLAN_FORMAT: &str = "upmirror-plan/1";

impl SavedPlan {
    fn new(listing: &Listing, published: Option<&Published>, plan: &Plan) -> SavedPlan {
        SavedPlan {
            format: PLAN_FORMAT.into(),
            listing: listing.identity.to_string(),
            published: published.map(|p| p.id.clone()),
            plan_sha256: plan_digest(plan),
            plan: plan.to_json(),
        }
    }

    fn save(&self, file: &Path) -> Result<()> {
        crate::disk::write_atomic(file, &serde_json::to_vec_pretty(self)?)
    }

    fn load(file: &Path) -> Result<SavedPlan> {
        let bytes = std::fs::read(file).with_context(|| format!("could not read the plan {}", file.display()))?;
        let saved: SavedPlan =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a saved plan", file.display()))?;
        if saved.format != PLAN_FORMAT {
            anyhow::bail!("{}: unknown plan format \"{}\"", file.display(), saved.format);
        }
        Ok(saved)
    }

    /// Refuse unless `plan` is exactly the saved one, for the same listing and snapshot.
    fn check(&self, listing: &Listing, published: Option<&Published>, plan: &Plan, file: &Path) -> Result<()> {
        let why = if self.listing != listing.identity.to_string() {
            "the upstream listing changed since it was saved"
        } else if self.published.as_deref() != published.map(|p| p.id.as_str()) {
            "another snapshot was published since it was saved"
        } else if self.plan_sha256 != plan_digest(plan) {
            "the plan now differs (were filters or guards changed?)"
        } else {
            return Ok(());
        };
        Err(Refused(format!("not applying {}: {why}; save a new plan with --dry-run --save-plan", file.display()))
            .into())
    }
}

fn plan_digest(plan: &Plan) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(plan.to_string().as_bytes()))
}

fn print_plan(plan: &Plan, out: Reporter) {
    if out.json {
        crate::outln!("{}", plan.to_json());
    } else {
        crate::outln!("{plan}");
    }
}

/// The listing, within the deadline; conditional on what was published
/// while the validators are younger than `recheck_after`, unless `whole`.
fn list(
    rt: &tokio::runtime::Runtime,
    deadline: tokio::time::Instant,
    upstreams: &Upstreams,
    (state, cfg): (&State, &Config),
    last: Option<&Last>,
    whole: bool,
) -> Result<ListOutcome> {
    let recheck_after = cfg.recheck_after;
    let id = last.map(|l| l.current.id.as_str()).filter(|_| !whole);
    let now = unix_seconds(SystemTime::now());
    let known = |url: &url::Url| state.validators_for(url.as_str(), id, now, recheck_after.as_secs());
    let previous = last.map(|l| {
        let info = state.snapshots.get(&l.current.id);
        Previous {
            manifest: &l.manifest,
            offset: info.map_or(0, |s| s.listing_offset),
            listed_at: info.map_or(0, |s| s.generated_at as i64),
            recheck: Recheck {
                from: state.recheck_from.as_deref(),
                budget: if whole { usize::MAX } else { cfg.recheck_budget },
            },
        }
    });
    let listing = upstreams.list(known, previous);
    rt.block_on(before(deadline, listing))
}

/// The published snapshot as a sync first needs it: its id, and its
/// manifest read only once the listing changed or a crawl compares with it
/// (a `304` never reads it).
struct Last {
    current: Current,
    manifest: Lazy,
}

impl Last {
    fn of(store: &Store) -> Result<Option<Last>> {
        Ok(store.current()?.map(|current| Last { manifest: current.lazy_manifest(), current }))
    }

    /// Its files, bytes and listing time: as the state recorded them at
    /// publish, else from its manifest.
    fn summary(&self, state: &State) -> Result<(usize, u64, SystemTime)> {
        let info = state.snapshots.get(&self.current.id);
        if let Some((info, files, bytes)) = info.and_then(|i| Some((i, i.files?, i.bytes?))) {
            return Ok((files, bytes, UNIX_EPOCH + Duration::from_secs(info.generated_at)));
        }
        let m = self.manifest.get()?;
        Ok((m.files.len(), m.total_bytes(), m.generated_at))
    }

    fn published(self) -> Published {
        self.current.with(self.manifest)
    }
}

/// From a `file://` upstream, every file the plan fetches must be there
/// (see [`super::export::check_carried`]).
fn check_carried(state: &State, published: Option<&Published>, listing: &Listing, plan: &Plan) -> Result<()> {
    let here = published.and_then(|p| state.snapshots.get(&p.id)).map(|s| s.identity.as_str());
    let dir = listing.url.join(".").unwrap_or_else(|_| listing.url.clone());
    super::export::check_carried(&dir, plan, here)
}

/// What the new snapshot says of itself. One that holds `exact`ly what a
/// signed manifest lists keeps that manifest and its signature; any other
/// gets its own, signed with `signing_key` when one is configured.
fn about<'a>(listing: &'a Listing, exact: bool, cfg: &'a Config) -> About<'a> {
    let manifest = match &listing.signed {
        Some(signed) if exact => Describe::AsSigned(signed),
        _ => Describe::Own(cfg.signing_key.as_deref()),
    };
    About {
        origin: (listing.source == Source::Manifest).then_some(listing.manifest.generated_at),
        generated_at: listing.manifest.generated_at,
        manifest,
        trace: listing.trace.clone(),
    }
}

/// Why the mirror holds what it has: the upstream still offers the listing
/// that was rolled back. A held run is a healthy state, not a refusal; the
/// next newer listing is published as usual, and `--force` publishes this one.
fn held(state: &State, listing: &Listing, args: &SyncArgs) -> Option<String> {
    let identity = listing.identity.to_string();
    (state.rejected.contains(&identity) && !args.force).then(|| {
        format!(
            "the listing from {} ({}) was rolled back; waiting for a newer one (--force publishes it again)",
            listing.url,
            &identity[..12]
        )
    })
}

/// Check the listing against the freshness guards and plan it against the
/// published snapshot; its files move into the plan. With the plan, whether
/// the snapshot it builds holds exactly the listed files.
fn accept(
    args: &SyncArgs,
    state: &State,
    published: Option<&Published>,
    listing: &mut Listing,
    cfg: &Config,
    out: Reporter,
) -> Result<(Plan, bool)> {
    let generated = unix_seconds(listing.manifest.generated_at);
    let dated = listing.source == Source::Manifest;
    if !dated {
        let server = listing.server.as_deref().map(|s| format!(" from {s}")).unwrap_or_default();
        let zone = match listing.dates.offset {
            0 => String::new(),
            _ => format!(", in local time {} (set back to UTC)", listing.dates.zone()),
        };
        out.detail(format!("{}: {} listing{server}{zone}", listing.url, listing.source.label()));
    }
    if let Some(high) = state.high_water
        && dated
        && generated < high
        && !args.allow_rollback
    {
        return Err(Refused(format!(
            "the listing from {} was generated at {}, before the published one ({}); --allow-rollback accepts it",
            listing.url,
            rfc3339(generated as i64),
            rfc3339(high as i64)
        ))
        .into());
    }
    if dated && listing.manifest.generated_at > SystemTime::now() + MAX_FUTURE {
        return Err(Refused(format!(
            "the listing from {} claims to be generated at {}, in the future",
            listing.url,
            rfc3339(generated as i64)
        ))
        .into());
    }
    check_age(cfg, &listing.url, (dated || !listing.manifest.files.is_empty()).then(|| listing.origin()))?;
    let own_file_as_dir = |e: &&crate::manifest::Entry| e.path.ancestors().next().is_some_and(describes_snapshot);
    if let Some(e) = listing.manifest.files.iter().find(own_file_as_dir) {
        let name = e.path.ancestors().next().unwrap_or_default();
        anyhow::bail!("{} lists \"{}\": {name} is each snapshot's own file, not a directory", listing.url, e.path);
    }
    let files = std::mem::take(&mut listing.manifest.files);
    let listed = files.len();
    let files: Vec<_> = files.into_iter().filter(|e| !describes_snapshot(e.path.as_str())).collect();
    if files.len() < listed {
        out.warn(format!(
            "{} lists {SNAPSHOT_MANIFEST} or its signature, which each snapshot writes itself; not mirrored",
            listing.url
        ));
    }
    let plan = plan_of(files, published, cfg, out)?;
    // Every path it holds is listed (none kept from outside the filters), and as many.
    let exact = plan.skipped == 0 && plan.unlisted == 0 && plan.result_len() == listed;
    Ok((plan, exact))
}

/// Refuse a listing generated longer than `max_listing_age` before now: a
/// frozen or replayed upstream, for vendors that sign anew on a schedule.
fn check_age(cfg: &Config, url: &url::Url, generated: Option<SystemTime>) -> Result<()> {
    let (Some(max), Some(generated)) = (cfg.max_listing_age, generated) else { return Ok(()) };
    let age = SystemTime::now().duration_since(generated).unwrap_or_default();
    if age <= max {
        return Ok(());
    }
    let round = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60)).to_string();
    Err(Refused(format!(
        "the listing from {url} was generated at {}, {} ago, longer than max_listing_age ({}): the upstream is frozen or replays an old listing; nothing was published",
        rfc3339(unix_seconds(generated) as i64),
        round(age),
        round(max)
    ))
    .into())
}

/// The plan of the listed `files` against the published snapshot: the
/// `versions` rules first (what they drop is never fetched, and goes from
/// the mirror), then the filters.
fn plan_of(
    files: Vec<crate::manifest::Entry>,
    published: Option<&Published>,
    cfg: &Config,
    out: Reporter,
) -> Result<Plan> {
    let (files, series) = crate::versions::select(&cfg.versions, files);
    for s in series.iter().filter(|s| !s.dropped.is_empty()) {
        let name = if s.series.is_empty() { String::new() } else { format!(" {}", crate::output::escape(&s.series)) };
        let (kept, dropped) = (s.kept.join(", "), s.dropped.join(", "));
        out.info(format!("versions {}:{name} keeps {kept}; leaves out {dropped}", s.pattern));
    }
    let mut differ = plan::Differ::new(plan::handing_back(files), &cfg.filter);
    if let Some(p) = published {
        p.each_file(|old| differ.old(old))?;
    }
    Ok(differ.finish())
}

/// The delete guard and the free-space guard; of the bytes to download,
/// `staged` are already on the disk (partial downloads).
fn check_plan(
    cfg: &Config,
    args: &SyncArgs,
    plan: &Plan,
    (published, staged): (usize, u64),
    root: &Path,
) -> Result<()> {
    let removed = plan.remove.len();
    if published > 0 && !args.force && removed as f64 * 100.0 > cfg.max_delete_percent * published as f64 {
        return Err(Refused(format!(
            "the plan removes {removed} of {published} published files ({:.1}%), more than max_delete_percent = {}; --force allows it",
            removed as f64 * 100.0 / published as f64,
            cfg.max_delete_percent
        ))
        .into());
    }
    let download = plan.download_bytes().ok_or_else(|| {
        Refused(format!("the listing's sizes add up to more than {} bytes; it cannot be true", u64::MAX))
    })?;
    let need = download.saturating_sub(staged).saturating_add(cfg.free_space_margin);
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    let fs = rustix::fs::statvfs(existing)
        .with_context(|| format!("could not read the free space of {}", existing.display()))?;
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if free < need {
        return Err(Refused(format!(
            "{} needs {} ({} still to download plus {} margin) but has {} free",
            root.display(),
            human_bytes(need),
            human_bytes(download.saturating_sub(staged)),
            human_bytes(cfg.free_space_margin),
            human_bytes(free)
        ))
        .into());
    }
    // Each snapshot is a new tree of directories; downloads are new files too.
    if fs.f_files > 0 {
        let dirs: std::collections::HashSet<&str> =
            plan.keep.iter().chain(plan.downloads()).flat_map(|e| e.path.ancestors()).collect();
        let inodes = (dirs.len() + plan.add.len() + plan.change.len() + 16) as u64;
        if fs.f_favail < inodes {
            return Err(Refused(format!(
                "{} needs {inodes} inodes for the new snapshot but has {} free",
                root.display(),
                fs.f_favail
            ))
            .into());
        }
    }
    Ok(())
}

impl State {
    /// Remember that snapshot `id` holds `listing`, and its validators.
    /// `size`: the snapshot's files and bytes, when it was just built.
    pub(super) fn record(&mut self, id: &str, listing: &Listing, size: Option<(usize, u64)>) {
        let identity = listing.identity.to_string();
        let generated_at = unix_seconds(listing.manifest.generated_at);
        let upstream = listing.url.to_string();
        self.high_water = Some(self.high_water.unwrap_or(0).max(generated_at));
        self.rejected.retain(|r| *r != identity);
        let info = self.snapshots.entry(id.to_owned()).or_default();
        (info.identity, info.generated_at, info.upstream) = (identity.clone(), generated_at, upstream.clone());
        info.listing_offset = listing.dates.offset;
        if let Some((files, bytes)) = size {
            (info.files, info.bytes) = (Some(files), Some(bytes));
        }
        if listing.rechecks.asked > 0 {
            self.recheck_from = listing.rechecks.last.clone();
        }
        let since = unix_seconds(SystemTime::now());
        self.validators.insert(upstream, Conditional { identity, since, validators: listing.validators.clone() });
    }
}
