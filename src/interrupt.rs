//! SIGTERM and SIGINT (systemd stopping the unit, an operator's Ctrl-C):
//! once a command that changes the store has installed the handler, a signal
//! makes the running stage stop at its next check and the run end as
//! interrupted (exit 143 or 130), with nothing published, the half-built
//! snapshot removed and the lock released. Past the point of the symlink
//! swap a run finishes; the swap is atomic either way.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// 0 until a signal arrives, then the signal's [`Signal`] as a number.
static RECEIVED: AtomicU8 = AtomicU8::new(0);
static NOTIFY: Notify = Notify::const_new();

/// The signals a run stops for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int = 1,
    Term = 2,
}

#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}; nothing was published", match .0 { Signal::Int => "SIGINT", Signal::Term => "SIGTERM" })]
pub struct Interrupted(pub Signal);

/// Catch SIGTERM and SIGINT from now on; needs a running tokio runtime.
pub fn install(rt: &tokio::runtime::Runtime) -> std::io::Result<()> {
    let _guard = rt.enter();
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    rt.spawn(async move {
        let got = tokio::select! {
            _ = term.recv() => Signal::Term,
            _ = int.recv() => Signal::Int,
        };
        RECEIVED.store(got as u8, Ordering::SeqCst);
        NOTIFY.notify_waiters();
    });
    Ok(())
}

/// An error once a signal has arrived.
pub fn check() -> Result<(), Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Ok(()),
        1 => Err(Interrupted(Signal::Int)),
        _ => Err(Interrupted(Signal::Term)),
    }
}

/// Resolves with the error once a signal arrives.
pub async fn wait() -> Interrupted {
    let notified = NOTIFY.notified();
    if let Err(e) = check() {
        return e;
    }
    notified.await;
    check().err().unwrap_or(Interrupted(Signal::Term))
}
