//! After a sync, each `publish_to` bucket is brought to the published
//! snapshot. A bucket that fails is a warning (the local publish stands,
//! exit 0) and is tried again by the next run, which goes on from where
//! this one stopped.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;

use super::apply::{Run, in_grace};
use super::{runtime, unix_seconds};
use crate::bucket::{Journal, Pushed, Snap};
use crate::config::Config;
use crate::output::{Reporter, error_line};
use crate::state::State;

/// Publish the published snapshot to every bucket; each outcome goes to the status.
pub(super) fn publish(run: &mut Run) {
    let Some(s3) = run.cfg.s3.clone().filter(|_| !run.cfg.publish_to.is_empty()) else { return };
    let ready = run.locked.published().and_then(|p| p.context("nothing is published yet"));
    let ready =
        ready.and_then(|p| Ok((p, State::load(&run.locked.meta())?, run.locked.snapshot_ids()?, runtime(true)?)));
    let (published, state, kept, rt) = match ready {
        Ok(ready) => ready,
        Err(e) => return run.warn(format!("nothing was published to the buckets: {}", error_line(&e))),
    };
    let grace = in_grace(run, &state, &kept, unix_seconds(SystemTime::now()));
    let journal = Journal::load(&run.locked.meta());
    let manifest = match published.manifest.get() {
        Ok(manifest) => manifest,
        Err(e) => return run.warn(format!("nothing was published to the buckets: {}", error_line(&e))),
    };
    let snap = Snap { id: &published.id, dir: &published.dir, manifest, kept: &kept, grace: &grace };
    for target in run.cfg.publish_to.clone() {
        let done = crate::bucket::store(&target, &s3)
            .and_then(|store| rt.block_on(crate::bucket::publish(&store, &target, &snap, &journal)));
        let pushed = match done {
            Ok(pushed) => pushed,
            Err(e) => {
                let line = error_line(&e);
                run.warn(format!(
                    "{} was not published to {}: {line}; the next run tries again",
                    published.id, target.url
                ));
                Pushed { target: target.url.clone(), error: Some(line), ..Pushed::default() }
            }
        };
        run.status.buckets.push(pushed);
    }
}

/// Once the run's status is recorded, its public copy goes to each bucket
/// (`PREFIX/status/`) for the fronts. The status is written by then, so a
/// bucket that fails here is only printed; the next run writes it again.
pub(super) fn publish_status(cfg: &Config, root: &Path, out: Reporter) {
    let Some(s3) = cfg.s3.as_ref().filter(|_| !cfg.publish_to.is_empty()) else { return };
    let Ok(rt) = runtime(false) else { return };
    for target in &cfg.publish_to {
        let put = crate::bucket::store(target, s3)
            .and_then(|store| rt.block_on(crate::bucket::put_status(&store, target, &root.join("public"))));
        if let Err(e) = put {
            out.warn(format!("the status was not published to {}: {}", target.url, error_line(&e)));
        }
    }
}
