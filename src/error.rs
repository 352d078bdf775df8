//! Exit codes, in one place, and the typed errors they are read from. A
//! code is found by walking an error's chain for one of these types, never
//! by reading its message.

use crate::config::ConfigError;
use crate::interrupt::{Interrupted, Signal};
use crate::snapshot::LockHeld;

/// A safety guard refused the run (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// The run's status or metrics could not be written (exit 4): whatever the
/// run did, monitoring would not see it. `what` says which was not.
#[derive(Debug, thiserror::Error)]
#[error("{what} not recorded: {why}")]
pub struct Unrecorded {
    pub what: &'static str,
    pub why: String,
}

/// How a process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, nothing to do, or a dry-run done.
    Ok = 0,
    /// The run failed; the published tree is untouched.
    Failed = 1,
    /// A usage or configuration error.
    Usage = 2,
    /// A safety guard refused the run; nothing was done.
    Refused = 3,
    /// The run's status or metrics file could not be written.
    Unrecorded = 4,
    /// Another run holds the lock (EX_TEMPFAIL); nothing was done.
    Locked = 75,
    /// Stopped by SIGINT (128 + 2, the shell's convention).
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15).
    Terminated = 143,
}

impl Exit {
    /// The code for an error: the first typed cause in its chain decides.
    pub fn of(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if cause.is::<LockHeld>() {
                return Exit::Locked;
            }
            if cause.is::<ConfigError>() {
                return Exit::Usage;
            }
            if cause.is::<Refused>() {
                return Exit::Refused;
            }
            if cause.is::<Unrecorded>() {
                return Exit::Unrecorded;
            }
            if let Some(Interrupted(signal)) = cause.downcast_ref::<Interrupted>() {
                return match signal {
                    Signal::Int => Exit::Interrupted,
                    Signal::Term => Exit::Terminated,
                };
            }
        }
        Exit::Failed
    }

    pub fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_come_from_types_in_the_chain_not_from_text() {
        let refused: anyhow::Error = Refused("x".into()).into();
        assert_eq!(Exit::of(&refused.context("while syncing")), Exit::Refused);
        let text = anyhow::anyhow!("refused: another sync holds the lock; interrupted");
        assert_eq!(Exit::of(&text), Exit::Failed);
        let config: anyhow::Error = ConfigError("bad".into()).into();
        assert_eq!(Exit::of(&config), Exit::Usage);
        let term: Result<(), _> = Err(Interrupted(Signal::Term));
        assert_eq!(Exit::of(&term.context("fetching").unwrap_err()), Exit::Terminated);
        let int: anyhow::Error = Interrupted(Signal::Int).into();
        assert_eq!(Exit::of(&int).code(), 130);
        assert_eq!(Exit::of(&LockHeld("l".into()).into()).code(), 75);
    }
}
