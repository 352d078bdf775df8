//! `upmirror export --to DIR [--since SNAPSHOT_ID|MANIFEST]`: an air-gap
//! bundle — the published snapshot's manifest (and its signature) as
//! published, the files new or changed since the base, and a description of
//! the bundle. A `sync --upstream file:///DIR` at the other site applies it
//! onto the snapshot published there.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{Config, ConfigError};
use crate::disk::write_atomic;
use crate::error::Refused;
use crate::manifest::{Entry, Manifest};
use crate::output::{Reporter, escape, human_bytes};
use crate::plan::Plan;
use crate::snapshot::{SNAPSHOT_MANIFEST, Store};

/// The description a bundle carries beside its manifest.
pub const BUNDLE_FILE: &str = "upmirror-bundle.json";
const BUNDLE_FORMAT: &str = "upmirror-bundle/1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    /// The snapshot exported.
    pub snapshot: String,
    /// The snapshot (or manifest file) the bundle is a delta against.
    pub base: Option<String>,
    /// sha256 of the base's manifest: the listing identity a site that
    /// applied the base has published.
    pub base_identity: Option<String>,
    pub files: usize,
    pub bytes: u64,
}

pub(super) fn export(cfg: &Config, to: &Path, since: Option<&str>, link: bool, out: Reporter) -> Result<()> {
    let store = Store::new(cfg.root()?);
    let published = store.published()?.ok_or_else(|| {
        ConfigError(format!("{} has no published snapshot to export; run sync first", store.root.display()))
    })?;
    let base = since.map(|s| load_base(&store, s)).transpose()?;
    start_empty(to)?;
    let manifest = published.manifest.get()?;
    let wanted: Vec<&Entry> =
        manifest.files.iter().filter(|e| base.as_ref().is_none_or(|(_, _, m)| !unchanged(m, e))).collect();
    for e in &wanted {
        copy_file(&published.dir.join(e.path.as_str()), &to.join(e.path.as_str()), link)?;
    }
    let signature = crate::signature::beside(SNAPSHOT_MANIFEST);
    for name in [SNAPSHOT_MANIFEST, signature.as_str(), crate::trace::TRACE_FILE] {
        if published.dir.join(name).exists() {
            copy_file(&published.dir.join(name), &to.join(name), false)?;
        }
    }
    let bundle = Bundle {
        format: BUNDLE_FORMAT.into(),
        snapshot: published.id.clone(),
        base: base.as_ref().map(|(name, _, _)| name.clone()),
        base_identity: base.as_ref().map(|(_, identity, _)| identity.clone()),
        files: wanted.len(),
        bytes: wanted.iter().map(|e| e.size).sum(),
    };
    write_atomic(&to.join(BUNDLE_FILE), &serde_json::to_vec_pretty(&bundle)?)?;
    out.info(format!(
        "exported {} to {}: {} of {} files, {}{}",
        published.id,
        escape(&to.display().to_string()),
        bundle.files,
        manifest.files.len(),
        human_bytes(bundle.bytes),
        bundle.base.as_ref().map(|b| format!(", since {}", escape(b))).unwrap_or_default()
    ));
    Ok(())
}

/// The base of a delta: a snapshot kept in this root, or a manifest file.
/// Its name, its manifest's sha256 and the manifest.
fn load_base(store: &Store, since: &str) -> Result<(String, String, Manifest)> {
    let kept = store.snapshots().join(since);
    let path = if !since.contains('/') && kept.is_dir() { kept.join(SNAPSHOT_MANIFEST) } else { since.into() };
    let bytes = std::fs::read(&path).map_err(|e| {
        ConfigError(format!(
            "--since {}: neither a snapshot kept in {} nor a readable manifest ({e})",
            escape(since),
            store.root.display()
        ))
    })?;
    let manifest = Manifest::parse(&bytes).map_err(|e| anyhow!("--since {}: {e}", path.display()))?;
    Ok((since.to_owned(), hex::encode(Sha256::digest(&bytes)), manifest))
}

/// The same bytes at the same path in the base.
fn unchanged(base: &Manifest, e: &Entry) -> bool {
    base.get(e.path.as_str()).is_some_and(|b| b.size == e.size && b.sha256.is_some() && b.sha256 == e.sha256)
}

/// `to` new, or an empty directory of the caller's that nobody else can
/// write into (so nothing can be planted in it while the bundle is
/// written): a bundle never mixes with another, nor writes through a link.
fn start_empty(to: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let refuse = |why: &str| Err(ConfigError(format!("--to {}: {why}; give a new directory", to.display())).into());
    match std::fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(to).with_context(|| format!("could not create {}", to.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("could not stat {}", to.display())),
        Ok(meta) if !meta.is_dir() => return refuse("not a directory (a symlink?)"),
        Ok(meta) if meta.uid() != rustix::process::geteuid().as_raw() => return refuse("owned by another user"),
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => return refuse("others can write into it"),
        Ok(_) => {}
    }
    let mut entries = std::fs::read_dir(to).with_context(|| format!("could not read {}", to.display()))?;
    if entries.next().is_some() {
        return refuse("not empty");
    }
    Ok(())
}

/// A copy that keeps the mtime, into a new file (never through a link);
/// with `link`, a hard link where the bundle is on the same file system.
fn copy_file(from: &Path, to: &Path, link: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    }
    if link && std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        let mut source = std::fs::File::open(from)?;
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true).custom_flags(crate::disk::nofollow());
        let mut target = open.open(to)?;
        std::io::copy(&mut source, &mut target)?;
        target.set_modified(source.metadata()?.modified()?)
    };
    write().with_context(|| format!("could not copy {} to {}", from.display(), to.display()))
}

/// The bundle's description, read like anything carried in: a regular file
/// reached without a symlink, never waited on (a FIFO), at most 64 KiB.
fn read_bundle(dir: &Path) -> Option<Vec<u8>> {
    const MAX_BUNDLE_BYTES: u64 = 64 << 10;
    let file = crate::disk::open_regular_beneath(dir, BUNDLE_FILE).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BUNDLE_BYTES + 1), &mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_BUNDLE_BYTES).then_some(bytes)
}

/// From a `file://` upstream (a tree carried on a disk, or a bundle), every
/// file the plan fetches must be there before anything is fetched. A bundle
/// made against a base this mirror has not published is refused naming
/// that base; `here` is the listing identity of the published snapshot.
pub(super) fn check_carried(base: &url::Url, plan: &Plan, here: Option<&str>) -> Result<()> {
    // `https://localhost/` is no local path, whatever `to_file_path` says.
    let Some(dir) = base.to_file_path().ok().filter(|_| base.scheme() == "file") else { return Ok(()) };
    // Absent only: what is there but is no regular file, the download refuses.
    let present = |e: &&Entry| std::fs::symlink_metadata(dir.join(e.path.as_str())).is_ok();
    let missing: Vec<&Entry> = plan.downloads().filter(|e| !present(e)).collect();
    let Some(first) = missing.first() else { return Ok(()) };
    let bundle: Option<Bundle> = read_bundle(&dir).and_then(|b| serde_json::from_slice(&b).ok());
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let why = match bundle.as_ref().and_then(|b| Some((b.base.as_deref()?, b.base_identity.as_deref()?))) {
        Some((base_id, identity)) => format!(
            "the bundle in {} holds what changed since snapshot {} (listing {}), and this mirror publishes {}: \
             {} files it needs are not in it (first: {}); apply the bundles in order, or export with --since \
             the snapshot this mirror holds",
            dir.display(),
            escape(base_id),
            short(identity),
            here.map_or("nothing yet".into(), |h| format!("listing {}", short(h))),
            missing.len(),
            first.path
        ),
        None => format!("{} lacks {} files its manifest lists (first: {})", dir.display(), missing.len(), first.path),
    };
    Err(Refused(why).into())
}
