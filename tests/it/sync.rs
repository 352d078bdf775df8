//! `upmirror sync` end to end over HTTPS: publish, no-op, incremental,
//! dry-run, verification, guards and locking.

use std::fs;

use crate::support::{Env, Fault, MTIME, inode, pseudo_random};

#[test]
fn full_sync_publishes_a_byte_identical_tree_with_mtimes() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("published"), "{}", out.stderr);
    env.assert_mirrors_upstream();
    let target = fs::read_link(env.current()).unwrap();
    assert!(target.is_relative() && target.starts_with("snapshots"), "{target:?}");
    assert_eq!(fs::read(env.current().join("pool/p03.deb")).unwrap(), pseudo_random(1000 + 3 * 37, 3));
    env.assert_sentinel_intact();
}

#[test]
fn the_published_snapshot_carries_a_manifest_that_describes_it() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let theirs: serde_json::Value =
        serde_json::from_slice(&fs::read(env.upstream.join("upmirror-manifest.json")).unwrap()).unwrap();
    let ours: serde_json::Value =
        serde_json::from_slice(&fs::read(env.current().join("upmirror-manifest.json")).unwrap()).unwrap();
    assert_eq!(ours["files"], theirs["files"]);
    assert_eq!(ours["generated_at"], theirs["generated_at"]);
}

#[test]
fn a_rerun_with_no_upstream_change_is_one_conditional_request() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let first = env.snapshot_ids();
    server.clear_log();
    let out = env.sync(&server.url(), &["--quiet"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""), "--quiet no-change run prints nothing");
    let log = server.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].headers.contains_key("if-none-match"), "{log:?}");
    assert_eq!(log[0].status, 304);
    assert_eq!(env.snapshot_ids(), first, "no new snapshot");
}

#[test]
fn a_new_manifest_with_the_same_files_makes_no_snapshot_and_no_file_request() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-01-01T00:00:00Z");
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let first = env.snapshot_ids();
    env.set_generated_at("2026-06-01T00:00:00Z");
    env.edit_manifest(|t| t.replace("\"files\"", "\"comment\":\"regenerated\",\"files\""));
    server.clear_log();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(server.file_requests().is_empty(), "{:?}", server.file_requests());
    assert_eq!(env.snapshot_ids(), first);
}

#[test]
fn a_published_file_or_directory_gone_fails_the_next_build_naming_it_and_the_repair() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.current().canonicalize().unwrap();
    let ids = env.snapshot_ids();
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.make_manifest();
    fs::remove_file(published.join("pool/p01.deb")).unwrap();
    let out = env.sync(&server.url(), &[]);
    assert_ne!(out.code, 0, "{out:?}");
    for part in ["could not hardlink", "pool/p01.deb", "`upmirror verify --repair` mends the published snapshot"] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    fs::remove_dir_all(published.join("pool")).unwrap();
    let out = env.sync(&server.url(), &[]);
    assert_ne!(out.code, 0, "{out:?}");
    for part in ["could not open", "/pool (`upmirror verify --repair` mends the published snapshot)"] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    assert_eq!(env.current().canonicalize().unwrap(), published, "nothing published changes");
    assert_eq!(env.snapshot_ids(), ids, "no build is left behind");
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    let out = env.run(&["verify", "--repair", "--root", root, "--upstream", &server.url(), "--ca-file", ca]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    env.assert_mirrors_upstream();
}

#[test]
fn dry_run_lists_exactly_the_changes_and_sync_then_shares_unchanged_inodes() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let old = env.current().canonicalize().unwrap();
    env.write("releases/11.3/core.zip", &pseudo_random(5000, 9));
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.remove("pool/p07.deb");
    env.make_manifest();
    let before = crate::support::files(&env.root);

    let out = env.sync(&server.url(), &["--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[0].starts_with("+ releases/11.3/core.zip") && lines[0].ends_with("4.9 KiB"), "{}", lines[0]);
    assert!(lines[1].starts_with("~ releases/current.json") && lines[1].ends_with("19 B   (was 19 B)"), "{}", lines[1]);
    assert_eq!(lines[2], "- pool/p07.deb");
    assert_eq!(lines[3], "1 added, 1 changed, 1 removed · 4.9 KiB to download · published tree unchanged");
    assert_eq!(crate::support::files(&env.root), before, "dry-run wrote nothing");

    let json = env.sync(&server.url(), &["--dry-run", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["summary"]["download_bytes"], 5000 + 19);
    assert_eq!(doc["removed"][0], "pool/p07.deb");

    server.clear_log();
    let out = env.sync(&server.url(), &["--max-delete-percent", "50"]);
    assert_eq!(out.code, 0, "{out:?}");
    let fetched: Vec<String> = server.file_requests().into_iter().map(|r| r.path).collect();
    assert_eq!(fetched.len(), 2, "only the changed files are fetched: {fetched:?}");
    env.assert_mirrors_upstream();
    let new = env.current().canonicalize().unwrap();
    assert_ne!(new, old);
    assert_eq!(inode(&new.join("pool/p01.deb")), inode(&old.join("pool/p01.deb")), "unchanged file is hardlinked");
    assert_ne!(inode(&new.join("releases/current.json")), inode(&old.join("releases/current.json")));
    assert_eq!(
        fs::read(old.join("releases/current.json")).unwrap(),
        b"{\"version\":\"11.2\"}\n",
        "old snapshot untouched"
    );
}

#[test]
fn corrupted_bytes_fail_the_run_and_keep_the_old_snapshot() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    env.write("pool/p02.deb", b"a new version");
    env.make_manifest();
    server.fault("/pool/p02.deb", Fault::Corrupt);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sha256 mismatch") && out.stderr.contains("pool/p02.deb"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert_eq!(env.published_id(), published);
    assert_eq!(env.snapshot_ids().len(), 1);
    let status: serde_json::Value = env.last_status();
    assert_eq!(status["outcome"], "failed");
    assert_eq!(status["exit_code"], 1);
}

#[test]
fn a_body_longer_than_listed_is_rejected() {
    let env = Env::with_sample_tree();
    env.edit_manifest(|t| {
        t.replace("\"path\":\"pool/p00.deb\",\"size\":1000", "\"path\":\"pool/p00.deb\",\"size\":999")
    });
    let server = env.serve();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("longer than the listed 999 bytes"), "{}", out.stderr);
    assert!(!env.current().exists());
}

#[test]
fn a_missing_file_on_the_upstream_fails_the_run_with_its_url() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p05.deb", Fault::Status(404));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("{}pool/p05.deb: HTTP 404", server.url())), "{}", out.stderr);
    assert!(!env.current().exists());
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn hostile_manifest_paths_reject_the_whole_listing() {
    for bad in ["../x", "/etc/cron.d/x", "a/../../b", "a\\\\..\\\\b", "a\\u0000b", "a//b", "a/./b", "ok\\u001b[2J"] {
        let env = Env::with_sample_tree();
        env.edit_manifest(|t| t.replacen("\"path\":\"empty\"", &format!("\"path\":\"{bad}\""), 1));
        let server = env.serve();
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 1, "{bad}: {out:?}");
        assert!(out.stderr.contains("path"), "{bad}: {}", out.stderr);
        assert!(!out.stderr.contains('\u{1b}'), "escape sequences are not echoed");
        assert!(server.file_requests().is_empty(), "{bad}: nothing fetched");
        assert!(!env.current().exists() && env.snapshot_ids().is_empty());
        assert!(!env.dir.path().join("x").exists() && !env.dir.path().join("b").exists());
        env.assert_sentinel_intact();
    }
}

#[test]
fn duplicate_paths_and_file_directory_conflicts_reject_the_listing() {
    for (from, to) in [("\"path\":\"empty\"", "\"path\":\".treeinfo\""), ("\"path\":\"empty\"", "\"path\":\"pool\"")] {
        let env = Env::with_sample_tree();
        env.edit_manifest(|t| t.replacen(from, to, 1));
        let server = env.serve();
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains("twice") || out.stderr.contains("as a file and as the directory"),
            "{}",
            out.stderr
        );
        assert!(env.snapshot_ids().is_empty());
    }
}

#[test]
fn a_listing_that_is_not_a_manifest_is_an_error_never_an_empty_tree() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    env.edit_manifest(|_| "<html><body>Please log in to the hotel wifi</body></html>".into());
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not a valid manifest"), "{}", out.stderr);
    assert_eq!(env.published_id(), published);
    env.assert_mirrors_upstream();
}

#[test]
fn the_delete_guard_refuses_with_3_and_force_overrides() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    for i in 0..10 {
        env.remove(&format!("pool/p{i:02}.deb"));
    }
    env.make_manifest();
    let out = env.sync(&server.url(), &["--quiet"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("removes 10 of 26 published files"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
    assert_eq!(env.published_id(), published);
    let out = env.sync(&server.url(), &["--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn an_older_listing_is_refused_unless_rollback_is_allowed() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-11-24T19:00:00Z");
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    env.write("releases/current.json", b"old");
    env.make_manifest();
    env.set_generated_at("2026-11-01T00:00:00Z");
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("before the published one"), "{}", out.stderr);
    let out = env.sync(&server.url(), &["--allow-rollback"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(fs::read(env.current().join("releases/current.json")).unwrap(), b"old");
}

#[test]
fn a_listing_from_the_far_future_is_refused() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2999-01-01T00:00:00Z");
    let server = env.serve();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("in the future"), "{}", out.stderr);
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn the_free_space_guard_refuses_before_any_download() {
    let env = Env::with_sample_tree();
    env.edit_manifest(|t| t.replace("\"path\":\"empty\",\"size\":0", "\"path\":\"empty\",\"size\":9000000000000000"));
    let server = env.serve();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("free"), "{}", out.stderr);
    assert!(server.file_requests().is_empty());
}

#[test]
fn a_second_sync_exits_75_while_the_lock_is_held() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let lock = fs::File::options().write(true).open(env.root.join(".upmirror/lock")).unwrap();
    lock.try_lock().unwrap();
    server.clear_log();
    let out = env.sync(&server.url(), &["--quiet"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (75, "", ""), "{out:?}");
    assert!(server.log().is_empty(), "no request while locked");
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 75);
    assert!(out.stderr.contains("lock"), "{}", out.stderr);
    drop(lock);
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
}

#[test]
fn old_snapshots_are_pruned_to_keep() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    for i in 0..4 {
        env.write("releases/current.json", format!("v{i}").as_bytes());
        env.make_manifest();
        let out = env.sync(&server.url(), &["--keep", "2", "--grace", "0"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&env.published_id().unwrap()), "{ids:?}");
    assert_eq!(fs::read(env.current().join("releases/current.json")).unwrap(), b"v3");
}

#[test]
fn a_file_upstream_mirrors_a_local_tree() {
    let env = Env::with_sample_tree();
    let url = format!("file://{}", env.upstream.display());
    let out = env.sync(&url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    assert_eq!(env.sync(&url, &[]).code, 0);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn mtimes_from_the_listing_are_kept() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let meta = fs::metadata(env.current().join("releases/11.2/core.zip")).unwrap();
    assert_eq!(filetime::FileTime::from_last_modification_time(&meta).unix_seconds(), MTIME);
}

#[test]
fn json_output_reports_the_published_snapshot() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let out = env.sync(&server.url(), &["--json", "--quiet"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "published");
    assert_eq!(doc["added"], 26);
    assert_eq!(doc["snapshot"].as_str(), env.published_id().as_deref());
    assert_eq!(doc["bytes_downloaded_total"], doc["download_bytes"], "the totals the status files carry");
}
