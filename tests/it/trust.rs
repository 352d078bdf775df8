//! Signed manifests: signed with `upmirror manifest --sign`, checked by the
//! real `minisign` tool and by every sync that has `trusted_keys`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Env;

/// A minisign key pair without a password, as `minisign -G -W` makes:
/// (public key file, secret key file, key id).
fn keypair(env: &Env, name: &str) -> (PathBuf, PathBuf, String) {
    let (public, secret) = (env.dir.path().join(format!("{name}.pub")), env.dir.path().join(format!("{name}.key")));
    let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    fs::write(&public, pair.pk.to_box().unwrap().into_string()).unwrap();
    fs::write(&secret, pair.sk.to_box(None).unwrap().into_string()).unwrap();
    let text = fs::read_to_string(&public).unwrap();
    let id = text.lines().next().unwrap().rsplit(' ').next().unwrap().to_owned();
    (public, secret, id)
}

fn sign(env: &Env, key: &Path) {
    let out = env.run(&["manifest", env.upstream.to_str().unwrap(), "--sign", key.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_signed_manifest_is_checked_by_minisign_and_required_by_trusted_keys() {
    let env = Env::with_sample_tree();
    let (a_pub, a_key, a_id) = keypair(&env, "vendor-a");
    let (b_pub, b_key, b_id) = keypair(&env, "vendor-b");
    sign(&env, &a_key);
    let manifest = env.upstream.join("upmirror-manifest.json");
    let status = Command::new("minisign").arg("-Vm").arg(&manifest).arg("-p").arg(&a_pub).output();
    let status = status.expect("minisign is missing (apt-get install minisign); ./test.sh installs it");
    assert!(status.status.success(), "minisign -V accepts it: {status:?}");

    let server = env.serve();
    let trust_a = ["--trusted-key", a_pub.to_str().unwrap()];
    let out = env.sync(&server.url(), &trust_a);
    assert_eq!(out.code, 0, "{out:?}");
    let state: serde_json::Value = env.last_status();
    assert_eq!(state["signed_by"], a_id.as_str());
    let published = env.published_id();

    // A tampered byte, a key not trusted, no signature at all: refused, nothing written.
    let refuse = |why: &str, needle: &str| {
        let out = env.sync(&server.url(), &trust_a);
        assert_eq!(out.code, 1, "{why}: {out:?}");
        assert!(out.stderr.contains(needle), "{why}: {}", out.stderr);
        assert_eq!(env.published_id(), published, "{why}");
    };
    env.write("releases/current.json", b"{\"version\":\"11.9\"}\n");
    sign(&env, &a_key);
    let text = fs::read_to_string(&manifest).unwrap();
    let tampered = text.replacen("\"size\":19,", "\"size\":20,", 1);
    assert!(tampered != text, "one byte changed");
    fs::write(&manifest, tampered).unwrap();
    refuse("a tampered manifest", &format!("the signature by key {a_id} does not match"));
    sign(&env, &b_key);
    refuse("a key not trusted", &format!("signed by key {b_id}, which is not in trusted_keys"));
    fs::remove_file(env.upstream.join("upmirror-manifest.json.minisig")).unwrap();
    refuse("no signature", "trusted_keys requires one");

    // A rotation: both keys trusted (one as a file, one inline), signed by the new one.
    sign(&env, &b_key);
    let b_inline = fs::read_to_string(&b_pub).unwrap().lines().nth(1).unwrap().to_owned();
    let out = env.sync(&server.url(), &["--trusted-key", a_pub.to_str().unwrap(), "--trusted-key", &b_inline]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();

    // The same holds for a tree carried on a disk.
    env.write("releases/current.json", b"{\"version\":\"12.0\"}\n");
    sign(&env, &a_key);
    let disk = format!("file://{}", env.upstream.display());
    assert_eq!(env.sync(&disk, &trust_a).code, 0);
    fs::remove_file(env.upstream.join("upmirror-manifest.json.minisig")).unwrap();
    env.write("releases/current.json", b"{\"version\":\"12.1\"}\n");
    env.make_manifest();
    let out = env.sync(&disk, &trust_a);
    assert!(out.code == 1 && out.stderr.contains("trusted_keys requires one"), "{out:?}");
}

/// An executable script in the test's directory.
fn script(env: &Env, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = env.dir.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_pre_publish_hook_sees_the_snapshot_and_can_refuse_it() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.write("pool/p20.deb", b"new package");
    env.make_manifest();

    // A scanner that finds something: nothing is published, the build is gone.
    let seen = env.dir.path().join("seen");
    let scanner = script(
        &env,
        "scanner",
        &format!(
            "tr '\\0' '\\n' < \"$UPMIRROR_CHANGED_FILES\" > {seen}/files\necho \"$UPMIRROR_SNAPSHOT_ID\" > {seen}/id\n\
             test -f \"$UPMIRROR_SNAPSHOT_DIR/pool/p20.deb\" || exit 9\necho 'EICAR found in pool/p20.deb'\nexit 1",
            seen = seen.display()
        ),
    );
    fs::create_dir(&seen).unwrap();
    // Its command line and what it printed reach the operator and the
    // private status; the public status names the hook alone.
    let out = env.sync(&server.url(), &["--pre-publish", &format!("{scanner} --token=s3cr3t-t0ken")]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("pre_publish") && out.stderr.contains("EICAR found"), "{}", out.stderr);
    assert!(env.last_status()["hook_output"].as_str().unwrap().contains("EICAR found"));
    let public = fs::read_to_string(env.root.join("public/status.json")).unwrap();
    let page = fs::read_to_string(env.root.join("public/index.html")).unwrap();
    for text in [&public, &page] {
        assert!(text.contains("pre_publish failed"), "{text}");
        assert!(!text.contains("s3cr3t-t0ken") && !text.contains("EICAR"), "{text}");
    }
    assert_eq!(env.published_id(), published, "nothing published");
    let id = fs::read_to_string(seen.join("id")).unwrap().trim().to_owned();
    assert!(!env.root.join("snapshots").join(&id).exists(), "the refused build is removed");
    let files = fs::read_to_string(seen.join("files")).unwrap();
    let mut files: Vec<&str> = files.lines().collect();
    files.sort();
    assert_eq!(files, ["pool/p20.deb", "releases/current.json"], "exactly the added and changed paths");

    // A hook that hangs is killed at its time limit, with what it started;
    // it is never handed the signing key's password.
    let child = env.dir.path().join("child");
    let hang = script(
        &env,
        "hang",
        &format!(
            "echo \"${{UPMIRROR_SIGNING_PASSWORD:-withheld}}\" > {seen}/password\nsleep 60 &\necho $! > {child}\nsleep 60",
            seen = seen.display(),
            child = child.display()
        ),
    );
    let start = std::time::Instant::now();
    let out = env.sync_env(
        &server.url(),
        &["--pre-publish", &hang, "--hook-timeout", "1s"],
        &[("UPMIRROR_SIGNING_PASSWORD", "pa55")],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("did not finish within hook_timeout"), "{}", out.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(fs::read_to_string(seen.join("password")).unwrap(), "withheld\n");
    let pid = fs::read_to_string(&child).unwrap().trim().to_owned();
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z "), "the hook's child outlived it: {state}");

    // A failing post_publish hook is a warning; on_failure runs when a sync fails.
    let out = env.sync(&server.url(), &["--pre-publish", "true", "--post-publish", "false"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(env.published_id(), published);
    let status: serde_json::Value = env.last_status();
    assert!(status["warnings"][0].as_str().unwrap().contains("post_publish failed"), "{status}");
    assert!(status["hook_output"].as_str().unwrap().contains("post_publish `false`"), "{status}");
    let alarm = env.dir.path().join("alarm");
    let on_failure =
        script(&env, "alarm", &format!("echo \"$UPMIRROR_EXIT_CODE $UPMIRROR_ERROR\" > {}", alarm.display()));
    server.fault("/pool/p01.deb", crate::support::Fault::Status(500));
    env.write("pool/p01.deb", b"changed");
    env.make_manifest();
    assert_eq!(env.sync(&server.url(), &["--retries", "0", "--on-failure", &on_failure]).code, 1);
    let said = fs::read_to_string(&alarm).unwrap();
    assert!(said.starts_with("1 ") && said.contains("HTTP 500"), "{said}");
}

#[test]
fn the_vendors_signature_travels_down_the_tiers_and_a_filtered_hub_signs_its_own() {
    let env = Env::with_sample_tree();
    let (vendor_pub, vendor_key, vendor_id) = keypair(&env, "vendor");
    let (hub_pub, hub_key, hub_id) = keypair(&env, "hub");
    sign(&env, &vendor_key);
    let vendor = env.serve();
    let out = env.sync(&vendor.url(), &["--trusted-key", vendor_pub.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    // The hub serves the vendor's manifest and signature, byte for byte.
    for name in ["upmirror-manifest.json", "upmirror-manifest.json.minisig"] {
        assert_eq!(fs::read(env.current().join(name)).unwrap(), fs::read(env.upstream.join(name)).unwrap(), "{name}");
    }
    // A site that trusts the vendor alone accepts the hub's snapshot.
    let hub = env.nginx(&env.current(), "hub-nginx");
    let site = env.dir.path().join("site");
    let (url, root) = (hub.json_url(), site.to_str().unwrap());
    let ca = env.pki.ca.to_str().unwrap();
    let trust_vendor = ["--trusted-key", vendor_pub.to_str().unwrap()];
    let out = env.run(&[&["sync", "--root", root, "--upstream", &url, "--ca-file", ca][..], &trust_vendor].concat());
    assert_eq!(out.code, 0, "{out:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(site.join(".upmirror/status.json")).unwrap()).unwrap();
    assert_eq!(status["signed_by"], vendor_id.as_str());
    let out = env.run(&["verify", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 0, "the signature is the snapshot's own, not an extra file: {out:?}");

    // A hub that carries a subset cannot keep the vendor's manifest: it signs its own.
    let filtered = env.dir.path().join("filtered");
    let out = env.run(&[
        "sync",
        "--root",
        filtered.to_str().unwrap(),
        "--upstream",
        &vendor.url(),
        "--ca-file",
        env.pki.ca.to_str().unwrap(),
        "--trusted-key",
        vendor_pub.to_str().unwrap(),
        "--exclude",
        "pool/**",
        "--signing-key",
        hub_key.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let manifest = filtered.join("current/upmirror-manifest.json");
    assert!(!fs::read_to_string(&manifest).unwrap().contains("pool/"));
    let check = |key: &Path| Command::new("minisign").arg("-Vm").arg(&manifest).arg("-p").arg(key).output().unwrap();
    assert!(check(&hub_pub).status.success(), "signed by the hub's key {hub_id}");
    assert!(!check(&vendor_pub).status.success(), "not the vendor's signature any more");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(filtered.join(".upmirror/status.json")).unwrap()).unwrap();
    assert_eq!(status["snapshot_manifest"], "the mirror's own, signed with signing_key");
    assert_eq!(env.last_status()["snapshot_manifest"], "the upstream's, with its signature");
}

#[test]
fn a_three_tier_chain_shows_each_tier_and_the_lag_behind_the_origin() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-11-01T00:00:00Z");
    let vendor = env.serve();
    let ca = env.pki.ca.to_str().unwrap();
    let sync = |root: &Path, url: &str, extra: &[&str]| {
        let out = env.run(
            &[&["sync", "--root", root.to_str().unwrap(), "--upstream", url, "--ca-file", ca][..], extra].concat(),
        );
        assert_eq!(out.code, 0, "{out:?}");
    };
    sync(&env.root, &vendor.url(), &[]);
    let tier1 = env.nginx(&env.current(), "tier1");
    let root2 = env.dir.path().join("tier2-root");
    sync(&root2, &tier1.json_url(), &[]);
    let tier2 = env.nginx(&root2.join("current"), "tier2");
    let (root3, metrics) = (env.dir.path().join("tier3-root"), env.dir.path().join("tier3.prom"));
    sync(&root3, &tier2.json_url(), &["--metrics-file", metrics.to_str().unwrap()]);

    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(root3.join(".upmirror/status.json")).unwrap()).unwrap();
    let trace = status["trace"].as_array().unwrap();
    let ids: Vec<String> = [&env.root, &root2, &root3]
        .iter()
        .map(|r| fs::read_link(r.join("current")).unwrap().file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(trace.iter().map(|t| t["snapshot"].as_str().unwrap()).collect::<Vec<_>>(), ids);
    assert!(trace.iter().all(|t| t["origin_generated_at"] == "2026-11-01T00:00:00Z"), "{trace:?}");
    let text = fs::read_to_string(&metrics).unwrap();
    let lag: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("upmirror_origin_lag_seconds "))
        .expect("the origin lag metric")
        .parse()
        .unwrap();
    assert!(lag >= 30 * 86_400, "a month behind the origin: {lag}");
    let out = env.run(&["status", "--root", root3.to_str().unwrap()]);
    assert!(out.stdout.contains("origin      listed at 2026-11-01T00:00:00Z, 3 tiers down"), "{}", out.stdout);
    let page = fs::read_to_string(root3.join("public/index.html")).unwrap();
    assert!(page.contains("<h2>Tiers</h2>") && page.contains(&ids[0]), "{page}");
}

#[test]
fn a_filtered_snapshot_carries_the_vendors_manifest_only_when_it_holds_exactly_its_files() {
    let env = Env::with_sample_tree();
    let (vendor_pub, vendor_key, _) = keypair(&env, "vendor");
    sign(&env, &vendor_key);
    let vendor = env.serve();
    let trusted = ["--trusted-key", vendor_pub.to_str().unwrap()];
    assert_eq!(env.sync(&vendor.url(), &trusted).code, 0);
    assert_eq!(env.last_status()["snapshot_manifest"], "the upstream's, with its signature");
    // The vendor swaps one file for another (the count stays the same) and changes a third.
    env.remove("pool/p04.deb");
    env.write("pool/p99.deb", b"new package");
    env.write("pool/p05.deb", b"changed package");
    env.make_manifest();
    sign(&env, &vendor_key);
    // Both are outside this mirror's filter: p04 stays as published, p99 is not fetched.
    let filtered = [&trusted[..], &["--exclude", "pool/p04.deb", "--exclude", "pool/p99.deb"]].concat();
    let out = env.sync(&vendor.url(), &filtered);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.last_status()["outcome"], "published");
    assert_ne!(env.last_status()["snapshot_manifest"], "the upstream's, with its signature");
    let out = env.run(&["verify", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 0, "the published snapshot verifies: {out:?}");
    let out = env.sync(&vendor.url(), &filtered);
    assert_eq!(out.code, 0, "the next sync goes on: {out:?}");
}

/// A key pair made by the real `minisign -G -W` (no password): (public, secret).
pub(crate) fn minisign_keypair(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let (public, secret) = (env.dir.path().join(format!("{name}.pub")), env.dir.path().join(format!("{name}.key")));
    let made = Command::new("minisign").args(["-G", "-W", "-p"]).arg(&public).arg("-s").arg(&secret).output();
    let made = made.expect("minisign is missing (apt-get install minisign); ./test.sh installs it");
    assert!(made.status.success(), "{made:?}");
    (public, secret)
}

#[test]
fn a_key_made_by_minisign_without_a_password_signs_and_a_damaged_one_is_refused() {
    let env = Env::with_sample_tree();
    let (public, secret) = minisign_keypair(&env, "vendor");
    sign(&env, &secret);
    let manifest = env.upstream.join("upmirror-manifest.json");
    let checked = Command::new("minisign").arg("-Vm").arg(&manifest).arg("-p").arg(&public).output().unwrap();
    assert!(checked.status.success(), "minisign -V accepts it: {checked:?}");

    // One byte of the secret key changed: refused, nothing signed.
    use base64::Engine as _;
    let text = fs::read_to_string(&secret).unwrap();
    let mut bytes = base64::engine::general_purpose::STANDARD.decode(text.lines().nth(1).unwrap()).unwrap();
    bytes[70] ^= 1;
    let damaged = env.dir.path().join("damaged.key");
    let line = base64::engine::general_purpose::STANDARD.encode(&bytes);
    fs::write(&damaged, format!("{}\n{line}\n", text.lines().next().unwrap())).unwrap();
    let out = env.run(&["manifest", env.upstream.to_str().unwrap(), "--sign", damaged.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("damaged.key: Corrupted key"), "{}", out.stderr);
}

#[test]
fn a_replayed_old_signed_manifest_is_refused_past_max_listing_age() {
    let env = Env::with_sample_tree();
    let (public, secret) = minisign_keypair(&env, "vendor");
    // The vendor's listing of long ago, signed by the real minisign.
    env.set_generated_at("2026-01-01T00:00:00Z");
    let manifest = env.upstream.join("upmirror-manifest.json");
    let signed = Command::new("minisign").args(["-S", "-s"]).arg(&secret).arg("-m").arg(&manifest).output().unwrap();
    assert!(signed.status.success(), "{signed:?}");
    let server = env.serve();
    let trust = ["--trusted-key", public.to_str().unwrap()];
    let max_age = [&trust[..], &["--max-listing-age", "7d"]].concat();

    let out = env.sync(&server.url(), &max_age);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("was generated at 2026-01-01T00:00:00Z"), "{}", out.stderr);
    assert!(out.stderr.contains("longer than max_listing_age (7days)"), "{}", out.stderr);
    assert_eq!(env.published_id(), None);
    // Without it, today's behaviour: a valid signature is accepted.
    assert_eq!(env.sync(&server.url(), &trust).code, 0);
    let published = env.published_id();
    // The same listing again, answered 304: still too old.
    let out = env.sync(&server.url(), &max_age);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(env.last_status()["outcome"], "refused", "{}", env.last_status());
    assert_eq!(env.published_id(), published);
    // The vendor signs a fresh listing: accepted.
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    sign(&env, &secret);
    assert_eq!(env.sync(&server.url(), &max_age).code, 0);
    assert_ne!(env.published_id(), published);
}

/// A vendor's signed manifest listing its files in another order than
/// upmirror's: kept as it came, and a later sync still plans against it
/// (read whole, not streamed); upmirror's own manifest out of order is a
/// damaged store, named, and nothing is published.
#[test]
fn a_vendors_signed_manifest_in_any_order_is_planned_against_and_a_disordered_own_one_is_refused() {
    let env = Env::with_sample_tree();
    let (public, secret, _) = keypair(&env, "vendor");
    let text = fs::read_to_string(&secret).unwrap();
    let key = minisign::SecretKeyBox::from_string(&text).unwrap().into_unencrypted_secret_key().unwrap();
    let manifest = env.upstream.join("upmirror-manifest.json");
    let sign_reversed = || {
        env.make_manifest();
        let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
        doc["files"].as_array_mut().unwrap().reverse();
        let bytes = serde_json::to_vec(&doc).unwrap();
        let sig = minisign::sign(None, &key, std::io::Cursor::new(&bytes), None, None).unwrap();
        fs::write(&manifest, &bytes).unwrap();
        fs::write(env.upstream.join("upmirror-manifest.json.minisig"), sig.into_string()).unwrap();
        bytes
    };
    let server = env.serve();
    let trust = ["--trusted-key", public.to_str().unwrap()];
    let vendor = sign_reversed();
    assert_eq!(env.sync(&server.url(), &trust).code, 0);
    let kept = env.root.join("current/upmirror-manifest.json");
    assert_eq!(fs::read(&kept).unwrap(), vendor, "the vendor's manifest is kept as it came");
    env.write("releases/current.json", b"{\"version\":\"11.7\"}\n");
    sign_reversed();
    let out = env.sync(&server.url(), &trust);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();

    // Unsigned, the snapshot's manifest is upmirror's own, streamed: out of order, it is damage.
    fs::remove_file(env.upstream.join("upmirror-manifest.json.minisig")).unwrap();
    env.write("releases/current.json", b"{\"version\":\"11.8\"}\n");
    env.make_manifest();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id().unwrap();
    assert!(!env.root.join("current/upmirror-manifest.json.minisig").exists());
    let own = fs::canonicalize(&kept).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&own).unwrap()).unwrap();
    doc["files"].as_array_mut().unwrap().swap(0, 1);
    fs::write(&own, serde_json::to_vec(&doc).unwrap()).unwrap();
    env.write("releases/current.json", b"{\"version\":\"11.9\"}\n");
    env.make_manifest();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is out of order: it is no manifest upmirror wrote"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("snapshots/{published}/upmirror-manifest.json")), "{}", out.stderr);
    assert_eq!(env.published_id(), Some(published));
}
