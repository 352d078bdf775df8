//! Publish hooks: commands the operator plugs in around the swap, run
//! without a shell (the command line is split on spaces; write a script for
//! anything more), each with a time limit and its output kept, bounded.
//! `pre_publish` runs after the snapshot is built and verified, before the
//! swap, and can refuse it; `post_publish` runs after; `on_failure` when a
//! sync fails.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::output::{MAX_ERROR_BYTES, clip};

/// Run `command` with `env`, at most `timeout`; its exit status and the
/// start of what it printed. A hook that outlives `timeout` is killed.
pub fn run(name: &str, command: &str, env: &[(&str, String)], timeout: Duration, scratch: &Path) -> Result<()> {
    let mut words = command.split_whitespace();
    let program = words.next().with_context(|| format!("{name} is empty"))?;
    let output = scratch.join(format!("{name}.out"));
    let file = std::fs::File::create(&output).with_context(|| format!("could not create {}", output.display()))?;
    let mut child = Command::new(program)
        .args(words)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("hook output")?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("{name} `{command}` could not start"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a hook")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut printed = String::new();
    let _ = std::fs::File::open(&output).and_then(|f| f.take(MAX_ERROR_BYTES as u64).read_to_string(&mut printed));
    let _ = std::fs::remove_file(&output);
    let printed = clip(printed.trim(), MAX_ERROR_BYTES / 2).replace('\n', " | ");
    match status {
        None => bail!("{name} `{command}` did not finish within hook_timeout ({timeout:?}) and was killed"),
        Some(s) if !s.success() => bail!("{name} `{command}` failed ({s}): {printed}"),
        Some(_) => Ok(()),
    }
}
