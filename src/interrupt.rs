//! SIGTERM and SIGINT (systemd stopping the unit, an operator's Ctrl-C):
//! once a sync has installed the handler, a signal makes the running stage
//! stop at its next check and the run end as failed, with nothing published,
//! the half-built snapshot removed and the lock released. Past the point of
//! the symlink swap a run finishes; the swap is atomic either way.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static NOTIFY: Notify = Notify::const_new();

#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal; nothing was published")]
pub struct Interrupted;

/// Catch SIGTERM and SIGINT from now on; needs a running tokio runtime.
pub fn install(rt: &tokio::runtime::Runtime) -> std::io::Result<()> {
    let _guard = rt.enter();
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        REQUESTED.store(true, Ordering::SeqCst);
        NOTIFY.notify_waiters();
    });
    Ok(())
}

/// An error once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    if REQUESTED.load(Ordering::SeqCst) { Err(Interrupted) } else { Ok(()) }
}

/// Resolves when a signal arrives.
pub async fn wait() {
    let notified = NOTIFY.notified();
    if check().is_err() {
        return;
    }
    notified.await;
}
