//! Several hosts, one mirror: snapshot ids named by what they hold, so that
//! hosts which publish the same upstream state agree on them.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::crawl::crawlable;
use crate::support::{Env, Out};

/// `upmirror sync` of `url` into `root` (another host's), trusting the test CA.
fn sync_into(env: &Env, root: &Path, url: &str, extra: &[&str]) -> Out {
    let mut args = vec!["sync", "--root", root.to_str().unwrap(), "--upstream", url];
    args.extend(["--ca-file", env.pki.ca.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = env.run(&args);
    assert_eq!(out.code, 0, "{out:?}");
    out
}

fn current_id(root: &Path) -> String {
    fs::read_link(root.join("current")).unwrap().file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn hosts_that_publish_one_upstream_state_give_it_one_id() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-11-30T08:00:00Z");
    let server = env.serve();
    let hosts: Vec<_> = (1..=3).map(|n| env.dir.path().join(format!("host{n}"))).collect();
    // Hosts 1 and 3 from the first state, host 3 then from a second, and
    // the vendor goes back to the first: host 2 only now, host 3 again.
    sync_into(&env, &hosts[0], &server.url(), &[]);
    sync_into(&env, &hosts[2], &server.url(), &[]);
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.make_manifest();
    env.set_generated_at("2026-11-30T09:00:00Z");
    sync_into(&env, &hosts[2], &server.url(), &[]);
    let between = current_id(&hosts[2]);
    env.write("releases/current.json", b"{\"version\":\"11.2\"}\n");
    env.make_manifest();
    env.set_generated_at("2026-11-30T08:00:00Z");
    sync_into(&env, &hosts[1], &server.url(), &[]);
    sync_into(&env, &hosts[2], &server.url(), &["--allow-rollback"]);
    let ids: Vec<String> = hosts.iter().map(|h| current_id(h)).collect();
    assert!(ids[0].starts_with("20261130T080000Z-") && ids[0].len() == 29, "origin time, then 12 hex: {ids:?}");
    assert_eq!(ids, [ids[0].clone(), ids[0].clone(), ids[0].clone()], "one state, one id on every host");
    assert!(between.starts_with("20261130T090000Z-"), "{between}");
    let kept: Vec<String> = fs::read_dir(hosts[2].join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "the first state's snapshot rebuilt in its own place: {kept:?}");

    // A host with other filters holds other files: another id.
    let filtered = env.dir.path().join("filtered");
    sync_into(&env, &filtered, &server.url(), &["--exclude", "docs/**"]);
    assert_ne!(current_id(&filtered), ids[0]);

    // A crawl's origin is its newest file: read at any moment, the same id.
    let env = crawlable();
    let nginx = env.nginx(&env.upstream, "nginx");
    let (a, b) = (env.dir.path().join("a"), env.dir.path().join("b"));
    sync_into(&env, &a, &nginx.json_url(), &[]);
    sync_into(&env, &b, &nginx.html_url(), &[]);
    let want = format!("{}-", stamp(crate::support::MTIME));
    assert!(current_id(&a).starts_with(&want), "{} starts with {want}", current_id(&a));
    assert_eq!(current_id(&a), current_id(&b), "JSON and HTML listings of one tree");
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time.
fn stamp(t: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64);
    humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "")
}

#[test]
fn a_root_with_timestamp_ids_upgrades_without_losing_a_snapshot() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let root = env.root.to_str().unwrap();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    // As an older upmirror left it: a timestamp id, which sorts after the
    // new content ids by name, though it was published first.
    let old = "20991231T235959Z";
    let new_id = env.published_id().unwrap();
    fs::rename(env.root.join("snapshots").join(&new_id), env.root.join("snapshots").join(old)).unwrap();
    fs::remove_file(env.current()).unwrap();
    symlink(format!("snapshots/{old}"), env.current()).unwrap();
    let state_file = env.root.join(".upmirror/state.json");
    let text = fs::read_to_string(&state_file).unwrap().replace(&new_id, old);
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["snapshots"][old].as_object_mut().unwrap().remove("publish_order");
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();

    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.make_manifest();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let new = env.published_id().unwrap();
    assert!(new.len() == 29 && new != old, "{new}");
    let listed: Vec<String> =
        env.last_status()["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().into()).collect();
    assert_eq!(listed, [old, new.as_str()], "oldest first, by when they were published");
    let pinned = env.root.join("snapshots").join(old).join("releases/current.json");
    assert_eq!(fs::read(pinned).unwrap(), b"{\"version\":\"11.2\"}\n", "the old pinned tree is whole");
    assert_eq!(env.run(&["rollback", "--root", root]).code, 0);
    assert_eq!(env.published_id().unwrap(), old, "a rollback goes back to the older one");
    assert_eq!(env.run(&["verify", "--root", root]).code, 0);
}
