//! `upmirror man DIR`: the manual pages, generated from the command line's
//! own definitions: `upmirror.1` and `upmirror-SUBCOMMAND.1`, each with the
//! exit status, environment and files sections a packaged tool is read by.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::Man;

use crate::output::Reporter;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
0
Success, nothing to do, a held state, or a dry run done.
.TP
1
The run failed; the published tree is untouched.
.TP
2
A usage or configuration error, named with its file, line or key.
.TP
3
A safety guard refused the run (delete guard, older listing, free space); nothing was done.
.TP
4
The run's status or metrics file could not be written.
.TP
75
Another run holds the lock; nothing was done.
.TP
130, 143
Stopped by SIGINT or SIGTERM; nothing was published.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
Every configuration key is also an environment variable: \fBUPMIRROR_\fR and
the key in capitals (\fBUPMIRROR_ROOT\fR, \fBUPMIRROR_UPSTREAMS\fR as a
comma-separated list, \fBUPMIRROR_CA_FILE\fR, ...). A flag wins over the
environment, the environment over the file. \fBUPMIRROR_CONFIG\fR names the
file. Under systemd (\fBJOURNAL_STREAM\fR set) a \fB--quiet\fR run still
writes one summary line to the journal.
"#;

const FILES: &str = r#".SH FILES
.TP
/etc/upmirror/upmirror.toml
The configuration (a missing default file is not an error).
.TP
ROOT/current, ROOT/snapshots/ID, ROOT/grace-1..3
The published snapshot, the kept ones, and those still serving missing paths.
.TP
ROOT/.upmirror/
Lock, state, partial downloads and status.json: never served.
.TP
ROOT/public/
The public status.json and status page.
"#;

pub(super) fn write_pages(dir: &Path, out: Reporter) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut root = crate::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = vec![root.clone()];
    pages.extend(root.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for cmd in pages {
        let man = Man::new(cmd);
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_subcommands_section(&mut page)?;
        page.write_all(EXIT_STATUS.as_bytes())?;
        page.write_all(ENVIRONMENT.as_bytes())?;
        page.write_all(FILES.as_bytes())?;
        man.render_version_section(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("could not write {}", path.display()))?;
        out.info(format!("wrote {}", path.display()));
    }
    Ok(())
}
