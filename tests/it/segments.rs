//! Large files in pieces: byte ranges fetched over several connections and
//! from several upstreams at once, resumed piece by piece after a kill, and
//! accepted only when the assembled whole matches the listing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Env, Fault, Options, Server, pseudo_random};

/// Nine pieces of 8 MiB.
const SIZE: usize = 72 << 20;
const BIG: &str = "/releases/big.iso";

fn env_with_big_file() -> Env {
    let env = Env::with_sample_tree();
    env.write("releases/big.iso", &pseudo_random(SIZE, 9));
    env.make_manifest();
    env
}

/// The `bytes=A-B` ranges of `server`'s requests for the large file, with
/// their answers; `None` for a request without `Range`.
fn ranges(server: &Server) -> Vec<(Option<(u64, u64)>, u16)> {
    let parse = |r: &str| {
        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    server.requests_for(BIG).iter().map(|r| (r.headers.get("range").and_then(|v| parse(v)), r.status)).collect()
}

/// Every byte of the file asked exactly once, in ranges answered 206.
fn assert_covered(mut got: Vec<(u64, u64)>, from: &[(u64, u64)]) {
    got.extend_from_slice(from);
    got.sort();
    let mut next = 0;
    for (a, b) in &got {
        assert_eq!(*a, next, "{got:?}");
        next = b + 1;
    }
    assert_eq!(next, SIZE as u64, "{got:?}");
}

fn asked(server: &Server) -> Vec<(u64, u64)> {
    ranges(server).into_iter().filter(|(_, status)| *status == 206).filter_map(|(r, _)| r).collect()
}

fn staging_leftovers(env: &Env) -> Vec<String> {
    walkdir::WalkDir::new(env.root.join(".upmirror/partial"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_large_file_arrives_in_ranges_over_several_connections() {
    let env = env_with_big_file();
    let server = env.serve();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = ranges(&server);
    assert_eq!(reqs.len(), 9, "one request per 8 MiB piece: {reqs:?}");
    assert!(reqs.iter().all(|(r, status)| r.is_some() && *status == 206), "{reqs:?}");
    assert_covered(asked(&server), &[]);
    env.assert_mirrors_upstream();
    assert_eq!(staging_leftovers(&env), Vec::<String>::new());
}

/// Start a sync whose pieces stall after 1 MiB each, and kill it once the
/// record beside the partial file satisfies `enough` (bounded wait).
fn kill_mid_range(env: &Env, server: &Server, enough: impl Fn(&[u64]) -> bool) {
    server.fault(BIG, Fault::StallAfter(1 << 20));
    let mut child = Command::new(env!("CARGO_BIN_EXE_upmirror"))
        .args(["sync", "--root", env.root.to_str().unwrap(), "--upstream", &server.url()])
        .args(["--ca-file", env.pki.ca.to_str().unwrap(), "--config", "/dev/null"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !enough(&recorded(env)) {
        assert!(Instant::now() < deadline, "the pieces never arrived: {:?}", ranges(server));
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_run_killed_mid_range_resumes_every_piece_where_it_stopped() {
    let env = env_with_big_file();
    let server = env.serve();
    // Eight pieces each receive 1 MiB, then the server holds them: kill the
    // run once the record shows most of it written (the rest waits in a
    // buffer of 64 KiB).
    let started = |r: &[u64]| r.iter().filter(|d| **d > 0).count();
    kill_mid_range(&env, &server, |r| r.iter().sum::<u64>() >= 6 << 20 && started(r) >= 8);
    assert_eq!(asked(&server).len(), 8, "{:?}", ranges(&server));
    let done = recorded(&env);

    server.clear_faults();
    server.clear_log();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let resumed = asked(&server);
    let piece = 8 << 20;
    for (k, d) in done.iter().enumerate() {
        let start = k as u64 * piece + d;
        assert!(resumed.iter().any(|(a, _)| *a == start), "piece {k} resumed at {start}: {resumed:?}");
    }
    assert!(done.iter().filter(|d| **d > 0).count() == 8, "{done:?}");
    let fetched: u64 = resumed.iter().map(|(a, b)| b + 1 - a).sum();
    assert_eq!(fetched, SIZE as u64 - done.iter().sum::<u64>(), "only what the killed run had not written");
    env.assert_mirrors_upstream();
}

/// The bytes of each piece the record in staging says are written.
fn recorded(env: &Env) -> Vec<u64> {
    let found = walkdir::WalkDir::new(env.root.join(".upmirror/partial"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "pieces"));
    let Some(bytes) = found.and_then(|e| std::fs::read(e.path()).ok()) else { return vec![] };
    bytes.chunks_exact(8).skip(1).map(|w| u64::from_le_bytes(w.try_into().unwrap())).collect()
}

#[test]
fn a_server_that_ignores_range_still_delivers_the_large_file_whole() {
    let env = env_with_big_file();
    let server = env.serve();
    server.fault(BIG, Fault::IgnoreRange);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = ranges(&server);
    assert!(reqs[0].0.is_some() && reqs[0].1 == 200, "a range answered with the whole file: {reqs:?}");
    assert_eq!(reqs.last(), Some(&(None, 200)), "then fetched whole: {reqs:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn a_206_for_another_range_than_asked_is_never_written() {
    let env = env_with_big_file();
    let server = env.serve();
    server.fault(BIG, Fault::WrongStart);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = ranges(&server);
    assert!(reqs.iter().any(|(r, status)| r.is_some() && *status == 206), "{reqs:?}");
    assert_eq!(reqs.last(), Some(&(None, 200)), "fetched whole after the wrong range: {reqs:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn pieces_come_from_every_upstream_at_once() {
    let env = env_with_big_file();
    let (a, b) = (env.serve(), env.serve());
    let out = env.sync_from(&[&a.url(), &b.url()], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let (from_a, from_b) = (asked(&a), asked(&b));
    assert!(!from_a.is_empty() && !from_b.is_empty(), "{from_a:?} {from_b:?}");
    assert_covered(from_a, &from_b);
    env.assert_mirrors_upstream();
}

#[test]
fn an_upstream_serving_other_bytes_is_dropped_and_the_file_ends_verified() {
    let env = env_with_big_file();
    let good = env.serve();
    // A second root with the same listing, whose large file has other bytes
    // of the same length.
    let other = env.dir.path().join("other");
    let copied = Command::new("cp").arg("-a").arg(&env.upstream).arg(&other).status().unwrap();
    assert!(copied.success());
    std::fs::write(other.join("releases/big.iso"), pseudo_random(SIZE, 10)).unwrap();
    let bad = Server::start(&other, &env.pki, Options::default());
    let out = env.sync_from(&[&good.url(), &bad.url()], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let from_bad: u64 = asked(&bad).iter().map(|(a, b)| b + 1 - a).sum();
    assert!(from_bad > 0, "the second root served pieces: {:?}", ranges(&bad));
    // Its pieces were asked again from the first, in ranges: never the whole file twice.
    assert!(ranges(&good).iter().all(|(r, status)| r.is_some() && *status == 206), "{:?}", ranges(&good));
    let fetched: u64 = asked(&good).iter().map(|(a, b)| b + 1 - a).sum::<u64>() + from_bad;
    assert_eq!(fetched, SIZE as u64 + from_bad, "the file once, and the wrong pieces again");
    let status = env.last_status();
    assert_eq!(status["upstreams"][1]["state"], "failed", "{status}");
    let said = status["upstreams"][1]["error"].as_str().unwrap();
    assert!(said.contains("sent pieces whose bytes do not match"), "{said}");
    env.assert_mirrors_upstream();
    assert_eq!(staging_leftovers(&env), Vec::<String>::new());
}

#[test]
fn a_damaged_partial_file_is_fetched_again_without_blaming_the_upstream() {
    let env = env_with_big_file();
    let server = env.serve();
    kill_mid_range(&env, &server, |r| r.first().copied().unwrap_or(0) >= 64 << 10);
    // A byte of what the killed run wrote goes bad on the disk.
    let partial = walkdir::WalkDir::new(env.root.join(".upmirror/partial"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_none())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(partial.path()).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(partial.path(), bytes).unwrap();

    server.clear_faults();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    assert_eq!(env.last_status()["upstreams"][0]["state"], "ok");
}
