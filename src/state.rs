//! What a run remembers between runs, in `.upmirror/state.json`: each
//! snapshot's listing identity, the freshness high-water mark, rejected
//! listings and the conditional-request validators. Written atomically and
//! only after a publish (or an accepted no-change run) succeeded; the
//! per-run outcome is `status`'s.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::write_private;
use crate::upstream::Validators;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Snapshot id → the listing it was built from.
    pub snapshots: BTreeMap<String, SnapshotInfo>,
    /// The newest `generated_at` ever published (seconds since the epoch).
    pub high_water: Option<u64>,
    /// Listing identities that were rolled back; a sync that sees one exits 3.
    pub rejected: Vec<String>,
    /// Manifest URL → validators of the listing last accepted from it.
    pub validators: BTreeMap<String, Conditional>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub identity: String,
    pub generated_at: u64,
    pub upstream: String,
}

/// Validators, valid only while the published listing is `identity`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conditional {
    pub identity: String,
    #[serde(flatten)]
    pub validators: Validators,
}

impl State {
    pub fn load(meta: &Path) -> Result<State> {
        let path = meta.join("state.json");
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display())),
        }
    }

    pub fn save(&self, meta: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("serialise state")?;
        write_private(&meta.join("state.json"), &bytes)
    }

    /// Validators for `url`, if they belong to the published listing.
    pub fn validators_for(&self, url: &str, published: Option<&str>) -> Option<Validators> {
        let identity = &self.snapshots.get(published?)?.identity;
        let c = self.validators.get(url)?;
        (&c.identity == identity).then(|| c.validators.clone())
    }
}
