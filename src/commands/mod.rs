//! One function per subcommand: the only place the stages meet.
//! config → listing → plan → fetch → verify → build → publish → state/status.

mod apply;
mod buckets;
mod export;
mod init;
mod man;
mod manifest;
mod mirrors;
mod promote;
mod rollback;
mod status;
mod sync;
mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::cli::Command;
use crate::client_cert::{self, ClientCert};
use crate::config::Config;
use crate::interrupt;
use crate::output::Reporter;

pub fn run(command: Command, cfg: &Config, out: Reporter) -> Result<()> {
    for (name, secret) in [("client_key", &cfg.tls.client_key), ("proxy_credentials_file", &cfg.proxy_credentials_file)]
    {
        let Some(file) = secret else { continue };
        if std::fs::metadata(file).is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004 != 0)
        {
            out.warn(format!("{name} {} is readable by every user; fix: chmod o-r {}", file.display(), file.display()));
        }
    }
    match command {
        Command::Sync(args) => sync::sync(cfg, &args, out),
        Command::Verify(args) => {
            let budget = args.budget.map(|b| crate::config::size("--budget", &b)).transpose()?;
            verify::verify(cfg, args.repair, budget, out)
        }
        Command::Status(args) => status::status(cfg, args.check.then(|| args.stale_after.into()), out),
        Command::Mirrors { .. } => mirrors::mirrors(cfg, out),
        Command::Rollback { .. } => rollback::rollback(cfg, out),
        Command::Promote { channel, snapshot, .. } => promote::promote(cfg, &channel, snapshot.as_deref(), out),
        Command::Export { to, since, link, .. } => export::export(cfg, &to, since.as_deref(), link, out),
        Command::Manifest { dir, sign, delta_from, delta_min_size } => {
            let min = delta_min_size.map(|s| crate::config::size("--delta-min-size", &s)).transpose()?;
            let deltas = delta_from.map(|old| (old, min.unwrap_or(16 << 20)));
            manifest::manifest(&dir, sign.as_deref(), deltas, out)
        }
        Command::Init { dir, .. } => init::init(cfg, dir.as_deref(), out),
        Command::Completions { shell } => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "upmirror", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man::write_pages(&dir, out),
    }
}

/// The client certificate, when one is configured: checked against its key
/// and its dates before any request (a mismatch or an expired one is exit
/// 2), with a warning when it expires within 30 days.
fn client_identity(cfg: &Config, out: Reporter) -> Result<Option<ClientCert>> {
    let (Some(cert), Some(key)) = (&cfg.tls.client_cert, &cfg.tls.client_key) else { return Ok(None) };
    let info = client_cert::check(cert, key, SystemTime::now())?;
    let left = info.not_after - unix_seconds(SystemTime::now()) as i64;
    if left < client_cert::EXPIRY_WARNING {
        out.warn(format!(
            "client_cert {} expires in {} ({}); renew it",
            cert.display(),
            crate::output::human_duration(left.max(0) as u64),
            info.expires()
        ));
    }
    Ok(Some(info))
}

/// A runtime for the network stages. With `signals`, SIGTERM and SIGINT
/// stop the run at its next check instead of killing the process.
fn runtime(signals: bool) -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    if signals {
        interrupt::install(&rt).context("could not catch SIGTERM/SIGINT")?;
    }
    Ok(rt)
}

/// Run `fut` unless the run's deadline passes or a signal arrives first.
async fn before<T>(deadline: tokio::time::Instant, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = tokio::time::timeout_at(deadline, fut) => match result {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the run exceeded run_timeout; partial downloads are kept for the next run"),
        },
        signal = interrupt::wait() => Err(signal.into()),
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
