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

/// How many replaced snapshots the nginx site falls back to, newest first
/// (`grace-1` … `grace-3` beside `current`, and as many per channel).
pub const GRACE_LINKS: usize = 3;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Snapshot id → the listing it was built from.
    pub snapshots: BTreeMap<String, SnapshotInfo>,
    /// The newest `generated_at` ever published (seconds since the epoch).
    pub high_water: Option<u64>,
    /// Listing identities that were rolled back; a sync that is offered one again holds (exit 0, outcome `held`).
    pub rejected: Vec<String>,
    /// Manifest URL → validators of the listing last accepted from it.
    pub validators: BTreeMap<String, Conditional>,
    /// The last file a crawl asked again of those its listing shows
    /// nothing of: the next run goes on after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck_from: Option<String>,
    /// Channel → when it was last pointed at a snapshot (the link on disk
    /// says which).
    pub channels: BTreeMap<String, u64>,
    /// Channel → the snapshots it was moved away from, newest first (at
    /// most one per grace link): for `grace` from then each still serves
    /// the paths missing from the channel's snapshot.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub channels_left: BTreeMap<String, Vec<Left>>,
}

/// A snapshot a channel was moved away from, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub snapshot: String,
    pub at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub identity: String,
    pub generated_at: u64,
    pub upstream: String,
    /// When it was last made current (seconds since the epoch).
    #[serde(default)]
    pub published_at: Option<u64>,
    /// When it was first made current: what a channel's cooldown counts from.
    #[serde(default)]
    pub first_published_at: Option<u64>,
    /// Its place among the snapshots first published since ids name
    /// contents (1, 2, …): what orders them, whatever their names or the
    /// clock say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_order: Option<u64>,
    /// When another snapshot replaced it; for `grace` from then it still
    /// serves the paths missing from `current`. Not set for a rolled-back one.
    #[serde(default)]
    pub replaced_at: Option<u64>,
    /// How far ahead of UTC the dates of its directory listing were.
    #[serde(default)]
    pub listing_offset: i64,
    /// Its files and their bytes, recorded when a sync built it: what a
    /// run that ends on a `304` reports without reading its manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// Validators, valid only while the published listing is `identity`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conditional {
    pub identity: String,
    /// When the listing behind these validators was last fetched whole
    /// (seconds since the epoch); they are trusted `recheck_after` from then.
    #[serde(default)]
    pub since: u64,
    #[serde(flatten)]
    pub validators: Validators,
}

impl State {
    pub fn load(meta: &Path) -> Result<State> {
        crate::disk::read_json(&meta.join("state.json"))
    }

    pub fn save(&self, meta: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("serialise state")?;
        write_private(&meta.join("state.json"), &bytes)
    }

    /// Note that `id` was made current at `now`, replacing `before`, which
    /// keeps a grace window unless it was rolled back (`grace` false).
    pub fn published(&mut self, id: &str, before: Option<&str>, now: u64, grace: bool) {
        if let Some(old) = before.filter(|old| *old != id) {
            self.snapshots.entry(old.to_owned()).or_default().replaced_at = grace.then_some(now);
        }
        let next = self.snapshots.values().filter_map(|i| i.publish_order).max().unwrap_or(0) + 1;
        let info = self.snapshots.entry(id.to_owned()).or_default();
        (info.published_at, info.replaced_at) = (Some(now), None);
        info.first_published_at.get_or_insert(now);
        info.publish_order.get_or_insert(next);
    }

    /// Note that channel `name` was pointed at `id` at `now`, moved away from
    /// `before`, which keeps a grace window on the channel.
    pub fn promoted(&mut self, name: &str, id: &str, before: Option<&str>, now: u64) {
        self.channels.insert(name.to_owned(), now);
        if let Some(old) = before.filter(|old| *old != id) {
            let left = self.channels_left.entry(name.to_owned()).or_default();
            left.retain(|l| l.snapshot != old && l.snapshot != id);
            left.insert(0, Left { snapshot: old.to_owned(), at: now });
            left.truncate(GRACE_LINKS);
        }
    }

    /// The snapshots channel `name` left less than `grace` before `now`,
    /// newest first.
    pub fn channel_grace(&self, name: &str, now: u64, grace: u64) -> Vec<String> {
        let left = self.channels_left.get(name).map(Vec::as_slice).unwrap_or_default();
        left.iter().filter(|l| now.saturating_sub(l.at) < grace).map(|l| l.snapshot.clone()).collect()
    }

    /// The snapshots replaced less than `grace` before `now`, newest first:
    /// they serve the paths missing from `current`, and are not pruned.
    pub fn in_grace(&self, now: u64, grace: u64) -> Vec<String> {
        let mut ids: Vec<(u64, &String)> = self
            .snapshots
            .iter()
            .filter_map(|(id, info)| info.replaced_at.filter(|t| now.saturating_sub(*t) < grace).map(|t| (t, id)))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Validators for `url`, if they belong to the published listing.
    /// No validators once they are older than `max_age` at `now`, or when
    /// they were racy: the listing is then fetched whole and compared by
    /// content, which catches a same-size rewrite within one second that
    /// keeps an `mtime-size` ETag.
    pub fn validators_for(&self, url: &str, published: Option<&str>, now: u64, max_age: u64) -> Option<Validators> {
        let identity = &self.snapshots.get(published?)?.identity;
        let c = self.validators.get(url)?;
        let fresh = &c.identity == identity && now.saturating_sub(c.since) < max_age && !c.validators.racy;
        fresh.then(|| c.validators.clone())
    }
}
