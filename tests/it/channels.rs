//! Channels: a snapshot promoted to `stable` is served at /channels/stable/
//! by the shipped nginx site while `current` moves on; `auto_promote` moves
//! a channel to the newest snapshot past its cooldown; a channel's snapshot
//! is never pruned; grace keeps at most three replaced snapshots.

use std::fs;

use crate::serve::{client, get, runtime, start_shipped_site_as_shipped};
use crate::support::Env;

fn version(env: &Env, v: &str) {
    env.write("releases/current.json", format!("{{\"version\":\"{v}\"}}\n").as_bytes());
    env.make_manifest();
}

#[test]
fn a_promoted_snapshot_is_served_on_its_channel_while_current_moves_on() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1", "--grace", "0"]).code, 0);
    let v1 = env.published_id().unwrap();
    let out = env.run(&["promote", "stable", "--root", root]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(&format!("channel stable now serves snapshot {v1}")), "{}", out.stderr);
    for v in ["11.3", "11.4"] {
        version(&env, v);
        assert_eq!(env.sync(&upstream.url(), &["--keep", "1", "--grace", "0"]).code, 0);
    }
    let ids = env.snapshot_ids();
    assert!(ids.contains(&v1), "keep 1, but stable names {v1}: {ids:?}");
    assert_eq!(ids.len(), 2, "{ids:?}");

    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}");
    let c = client(&env);
    runtime().block_on(async {
        let (status, body) = get(&c, &format!("{base}/channels/stable/releases/current.json")).await;
        assert_eq!((status, body), (200, b"{\"version\":\"11.2\"}\n".to_vec()));
        let (status, body) = get(&c, &format!("{base}/releases/current.json")).await;
        assert_eq!((status, body), (200, b"{\"version\":\"11.4\"}\n".to_vec()));
        let log = || fs::read_to_string(env.dir.path().join("nginx/logs/error.log")).unwrap_or_default();
        assert_eq!(get(&c, &format!("{base}/channels/stable/releases/")).await.0, 200, "a listing: {}", log());
        assert_eq!(get(&c, &format!("{base}/channels/none/releases/current.json")).await.0, 404);
    });
    let status = env.last_status();
    assert_eq!(status["channels"][0]["name"], "stable", "{status}");
    assert_eq!(status["channels"][0]["snapshot"], v1.as_str(), "{status}");

    // An unknown or damaged snapshot is never promoted; the link stays.
    let out = env.run(&["promote", "stable", "--root", root, "--snapshot", "20000101T000000Z"]);
    assert_eq!(out.code, 3, "{out:?}");
    let current = env.published_id().unwrap();
    fs::write(env.root.join("snapshots").join(&current).join("releases/current.json"), b"tampered\n").unwrap();
    let out = env.run(&["promote", "stable", "--root", root]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("is damaged"), "{}", out.stderr);
    let link = fs::read_link(env.root.join("channels/stable")).unwrap();
    assert_eq!(link, std::path::Path::new("../snapshots").join(&v1));
    let out = env.run(&["promote", "../x", "--root", root]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn auto_promote_points_a_channel_at_the_newest_snapshot_past_its_cooldown() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    let auto = ["--auto-promote", "stable=1h"];
    assert_eq!(env.sync(&upstream.url(), &auto).code, 0);
    let v1 = env.published_id().unwrap();
    assert!(!env.root.join("channels/stable").exists(), "nothing is an hour old yet");
    crate::support::age_snapshots(&env, "first_published_at", 2);
    version(&env, "11.3");
    assert_eq!(env.sync(&upstream.url(), &auto).code, 0);
    let v2 = env.published_id().unwrap();
    let stable = || fs::read_link(env.root.join("channels/stable")).unwrap();
    assert_eq!(stable(), std::path::Path::new("../snapshots").join(&v1), "v2 is too young");
    // An hour later (a run with nothing to do still moves it).
    crate::support::age_snapshots(&env, "first_published_at", 2);
    assert_eq!(env.sync(&upstream.url(), &auto).code, 0);
    assert_eq!(stable(), std::path::Path::new("../snapshots").join(&v2));
    let metrics = env.dir.path().join("m.prom");
    assert_eq!(
        env.sync(&upstream.url(), &[&auto[..], &["--metrics-file", metrics.to_str().unwrap()]].concat()).code,
        0
    );
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("upmirror_channel_age_seconds{channel=\"stable\"} "), "{text}");
}

#[test]
fn eight_publishes_within_the_grace_window_keep_at_most_three_more_than_keep() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    for v in 0..8 {
        version(&env, &format!("12.{v}"));
        assert_eq!(env.sync(&upstream.url(), &["--keep", "3"]).code, 0);
    }
    let ids = env.snapshot_ids();
    assert!(ids.len() <= 3 + 3, "{ids:?}");
    for n in 1..=3 {
        let link = env.root.join(format!("grace-{n}"));
        assert!(fs::metadata(&link).is_ok_and(|m| m.is_dir()), "grace-{n} resolves");
    }
}

#[test]
fn a_channel_moved_on_serves_the_files_it_left_until_its_grace_window_closes() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    let v1 = env.published_id().unwrap();
    assert_eq!(env.run(&["promote", "stable", "--root", root]).code, 0);
    env.remove("releases/11.2/core.zip");
    env.write("releases/11.3/core.zip", b"eleven three\n");
    env.make_manifest();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    assert_eq!(env.run(&["promote", "stable", "--root", root]).code, 0);
    let link = fs::read_link(env.root.join("channels/.grace/stable-1")).unwrap();
    assert_eq!(link, std::path::Path::new("../../snapshots").join(&v1));

    // keep 1, but the channel's grace link names v1.
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1", "--grace", "1h"]).code, 0);
    assert!(env.snapshot_ids().contains(&v1), "{:?}", env.snapshot_ids());

    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}/channels/stable");
    let c = client(&env);
    let old = crate::support::pseudo_random(300_000, 1);
    runtime().block_on(async {
        assert_eq!(get(&c, &format!("{base}/releases/11.2/core.zip")).await, (200, old));
        assert_eq!(get(&c, &format!("{base}/releases/11.3/core.zip")).await, (200, b"eleven three\n".to_vec()));
        assert_eq!(get(&c, &format!("{base}/releases/11.2/")).await.0, 200);
        assert_eq!(get(&c, &format!("{base}/nothing")).await.0, 404);
    });

    // The window closes: the link goes, and so does what it served.
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1", "--grace", "0"]).code, 0);
    assert!(fs::symlink_metadata(env.root.join("channels/.grace/stable-1")).is_err());
    runtime().block_on(async {
        assert_eq!(get(&c, &format!("{base}/releases/11.2/core.zip")).await.0, 404);
        assert_eq!(get(&c, &format!("{base}/releases/11.3/core.zip")).await.0, 200);
    });
}

#[test]
fn repair_mends_the_snapshot_a_channel_names() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    assert_eq!(env.run(&["promote", "stable", "--root", root]).code, 0);
    version(&env, "11.3");
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    // Damage in `current` is damage in `stable` too: the file is one inode.
    let original = fs::read(env.upstream.join("pool/p03.deb")).unwrap();
    fs::write(env.current().join("pool/p03.deb"), b"bit rot\n").unwrap();
    assert_eq!(fs::read(env.root.join("channels/stable/pool/p03.deb")).unwrap(), b"bit rot\n");
    let ca = env.pki.ca.to_str().unwrap();
    let out = env.run(&["verify", "--repair", "--root", root, "--upstream", &upstream.url(), "--ca-file", ca]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(fs::read(env.current().join("pool/p03.deb")).unwrap(), original);
    assert_eq!(fs::read(env.root.join("channels/stable/pool/p03.deb")).unwrap(), original, "{}", out.stderr);
}
