//! `upmirror init [ROOT]`: make the layout of a new mirror root and print
//! the next steps.

use std::path::Path;

use anyhow::Result;

use crate::config::Config;
use crate::output::Reporter;
use crate::snapshot::Store;

pub(super) fn init(cfg: &Config, dir: Option<&Path>, out: Reporter) -> Result<()> {
    let root = match dir {
        Some(d) => d,
        None => cfg.root()?,
    };
    let store = Store::new(root);
    store.ensure_layout()?;
    out.info(format!("created the mirror root {} (snapshots/, .upmirror/, public/)", root.display()));
    crate::outln!(
        "next steps:\n\
         1. in /etc/upmirror/upmirror.toml set root = \"{}\", the upstreams, and ca_file / client_cert / client_key if needed\n\
         2. upmirror mirrors            # every upstream reachable, TLS verified?\n\
         3. upmirror sync --dry-run     # the first plan; then: upmirror sync\n\
         4. nginx/upmirror.conf and cron/upmirror.timer: see README, \"Install on a server\"",
        root.display()
    );
    Ok(())
}
