//! upmirror: keeps a private updates mirror. See `ARCHITECTURE.md` for how
//! the stages fit together.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod disk;
pub mod fetch;
pub mod filter;
pub mod interrupt;
pub mod manifest;
pub mod output;
pub mod plan;
pub mod scan;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod upstream;
pub mod verify;

use config::ConfigError;
use snapshot::LockHeld;

/// The process exit code for an error, found by walking its chain: a held
/// lock is 75, a configuration error 2, a refusal 3, anything else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<LockHeld>() {
            return 75;
        }
        if cause.is::<ConfigError>() {
            return 2;
        }
        if cause.is::<commands::Refused>() {
            return 3;
        }
    }
    1
}
