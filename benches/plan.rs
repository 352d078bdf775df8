//! Planning at scale: a synthetic 1,000,000-entry manifest (published) and a
//! new listing that changes, adds and removes 1% each, parsed from JSON and
//! diffed. Prints the time of each step and the peak RSS.
//!
//!     cargo bench --bench plan

use std::time::{Instant, SystemTime};

use upmirror::manifest::{Digest, Entry, Manifest, RelPath};
use upmirror::plan;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let entry = |i: usize, salt: u8| Entry {
        path: RelPath::parse(&format!("pool/{:03}/{:03}/package-{i:07}.deb", i % 997, i % 89)).unwrap(),
        size: 1000 + i as u64,
        mtime: 1_700_000_000 + i as i64,
        sha256: Some(Digest([salt ^ (i as u8); 32])),
        local_mtime: None,
    };
    let published = Manifest::new(SystemTime::now(), (0..n).map(|i| entry(i, 0)).collect()).unwrap();
    let new_files = (0..n)
        .filter(|i| i % 100 != 1)
        .map(|i| entry(i, if i % 100 == 2 { 7 } else { 0 }))
        .chain((n..n + n / 100).map(|i| entry(i, 0)));
    let listing = Manifest::new(SystemTime::now(), new_files.collect()).unwrap();
    let (old_json, new_json) = (published.to_json(), listing.to_json());
    println!("{n} published entries: manifests of {} and {} MiB", old_json.len() >> 20, new_json.len() >> 20);

    let t = Instant::now();
    let old = Manifest::parse(&old_json).unwrap();
    let parse_old = t.elapsed();
    // The published manifest as a run reads it: from its file, as it parses.
    let file = std::env::temp_dir().join(format!("upmirror-plan-bench-{}.json", std::process::id()));
    std::fs::write(&file, &old_json).unwrap();
    let t = Instant::now();
    let read = Manifest::read(&file).unwrap();
    let read_old = t.elapsed();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(read.files.len(), old.files.len());
    drop(read);
    let t = Instant::now();
    let new = Manifest::parse(&new_json).unwrap();
    let parse_new = t.elapsed();
    let t = Instant::now();
    let p = plan::diff(new.files, &old.files, &upmirror::filter::Filter::all());
    let diff = t.elapsed();
    let s = p.summary();
    println!("parse published manifest  {:>8.3} s", parse_old.as_secs_f64());
    println!("  read from its file      {:>8.3} s", read_old.as_secs_f64());
    println!("parse new listing         {:>8.3} s", parse_new.as_secs_f64());
    println!("diff                      {:>8.3} s", diff.as_secs_f64());
    println!("total                     {:>8.3} s", (parse_old + parse_new + diff).as_secs_f64());
    println!("plan: {} added, {} changed, {} removed, {} kept", s.added, s.changed, s.removed, s.kept);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
}
