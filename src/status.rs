//! What each run leaves for monitoring: `.upmirror/status.json` (the last
//! run, private), `.upmirror/history.json` (the last runs), a sanitised public
//! copy with a small HTML page in `ROOT/public/` (served by nginx at
//! `/.well-known/upmirror/`), and optionally a Prometheus textfile. Written
//! on every exit path of a run; every file atomically.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::disk::{ensure_real_dir, write_atomic, write_private};
use crate::error::{Exit, Unrecorded};
use crate::output::{error_line, human_bytes, human_duration};
use crate::plan::Summary;
use crate::upstream::{UpstreamHealth, UpstreamState};

const HISTORY: usize = 30;
const PAGE_HISTORY: usize = 10;

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStatus {
    pub started: String,
    pub finished: String,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub error: Option<String>,
    /// Why a `held` run published nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub snapshot: Option<String>,
    /// Where the listing came from.
    pub upstream: Option<String>,
    #[serde(flatten)]
    pub summary: Summary,
    pub listing_generated_at: Option<String>,
    pub published_files: Option<usize>,
    pub published_bytes: Option<u64>,
    /// Each configured upstream as this run found it.
    pub upstreams: Vec<UpstreamHealth>,
    /// Bytes downloaded into published snapshots, over all runs.
    pub bytes_downloaded_total: u64,
    /// The trusted key whose signature the listing carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Of a crawl with `openpgp_keyring`: the listed files no signed
    /// `SHA256SUMS` covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsigned_files: Option<usize>,
    /// Each `publish_to` bucket as this run left it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<crate::bucket::Pushed>,
    /// The tiers the published snapshot came down through, this one last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<crate::trace::Tier>,
    /// Whose manifest the snapshot published by this run carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_manifest: Option<String>,
    /// When the client certificate expires, if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_expires: Option<String>,
    /// The root's filesystem: bytes in use and its size.
    pub disk_used_bytes: Option<u64>,
    pub disk_size_bytes: Option<u64>,
    /// What went wrong after the snapshot was published (cleaning up,
    /// pruning, saving state): the run still succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Of the files a crawled listing shows neither size nor date of, how
    /// many were asked again this run and how many wait for a later one
    /// (`recheck_budget`); only when some wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rechecks: Option<crate::upstream::Rechecks>,
    /// What a failed hook ran and printed (private: a command line may
    /// carry a token); never in the public copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_output: Option<String>,
    /// Each channel, the snapshot it names and when it was pointed there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<crate::channels::Channel>,
    /// The snapshots kept after the run, oldest first; each is readable at
    /// `/.well-known/upmirror/snapshots/<id>/`.
    pub snapshots: Vec<Kept>,
    /// What `seed_from` gave this run instead of the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded: Option<crate::fetch::SeedStats>,
    /// What patches gave this run instead of whole files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deltas: Option<crate::fetch::DeltaStats>,
    /// Bytes patches saved, over all runs.
    pub delta_bytes_saved_total: u64,
    /// How far budgeted verifies have come (`verify --budget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::verify::Cycle>,
}

/// How a run ended, as `status.json` words it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Published,
    Unchanged,
    /// The upstream still offers a listing that was rolled back.
    Held,
    RolledBack,
    Repaired,
    /// A channel was pointed at a snapshot.
    Promoted,
    Refused,
    #[default]
    Failed,
    Interrupted,
    /// Another run held the lock.
    Locked,
}

impl Outcome {
    /// How a run that ended with this exit code is recorded.
    pub fn of_exit(exit: Exit) -> Outcome {
        match exit {
            Exit::Ok => Outcome::Unchanged,
            Exit::Failed | Exit::Usage | Exit::Unrecorded => Outcome::Failed,
            Exit::Refused => Outcome::Refused,
            Exit::Locked => Outcome::Locked,
            Exit::Interrupted | Exit::Terminated => Outcome::Interrupted,
        }
    }

    /// A run that leaves the mirror in sync with its upstream.
    pub fn synced(self) -> bool {
        matches!(self, Outcome::Published | Outcome::Unchanged | Outcome::Held)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&word)
    }
}

/// A kept snapshot, as the status lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kept {
    pub id: String,
    /// When it was last made current.
    pub published_at: Option<String>,
    pub current: bool,
    /// Whether it still serves the paths missing from `current`.
    pub in_grace: bool,
    /// Rolled back: its pinned URL answers 410 Gone.
    #[serde(default)]
    pub withdrawn: bool,
}

/// Where the run's status goes, and what to hide in the public copy.
pub struct Sinks {
    pub meta: PathBuf,
    pub public: PathBuf,
    pub metrics: Option<PathBuf>,
    /// (host path, placeholder) pairs removed from public text.
    pub redact: Vec<(String, String)>,
}

impl RunStatus {
    /// Name the published snapshot: its id, size and listing time.
    pub fn set_published(&mut self, id: &str, files: usize, bytes: u64, generated_at: std::time::SystemTime) {
        self.snapshot = Some(id.to_owned());
        self.published_files = Some(files);
        self.published_bytes = Some(bytes);
        self.listing_generated_at = Some(humantime::format_rfc3339_seconds(generated_at).to_string());
    }

    /// Each upstream's bytes over all runs: its last total plus this run's.
    /// A run that used no upstream (a rollback, a repair without one)
    /// carries the last totals on, so counters never fall back to zero.
    fn carry_upstream_totals(&mut self, history: &[RunStatus]) {
        if self.upstreams.is_empty()
            && let Some(last) = history.iter().rev().find(|r| !r.upstreams.is_empty())
        {
            let carried =
                last.upstreams.iter().map(|u| UpstreamHealth { url: u.url.clone(), ..UpstreamHealth::default() });
            self.upstreams = carried.collect();
        }
        for u in &mut self.upstreams {
            let earlier = history.iter().rev().find_map(|r| r.upstreams.iter().find(|p| p.url == u.url));
            u.bytes_total = earlier.map_or(0, |p| p.bytes_total).saturating_add(u.bytes);
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    /// Complete the totals (bytes over all runs, disk use) and write every
    /// status file for this run; the history gains one entry. A file that
    /// cannot be written is an [`Unrecorded`] error: monitoring must never
    /// go silent. A metrics file that fails is still noted in the status
    /// files when they can be written.
    pub fn record(&mut self, sinks: &Sinks) -> Result<()> {
        let what = "the run's status was";
        let unrecorded = |e: anyhow::Error| anyhow::Error::new(Unrecorded { what, why: error_line(&e) });
        let history_path = sinks.meta.join("history.json");
        let mut history = history(&history_path);
        let before = history.last().map_or(0, |r| r.bytes_downloaded_total);
        let published = self.outcome == Outcome::Published;
        let saved = self.deltas.filter(|_| published).map_or(0, |d| d.saved_bytes);
        let not_fetched = self.seeded.map_or(0, |s| s.bytes) + saved;
        let published_now = if published { self.summary.download_bytes.saturating_sub(not_fetched) } else { 0 };
        self.bytes_downloaded_total = before.saturating_add(published_now);
        let saved_before = history.last().map_or(0, |r| r.delta_bytes_saved_total);
        self.delta_bytes_saved_total = saved_before.saturating_add(saved);
        self.carry_upstream_totals(&history);
        if let Ok(fs) = rustix::fs::statvfs(&sinks.meta) {
            self.disk_size_bytes = Some(fs.f_blocks * fs.f_frsize);
            self.disk_used_bytes = Some(fs.f_blocks.saturating_sub(fs.f_bfree) * fs.f_frsize);
        }
        let metrics_failed = sinks.metrics.as_ref().and_then(|path| {
            let with_this: Vec<RunStatus> = history.iter().cloned().chain([self.clone()]).collect();
            let written = write_atomic(path, metrics(&with_this).as_bytes());
            written.with_context(|| format!("metrics_file {} was not written", path.display())).err()
        });
        if let Some(e) = &metrics_failed {
            self.warnings.push(error_line(e));
        }
        write_private(&sinks.meta.join("status.json"), &serde_json::to_vec_pretty(self)?).map_err(unrecorded)?;
        history.push(self.clone());
        let start = history.len().saturating_sub(HISTORY);
        history.drain(..start);
        write_private(&history_path, &serde_json::to_vec(&history)?).map_err(unrecorded)?;
        write_public(sinks, &history).map_err(unrecorded)?;
        metrics_failed.map_or(Ok(()), |e| {
            let denied = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            });
            let hint = if denied { "; let the upmirror group write there (OPERATIONS.md, \"Metrics\")" } else { "" };
            let what = "the run's metrics were (status.json was written)";
            Err(Unrecorded { what, why: format!("{}{hint}", error_line(&e)) }.into())
        })
    }
}

impl RunStatus {
    /// Change the last run's status where it is recorded (`status.json`, its
    /// entry in the history, the public copy, the metrics), as a command that
    /// is no run of its own does (a budgeted verify): the last run's outcome
    /// and exit code stay what monitoring saw. Nothing when no run is recorded.
    pub fn amend(sinks: &Sinks, change: impl FnOnce(&mut RunStatus)) -> Result<()> {
        let history_path = sinks.meta.join("history.json");
        let mut history = history(&history_path);
        let Some(last) = history.last_mut() else { return Ok(()) };
        change(last);
        write_private(&sinks.meta.join("status.json"), &serde_json::to_vec_pretty(last)?)?;
        write_private(&history_path, &serde_json::to_vec(&history)?)?;
        write_public(sinks, &history)?;
        match &sinks.metrics {
            Some(path) => write_atomic(path, metrics(&history).as_bytes()),
            None => Ok(()),
        }
    }
}

/// The runs recorded, oldest first; none when the file is missing or damaged.
fn history(path: &Path) -> Vec<RunStatus> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The public status (no host paths) and its page.
fn write_public(sinks: &Sinks, history: &[RunStatus]) -> Result<()> {
    let public: Vec<RunStatus> = history.iter().map(|r| r.sanitised(&sinks.redact)).collect();
    ensure_real_dir(&sinks.public)?;
    let recent: Vec<&RunStatus> = public.iter().rev().take(PAGE_HISTORY).collect();
    let snapshots = recent.first().map(|r| r.snapshots.as_slice()).unwrap_or_default();
    let doc = serde_json::json!({
        "host": crate::trace::host_name(),
        "last_run": recent.first(),
        "last_success": last_success(&public),
        "snapshots": snapshots,
        "history": recent,
    });
    write_atomic(&sinks.public.join("status.json"), &serde_json::to_vec_pretty(&doc)?)?;
    write_atomic(&sinks.public.join("index.html"), page(&recent, last_success(&public)).as_bytes())
}

impl RunStatus {
    /// A copy fit for anyone on the network: no host paths.
    fn sanitised(&self, redact: &[(String, String)]) -> RunStatus {
        let clean = |s: &String| redact.iter().fold(s.clone(), |acc, (from, to)| acc.replace(from.as_str(), to));
        let mut copy = self.clone();
        copy.hook_output = None;
        copy.error = self.error.as_ref().map(clean);
        for u in &mut copy.upstreams {
            u.error = u.error.as_ref().map(clean);
        }
        copy
    }
}

fn last_success(history: &[RunStatus]) -> Option<&RunStatus> {
    history.iter().rev().find(|r| r.succeeded() && r.outcome.synced())
}

fn unix(rfc3339: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The node_exporter textfile.
fn metrics(history: &[RunStatus]) -> String {
    let last = history.last();
    let success = last_success(history).and_then(|r| unix(&r.finished)).unwrap_or(0);
    let published = history.iter().rev().find_map(|r| r.published_files).unwrap_or(0);
    let generated = history.iter().rev().find_map(|r| r.listing_generated_at.as_deref().and_then(unix)).unwrap_or(0);
    let mut text = String::new();
    for (name, kind, help, value) in [
        (
            "upmirror_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last run that published or found nothing to do.",
            success,
        ),
        ("upmirror_last_run_exit_code", "gauge", "Exit code of the last run.", last.map_or(0, |r| r.exit_code as u64)),
        (
            "upmirror_bytes_downloaded_total",
            "counter",
            "Bytes downloaded into published snapshots.",
            last.map_or(0, |r| r.bytes_downloaded_total),
        ),
        (
            "upmirror_delta_bytes_saved_total",
            "counter",
            "Bytes of changed files not downloaded because a patch made them.",
            last.map_or(0, |r| r.delta_bytes_saved_total),
        ),
        ("upmirror_published_files", "gauge", "Files in the published snapshot.", published as u64),
        (
            "upmirror_held",
            "gauge",
            "1 while the upstream offers only a rolled-back listing (a held state, not a failure).",
            u64::from(last.is_some_and(|r| r.outcome == Outcome::Held)),
        ),
        ("upmirror_listing_generated_timestamp_seconds", "gauge", "generated_at of the published listing.", generated),
    ] {
        let name = family(&mut text, name, kind, help);
        let _ = writeln!(text, "{name} {value}");
    }
    if let Some(last) = last {
        per_run_metrics(&mut text, last);
        timed_metrics(&mut text, last);
    }
    text
}

/// The gauges of times and ages the last run saw, where it saw them.
fn timed_metrics(text: &mut String, last: &RunStatus) {
    if let Some(lag) = origin_lag(last) {
        let help = "How far the published snapshot is behind its origin's listing, at the last run.";
        let name = family(text, "upmirror_origin_lag_seconds", "gauge", help);
        let _ = writeln!(text, "{name} {lag}");
    }
    if let Some(current) = last.snapshots.iter().find(|s| s.current) {
        let help = "The published snapshot's id, as a label: hosts of one fleet that publish one state agree on it.";
        let name = family(text, "upmirror_published_snapshot_info", "gauge", help);
        let _ = writeln!(text, "{name}{{snapshot=\"{}\"}} 1", label(&current.id));
    }
    if !last.channels.is_empty() {
        let help = "Seconds from when each channel was last pointed at its snapshot to the last run.";
        let name = family(text, "upmirror_channel_age_seconds", "gauge", help);
        for c in &last.channels {
            let age =
                c.promoted_at.as_deref().and_then(unix).zip(unix(&last.finished)).map(|(p, f)| f.saturating_sub(p));
            let _ = writeln!(text, "{name}{{channel=\"{}\"}} {}", label(&c.name), age.unwrap_or(0));
        }
    }
    if let Some(done) = last.verify.as_ref().and_then(|v| v.cycle_completed_at.as_deref()).and_then(unix) {
        let help = "When a cycle of budgeted verifies last finished checking every published file.";
        let name = family(text, "upmirror_verify_cycle_completed_timestamp_seconds", "gauge", help);
        let _ = writeln!(text, "{name} {done}");
    }
    if let Some(expiry) = last.client_cert_expires.as_deref().and_then(unix) {
        let help = "When the client certificate expires.";
        let name = family(text, "upmirror_client_cert_expiry_timestamp_seconds", "gauge", help);
        let _ = writeln!(text, "{name} {expiry}");
    }
}

/// Seconds from the origin's listing to the end of run `r`.
fn origin_lag(r: &RunStatus) -> Option<u64> {
    // This tier's entry: its origin time was checked against the listing.
    let origin = unix(&r.trace.last()?.origin_generated_at)?;
    Some(unix(&r.finished)?.saturating_sub(origin))
}

/// The last run's duration, and each upstream's health and traffic.
fn per_run_metrics(text: &mut String, last: &RunStatus) {
    let duration = unix(&last.finished).zip(unix(&last.started)).map_or(0, |(f, s)| f.saturating_sub(s));
    let name = family(text, "upmirror_last_run_duration_seconds", "gauge", "How long the last run took.");
    let _ = writeln!(text, "{name} {duration}");
    let help = "1 when the upstream answered the last run without error, 0 when it failed.";
    let name = family(text, "upmirror_upstream_up", "gauge", help);
    for u in last.upstreams.iter().filter(|u| u.state != UpstreamState::NotUsed) {
        let _ = writeln!(text, "{name}{{upstream=\"{}\"}} {}", label(&u.url), u64::from(u.state == UpstreamState::Ok));
    }
    let help = "Bytes of the files each upstream delivered, over all runs.";
    let name = family(text, "upmirror_upstream_bytes_total", "counter", help);
    for u in &last.upstreams {
        let _ = writeln!(text, "{name}{{upstream=\"{}\"}} {}", label(&u.url), u.bytes_total);
    }
    bucket_metrics(text, &last.buckets);
}

/// Each `publish_to` bucket: whether the last run published to it, and what it sent.
fn bucket_metrics(text: &mut String, buckets: &[crate::bucket::Pushed]) {
    if buckets.is_empty() {
        return;
    }
    let help = "1 when the last run left the bucket's pointer at the published snapshot, 0 when it failed.";
    let up = family(text, "upmirror_bucket_published", "gauge", help);
    for b in buckets {
        let _ = writeln!(text, "{up}{{target=\"{}\"}} {}", label(&b.target), u64::from(b.error.is_none()));
    }
    let help = "Bytes the last run uploaded to the bucket (copies inside the bucket not counted).";
    let bytes = family(text, "upmirror_bucket_uploaded_bytes", "gauge", help);
    for b in buckets {
        let _ = writeln!(text, "{bytes}{{target=\"{}\"}} {}", label(&b.target), b.uploaded_bytes);
    }
    let help = "Objects the last run copied inside the bucket instead of uploading.";
    let copied = family(text, "upmirror_bucket_copied_objects", "gauge", help);
    for b in buckets {
        let _ = writeln!(text, "{copied}{{target=\"{}\"}} {}", label(&b.target), b.copied_objects);
    }
}

/// Write a metric family's HELP and TYPE lines; its name, for the samples.
fn family<'a>(text: &mut String, name: &'a str, kind: &str, help: &str) -> &'a str {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The status page: plain HTML and CSS; a few lines of script only turn
/// absolute times into "2 h ago".
fn page(recent: &[&RunStatus], success: Option<&RunStatus>) -> String {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>upmirror status</title>\
         <style>{PAGE_STYLE}</style></head><body>\n<h1>upmirror</h1>\n"
    );
    match success {
        Some(s) => {
            let _ = writeln!(
                html,
                "<p class=\"big\">Synced <time datetime=\"{t}\">at {t}</time>{snap}.</p>",
                t = esc(&s.finished),
                snap =
                    s.snapshot.as_deref().map(|id| format!(", snapshot <code>{}</code>", esc(id))).unwrap_or_default()
            );
        }
        None => html.push_str("<p class=\"big bad\">Never synced successfully.</p>\n"),
    }
    if let Some(r) = recent.first() {
        last_run_section(&mut html, r);
        channels_section(&mut html, r);
        trace_section(&mut html, r);
    }
    history_section(&mut html, recent);
    let _ = write!(
        html,
        "<p><a href=\"status.json\">status.json</a></p>\n<script>{PAGE_SCRIPT}</script>\n</body></html>\n"
    );
    html
}

/// The page's only style and script. The shipped nginx site allows exactly
/// these by hash in its Content-Security-Policy (a test checks the hashes).
pub const PAGE_STYLE: &str = concat!(
    "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}",
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}",
    ".ok{color:#186a1e}.bad{color:#b00020;font-weight:bold}.big{font-size:1.6em}code{font-size:.9em}",
);
pub const PAGE_SCRIPT: &str = concat!(
    "\nfor (const t of document.querySelectorAll('time')) {\n",
    "  const s = (Date.now() - Date.parse(t.dateTime)) / 1000, d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);\n",
    "  t.title = t.dateTime; t.textContent = (d ? d + ' d ' + h + ' h' : h ? h + ' h ' + m + ' min' : m + ' min') + ' ago';\n",
    "}\n",
);

/// The last run: outcome, what is published, the disk, each upstream.
fn last_run_section(html: &mut String, r: &RunStatus) {
    let class = if r.succeeded() { "ok" } else { "bad" };
    let _ = writeln!(
        html,
        "<h2>Last run</h2>\n<p><span class=\"{class}\">{}</span> (exit {}) at <time datetime=\"{t}\">{t}</time>{}</p>",
        esc(&r.outcome.to_string()),
        r.exit_code,
        r.error.as_deref().map(|e| format!("<br><span class=\"bad\">{}</span>", esc(e))).unwrap_or_default(),
        t = esc(&r.finished),
    );
    if let (Some(files), Some(bytes)) = (r.published_files, r.published_bytes) {
        let age =
            r.listing_generated_at.as_deref().and_then(unix).zip(unix(&r.finished)).map(|(g, f)| f.saturating_sub(g));
        let _ = writeln!(
            html,
            "<p>Published: {files} files, {}{}.</p>",
            human_bytes(bytes),
            age.map(|a| format!("; the upstream listing was {} old", human_duration(a))).unwrap_or_default()
        );
    }
    if let (Some(used), Some(size)) = (r.disk_used_bytes, r.disk_size_bytes) {
        let _ = writeln!(html, "<p>Disk: {} used of {}.</p>", human_bytes(used), human_bytes(size));
    }
    if let Some(cycle) = &r.verify {
        let _ = writeln!(html, "<p>Verify: {}.</p>", esc(&cycle.describe()));
    }
    html.push_str(
        "<h2>Upstreams at the last run</h2>\n<table><tr><th>upstream</th><th>state</th><th>detail</th></tr>\n",
    );
    for u in &r.upstreams {
        let class = if u.state == UpstreamState::Failed { "bad" } else { "ok" };
        let _ = writeln!(
            html,
            "<tr><td><code>{}</code></td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            esc(&u.url),
            esc(u.state.label()),
            esc(u.error.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table>\n");
}

/// Each channel, the snapshot it serves and since when.
fn channels_section(html: &mut String, r: &RunStatus) {
    if r.channels.is_empty() {
        return;
    }
    html.push_str("<h2>Channels</h2>\n<table><tr><th>channel</th><th>snapshot</th><th>since</th></tr>\n");
    for c in &r.channels {
        let since = c.promoted_at.as_deref().map(|t| format!("<time datetime=\"{t}\">{t}</time>", t = esc(t)));
        let _ = writeln!(
            html,
            "<tr><td><a href=\"/channels/{n}/\">{n}</a></td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&c.snapshot),
            since.unwrap_or_default(),
            n = esc(&c.name)
        );
    }
    html.push_str("</table>\n");
}

/// The tiers the published snapshot came down through, and the lag behind
/// the origin.
fn trace_section(html: &mut String, r: &RunStatus) {
    let (Some(first), Some(lag)) = (r.trace.first(), origin_lag(r)) else { return };
    let _ = writeln!(
        html,
        "<h2>Tiers</h2>\n<p>The origin generated its listing at <time datetime=\"{t}\">{t}</time>: \
         {} behind it.</p>\n<table><tr><th>tier</th><th>snapshot</th><th>published</th></tr>",
        human_duration(lag),
        t = esc(&first.origin_generated_at),
    );
    for t in &r.trace {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td><time datetime=\"{p}\">{p}</time></td></tr>",
            esc(&t.name),
            esc(&t.snapshot),
            p = esc(&t.published_at)
        );
    }
    html.push_str("</table>\n");
}

/// The recent runs, newest first.
fn history_section(html: &mut String, recent: &[&RunStatus]) {
    html.push_str("<h2>Recent runs</h2>\n<table><tr><th>finished</th><th>outcome</th><th>added</th><th>changed</th><th>removed</th><th>downloaded</th></tr>\n");
    for r in recent {
        let _ = writeln!(
            html,
            "<tr><td><time datetime=\"{t}\">{t}</time></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.succeeded() { "ok" } else { "bad" },
            esc(&r.outcome.to_string()),
            r.summary.added,
            r.summary.changed,
            r.summary.removed,
            human_bytes(r.summary.download_bytes),
            t = esc(&r.finished),
        );
    }
    html.push_str("</table>\n");
}

impl Sinks {
    /// Where the run status of the mirror at `root` goes; host paths of the
    /// configuration are hidden in the public copy.
    pub fn new(root: &Path, cfg: &crate::config::Config) -> Sinks {
        let tls = &cfg.tls;
        let mut redact: Vec<(String, String)> = [
            (Some(root), "<root>"),
            (tls.ca_file.as_deref(), "<ca_file>"),
            (tls.client_cert.as_deref(), "<client_cert>"),
            (tls.client_key.as_deref(), "<client_key>"),
        ]
        .into_iter()
        .filter_map(|(p, name)| Some((p?.to_str()?.to_owned(), name.to_owned())))
        .filter(|(p, _)| !p.is_empty())
        .collect();
        // Longest first, so a path inside the root is not half replaced.
        redact.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Sinks { meta: root.join(".upmirror"), public: root.join("public"), metrics: cfg.metrics_file.clone(), redact }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: Outcome, code: i32, finished: &str) -> RunStatus {
        RunStatus { outcome, exit_code: code, finished: finished.into(), ..RunStatus::default() }
    }

    #[test]
    fn public_copies_hide_host_paths() {
        let mut r = run(Outcome::Failed, 1, "2026-11-24T19:00:00Z");
        r.error = Some("could not write /srv/upmirror/.upmirror/partial/x: No space left".into());
        let clean = r.sanitised(&[("/srv/upmirror".into(), "<root>".into())]);
        assert_eq!(clean.error.as_deref(), Some("could not write <root>/.upmirror/partial/x: No space left"));
    }

    #[test]
    fn metrics_name_the_last_success_and_exit_code() {
        let mut ok = run(Outcome::Published, 0, "2026-11-24T19:00:00Z");
        ok.published_files = Some(7);
        ok.bytes_downloaded_total = 1234;
        let failed = RunStatus { bytes_downloaded_total: 1234, ..run(Outcome::Failed, 1, "2026-11-24T20:00:00Z") };
        let text = metrics(&[ok, failed]);
        assert!(text.contains("upmirror_last_success_timestamp_seconds 1795546800\n"), "{text}");
        assert!(text.contains("upmirror_last_run_exit_code 1\n"));
        assert!(text.contains("upmirror_bytes_downloaded_total 1234\n"));
        assert!(text.contains("upmirror_published_files 7\n"));
        assert!(text.contains("# TYPE upmirror_bytes_downloaded_total counter"));
    }

    #[test]
    fn the_shipped_nginx_site_allows_exactly_the_pages_style_and_script() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let site = include_str!("../nginx/upmirror.conf");
        for text in [PAGE_STYLE, PAGE_SCRIPT] {
            let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text));
            assert!(site.contains(&format!("'sha256-{hash}'")), "nginx/upmirror.conf lacks 'sha256-{hash}'");
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let mut r = run(Outcome::Failed, 1, "2026-11-24T19:00:00Z");
        r.error = Some("<script>alert(1)</script>".into());
        let html = page(&[&r], None);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("Never synced successfully"));
    }
}
