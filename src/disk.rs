//! Filesystem primitives the rest of the store is built from: writes that
//! never follow a symlink planted in their place, the atomic-and-durable
//! write recipe, checks that the store's own directories are real ones, and
//! debug-build failpoints that stop the process like `kill -9` would.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::ConfigError;

/// `O_NOFOLLOW` for `OpenOptionsExt::custom_flags`: opening a symlink fails.
pub fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Refuse a store directory that is a symlink or not a directory: a symlink
/// there could send writes outside the root.
pub fn ensure_real_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!("{} is a symlink; refusing to write through it", path.display()),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", path.display()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir(path).with_context(|| format!("could not create {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

/// Refuse a directory of the store that another user could write into:
/// one writable by group or others, or owned by neither this user nor root.
/// What is published must be what this process verified.
pub fn ensure_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).with_context(|| format!("could not read {}", path.display()))?;
    let (mode, uid, me) = (m.mode() & 0o7777, m.uid(), rustix::process::geteuid().as_raw());
    if mode & 0o022 != 0 {
        return Err(ConfigError(format!(
            "{} is writable by group or others (mode {mode:04o}), so another user could change what is published; \
             fix: chmod go-w {}",
            path.display(),
            path.display()
        ))
        .into());
    }
    if uid != me && uid != 0 {
        return Err(ConfigError(format!(
            "{} is owned by uid {uid}, neither this user (uid {me}) nor root; fix: run upmirror as its owner, or chown it",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Replace `path` with `bytes` atomically and durably: a temporary file of
/// a fresh random name beside it (created exclusively, so never through a
/// symlink and never over another file), fsync, rename, fsync of the
/// directory. A relative `path` is taken from the working directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] for a file only this user may read (mode 0600).
/// The JSON document at `path` (the store's own state), its default when
/// there is none yet.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match fs::read(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display())),
    }
}

pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let result = (|| {
        let mut tmp = tempfile::Builder::new()
            .prefix(".upmirror-")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()
    })();
    result.with_context(|| format!("could not write {}", path.display()))
}

/// Write a file that must not exist yet.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    write_new_with(path, |w| w.write_all(bytes))
}

/// [`write_new`] of what `write` writes, through a buffer.
pub fn write_new_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
    write(&mut w).and_then(|()| w.flush()).with_context(|| format!("could not write {}", path.display()))
}

/// A file a `file://` upstream does not serve: missing, unreadable, not a
/// regular file, or reached through a symlink. Reading again reads the same.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotServed(pub String);

/// Open `rel` below the directory `base` for reading, only if it is a
/// regular file reached without following any symlink and without leaving
/// `base` (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`); a FIFO
/// or device is refused, and never waited on (`O_NONBLOCK`).
pub fn open_regular_beneath(base: &Path, rel: &str) -> Result<File, NotServed> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let what = || format!("{}/{rel}", base.display());
    let dir = rustix::fs::open(base, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| NotServed(format!("could not open {}: {e}", base.display())))?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let fd = match rustix::fs::openat2(&dir, rel, flags, Mode::empty(), resolve) {
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::XDEV) => {
            return Err(NotServed(format!(
                "{}: a symlink on the way; a file:// upstream serves only regular files",
                what()
            )));
        }
        other => other.map_err(|e| NotServed(format!("could not open {}: {e}", what())))?,
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| NotServed(format!("could not stat {}: {e}", what())))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(NotServed(format!("{}: not a regular file; a file:// upstream serves only regular files", what())));
    }
    Ok(File::from(fd))
}

pub fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        other => other
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("could not list {}", dir.display())),
    }
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("could not remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// In debug builds, `UPMIRROR_FAILPOINT=name` aborts the process at the
/// named point, with no cleanup, as `kill -9` would, and `name:panic`
/// panics there instead; the crash tests use them. Release builds compile
/// it away.
pub fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    match std::env::var("UPMIRROR_FAILPOINT") {
        Ok(v) if v == name => {
            eprintln!("upmirror: failpoint {name}");
            std::process::abort();
        }
        Ok(v) if v.strip_suffix(":panic") == Some(name) => panic!("failpoint {name}"),
        _ => {}
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
