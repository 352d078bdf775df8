//! upmirror: keeps a private updates mirror. See `ARCHITECTURE.md` for how
//! the stages fit together.
#![forbid(unsafe_code)]

pub mod bandwidth;
pub mod bucket;
pub mod channels;
pub mod cli;
pub mod client_cert;
pub mod commands;
pub mod config;
pub mod delta;
pub mod disk;
pub mod error;
pub mod fetch;
pub mod filter;
pub mod hooks;
pub mod ids;
pub mod interrupt;
pub mod local_tree;
pub mod manifest;
pub mod openpgp;
pub mod output;
pub mod plan;
pub mod publish_to;
pub mod signature;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod trace;
pub mod upstream;
pub mod verify;
pub mod versions;
