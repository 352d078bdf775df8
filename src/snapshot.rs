//! The on-disk store under the mirror root:
//!
//! ```text
//! root/current -> snapshots/<id>    the one commit point, swapped atomically
//! root/snapshots/<id>/              complete, immutable trees
//! root/.upmirror/                   lock, state, partial downloads, builds
//! ```
//!
//! Crash safety: a snapshot is built in `.upmirror/build-<pid>/` (unchanged
//! files hardlinked from the published snapshot, new files renamed in from
//! staging, its manifest written last), renamed into `snapshots/`, and the
//! whole filesystem is flushed with `syncfs` before `current` is replaced by
//! renaming a fresh symlink over it; the root directory is fsynced after. A
//! crash before the rename leaves `current` as it was; leftovers are removed
//! by the next run under the lock. A failed flush aborts the run and is never
//! retried.

use std::fs::{self, File};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use crate::disk::{ensure_private, ensure_real_dir, failpoint, read_dir, remove_if_exists, write_new, write_new_with};
use crate::fetch::Verified;
use crate::interrupt;
use crate::manifest::{Entry, Manifest};
use crate::plan::handing_back;
use crate::signature::Signed;

/// Every snapshot carries its own manifest under this name, which makes each
/// mirror a valid upstream for the next tier.
pub const SNAPSHOT_MANIFEST: &str = "upmirror-manifest.json";

pub use crate::ids::is_snapshot_id;
pub use crate::state::GRACE_LINKS;

/// Another sync holds the lock (exit 75).
#[derive(Debug, thiserror::Error)]
#[error("another sync holds the lock {0}")]
pub struct LockHeld(pub PathBuf);

/// The store, locked for the life of a run: only through this can a
/// snapshot be built, published or pruned. The lock file is never deleted.
pub struct Locked<'a> {
    store: &'a Store,
    lock_file: File,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.lock_file.set_len(0);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store
    }
}

/// The published snapshot's id and directory.
pub struct Current {
    pub id: String,
    pub dir: PathBuf,
}

impl Current {
    /// Its manifest, read when first asked for.
    pub fn lazy_manifest(&self) -> crate::manifest::Lazy {
        crate::manifest::Lazy::new(self.dir.join(SNAPSHOT_MANIFEST))
    }

    /// With its manifest, read when first asked for (if `lazy` has not yet).
    pub fn with(self, manifest: crate::manifest::Lazy) -> Published {
        Published { id: self.id, dir: self.dir, manifest }
    }
}

impl Published {
    /// Each of its files in path order. Its manifest is read as it is
    /// planned against, never held, when upmirror wrote it unsigned; a
    /// signed one may be a vendor's, kept as it came, in any order: that
    /// one is read whole.
    pub fn each_file(&self, mut f: impl FnMut(Entry)) -> Result<()> {
        if self.dir.join(crate::signature::beside(SNAPSHOT_MANIFEST)).exists() {
            self.manifest.get()?.files.iter().cloned().for_each(&mut f);
            return Ok(());
        }
        self.manifest.each(f)
    }
}

/// The published snapshot: its id, directory and manifest.
pub struct Published {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: crate::manifest::Lazy,
}

pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_path_buf() }
    }

    pub fn meta(&self) -> PathBuf {
        self.root.join(".upmirror")
    }

    pub fn partial_dir(&self) -> PathBuf {
        self.meta().join("partial")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Create the layout if it is missing; refuse store directories that are
    /// symlinks (the root itself may be one, e.g. to another disk), or that
    /// another user could write into.
    pub fn ensure_layout(&self) -> Result<()> {
        fs::create_dir_all(&self.root).with_context(|| format!("could not create {}", self.root.display()))?;
        ensure_private(&self.root)?;
        for dir in [self.snapshots(), self.meta(), self.partial_dir(), self.root.join("public")] {
            ensure_real_dir(&dir)?;
            ensure_private(&dir)?;
        }
        Ok(())
    }

    /// A warning when root works in a mirror root that another user owns:
    /// what root writes there now will be root's, and that user's next run
    /// may fail on it.
    pub fn owner_warning(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(&self.root).ok()?.uid();
        (rustix::process::geteuid().is_root() && owner != 0).then(|| {
            format!(
                "running as root in {}, which uid {owner} owns: what this run writes will be root's; \
                 run it as that user (runuser -u USER -- upmirror ...)",
                self.root.display()
            )
        })
    }

    /// Create the layout if needed and take the run lock without waiting;
    /// [`LockHeld`] when another run has it.
    pub fn lock(&self) -> Result<Locked<'_>> {
        self.ensure_layout()?;
        let path = self.meta().join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(crate::disk::nofollow())
            .open(&path)
            .with_context(|| format!("could not open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for `upmirror status`; emptied when the run ends.
                let holder =
                    format!("{} {}\n", std::process::id(), humantime::format_rfc3339_seconds(SystemTime::now()));
                let _ = file.set_len(0).and_then(|()| (&file).write_all(holder.as_bytes()));
                Ok(Locked { store: self, lock_file: file })
            }
            Err(fs::TryLockError::WouldBlock) => Err(LockHeld(path).into()),
            Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("could not lock {}", path.display())),
        }
    }

    /// The published snapshot, `None` before the first publish. A `current`
    /// that is not a symlink to `snapshots/<id>` is an error, never repaired.
    pub fn published(&self) -> Result<Option<Published>> {
        let Some(current) = self.current()? else { return Ok(None) };
        let manifest = current.lazy_manifest();
        manifest.get()?;
        Ok(Some(current.with(manifest)))
    }

    /// The published snapshot's id and directory, checked as for
    /// [`Store::published`], its manifest not read.
    pub fn current(&self) -> Result<Option<Current>> {
        let link = self.root.join("current");
        let meta = match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            other => other.with_context(|| format!("could not read {}", link.display()))?,
        };
        if !meta.file_type().is_symlink() {
            bail!("{} is not a symlink; move it away before syncing", link.display());
        }
        let target = fs::read_link(&link).with_context(|| format!("could not read {}", link.display()))?;
        let id = target
            .strip_prefix("snapshots")
            .ok()
            .and_then(|p| p.to_str())
            .filter(|id| is_snapshot_id(id))
            .with_context(|| format!("{} points to {}, not to snapshots/<id>", link.display(), target.display()))?
            .to_owned();
        let dir = self.snapshots().join(&id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            bail!("{} points to {}, which is not a snapshot directory", link.display(), dir.display());
        }
        Ok(Some(Current { id, dir }))
    }

    /// The run holding the lock, if one does: its pid and start time.
    pub fn running(&self) -> Option<(u32, String)> {
        let text = fs::read_to_string(self.meta().join("lock")).ok()?;
        let (pid, since) = text.trim().split_once(' ')?;
        let pid: u32 = pid.parse().ok()?;
        let alive =
            rustix::process::Pid::from_raw(pid as i32).is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
        alive.then(|| (pid, since.to_owned()))
    }

    /// Each channel and the snapshot its link names, by name.
    pub fn channels(&self) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        for entry in read_dir(&self.root.join("channels"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = linked(&entry.path(), "../snapshots").filter(|_| crate::channels::valid_name(&name)) {
                found.push((name, id));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The id `current` points to, from the link alone (`published` checks
    /// and reads the whole snapshot).
    pub fn current_id(&self) -> Option<String> {
        linked(&self.root.join("current"), "snapshots").filter(|id| is_snapshot_id(id))
    }

    /// Ids of the snapshots on disk, oldest first: in the order they were
    /// first published.
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = read_dir(&self.snapshots())?
            .into_iter()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_snapshot_id(n))
            .collect();
        crate::ids::order(&mut ids, &crate::state::State::load(&self.meta())?);
        Ok(ids)
    }
}

impl Locked<'_> {
    /// Remove what a killed run left behind: half-built snapshots, pruned
    /// ones half removed, and the temporary symlink. Partial downloads are
    /// kept. A leftover tree that cannot be removed is in nobody's way (new
    /// builds get new names): it comes back as a warning, never blocks a run.
    pub fn clean_leftovers(&self) -> Result<Vec<anyhow::Error>> {
        remove_if_exists(&self.root.join(".current.tmp"))?;
        for n in 1..=GRACE_LINKS {
            remove_if_exists(&self.root.join(format!(".grace-{n}.tmp")))?;
        }
        let mut stuck = Vec::new();
        for entry in read_dir(&self.meta())? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("build-") || name.starts_with("trash-") {
                let path = entry.path();
                if let Err(e) = fs::remove_dir_all(&path) {
                    stuck.push(anyhow::Error::new(e).context(format!("could not remove {}", path.display())));
                }
            }
        }
        Ok(stuck)
    }

    /// Remove every partial download: after a publish, what is left there is
    /// stale.
    pub fn clear_partials(&self) -> Result<()> {
        for entry in read_dir(&self.partial_dir())? {
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            removed.with_context(|| format!("could not remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Build a complete snapshot from the plan: unchanged files hardlinked from
    /// `published`, fetched files moved in from staging, manifest last,
    /// named by what it holds ([`crate::ids`]). The result is in `snapshots/`
    /// but not yet published. A build that fails or is interrupted is removed.
    pub fn build(
        &self,
        keep: Vec<Entry>,
        verified: Vec<Verified>,
        published: Option<&Published>,
        about: About,
    ) -> Result<Built> {
        let build = self.meta().join(format!("build-{}", std::process::id()));
        // Private while it is being filled: nobody else can plant anything in it.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&build)
            .with_context(|| format!("could not create {}", build.display()))?;
        let filled =
            fill((&build, &self.partial_dir()), keep, verified, published, about.generated_at).and_then(|manifest| {
                let newest = manifest.files.iter().map(|e| e.mtime).max().unwrap_or(0);
                let origin =
                    about.origin.unwrap_or(std::time::UNIX_EPOCH + std::time::Duration::from_secs(newest as u64));
                let id = crate::ids::content_id(origin, &manifest.files);
                let trace = crate::trace::extend(about.trace, &id, about.generated_at);
                write_new(&build.join(crate::trace::TRACE_FILE), &crate::trace::render(&trace))?;
                write_manifest(&build, manifest, about.manifest)?;
                Ok(id)
            });
        let result = filled.and_then(|id| {
            fs::set_permissions(&build, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("could not open up {}", build.display()))?;
            failpoint("build-done");
            let fresh = self.place(&build, &id)?;
            Ok(Built { id, fresh })
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&build);
        }
        result
    }

    /// Move a finished build to `snapshots/<id>`. A snapshot kept under that
    /// name holds the same files (the upstream went back to a state it had,
    /// or a repair rebuilt them): the two trees trade places in one rename,
    /// so a reader of that name never misses a file, and the old tree is
    /// removed. Returns whether the name was new.
    fn place(&self, build: &Path, id: &str) -> Result<bool> {
        let dest = self.snapshots().join(id);
        if fs::symlink_metadata(&dest).is_err() {
            fs::rename(build, &dest)
                .with_context(|| format!("could not move {} to {}", build.display(), dest.display()))?;
            return Ok(true);
        }
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, build, CWD, &dest, RenameFlags::EXCHANGE).with_context(|| {
            format!("could not exchange {} with {}, the snapshot of the same files", build.display(), dest.display())
        })?;
        // The old tree; one that stays is the next run's leftover.
        let _ = fs::remove_dir_all(build);
        Ok(false)
    }

    /// Remove a snapshot this run built and did not publish (one it
    /// rebuilt under a kept name stays: it holds the same files).
    pub fn discard(&self, built: &Built) {
        if built.fresh {
            let _ = fs::remove_dir_all(self.snapshots().join(&built.id));
        }
    }

    /// Publish a snapshot this run built; if that fails before the swap, a
    /// fresh one is removed again, so no unpublished tree lingers.
    pub fn publish_new(&self, built: &Built) -> Result<()> {
        let result = self.publish(&built.id);
        let current = fs::read_link(self.root.join("current")).ok();
        if result.is_err() && current.as_deref() != Some(Path::new("snapshots").join(&built.id).as_path()) {
            self.discard(built);
        }
        result
    }

    /// Make everything written durable, then point `current` at `id`.
    pub fn publish(&self, id: &str) -> Result<()> {
        let root = File::open(&self.root).with_context(|| format!("could not open {}", self.root.display()))?;
        rustix::fs::syncfs(&root)
            .with_context(|| format!("could not flush the filesystem of {}", self.root.display()))?;
        let target = Path::new("snapshots").join(id);
        swap_symlink(&self.root.join("current"), &self.root.join(".current.tmp"), &target, || {
            failpoint("publish-before-swap");
            Ok(interrupt::check()?)
        })?;
        failpoint("publish-after-swap");
        root.sync_all().with_context(|| format!("could not flush {}", self.root.display()))
    }

    /// The inode of each of `damaged` in snapshot `from`, read before a
    /// repair replaces them: what [`Locked::relink_shared`] looks for.
    pub fn inodes<'e>(&self, from: &str, damaged: &[&'e Entry]) -> Vec<(&'e Entry, Inode)> {
        let dir = self.snapshots().join(from);
        damaged.iter().filter_map(|e| Some((*e, inode(&dir.join(e.path.as_str()))?))).collect()
    }

    /// Give every kept snapshot other than `to` that shares the damaged
    /// inode of one of `broken` the repaired file of snapshot `to` instead
    /// (a new link renamed over the old one), where its manifest expects the
    /// same digest: a rollback can then never publish the damage again.
    /// Each snapshot's manifest is read once. Returns `PATH in ID` for each
    /// file mended, and the files that could not be, with why.
    pub fn relink_shared(&self, broken: &[(&Entry, Inode)], to: &str) -> Result<Relinked> {
        let in_snapshot = |id: &str, e: &Entry| self.snapshots().join(id).join(e.path.as_str());
        let mut relinked = Relinked::default();
        if broken.is_empty() {
            return Ok(relinked);
        }
        for id in self.snapshot_ids()?.into_iter().filter(|id| id != to) {
            let listed = read_manifest(&self.snapshots().join(&id))?;
            for (e, damaged_inode) in broken {
                let expects = listed.get(e.path.as_str()).is_some_and(|f| f.sha256 == e.sha256);
                let path = in_snapshot(&id, e);
                if !expects || inode(&path) != Some(*damaged_inode) {
                    continue;
                }
                match self.link_over(&in_snapshot(to, e), &path) {
                    Ok(()) => relinked.mended.push(format!("{} in {id}", e.path)),
                    Err(err) => relinked.failed.push((e.path.to_string(), err)),
                }
            }
        }
        Ok(relinked)
    }

    /// Replace `path` with a hard link to `source`, atomically.
    fn link_over(&self, source: &Path, path: &Path) -> Result<()> {
        let tmp = self.meta().join("relink.tmp");
        remove_if_exists(&tmp)?;
        fs::hard_link(source, &tmp).with_context(|| format!("could not link {}", source.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("could not replace {}", path.display()))
    }

    /// Point channel `name` at snapshot `id`: `channels/<name>` becomes a
    /// link to `../snapshots/<id>` in one rename, as `current` does.
    /// Returns the snapshot it named before.
    pub fn set_channel(&self, name: &str, id: &str) -> Result<Option<String>> {
        let dir = self.root.join("channels");
        ensure_real_dir(&dir)?;
        let before = self.channels()?.into_iter().find(|(n, _)| n == name).map(|(_, id)| id);
        let (tmp, target) = (dir.join(format!(".{name}.tmp")), Path::new("../snapshots").join(id));
        swap_symlink(&dir.join(name), &tmp, &target, || Ok(interrupt::check()?))?;
        File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("could not flush {}", dir.display()))?;
        Ok(before)
    }

    /// Point each channel's grace links, `channels/.grace/<name>-1` …, at
    /// the snapshots it left within the window (newest first), and remove
    /// every other link there: the nginx site serves a path missing from a
    /// channel's snapshot from these, in order.
    pub fn set_channel_grace(&self, links: &[(String, Vec<String>)]) -> Result<()> {
        let dir = self.root.join("channels/.grace");
        if links.iter().all(|(_, ids)| ids.is_empty()) && !dir.exists() {
            return Ok(());
        }
        ensure_real_dir(&self.root.join("channels"))?;
        ensure_real_dir(&dir)?;
        let mut wanted = Vec::new();
        for (name, ids) in links {
            for (n, id) in ids.iter().take(GRACE_LINKS).enumerate() {
                let link = format!("{name}-{}", n + 1);
                let target = Path::new("../../snapshots").join(id);
                swap_symlink(&dir.join(&link), &dir.join(format!(".{link}.tmp")), &target, || Ok(()))?;
                wanted.push(link);
            }
        }
        for entry in read_dir(&dir)? {
            if !wanted.iter().any(|w| entry.file_name() == w.as_str()) {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Every snapshot a channel or a channel's grace link names: never pruned.
    pub fn named_by_channels(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self.channels()?.into_iter().map(|(_, id)| id).collect();
        for entry in read_dir(&self.root.join("channels/.grace"))? {
            ids.extend(linked(&entry.path(), "../../snapshots"));
        }
        Ok(ids)
    }

    /// Mark exactly `ids` as withdrawn (rolled back): a file each in
    /// `public/withdrawn/`, where the nginx site looks before it serves a
    /// snapshot at its pinned URL, and answers 410 Gone for these.
    pub fn set_withdrawn(&self, ids: &[String]) -> Result<()> {
        let public = self.root.join("public");
        ensure_real_dir(&public)?;
        let dir = public.join("withdrawn");
        ensure_real_dir(&dir)?;
        for entry in read_dir(&dir)? {
            if !ids.iter().any(|id| entry.file_name() == id.as_str()) {
                remove_if_exists(&entry.path())?;
            }
        }
        for id in ids.iter().filter(|id| !dir.join(id).exists()) {
            crate::disk::write_atomic(&dir.join(id), b"rolled back: this snapshot is withdrawn\n")?;
        }
        Ok(())
    }

    /// Point `grace-1` … `grace-N` at `ids` (newest first) and remove the
    /// links beyond them, each change atomic: the nginx site serves a path
    /// missing from `current` from these, in order.
    pub fn set_grace_links(&self, ids: &[String]) -> Result<()> {
        for n in 1..=GRACE_LINKS {
            let link = self.root.join(format!("grace-{n}"));
            match ids.get(n - 1) {
                Some(id) => {
                    let tmp = self.root.join(format!(".grace-{n}.tmp"));
                    swap_symlink(&link, &tmp, &Path::new("snapshots").join(id), || Ok(()))?;
                }
                None => remove_if_exists(&link)?,
            }
        }
        Ok(())
    }

    /// Remove the oldest snapshots beyond `keep`, never the published one
    /// nor one in `protect` (inside a grace window). Each is first moved out
    /// of `snapshots/` whole (one rename), so a removal that fails half way
    /// never leaves a half tree to roll back to; what is left in
    /// `.upmirror/` goes with the next run's leftovers.
    /// Returns the ids moved out, and the first failure.
    pub fn prune(&self, keep: usize, published: &str, protect: &[String]) -> (Vec<String>, Result<()>) {
        let ids = match self.snapshot_ids() {
            Ok(ids) => ids,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let (mut removed, mut result) = (Vec::new(), Ok(()));
        for id in victims(&ids, keep, published, protect) {
            failpoint("prune");
            let (dir, trash) = (self.snapshots().join(&id), self.meta().join(format!("trash-{id}")));
            match fs::rename(&dir, &trash) {
                Ok(()) => removed.push(id),
                Err(e) => {
                    result = result.and(Err(e).with_context(|| format!("could not move {} away", dir.display())));
                    continue;
                }
            }
            let gone = fs::remove_dir_all(&trash).with_context(|| format!("could not remove {}", trash.display()));
            result = result.and(gone);
        }
        (removed, result)
    }
}

/// A file's device and inode number.
pub type Inode = (u64, u64);

fn inode(path: &Path) -> Option<Inode> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().filter(|m| m.is_file()).map(|m| (m.dev(), m.ino()))
}

/// What the symlink at `link` names below `prefix` (`snapshots`, as seen
/// from where the link is), if it is one.
fn linked(link: &Path, prefix: &str) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    target.strip_prefix(prefix).ok()?.to_str().map(str::to_owned)
}

/// Make `link` a symlink to `target` in one rename of `tmp` over it (a reader
/// sees the old target or the new, never none), once `ready` agrees.
fn swap_symlink(link: &Path, tmp: &Path, target: &Path, ready: impl FnOnce() -> Result<()>) -> Result<()> {
    remove_if_exists(tmp)?;
    std::os::unix::fs::symlink(target, tmp).with_context(|| format!("could not create {}", tmp.display()))?;
    ready()?;
    fs::rename(tmp, link).with_context(|| format!("could not replace {}", link.display()))
}

/// Of `ids` (oldest first), those a prune removes: the oldest beyond
/// `keep` (the published one counted, never removed), none in `protect`.
pub fn victims(ids: &[String], keep: usize, published: &str, protect: &[String]) -> Vec<String> {
    let others: Vec<&String> = ids.iter().filter(|id| *id != published).collect();
    let excess = (others.len() + 1).saturating_sub(keep.max(1));
    others.into_iter().take(excess).filter(|id| !protect.contains(id)).cloned().collect()
}

/// What [`Locked::relink_shared`] mended, and what it could not.
#[derive(Default)]
pub struct Relinked {
    pub mended: Vec<String>,
    pub failed: Vec<(String, anyhow::Error)>,
}

/// Whether `rel` is a file a snapshot writes about itself (its manifest and
/// that manifest's signature), not one the manifest lists.
pub fn describes_snapshot(rel: &str) -> bool {
    rel == crate::trace::TRACE_FILE
        || crate::delta::is_sidecar(rel)
        || rel.strip_prefix(SNAPSHOT_MANIFEST).is_some_and(|rest| rest.is_empty() || rest == crate::signature::SUFFIX)
}

/// A snapshot a run built: its id, and whether that name was new.
pub struct Built {
    pub id: String,
    pub fresh: bool,
}

/// What a new snapshot says of itself: when the origin made its listing
/// (what its id starts with; of a crawl, `None`: its newest file's mtime),
/// when its listing was generated, how its manifest is written, and the
/// tiers the listing came down through.
pub struct About<'a> {
    pub origin: Option<SystemTime>,
    pub generated_at: SystemTime,
    pub manifest: Describe<'a>,
    pub trace: Vec<crate::trace::Tier>,
}

/// How a new snapshot's manifest is written.
pub enum Describe<'a> {
    /// As the upstream signed it, with its signature: the snapshot holds
    /// exactly what it lists, and the next tier checks the vendor's key.
    AsSigned(&'a Signed),
    /// Its own, signed with the mirror's `signing_key` when there is one.
    Own(Option<&'a Path>),
}

impl Describe<'_> {
    /// What status says of the snapshot's manifest: nothing when neither
    /// the listing nor the snapshot is signed.
    pub fn label(&self, listing_signed: bool) -> Option<&'static str> {
        match self {
            Describe::AsSigned(_) => Some("the upstream's, with its signature"),
            Describe::Own(Some(_)) => Some("the mirror's own, signed with signing_key"),
            Describe::Own(None) => {
                listing_signed.then_some("the mirror's own, unsigned (a subset of the signed listing)")
            }
        }
    }
}

/// Fill a fresh build directory: directories first, then hardlinks and
/// renames in parallel; the manifest of what it holds.
fn fill(
    (build, staging): (&Path, &Path),
    keep: Vec<Entry>,
    verified: Vec<Verified>,
    published: Option<&Published>,
    generated_at: SystemTime,
) -> Result<Manifest> {
    let keep = if published.is_some() { keep } else { Vec::new() };
    let mut dirs: Vec<&str> =
        keep.iter().chain(verified.iter().map(Verified::entry)).filter_map(|e| e.path.ancestors().last()).collect();
    dirs.sort_unstable();
    dirs.dedup();
    for dir in dirs {
        let dir = build.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    }
    interrupt::check()?;
    if let Some(p) = published {
        link_kept(&p.dir, build, &keep)?;
    }
    interrupt::check()?;
    // Linked, then unlinked from staging: unlike a rename, a link never
    // replaces a name the file system takes for the same one.
    verified.par_iter().try_for_each(|v| {
        let (from, to) = (v.file(staging), build.join(v.entry().path.as_str()));
        fs::hard_link(&from, &to)
            .and_then(|()| fs::remove_file(&from))
            .map_err(|err| collision(build, &v.entry().path, &err))
            .with_context(|| format!("could not move {} to {}", from.display(), to.display()))
    })?;
    interrupt::check()?;
    let files = handing_back(keep).chain(handing_back(verified).map(Verified::into_entry)).collect();
    Manifest::new(generated_at, files).map_err(anyhow::Error::msg)
}

/// What mends a published snapshot a build could not link from.
const REPAIR: &str = "`upmirror verify --repair` mends the published snapshot";

/// Hardlink each of `keep` from `published` into `build`, a directory at a
/// time: each directory opened once on either side and each file linked by
/// its name alone, not walked to from the root a million times.
fn link_kept(published: &Path, build: &Path, keep: &[Entry]) -> Result<()> {
    let dirs: Vec<&[Entry]> = keep.chunk_by(|a, b| dir_of(a) == dir_of(b)).collect();
    let linked = std::sync::atomic::AtomicUsize::new(0);
    dirs.par_iter().try_for_each(|files| {
        let dir = dir_of(&files[0]);
        let (from, to) = (published.join(dir), build.join(dir));
        let from = open_dir(&from).with_context(|| format!("could not open {} ({REPAIR})", from.display()))?;
        let to = open_dir(&to).with_context(|| format!("could not open {}", to.display()))?;
        for e in files.iter() {
            if linked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == keep.len() / 2 {
                failpoint("build-link");
            }
            let name = e.path.as_str().rsplit('/').next().unwrap_or_default();
            rustix::fs::linkat(&from, name, &to, name, rustix::fs::AtFlags::empty())
                .map_err(|err| collision(build, &e.path, &err.into()))
                .with_context(|| {
                    let (from, to) = (published.join(e.path.as_str()), build.join(e.path.as_str()));
                    format!("could not hardlink {} to {} ({REPAIR})", from.display(), to.display())
                })?;
        }
        Ok(())
    })
}

/// The directory `e` is in, relative to the snapshot.
fn dir_of(e: &Entry) -> &str {
    e.path.as_str().rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A directory to link from or into, by a handle.
fn open_dir(path: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// A link that found its name taken: on a case-insensitive or normalising
/// file system another listed path is the same name. The error names both.
fn collision(build: &Path, path: &crate::manifest::RelPath, err: &std::io::Error) -> anyhow::Error {
    use std::os::unix::fs::MetadataExt;
    let to = build.join(path.as_str());
    let found = (err.kind() == std::io::ErrorKind::AlreadyExists).then(|| {
        let ino = fs::symlink_metadata(&to).ok()?.ino();
        let parent = to.parent()?;
        let twin = fs::read_dir(parent).ok()?.flatten().find(|d| d.metadata().is_ok_and(|m| m.ino() == ino))?;
        Some(parent.join(twin.file_name()).strip_prefix(build).ok()?.to_string_lossy().into_owned())
    });
    match found.flatten() {
        Some(twin) => anyhow::anyhow!(
            "{} and {} are one name on this file system (case-insensitive or Unicode-normalising), so one would be \
             served with the other's bytes; put the root on a file system that keeps names apart (ext4 without \
             casefold, xfs)",
            crate::output::escape(path.as_str()),
            crate::output::escape(&twin)
        ),
        None => anyhow::anyhow!("{err}"),
    }
}

/// The snapshot's manifest, and its signature when it has one.
fn write_manifest(build: &Path, manifest: Manifest, describe: Describe) -> Result<()> {
    let path = build.join(SNAPSHOT_MANIFEST);
    let signature = match describe {
        Describe::AsSigned(signed) => {
            write_new(&path, &signed.manifest)?;
            signed.signature.clone()
        }
        Describe::Own(None) => return write_new_with(&path, |w| manifest.write_json(w)),
        Describe::Own(Some(key)) => {
            write_new_with(&path, |w| manifest.write_json(w))?;
            let written = File::open(&path).with_context(|| format!("could not read {}", path.display()))?;
            crate::signature::sign(std::io::BufReader::new(written), key)?.into_bytes()
        }
    };
    write_new(&build.join(crate::signature::beside(SNAPSHOT_MANIFEST)), &signature)
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    Manifest::read(&dir.join(SNAPSHOT_MANIFEST))
}
