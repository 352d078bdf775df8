//! Publish hooks: commands the operator plugs in around the swap, run
//! without a shell (the command line is split on spaces; write a script for
//! anything more), each with a time limit and its output kept, bounded.
//! `pre_publish` runs after the snapshot is built and verified, before the
//! swap, and can refuse it; `post_publish` runs after; `on_failure` when a
//! sync fails.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::output::{MAX_ERROR_BYTES, clip};

/// Secrets of the mirror's own that a hook is never handed.
const WITHHELD: [&str; 3] = ["UPMIRROR_SIGNING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// A hook that failed. What it says names the hook and how it ended; its
/// command line (which may carry a token) and what it printed are in
/// `detail`, for the private status and the operator's terminal only.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct HookFailed {
    pub summary: String,
    pub detail: String,
}

/// Run `command` with `env`, at most `timeout`, in a process group of its
/// own: a hook that outlives `timeout` is killed with everything it started.
pub fn run(name: &str, command: &str, env: &[(&str, String)], timeout: Duration, scratch: &Path) -> Result<()> {
    let mut words = command.split_whitespace();
    let program = words.next().with_context(|| format!("{name} is empty"))?;
    let output = scratch.join(format!("{name}.out"));
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true).mode(0o600);
        open.custom_flags(crate::disk::nofollow());
        open.open(&output).with_context(|| format!("could not create {}", output.display()))?
    };
    let mut cmd = Command::new(program);
    cmd.args(words).envs(env.iter().map(|(k, v)| (*k, v))).process_group(0);
    for secret in WITHHELD {
        cmd.env_remove(secret);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("hook output")?)
        .stderr(file)
        .spawn()
        .map_err(|e| failed(name, format!("could not start ({e})"), command, String::new()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a hook")? {
            break Some(status);
        }
        // A signal to the run stops the hook too, with what it started.
        let stopped = crate::interrupt::check();
        if Instant::now() >= deadline || stopped.is_err() {
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            stopped?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut printed = String::new();
    let _ = std::fs::File::open(&output).and_then(|f| f.take(MAX_ERROR_BYTES as u64).read_to_string(&mut printed));
    let _ = std::fs::remove_file(&output);
    let printed = clip(printed.trim(), MAX_ERROR_BYTES / 2).replace('\n', " | ");
    match status {
        None => Err(failed(
            name,
            format!("did not finish within hook_timeout ({timeout:?}) and was killed"),
            command,
            printed,
        )),
        Some(s) if !s.success() => Err(failed(name, format!("failed ({s})"), command, printed)),
        Some(_) => Ok(()),
    }
}

fn failed(name: &str, how: String, command: &str, printed: String) -> anyhow::Error {
    let detail = format!("{name} `{command}`: {printed}");
    HookFailed { summary: format!("{name} {how}; its command line and output are in the private status"), detail }
        .into()
}
