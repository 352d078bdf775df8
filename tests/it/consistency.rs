//! Consistency for clients and for the mirror itself: validators are not
//! trusted forever, damage is never brought back, and clients that make
//! several requests see one snapshot.

use std::fs;

use std::os::unix::fs::FileExt;

use filetime::FileTime;

use crate::support::Env;

/// Rewrite `rel` and the manifest with the same sizes and mtimes, as a
/// vendor's build can within one second: nginx's `mtime-size` ETag is unchanged.
fn rewrite_in_the_same_second(env: &Env, rel: &str, bytes: &[u8]) {
    let manifest = env.upstream.join("upmirror-manifest.json");
    let (file_time, manifest_time) = (mtime(&env.upstream.join(rel)), mtime(&manifest));
    let before = fs::metadata(&manifest).unwrap().len();
    env.write(rel, bytes);
    filetime::set_file_mtime(env.upstream.join(rel), file_time).unwrap();
    env.make_manifest();
    assert_eq!(fs::metadata(&manifest).unwrap().len(), before, "same size");
    filetime::set_file_mtime(&manifest, manifest_time).unwrap();
}

fn mtime(path: &std::path::Path) -> FileTime {
    FileTime::from_last_modification_time(&fs::metadata(path).unwrap())
}

/// Set the upstream manifest's mtime `secs` from now.
fn manifest_written_at(env: &Env, secs: i64) {
    let now = FileTime::now().unix_seconds();
    filetime::set_file_mtime(env.upstream.join("upmirror-manifest.json"), FileTime::from_unix_time(now + secs, 0))
        .unwrap();
}

#[test]
fn a_listing_fetched_in_the_second_it_was_written_is_fetched_whole_next_time() {
    let env = Env::with_sample_tree();
    let nginx = env.nginx(&env.upstream, "nginx");
    let url = nginx.html_url();
    // As the server sees it, the manifest is written as it is fetched.
    manifest_written_at(&env, 30);
    assert_eq!(env.sync(&url, &[]).code, 0);
    let v1 = env.published_id();
    // Rewritten in that second at the same size: the same mtime-size ETag.
    rewrite_in_the_same_second(&env, "releases/current.json", b"{\"version\":\"11.9\"}\n");
    nginx.clear_log();
    let out = env.sync(&url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(env.published_id(), v1, "the racy validators were not sent: {:?}", nginx.hits());
    env.assert_mirrors_upstream();
}

#[test]
fn validators_are_trusted_only_until_a_recheck() {
    let env = Env::with_sample_tree();
    let nginx = env.nginx(&env.upstream, "nginx");
    let url = nginx.html_url();
    // Written long before it is fetched: its validators are sound.
    manifest_written_at(&env, -3600);
    assert_eq!(env.sync(&url, &[]).code, 0);
    let v1 = env.published_id();

    // A same-size rewrite that keeps that old mtime (only a tool that sets
    // mtimes does that) keeps the ETag: stale until --recheck.
    rewrite_in_the_same_second(&env, "releases/current.json", b"{\"version\":\"11.9\"}\n");
    let out = env.sync(&url, &[]);
    assert!(out.code == 0 && out.stderr.contains("is unchanged"), "{out:?}");
    assert_eq!(env.published_id(), v1, "the same ETag: the conditional request is answered 304");
    let out = env.sync(&url, &["--recheck"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(env.published_id(), v1, "--recheck fetches the listing whole");
    env.assert_mirrors_upstream();

    // After recheck_after, the next run does the same by itself.
    let v2 = env.published_id();
    rewrite_in_the_same_second(&env, "releases/current.json", b"{\"version\":\"11.8\"}\n");
    assert_eq!(env.sync(&url, &[]).code, 0);
    assert_eq!(env.published_id(), v2);
    let state_file = env.root.join(".upmirror/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    for (_, v) in state["validators"].as_object_mut().unwrap() {
        v["since"] = (v["since"].as_u64().unwrap() - 25 * 3600).into();
    }
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    nginx.clear_log();
    assert_eq!(env.sync(&url, &[]).code, 0);
    assert_ne!(env.published_id(), v2, "validators older than recheck_after (24h) are not sent");
    assert_eq!(nginx.hits()[0].status, 200, "{:?}", nginx.hits());
    env.assert_mirrors_upstream();

    // With fresh validators and nothing changed, a run is one 304 again.
    nginx.clear_log();
    assert_eq!(env.sync(&url, &[]).code, 0);
    assert_eq!(nginx.hits().iter().map(|h| h.status).collect::<Vec<_>>(), [304]);
}

#[test]
fn repaired_damage_never_comes_back_and_a_damaged_snapshot_is_not_rolled_back_to() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    for version in ["11.3", "11.4"] {
        env.write("releases/current.json", format!("{{\"version\":\"{version}\"}}\n").as_bytes());
        env.make_manifest();
        assert_eq!(env.sync(&server.url(), &[]).code, 0);
    }
    let [v1, v2, v3] = <[String; 3]>::try_from(env.snapshot_ids()).unwrap();
    // p04.deb is one inode shared by both snapshots: damage it in place.
    let shared = env.current().join("pool/p04.deb");
    let mut bytes = fs::read(&shared).unwrap();
    bytes[0] ^= 1;
    fs::OpenOptions::new().write(true).open(&shared).unwrap().write_all_at(&bytes, 0).unwrap();
    let repair = ["verify", "--repair", "--root", root, "--upstream", &server.url(), "--ca-file", ca];
    assert_eq!(env.run(&repair).code, 0);
    assert_eq!(env.snapshot_ids(), [v1.clone(), v2.clone(), v3.clone()], "mended in place: the same ids");
    for id in env.snapshot_ids() {
        let got = fs::read(env.root.join("snapshots").join(&id).join("pool/p04.deb")).unwrap();
        assert_eq!(got, fs::read(env.upstream.join("pool/p04.deb")).unwrap(), "{id} was mended too");
    }
    assert_eq!(env.run(&["rollback", "--root", root]).code, 0);
    assert_eq!(env.published_id().unwrap(), v2);
    assert_eq!(env.run(&["verify", "--root", root]).code, 0, "the rolled-back-to snapshot is whole");

    // A snapshot damaged some other way is refused as a rollback target.
    fs::write(env.root.join("snapshots").join(&v1).join("releases/current.json"), b"{\"ver").unwrap();
    let out = env.run(&["rollback", "--root", root]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!("snapshot {v1} is damaged")) && out.stderr.contains("releases/current.json"),
        "{}",
        out.stderr
    );
    assert_eq!(env.published_id().unwrap(), v2);
}

#[test]
fn missing_paths_are_served_from_replaced_snapshots_for_the_grace_window_only() {
    use crate::serve::{client, get, runtime, start_shipped_site_as_shipped};
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    let v1 = env.published_id().unwrap();
    let old_current = fs::read(env.upstream.join("releases/current.json")).unwrap();
    env.remove("pool/p00.deb");
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.make_manifest();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    let v2 = env.published_id().unwrap();
    assert_eq!(env.snapshot_ids(), [v1.clone(), v2.clone()], "keep 1, but v1 is inside its grace window");

    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}");
    let c = client(&env);
    let pinned = format!("{base}/.well-known/upmirror/snapshots/{v1}/releases/current.json");
    runtime().block_on(async {
        let (status, body) = get(&c, &format!("{base}/pool/p00.deb")).await;
        assert_eq!((status, body), (200, fs::read(env.root.join("snapshots").join(&v1).join("pool/p00.deb")).unwrap()));
        let (status, body) = get(&c, &format!("{base}/releases/current.json")).await;
        assert_eq!(
            (status, body.as_slice()),
            (200, &b"{\"version\":\"11.3\"}\n"[..]),
            "a changed file never comes from the old snapshot"
        );
        assert_eq!(get(&c, &pinned).await, (200, old_current.clone()), "the pinned URL serves that snapshot");
        let (_, body) = get(&c, &format!("{base}/.well-known/upmirror/status.json")).await;
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let listed: Vec<&str> =
            doc["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(listed, [v1.as_str(), v2.as_str()]);
        assert_eq!(doc["snapshots"][0]["in_grace"], true);
        assert!(doc["snapshots"][1]["published_at"].is_string());
    });

    // Two hours later the window has closed: the next run (no change) drops it.
    crate::support::age_snapshots(&env, "replaced_at", 3);
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    assert!(fs::symlink_metadata(env.root.join("grace-1")).is_err());
    runtime().block_on(async {
        assert_eq!(get(&c, &format!("{base}/pool/p00.deb")).await.0, 404, "never from outside the window");
        assert_eq!(get(&c, &pinned).await, (200, old_current), "still kept, so still pinned, until pruned");
    });
    env.write("releases/current.json", b"{\"version\":\"11.4\"}\n");
    env.make_manifest();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "1"]).code, 0);
    assert!(!env.snapshot_ids().contains(&v1), "pruned once outside its window");
}

#[test]
fn a_client_resuming_with_if_range_across_a_publish_never_mixes_two_versions() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    let rel = "releases/11.2/core.zip";
    let v1 = fs::read(env.upstream.join(rel)).unwrap();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let nginx = env.nginx(&env.current(), "nginx");
    let url = format!("{}{rel}", nginx.html_url());
    let (part, headers) = (env.dir.path().join("core.zip.part"), env.dir.path().join("headers"));
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "--cacert", env.pki.ca.to_str().unwrap(), "-o", part.to_str().unwrap()])
            .args(args)
            .arg(&url)
            .status()
            .expect("curl is missing")
    };
    // The first 100,000 bytes, and the ETag they came with.
    assert!(curl(&["-r", "0-99999", "-D", headers.to_str().unwrap()]).success());
    let head = fs::read_to_string(&headers).unwrap();
    let etag = head.lines().find_map(|l| l.strip_prefix("ETag: ").or_else(|| l.strip_prefix("etag: "))).unwrap();
    let etag = etag.trim().to_owned();

    // The vendor rebuilds the file: new bytes, same size, same mtime.
    let v2 = crate::support::pseudo_random(300_000, 99);
    let mtime = FileTime::from_last_modification_time(&fs::metadata(env.upstream.join(rel)).unwrap());
    env.write(rel, &v2);
    filetime::set_file_mtime(env.upstream.join(rel), mtime).unwrap();
    env.make_manifest();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let manifest = fs::read_to_string(env.current().join("upmirror-manifest.json")).unwrap();
    assert!(manifest.contains(&format!("\"local_mtime\":{}", mtime.unix_seconds() + 1)), "{manifest}");

    // curl resumes with its validator: the server answers with the whole new
    // file instead of a 206, which curl refuses to append: never a mix.
    let resumed = curl(&["-C", "-", "-H", &format!("If-Range: {etag}")]);
    let got = fs::read(&part).unwrap();
    assert!(got != [&v1[..100_000], &v2[100_000..]].concat(), "v1's head with v2's tail");
    assert!(!resumed.success() && got == v1[..100_000], "curl refused the mismatched resume");
    fs::remove_file(&part).unwrap();
    assert!(curl(&[]).success());
    assert_eq!(fs::read(&part).unwrap(), v2);
}

#[test]
fn a_pinned_snapshot_serves_its_own_bytes_after_two_more_publishes() {
    use crate::serve::{client, get, runtime, start_shipped_site_as_shipped};
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let v1 = env.published_id().unwrap();
    let v1_bytes = fs::read(env.upstream.join("releases/current.json")).unwrap();
    for version in ["11.3", "11.4"] {
        env.write("releases/current.json", format!("{{\"version\":\"{version}\"}}\n").as_bytes());
        env.make_manifest();
        assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    }
    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}/.well-known/upmirror/snapshots/{v1}");
    let c = client(&env);
    runtime().block_on(async {
        assert_eq!(get(&c, &format!("{base}/releases/current.json")).await, (200, v1_bytes));
        let (status, body) = get(&c, &format!("{base}/upmirror-manifest.json")).await;
        assert!(status == 200 && String::from_utf8_lossy(&body).contains("releases/current.json"));
        let (status, _) = get(&c, &format!("{base}/../../../.upmirror/state.json")).await;
        assert!(status == 404 || status == 400, "no way out of the pin: {status}");
    });
}

#[test]
fn a_rolled_back_snapshot_is_gone_from_its_pinned_url() {
    use crate::serve::{client, get, runtime, start_shipped_site_as_shipped};
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let v1 = env.published_id().unwrap();
    env.write("releases/current.json", b"{\"version\":\"bad\"}\n");
    env.make_manifest();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let v2 = env.published_id().unwrap();
    let out = env.run(&["rollback", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(env.snapshot_ids().contains(&v2), "kept on disk until pruned");

    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let pinned =
        |id: &str| format!("https://127.0.0.1:{https}/.well-known/upmirror/snapshots/{id}/releases/current.json");
    let c = client(&env);
    runtime().block_on(async {
        assert_eq!(get(&c, &pinned(&v2)).await.0, 410, "the rolled-back snapshot");
        let (status, body) = get(&c, &pinned(&v1)).await;
        assert_eq!((status, body), (200, b"{\"version\":\"11.2\"}\n".to_vec()));
        let dir = format!("https://127.0.0.1:{https}/.well-known/upmirror/snapshots/{v1}/releases/");
        assert_eq!(get(&c, &dir).await.0, 200, "a snapshot's directory lists");
    });
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.join("public/status.json")).unwrap()).unwrap();
    let kept = doc["snapshots"].as_array().unwrap();
    assert!(kept.iter().any(|s| s["id"] == v2.as_str() && s["withdrawn"] == true), "{doc}");
}

#[test]
fn budgeted_verifies_cover_every_file_once_per_cycle_and_find_damage_in_their_slice() {
    let env = Env::new();
    for i in 0..70 {
        env.write(&format!("pool/f{i:02}"), &crate::support::pseudo_random(1000, i));
    }
    env.make_manifest();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let (root, ca, url) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap(), server.url());
    let metrics = env.dir.path().join("upmirror.prom");
    let verify = ["verify", "--json", "--budget", "10000", "--root", root, "--metrics-file", metrics.to_str().unwrap()];
    let index = |v: &serde_json::Value| v.as_str().unwrap().trim_start_matches("pool/f").parse::<usize>().unwrap();
    let mut next = 0;
    for run in 1..=7 {
        if run == 5 {
            // Damage, the size kept, in the slice the fifth run checks.
            let path = env.current().join("pool/f45");
            fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"X", 0).unwrap();
        }
        let repair = if run == 5 { vec!["--repair", "--upstream", &url, "--ca-file", ca] } else { vec![] };
        let out = env.run(&[&verify[..], &repair].concat());
        assert_eq!(out.code, 0, "run {run}: {out:?}");
        let report: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
        let checked = &report["checked"];
        assert_eq!((index(&checked["from"]), index(&checked["to"])), (next, next + 9), "run {run}: {report}");
        assert_eq!(checked["files"], 10);
        assert_eq!(checked["cycle_completed"], run == 7, "run {run}");
        let problems = report["problems"].as_array().unwrap();
        match run {
            5 => assert_eq!(problems[0]["path"], "pool/f45", "{report}"),
            _ => assert!(problems.is_empty(), "run {run}: {report}"),
        }
        next += 10;
    }
    assert_eq!(fs::read(env.current().join("pool/f45")).unwrap(), crate::support::pseudo_random(1000, 45));
    let cycle = &env.last_status()["verify"];
    assert!(cycle["cycle_completed_at"].is_string() && cycle["position"].is_null(), "{cycle}");
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("upmirror_verify_cycle_completed_timestamp_seconds "), "{text}");
    assert!(text.contains("upmirror_last_run_exit_code 0"), "{text}");
    let status = env.run(&["status", "--root", root]);
    assert!(status.stdout.contains("verify      last full cycle completed at"), "{}", status.stdout);
    // The next run starts the next cycle at the first file.
    let out = env.run(&verify);
    let report: serde_json::Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["checked"]["from"], "pool/f00", "{report}");
}
