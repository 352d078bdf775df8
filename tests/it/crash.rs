//! Crash safety and on-disk integrity: a process stopped at every step (by
//! failpoints and by kill -9 at random moments), SIGTERM, a full disk,
//! symlinks planted in the store, `verify --repair` and `rollback`.
//!
//! After every case: `current` is absent (nothing was ever published) or a
//! complete snapshot that verifies clean (I1); nothing outside the root
//! changed (I2); a following clean run converges (I3).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::support::{Env, Fault, inode, pseudo_random};

fn upstream_v2(env: &Env) {
    env.write("releases/11.3/core.zip", &pseudo_random(400_000, 33));
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.remove("pool/p00.deb");
    env.make_manifest();
}

/// I1: `current` is absent or a complete, verified snapshot; no leftovers
/// are published.
fn assert_published_is_whole(env: &Env) {
    if !env.current().exists() {
        assert!(fs::symlink_metadata(env.current()).is_err(), "current is a dangling link");
        return;
    }
    let out = env.run(&["verify", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 0, "published snapshot does not verify: {out:?}");
}

/// I3: a clean run converges to the upstream and leaves no leftovers.
fn assert_converges(env: &Env, url: &str) {
    let out = env.sync(url, &["--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let meta: Vec<String> = fs::read_dir(env.root.join(".upmirror"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!meta.iter().any(|n| n.starts_with("build-")), "{meta:?}");
    assert!(!env.root.join(".current.tmp").exists());
}

#[test]
fn a_process_stopped_at_every_step_never_breaks_current() {
    let points = ["fetched", "build-link", "build-done", "publish-before-swap", "publish-after-swap", "prune"];
    for point in points {
        let env = Env::with_sample_tree();
        let server = env.serve();
        assert_eq!(env.sync(&server.url(), &[]).code, 0);
        let v1 = env.published_id();
        upstream_v2(&env);
        let out = env.sync_env(&server.url(), &["--keep", "1", "--grace", "0s"], &[("UPMIRROR_FAILPOINT", point)]);
        assert_ne!(out.code, 0, "{point}: {out:?}");
        assert!(out.stderr.contains(&format!("failpoint {point}")), "{point} was not reached: {}", out.stderr);
        assert_published_is_whole(&env);
        if ["fetched", "build-link", "build-done", "publish-before-swap"].contains(&point) {
            assert_eq!(env.published_id(), v1, "{point}: nothing new is published before the swap");
        }
        env.assert_sentinel_intact();
        assert_converges(&env, &server.url());
    }
}

#[test]
fn a_first_run_stopped_before_the_swap_publishes_nothing() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let out = env.sync_env(&server.url(), &[], &[("UPMIRROR_FAILPOINT", "publish-before-swap")]);
    assert_ne!(out.code, 0);
    assert!(fs::symlink_metadata(env.current()).is_err(), "no current before the first swap");
    assert_converges(&env, &server.url());
}

#[test]
fn kill_9_at_random_moments_never_breaks_current() {
    let env = Env::new();
    for i in 0..40 {
        env.write(&format!("big/f{i:02}.bin"), &pseudo_random(150_000, i));
    }
    for i in 0..200 {
        env.write(&format!("small/{}/s{i:03}.txt", i % 10), format!("file {i}\n").as_bytes());
    }
    env.make_manifest();
    let server = env.serve();
    let binary = env!("CARGO_BIN_EXE_upmirror");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    for round in 0..16 {
        // Change a tenth of the big files each round, so every run has work:
        // about 1.5 MB at 2 MiB/s, longer than the longest delay below.
        for f in 0..10 {
            env.write(
                &format!("big/f{:02}.bin", (round as usize * 10 + f) % 40),
                &pseudo_random(150_000, 1000 + round * 10 + f as u64),
            );
        }
        env.write(&format!("small/0/s{round:03}.txt"), format!("round {round}\n").as_bytes());
        env.make_manifest();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 700);
        let mut child = Command::new(binary)
            .args([
                "sync",
                "--force",
                "--keep",
                "2",
                "--bandwidth-limit",
                "8MiB/s",
                "--root",
                env.root.to_str().unwrap(),
            ])
            .args(["--upstream", &server.url(), "--ca-file", env.pki.ca.to_str().unwrap(), "--config", "/dev/null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The moment of the kill is the experiment, not a synchronisation.
        let start = Instant::now();
        while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert_published_is_whole(&env);
        env.assert_sentinel_intact();
    }
    eprintln!("kill -9: {kills} of 16 runs killed mid-way, every one left a whole current");
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    assert_converges(&env, &server.url());
}

/// Start a sync in the background with `slow` dripping, and return once
/// that file is being received (bounded).
fn sync_in_background(env: &Env, server: &crate::support::Server, slow: &str, stderr: Stdio) -> std::process::Child {
    server.fault(slow, Fault::Drip(50));
    let before = server.requests_for(slow).len();
    let child = Command::new(env!("CARGO_BIN_EXE_upmirror"))
        .args(["sync", "--root", env.root.to_str().unwrap(), "--upstream", &server.url()])
        .args(["--ca-file", env.pki.ca.to_str().unwrap(), "--config", "/dev/null"])
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests_for(slow).len() <= before {
        assert!(Instant::now() < deadline, "the download of {slow} never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_signal_aborts_cleanly_with_its_exit_code_and_releases_the_lock() {
    use rustix::process::Signal;
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let v1 = env.published_id();
    upstream_v2(&env);
    for (signal, code, name) in [(Signal::TERM, 143, "SIGTERM"), (Signal::INT, 130, "SIGINT")] {
        server.clear_log();
        let child = sync_in_background(&env, &server, "/releases/11.3/core.zip", Stdio::piped());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "128 + {name}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("interrupted by {name}")), "{out:?}");
        assert_eq!(env.published_id(), v1);
        let status: serde_json::Value = env.last_status();
        assert_eq!(status["outcome"], "interrupted");
        assert_eq!(status["exit_code"], code);
    }
    server.clear_faults();
    assert_converges(&env, &server.url());
}

#[test]
fn a_full_disk_fails_the_run_and_the_next_run_succeeds_once_there_is_room() {
    as_root("mounting a small tmpfs");
    let env = Env::new();
    for i in 0..300 {
        env.write(&format!("d{}/f{i:03}.txt", i % 7), format!("small file {i}\n").as_bytes());
    }
    env.make_manifest();
    let server = env.serve();
    fs::create_dir(&env.root).unwrap();
    let mount = Mount::tmpfs(&env.root, "size=600k");
    let out = env.sync(&server.url(), &["--free-space-margin", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    // The cause first; that the status could not be recorded follows from it.
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("No space left") && !first.contains("not recorded"), "{}", out.stderr);
    assert!(fs::symlink_metadata(env.current()).is_err());
    mount.resize("16m");
    let out = env.sync(&server.url(), &["--free-space-margin", "0"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn what_a_run_already_downloaded_counts_as_room_for_the_next() {
    as_root("mounting a small tmpfs");
    let env = Env::new();
    env.write("big.iso", &crate::support::pseudo_random(3 << 20, 7));
    env.make_manifest();
    let server = env.serve();
    fs::create_dir(&env.root).unwrap();
    let _mount = Mount::tmpfs(&env.root, "size=4m");
    // The connection drops after 2 MiB: they stay as a partial download.
    server.fault("/big.iso", crate::support::Fault::ResetAfter(2 << 20));
    let out = env.sync(&server.url(), &["--free-space-margin", "0", "--retries", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    server.clear_faults();
    // 3 MiB to fetch with under 2 MiB free: the 2 MiB on disk count.
    let out = env.sync(&server.url(), &["--free-space-margin", "0"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

/// Whether the test runs as root; says why it is skipped otherwise.
/// These tests need root; they fail, never skip, without it.
fn as_root(needs: &str) {
    assert!(rustix::process::geteuid().is_root(), "{needs} needs root: run ./test.sh as root");
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, options: &str) -> Mount {
        let options = format!("mode=0755,{options}");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(at).status().unwrap();
        assert!(ok.success(), "mount tmpfs failed");
        Mount(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(ok.success(), "remount failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The staging name the fetcher uses for a manifest entry.
fn staging_name(path: &str, size: u64, mtime: i64, sha: &str) -> String {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update(format!("\0{size}\0{mtime}\0{sha}").as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn links_planted_in_the_store_never_redirect_a_write() {
    // Every staging file and validator replaced by a symlink, then by a
    // hardlink, to a file outside the root: each is unlinked, never written
    // through or read, and the run publishes what the upstream has.
    let plants: [fn(&Path, &Path) -> std::io::Result<()>; 2] = [|a, b| symlink(a, b), |a, b| fs::hard_link(a, b)];
    for plant in plants {
        let env = Env::with_sample_tree();
        let server = env.serve();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(env.upstream.join("upmirror-manifest.json")).unwrap()).unwrap();
        fs::create_dir_all(env.root.join(".upmirror/partial")).unwrap();
        for f in manifest["files"].as_array().unwrap() {
            let name = staging_name(
                f["path"].as_str().unwrap(),
                f["size"].as_u64().unwrap(),
                f["mtime"].as_i64().unwrap(),
                f["sha256"].as_str().unwrap(),
            );
            let shard = env.root.join(".upmirror/partial").join(&name[..2]);
            fs::create_dir_all(&shard).unwrap();
            plant(&env.sentinel, &shard.join(&name)).unwrap();
            plant(&env.sentinel, &shard.join(format!("{name}.validator"))).unwrap();
        }
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 0, "{out:?}");
        env.assert_sentinel_intact();
        env.assert_mirrors_upstream();
        for r in server.log() {
            assert!(
                !r.headers.get("if-range").is_some_and(|v| v.contains("never change")),
                "a planted validator was read"
            );
        }
    }

    // The staging directory itself replaced by a symlink.
    let env = Env::with_sample_tree();
    let server = env.serve();
    let outside = env.dir.path().join("other");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(env.root.join(".upmirror")).unwrap();
    symlink(&outside, env.root.join(".upmirror/partial")).unwrap();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is a symlink"), "{}", out.stderr);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the link");

    // A half-built snapshot left with a symlink inside: removed, not followed.
    let env = Env::with_sample_tree();
    let server = env.serve();
    fs::create_dir_all(env.root.join(".upmirror/build-20260101T000000Z")).unwrap();
    symlink(env.dir.path(), env.root.join(".upmirror/build-20260101T000000Z/escape")).unwrap();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    assert!(!env.root.join(".upmirror/build-20260101T000000Z").exists());
    env.assert_sentinel_intact();
    assert!(env.upstream.join("upmirror-manifest.json").exists());
}

#[test]
fn a_current_that_is_not_a_link_into_snapshots_is_refused_not_repaired() {
    type Make = fn(&Env);
    let cases: [(&str, Make); 3] = [
        ("is not a symlink", |env| fs::create_dir_all(env.current()).unwrap()),
        ("not a snapshot directory", |env| symlink("snapshots/20260101T000000Z", env.current()).unwrap()),
        ("not to snapshots/<id>", |env| symlink("/etc", env.current()).unwrap()),
    ];
    for (message, make) in cases {
        let env = Env::with_sample_tree();
        let server = env.serve();
        fs::create_dir_all(&env.root).unwrap();
        make(&env);
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(message), "{message}: {}", out.stderr);
        assert!(env.snapshot_ids().is_empty(), "nothing built");
    }
}

#[test]
fn verify_finds_damage_and_repair_publishes_new_inodes_leaving_old_snapshots_alone() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let old = env.current().canonicalize().unwrap();
    upstream_v2(&env);
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let cur = env.current().canonicalize().unwrap();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.run(&["verify", "--root", root]).code, 0, "clean to begin with");

    // Damage only files the current snapshot does not share with the old one.
    let mut core = fs::read(cur.join("releases/11.3/core.zip")).unwrap();
    core[1000] ^= 1;
    fs::write(cur.join("releases/11.3/core.zip"), &core).unwrap();
    fs::write(cur.join("releases/current.json"), b"{\"ver").unwrap();
    fs::remove_file(cur.join("pool/p05.deb")).unwrap_or(()); // shared with old: its link in cur only
    fs::write(cur.join("stray.txt"), b"not listed").unwrap();
    let before_old = crate::support::files(&old);

    let out = env.run(&["verify", "--root", root]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines.iter().any(|l| l.starts_with("digest") && l.contains("releases/11.3/core.zip")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("size") && l.contains("releases/current.json")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("missing") && l.contains("pool/p05.deb")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("extra") && l.contains("stray.txt")), "{lines:?}");

    let damaged_inode = inode(&cur.join("releases/11.3/core.zip"));
    let out = env.run(&[
        "verify",
        "--repair",
        "--root",
        root,
        "--upstream",
        &server.url(),
        "--ca-file",
        env.pki.ca.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // The same files keep their id: the mended tree takes the damaged one's place.
    let repaired = env.current().canonicalize().unwrap();
    assert_eq!(repaired, cur, "the same id");
    assert_eq!(env.snapshot_ids().len(), 2, "no third snapshot");
    assert_ne!(inode(&repaired.join("releases/11.3/core.zip")), damaged_inode);
    assert!(!repaired.join("stray.txt").exists());
    assert_eq!(env.run(&["verify", "--root", root]).code, 0);
    env.assert_mirrors_upstream();
    assert_eq!(crate::support::files(&old), before_old, "the older snapshot is untouched");
}

#[test]
fn rollback_republishes_the_previous_snapshot_and_refuses_that_listing_until_a_newer_one() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-01-01T00:00:00Z");
    let server = env.serve();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let v1 = env.published_id().unwrap();
    let out = env.run(&["rollback", "--root", root]);
    assert_eq!(out.code, 1, "one snapshot: nothing to roll back to: {out:?}");
    assert!(out.stderr.contains("no snapshot older"), "{}", out.stderr);

    upstream_v2(&env);
    env.set_generated_at("2026-02-01T00:00:00Z");
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let v2 = env.published_id().unwrap();
    let out = env.run(&["rollback", "--root", root]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.published_id().unwrap(), v1);

    // The upstream still offers the rolled-back listing: a held state, not
    // a refusal, so hourly runs do not fire the refusal and staleness alerts.
    let metrics = env.dir.path().join("metrics.prom");
    let out = env.sync(&server.url(), &["--quiet", "--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, 0, "held: {out:?}");
    assert!(out.stderr.is_empty(), "--quiet prints nothing for a held run: {}", out.stderr);
    assert_eq!(env.published_id().unwrap(), v1);
    let status: serde_json::Value = env.last_status();
    assert_eq!(status["outcome"], "held");
    assert!(status["held"].as_str().unwrap().contains("rolled back"), "{status}");
    let metrics = fs::read_to_string(&metrics).unwrap();
    assert!(
        metrics.contains("\nupmirror_held 1\n") && metrics.contains("\nupmirror_last_run_exit_code 0\n"),
        "{metrics}"
    );
    let public: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.join("public/status.json")).unwrap()).unwrap();
    assert_eq!(public["last_success"]["outcome"], "held", "a held run counts as synced");

    env.write("releases/current.json", b"{\"version\":\"11.4\"}\n");
    env.make_manifest();
    env.set_generated_at("2026-03-01T00:00:00Z");
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "the next newer listing is published: {out:?}");
    let v3 = env.published_id().unwrap();
    assert!(v3 != v1 && v3 != v2);
    env.assert_mirrors_upstream();
}

#[test]
fn status_reports_the_published_snapshot_and_the_last_run() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let root = env.root.to_str().unwrap();
    let out = env.run(&["status", "--root", root]);
    assert_eq!(out.code, 2, "a root that does not exist is unknown: {out:?}");
    assert!(out.stderr.contains("is not a mirror root"), "{}", out.stderr);
    assert_eq!(env.run(&["status", "--root", root, "--check"]).code, 2);
    assert_eq!(env.run(&["init", root]).code, 0);
    let out = env.run(&["status", "--root", root]);
    assert!(out.code == 0 && out.stdout.contains("published   nothing yet"), "{out:?}");
    let out = env.run(&["status", "--root", root, "--check"]);
    assert_eq!(out.code, 1, "nothing recorded yet: {out:?}");
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let out = env.run(&["status", "--root", root, "--check"]);
    assert!(out.code == 0 && out.stdout.starts_with("ok: published"), "{out:?}");
    let out = env.run(&["status", "--root", root, "--check", "--stale-after", "1s"]);
    assert_eq!(out.code, 0, "fresh within a second: {out:?}");
    server.fault("/pool/p01.deb", Fault::Status(500));
    env.write("pool/p01.deb", b"new");
    env.make_manifest();
    assert_eq!(env.sync(&server.url(), &["--retries", "0"]).code, 1);
    let out = env.run(&["status", "--root", root, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["published"]["id"].as_str(), env.published_id().as_deref());
    assert_eq!(doc["published"]["files"], 26);
    assert_eq!(doc["last_run"]["outcome"], "failed");
    assert!(doc["last_run"]["error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(doc["snapshots"].as_array().unwrap().len(), 1);
    assert!(doc["mirror_bytes"].as_u64().unwrap() > 300_000);
    let text = env.run(&["status", "--root", root]).stdout;
    assert!(text.contains("last run    failed") && text.contains("(current)"), "{text}");
    let out = env.run(&["status", "--root", root, "--check"]);
    assert!(out.code == 1 && out.stderr.contains("the last run failed (exit 1)"), "{out:?}");

    // A run in progress shows with its pid.
    let mut child = sync_in_background(&env, &server, "/pool/p01.deb", Stdio::null());
    let text = env.run(&["status", "--root", root]).stdout;
    let lock = fs::read_to_string(env.root.join(".upmirror/lock")).unwrap();
    assert!(text.contains(&format!("running     a run (pid {})", child.id())), "{text} lock: {lock:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_inode_preflight_refuses_before_any_download() {
    as_root("mounting a small tmpfs");
    let env = Env::new();
    for i in 0..200 {
        env.write(&format!("f{i:03}.txt"), b"x");
    }
    env.make_manifest();
    let server = env.serve();
    fs::create_dir(&env.root).unwrap();
    let _mount = Mount::tmpfs(&env.root, "size=16m,nr_inodes=100");
    let out = env.sync(&server.url(), &["--free-space-margin", "0"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("inodes"), "{}", out.stderr);
    assert!(server.file_requests().is_empty());
}

#[test]
fn dry_run_writes_nothing_even_on_a_read_only_root() {
    as_root("a read-only bind mount");
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    upstream_v2(&env);
    let bind = |args: &[&str]| {
        assert!(Command::new("mount").args(args).arg(&env.root).arg(&env.root).status().unwrap().success())
    };
    bind(&["--bind"]);
    let _mount = Mount(env.root.clone());
    assert!(Command::new("mount").args(["-o", "remount,ro,bind"]).arg(&env.root).status().unwrap().success());
    let out = env.sync(&server.url(), &["--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("+ releases/11.3/core.zip"), "{}", out.stdout);
}

#[test]
fn a_failed_repair_is_recorded_as_failed_and_publishes_nothing() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    assert_eq!(env.last_status()["outcome"], "published");
    let cur = env.current().canonicalize().unwrap();
    fs::write(cur.join("pool/p03.deb"), b"damaged").unwrap();
    server.fault("/pool/p03.deb", Fault::Status(500));
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    let repair = ["verify", "--repair", "--root", root, "--upstream", &server.url(), "--ca-file", ca];
    let out = env.run(&[&repair[..], &["--retries", "0"]].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.published_id(), published, "nothing published");
    let status = env.last_status();
    assert_eq!(status["outcome"], "failed", "{status}");
    assert_eq!(status["exit_code"], 1);
    assert!(status["error"].as_str().unwrap().contains("pool/p03.deb"), "{status}");
    assert_eq!(status["upstreams"][0]["state"], "failed", "{status}");

    server.clear_faults();
    assert_eq!(env.run(&repair).code, 0);
    assert_eq!(env.last_status()["outcome"], "repaired");
    assert_eq!(env.run(&["verify", "--root", root]).code, 0);
}

#[test]
fn a_panic_in_a_stage_is_recorded_as_a_failure_and_changes_nothing() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    upstream_v2(&env);
    let out = env.sync_env(&server.url(), &[], &[("UPMIRROR_FAILPOINT", "fetched:panic")]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("a stage failed unexpectedly"), "{}", out.stderr);
    assert_eq!(env.published_id(), published);
    let status = env.last_status();
    assert_eq!(status["outcome"], "failed", "{status}");
    assert!(status["error"].as_str().unwrap().contains("failpoint fetched"), "{status}");
    assert_converges(&env, &server.url());
}

#[test]
fn a_rollback_is_recorded_with_the_snapshot_it_published() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let v1 = env.published_id().unwrap();
    upstream_v2(&env);
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    assert_eq!(env.run(&["rollback", "--root", env.root.to_str().unwrap()]).code, 0);
    let status = env.last_status();
    assert_eq!(status["outcome"], "rolled-back", "{status}");
    assert_eq!(status["snapshot"], v1.as_str());
    assert_eq!(status["published_files"], 26);
}

#[test]
fn a_failure_after_the_swap_is_a_warning_and_the_state_is_saved() {
    as_root("a mount inside an old snapshot");
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &["--keep", "1", "--grace", "0s"]).code, 0);
    let v1 = env.published_id().unwrap();
    // A busy mount point inside the old snapshot: pruning it fails (EBUSY).
    let busy = env.root.join("snapshots").join(&v1).join("busy");
    fs::create_dir(&busy).unwrap();
    let _mount = Mount::tmpfs(&busy, "size=1m");
    upstream_v2(&env);
    let out = env.sync(&server.url(), &["--keep", "1", "--grace", "0s"]);
    assert_eq!(out.code, 0, "the snapshot is published: {out:?}");
    assert!(out.stderr.contains("is published, but pruning old snapshots failed"), "{}", out.stderr);
    let v2 = env.published_id().unwrap();
    assert_ne!(v1, v2);
    let status = env.last_status();
    assert_eq!(status["outcome"], "published", "{status}");
    assert_eq!(status["warnings"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(env.snapshot_ids(), std::slice::from_ref(&v2), "the old snapshot left snapshots/ whole");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.join(".upmirror/state.json")).unwrap()).unwrap();
    assert!(state["snapshots"][&v2].is_object(), "the state records what was published: {state}");

    // The stuck leftover never blocks a later run: the next one is a 304.
    server.clear_log();
    let out = env.sync(&server.url(), &["--keep", "1", "--grace", "0s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("a leftover of an earlier run stays"), "{}", out.stderr);
    assert_eq!(server.log().iter().map(|r| r.status).collect::<Vec<_>>(), [304]);
    let trash = env.root.join(".upmirror").join(format!("trash-{v1}"));
    assert!(Command::new("umount").arg(trash.join("busy")).status().unwrap().success());
    let out = env.sync(&server.url(), &["--keep", "1", "--grace", "0s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!trash.exists(), "removed once it could be");
}

#[test]
fn a_store_another_user_could_write_into_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    for dir in ["", "snapshots", ".upmirror", ".upmirror/partial", "public"] {
        let path = env.root.join(dir);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o775)).unwrap();
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 2, "{dir}: {out:?}");
        assert!(
            out.stderr.contains("writable by group or others") && out.stderr.contains("chmod go-w"),
            "{}",
            out.stderr
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::chown(&env.root, Some(4242), None).unwrap();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("owned by uid 4242"), "{}", out.stderr);
    std::os::unix::fs::chown(&env.root, Some(0), None).unwrap();
    assert_eq!(env.published_id(), published);

    // Private state is private; what nginx serves is readable.
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let mode = |rel: &str| fs::metadata(env.root.join(rel)).unwrap().permissions().mode() & 0o777;
    for private in [".upmirror/status.json", ".upmirror/history.json", ".upmirror/state.json"] {
        assert_eq!(mode(private), 0o600, "{private}");
    }
    assert_eq!(mode("public/status.json"), 0o644);

    // The lock is never opened through a symlink.
    let elsewhere = env.dir.path().join("created-through-the-lock");
    fs::remove_file(env.root.join(".upmirror/lock")).unwrap();
    symlink(&elsewhere, env.root.join(".upmirror/lock")).unwrap();
    assert_eq!(env.sync(&server.url(), &[]).code, 1);
    assert!(!elsewhere.exists(), "nothing created through the planted link");
}

/// SIGTERM to a run: it ends with 143 within two seconds, nothing published.
fn stop_at_once(env: &Env, stage: &str, child: std::process::Child, published: &Option<String>) {
    let signalled = Instant::now();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{stage}: {out:?}");
    assert!(signalled.elapsed() < Duration::from_secs(2), "{stage}: took {:?}", signalled.elapsed());
    assert_eq!(&env.published_id(), published, "{stage}: nothing published");
}

#[test]
fn a_sigterm_in_the_listing_or_a_hook_ends_the_run_at_once() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let v1 = env.published_id();
    upstream_v2(&env);
    // The listing trickles in (one byte every 50 ms).
    let listing = sync_in_background(&env, &server, "/upmirror-manifest.json", Stdio::piped());
    stop_at_once(&env, "listing", listing, &v1);

    // A pre_publish hook that takes its time, and says when it started.
    server.clear_faults();
    let started = env.dir.path().join("hook-started");
    let hook = env.dir.path().join("slow-hook");
    fs::write(&hook, format!("#!/bin/sh\ntouch {}\nsleep 600\n", started.display())).unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_upmirror"))
        .args(["sync", "--root", env.root.to_str().unwrap(), "--upstream", &server.url()])
        .args(["--ca-file", env.pki.ca.to_str().unwrap(), "--config", "/dev/null"])
        .args(["--pre-publish", hook.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the hook never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop_at_once(&env, "pre_publish", child, &v1);
}
