//! Everything a person reads: the reporter that owns stderr, human sizes and
//! escaping of untrusted names. Workers never print; they return data or
//! call the reporter handed to them.

use std::fmt::Write as _;

/// How much goes to stderr. JSON documents go to stdout whatever the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub level: Level,
    pub json: bool,
    /// stderr goes to the systemd journal (`JOURNAL_STREAM` is set): a
    /// run's one summary line is written even under `--quiet`, which keeps
    /// cron silent on success but leaves a trace of every timer run.
    pub journal: bool,
}

impl Reporter {
    pub fn new(quiet: bool, verbose: u8, json: bool) -> Self {
        let level = match (quiet, verbose) {
            (true, _) => Level::Quiet,
            (false, 0) => Level::Normal,
            (false, _) => Level::Verbose,
        };
        Reporter { level, json, journal: std::env::var_os("JOURNAL_STREAM").is_some() }
    }

    /// The one line that sums up a run: shown like `info`, and in the
    /// journal even under `--quiet`.
    pub fn summary(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Normal || self.journal {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A progress or outcome line; silent under `--quiet`.
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Normal {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Detail shown with `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Verbose {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// What happens while it happens (a retry, a fail-over): on a terminal,
    /// and in a log with `-v`; silent under `--quiet`.
    pub fn notice(&self, msg: impl AsRef<str>) {
        use std::io::IsTerminal;
        if self.level >= Level::Verbose || self.level == Level::Normal && std::io::stderr().is_terminal() {
            eprintln!("upmirror: {}", msg.as_ref());
        }
    }

    /// A problem that does not stop the run; silent under `--quiet`.
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Normal {
            eprintln!("upmirror: warning: {}", msg.as_ref());
        }
    }
}

impl Reporter {
    /// A line of progress (a long crawl): shown like `info`, and in the
    /// journal even under `--quiet`.
    pub fn progress_line(&self, msg: impl AsRef<str>) {
        if !self.json && (self.level >= Level::Normal || self.journal) {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A progress display for a download of `files` files and `bytes` bytes:
    /// a bar on a terminal, a line a minute when stderr is a log (the
    /// journal too under `--quiet`), nothing under `--quiet` or `--json`.
    pub fn progress(&self, files: usize, bytes: u64) -> Progress {
        use std::io::IsTerminal;
        let mode = if (self.level == Level::Quiet && !self.journal) || self.json {
            Mode::Hidden
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Log
        };
        Progress::new(mode, files as u64, bytes)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hidden,
    Bar,
    Log,
}

/// Shared by every download of a run: counts bytes and files, and knows the
/// largest file in flight. Cheap to clone.
#[derive(Clone)]
pub struct Progress(Option<std::sync::Arc<ProgressInner>>);

struct ProgressInner {
    mode: Mode,
    bar: indicatif::ProgressBar,
    files: u64,
    bytes: u64,
    started: std::time::Instant,
    state: std::sync::Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    bytes: u64,
    files: u64,
    in_flight: std::collections::BTreeMap<(u64, String), ()>,
    last_log: Option<std::time::Instant>,
}

impl Progress {
    fn new(mode: Mode, files: u64, bytes: u64) -> Progress {
        if mode == Mode::Hidden {
            return Progress(None);
        }
        let bar = if mode == Mode::Bar {
            let bar = indicatif::ProgressBar::new(bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} · {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = std::time::Instant::now();
        Progress(Some(std::sync::Arc::new(ProgressInner {
            mode,
            bar,
            files,
            bytes,
            started,
            state: Default::default(),
        })))
    }

    /// A progress that shows nothing (tests, benches, other commands).
    pub fn hidden() -> Progress {
        Progress(None)
    }

    pub fn start_file(&self, path: &str, size: u64) {
        self.update(|s| {
            s.in_flight.insert((size, path.to_owned()), ());
        });
    }

    pub fn add_bytes(&self, n: u64) {
        self.update(|s| s.bytes += n);
    }

    /// A file is done: fetched (`ok`) or given up.
    pub fn end_file(&self, path: &str, size: u64, ok: bool) {
        self.update(|s| {
            s.in_flight.remove(&(size, path.to_owned()));
            s.files += u64::from(ok);
        });
    }

    pub fn finish(&self) {
        if let Some(p) = &self.0 {
            p.bar.finish_and_clear();
        }
    }

    fn update(&self, change: impl FnOnce(&mut ProgressState)) {
        let Some(p) = &self.0 else { return };
        let mut s = p.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut s);
        let largest =
            s.in_flight.keys().next_back().map(|(size, path)| format!(" · {} ({})", escape(path), human_bytes(*size)));
        let files = format!("{}/{} files{}", s.files, p.files, largest.unwrap_or_default());
        match p.mode {
            Mode::Bar => {
                p.bar.set_position(s.bytes);
                p.bar.set_message(files);
            }
            Mode::Log if s.last_log.unwrap_or(p.started).elapsed().as_secs() >= 60 => {
                s.last_log = Some(std::time::Instant::now());
                let secs = p.started.elapsed().as_secs_f64().max(0.001);
                let rate = s.bytes as f64 / secs;
                let eta = if rate > 0.0 {
                    human_duration((p.bytes.saturating_sub(s.bytes) as f64 / rate) as u64)
                } else {
                    "-".into()
                };
                eprintln!(
                    "progress: {} of {}, {files}, {}/s, ETA {eta}",
                    human_bytes(s.bytes),
                    human_bytes(p.bytes),
                    human_bytes(rate as u64)
                );
            }
            _ => {}
        }
    }
}

/// `1536` → `1.5 KiB`; whole bytes below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `7260` → `2h 1m`; `59` → `59s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Make an untrusted name safe to print on a terminal: control characters,
/// bidi overrides, zero-width characters and backslashes become escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text from outside (an upstream's names and values, a library's message
/// about them) fit to quote on one line: escaped, and cut to about `max`
/// bytes with the length it had.
pub fn quote(s: &str, max: usize) -> String {
    if s.len() <= max {
        return escape(s);
    }
    format!("{}… ({} bytes)", escape(clip(s, max)), s.len())
}

/// Seconds since the epoch as an RFC 3339 time (UTC, to the second);
/// times before the epoch read as the epoch.
pub fn rfc3339(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The most bytes of an error kept for stderr and status files: whatever an
/// upstream sends, what a run records stays small.
pub const MAX_ERROR_BYTES: usize = 4096;

/// `println!` that ends the process quietly when stdout is a closed pipe
/// (`upmirror status | head -1`), as `cat` does, instead of panicking.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!`, likewise.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// Write to stdout; a reader that went away ends the process with success.
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("upmirror: could not write to stdout: {e}");
        std::process::exit(1);
    }
}

/// What followed from a failure (its status could not be recorded), told
/// after the failure itself: the cause first.
static AFTER_ERROR: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Tell `line` on stderr after the error the command ends with.
pub fn after_error(line: String) {
    AFTER_ERROR.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

/// The lines to tell after the error, once.
pub fn take_after_error() -> Vec<String> {
    std::mem::take(&mut *AFTER_ERROR.lock().unwrap_or_else(|e| e.into_inner()))
}

/// An error of several causes, one line each (an upstream each): one line
/// joined by `; ` where one line is wanted (status files), the head and a
/// line per cause on a terminal.
#[derive(Debug, thiserror::Error)]
#[error("{head}: {}", lines.join("; "))]
pub struct Lines {
    pub head: String,
    pub lines: Vec<String>,
}

/// The error for stderr: the head and each cause on its own line, each at
/// most 300 bytes unless `verbose`; any other error on one line.
pub fn error_lines(err: &anyhow::Error, verbose: bool) -> String {
    let Some(many) = err.downcast_ref::<Lines>().filter(|l| l.lines.len() > 1) else { return error_line(err) };
    let max = if verbose { MAX_ERROR_BYTES } else { 300 };
    let cut = |l: &String| if l.len() > max { format!("{}…", clip(l, max)) } else { l.clone() };
    let lines: Vec<String> = many.lines.iter().map(|l| format!("  {}", cut(&l.replace('\n', " ")))).collect();
    format!("{}:\n{}", many.head, lines.join("\n"))
}

/// An error's whole chain on one line, at most [`MAX_ERROR_BYTES`].
pub fn error_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}").replace('\n', " ");
    match text.len() > MAX_ERROR_BYTES {
        true => format!("{}… (cut from {} bytes)", clip(&text, MAX_ERROR_BYTES), text.len()),
        false => text,
    }
}

/// A character that does not show as itself: controls, format and bidi
/// characters, separators other than the space, unassigned, private and
/// surrogate code points (by general category), and the Hangul fillers,
/// letters that draw nothing.
fn is_invisible(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    let hidden = matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Unassigned
            | G::PrivateUse
            | G::Surrogate
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::SpaceSeparator
    );
    (hidden && c != ' ') || matches!(c, '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_spec() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(2150), "2.1 KiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(7260), "2h 1m");
        assert_eq!(human_duration(3 * 86400 + 7200), "3d 2h");
    }

    #[test]
    fn quote_cuts_long_text_and_says_how_long_it_was() {
        assert_eq!(quote("short", 10), "short");
        assert_eq!(quote(&"é".repeat(100), 7), format!("{}… (200 bytes)", "é".repeat(3)));
        assert_eq!(quote("a\nb", 10), "a\\nb");
    }

    #[test]
    fn escape_neutralises_terminal_tricks() {
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape("evil\u{202e}txt"), "evil\\u{202e}txt");
        for hidden in
            ['\u{2028}', '\u{2029}', '\u{61c}', '\u{ad}', '\u{2060}', '\u{e0041}', '\u{fffa}', '\u{180e}', '\u{3164}']
        {
            assert_eq!(escape(&format!("a{hidden}b")), format!("a\\u{{{:x}}}b", hidden as u32), "{:x}", hidden as u32);
        }
        assert_eq!(escape("a b"), "a b");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("plain/ünïcode.zip"), "plain/ünïcode.zip");
    }
}
