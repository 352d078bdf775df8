//! `upmirror promote CHANNEL [--snapshot ID]`: point a channel at a kept
//! snapshot, checked whole first; and, at every run, the channels of
//! `auto_promote` at the newest snapshot past their cooldown.

use std::time::SystemTime;

use anyhow::Result;

use super::apply::{Outcome, Run, intact, recorded};
use super::unix_seconds;
use crate::channels::{Candidate, newest_aged, valid_name};
use crate::config::{Config, ConfigError};
use crate::error::Refused;
use crate::output::{Reporter, error_line};
use crate::snapshot::Store;
use crate::state::State;

struct Promoted {
    channel: String,
    id: String,
}

impl Outcome for Promoted {
    fn outcome(&self) -> crate::status::Outcome {
        crate::status::Outcome::Promoted
    }
}

pub(super) fn promote(cfg: &Config, channel: &str, snapshot: Option<&str>, out: Reporter) -> Result<()> {
    if !valid_name(channel) {
        let why = format!("channel \"{}\": use letters, digits, '.', '_' and '-'", crate::output::escape(channel));
        return Err(ConfigError(why).into());
    }
    let store = Store::new(cfg.root()?);
    let done = recorded(cfg, &store, out, |run| promote_in(run, channel, snapshot)).0?;
    out.summary(format!("channel {} now serves snapshot {} (/channels/{}/)", done.channel, done.id, done.channel));
    Ok(())
}

fn promote_in(run: &mut Run, channel: &str, snapshot: Option<&str>) -> Result<Promoted> {
    let id = match snapshot {
        Some(id) => id.to_owned(),
        None => run.locked.current_id().ok_or_else(|| Refused("nothing is published yet to promote".into()))?,
    };
    intact(run, &id, "promoted")?;
    let mut state = State::load(&run.locked.meta())?;
    let before = run.locked.set_channel(channel, &id)?;
    state.promoted(channel, &id, before.as_deref(), unix_seconds(SystemTime::now()));
    state.save(&run.locked.meta())?;
    Ok(Promoted { channel: channel.to_owned(), id })
}

/// Point each channel of `auto_promote` at the newest of the kept snapshots
/// `ids` published at least its cooldown ago and not `withdrawn`; a channel
/// no snapshot is old enough for stays as it is. Returns whether `state` changed.
pub(super) fn auto_promote(
    run: &mut Run,
    state: &mut State,
    (ids, withdrawn): (&[String], &[String]),
    now: u64,
) -> bool {
    let candidates: Vec<Candidate> = ids
        .iter()
        .filter_map(|id| {
            let info = state.snapshots.get(id)?;
            let first_published = info.first_published_at.or(info.published_at)?;
            Some(Candidate { id, first_published, withdrawn: withdrawn.contains(id) })
        })
        .collect();
    let linked = run.locked.channels().unwrap_or_default();
    let mut changed = false;
    for (channel, cooldown) in run.cfg.auto_promote.clone() {
        let Some(id) = newest_aged(&candidates, now, cooldown.as_secs()) else { continue };
        if linked.iter().any(|(name, at)| *name == channel && at == id) {
            continue;
        }
        match run.locked.set_channel(&channel, id) {
            Ok(before) => {
                state.promoted(&channel, id, before.as_deref(), now);
                run.out.info(format!("channel {channel} now serves snapshot {id} (auto_promote)"));
                changed = true;
            }
            Err(e) => run.warn(format!("channel {channel} was not moved to {id}: {}", error_line(&e))),
        }
    }
    changed
}
