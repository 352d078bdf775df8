//! Upstreams without a manifest (a real nginx with HTML and JSON autoindex),
//! fail-over between upstreams, and a two-tier chain of mirrors.

use std::fs;

use crate::support::{Env, Fault, MTIME, Options, Server, files, pseudo_random};

/// A tree nginx can list whole: no dotfiles, no index.html, awkward names.
pub fn crawlable() -> Env {
    let env = Env::new();
    env.write("releases/11.2/core.zip", &pseudo_random(200_000, 1));
    env.write("releases/current.json", b"{\"version\":\"11.2\"}\n");
    env.write("docs/read me #1 100%?.txt", b"spaces, hash, percent, question mark\n");
    env.write("docs/amp&er=sand;semi 'q' \"dq\".txt", b"entities\n");
    env.write(&format!("long/{}.bin", "n".repeat(120)), b"a name longer than nginx shows\n");
    env.write("ünï/日本語.txt", b"utf-8\n");
    env.write("empty", b"");
    for i in 0..12 {
        env.write(&format!("pool/p{i:02}.deb"), &pseudo_random(1000 + i * 37, i as u64));
    }
    env
}

pub fn assert_same_files(env: &Env) {
    let (want, got) = (files(&env.upstream), files(&env.current()));
    let names = |m: &std::collections::BTreeMap<String, (Vec<u8>, i64)>| {
        m.keys().filter(|k| k.as_str() != "upmirror-manifest.json").cloned().collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    for (k, (bytes, mtime)) in &want {
        assert!(got[k].0 == *bytes, "{k}: bytes differ");
        // The manifest's own copy carries the fetch time when the server
        // sends no Last-Modified (npm serve); every listed file its own.
        if k != "upmirror-manifest.json" {
            assert_eq!(got[k].1, *mtime, "{k}: mtime differs");
        }
    }
}

#[test]
fn nginx_json_listing_syncs_byte_identical_with_mtimes_then_only_what_changed() {
    let env = crawlable();
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_files(&env);

    // A re-run reads listings only.
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let hits = nginx.file_hits();
    assert!(hits.iter().all(|h| h.uri == "/upmirror-manifest.json" && h.status == 404), "no file fetched: {hits:?}");
    assert_eq!(env.snapshot_ids().len(), 1);

    // Change one file, add one, remove one: exactly two file GETs.
    env.write("pool/p03.deb", b"changed");
    env.write("pool/new.deb", b"new");
    env.remove("pool/p04.deb");
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut got: Vec<String> =
        nginx.file_hits().into_iter().filter(|h| h.method == "GET" && h.status == 200).map(|h| h.uri).collect();
    got.sort();
    assert_eq!(got, ["/pool/new.deb", "/pool/p03.deb"]);
    assert_same_files(&env);
}

#[test]
fn nginx_html_listing_syncs_every_name_with_exact_mtimes() {
    let env = crawlable();
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.html_url(), &["--listing", "autoindex"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_files(&env);
    nginx.clear_log();
    assert_eq!(env.sync(&nginx.html_url(), &["--listing", "autoindex"]).code, 0);
    assert!(nginx.file_hits().is_empty(), "{:?}", nginx.file_hits());
}

#[test]
fn sha256sums_in_a_directory_verify_the_files_it_names() {
    let env = crawlable();
    let digest = |b: &[u8]| sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    use sha2::Digest as _;
    let core = pseudo_random(200_000, 1);
    env.write("releases/11.2/SHA256SUMS", format!("{}  core.zip\n", digest(b"not the real bytes")).as_bytes());
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sha256 mismatch") && out.stderr.contains("releases/11.2/core.zip"), "{}", out.stderr);
    assert!(!env.current().exists());
    env.write("releases/11.2/SHA256SUMS", format!("{}  core.zip\n", digest(&core)).as_bytes());
    assert_eq!(env.sync(&nginx.json_url(), &[]).code, 0);
}

#[test]
fn a_page_that_is_not_a_listing_fails_the_run() {
    let env = crawlable();
    env.write("docs/index.html", b"<html><body><a href=\"elsewhere.html\">a page, not a listing</a></body></html>");
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.html_url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("/docs/: answered an HTML page that is not a directory listing"), "{}", out.stderr);
}

#[test]
fn a_manifest_upstream_that_has_not_changed_gets_no_file_request_from_nginx() {
    let env = crawlable();
    env.make_manifest();
    // Written a minute before it is fetched (one fetched in the second it
    // was written is fetched whole once more: consistency.rs).
    let manifest = env.upstream.join("upmirror-manifest.json");
    let earlier = filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 60, 0);
    filetime::set_file_mtime(&manifest, earlier).unwrap();
    let nginx = env.nginx(&env.upstream, "nginx");
    assert_eq!(env.sync(&nginx.json_url(), &[]).code, 0);
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &["--quiet"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:?}");
    let hits = nginx.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!((hits[0].uri.as_str(), hits[0].status), ("/upmirror-manifest.json", 304));
}

#[test]
fn a_file_failing_on_the_primary_comes_from_the_secondary() {
    let env = Env::with_sample_tree();
    let primary = env.serve();
    let secondary = env.serve();
    primary.fault("/pool/p03.deb", Fault::Status(500));
    primary.fault("/pool/p04.deb", Fault::Status(404));
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let mut from_secondary: Vec<String> = secondary.log().into_iter().map(|r| r.path).collect();
    from_secondary.sort();
    assert_eq!(from_secondary, ["/pool/p03.deb", "/pool/p04.deb"], "only the two failed files");
}

#[test]
fn a_lagging_secondary_can_never_mix_an_older_file_in() {
    // Manifest mode: the secondary's copy fails the digest.
    let env = Env::with_sample_tree();
    let other = env.dir.path().join("other");
    fs::create_dir_all(other.join("pool")).unwrap();
    fs::write(other.join("pool/p03.deb"), b"an older build").unwrap();
    let primary = env.serve();
    let secondary = Server::start(&other, &env.pki, Options::default());
    primary.fault("/pool/p03.deb", Fault::Status(500));
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("HTTP 500") && out.stderr.contains("got 14 bytes"), "{}", out.stderr);
    assert!(!env.current().exists());

    // Crawl mode: same size, other mtime — the Last-Modified check rejects it.
    let env = crawlable();
    let other = env.dir.path().join("other");
    fs::create_dir_all(other.join("pool")).unwrap();
    fs::write(other.join("pool/p03.deb"), pseudo_random(1000 + 3 * 37, 99)).unwrap();
    filetime::set_file_mtime(other.join("pool/p03.deb"), filetime::FileTime::from_unix_time(MTIME - 86_400, 0))
        .unwrap();
    let primary = env.serve();
    let secondary = Server::start(&other, &env.pki, Options::default());
    primary.fault("/pool/p03.deb", Fault::Status(500));
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &["--listing", "autoindex"]);
    assert_eq!(out.code, 1, "{out:?}");
    // Both dates in RFC 3339; the listing is ahead, so no "lagging" guess.
    let said = "Last-Modified 2023-11-13T22:13:20Z differs from the listing's mtime 2023-11-14T22:13:20Z \
                (the listing is ahead of the file";
    assert!(out.stderr.contains(said), "{}", out.stderr);
    assert!(!env.current().exists());
}

#[test]
fn a_two_tier_chain_mirrors_the_upstream_through_the_first_mirrors_nginx() {
    let env = crawlable();
    let upstream = env.nginx(&env.upstream, "nginx");
    assert_eq!(env.sync(&upstream.json_url(), &[]).code, 0);
    // Tier 2 reads tier 1's published snapshot (served through `current`) by its manifest.
    let tier1 = env.nginx(&env.current(), "nginx2");
    let root2 = env.dir.path().join("mirror2");
    let out = env.run(&[
        "sync",
        "--listing",
        "manifest",
        "--root",
        root2.to_str().unwrap(),
        "--upstream",
        &tier1.json_url(),
        "--ca-file",
        env.pki.ca.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    crate::support::assert_same_trees(&env.current(), &root2.join("current"));
    assert_same_files(&env);
}

#[test]
fn mirrors_reports_each_upstream_in_order_and_fails_while_the_primary_is_down() {
    let env = crawlable();
    let nginx = env.nginx(&env.upstream, "nginx");
    let manifest_env = Env::with_sample_tree();
    manifest_env.set_generated_at("2026-01-01T00:00:00Z");
    let with_manifest = Server::start(&manifest_env.upstream, &env.pki, Options::default());
    let ca = env.pki.ca.to_str().unwrap();
    let args = [
        "mirrors",
        "--json",
        "--ca-file",
        ca,
        "--upstream",
        "https://127.0.0.1:9/",
        "--upstream",
        &with_manifest.url(),
    ];
    let out = env.run(&[&args[..], &["--upstream", &nginx.json_url(), "--upstream", &nginx.html_url()]].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("3 of 4 upstreams usable; the primary is DOWN"), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = doc.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        (rows[0]["usable"].as_bool(), &rows[0]["tls"]),
        (Some(false), &serde_json::Value::Null),
        "unknown is null"
    );
    assert!(rows[0]["error"].as_str().unwrap().contains("Connection refused"));
    assert_eq!(rows[1]["listing"], "manifest");
    assert_eq!(rows[1]["files"], 26);
    assert_eq!(rows[1]["tls"], format!("verified, pinned {ca}"));
    assert!(rows[1]["age_secs"].as_i64().unwrap() > 86_400 * 30, "age from generated_at");
    assert_eq!(rows[2]["listing"], "autoindex-json");
    assert_eq!(rows[3]["listing"], "autoindex-html");
    // The human table names the crawl limits.
    let out = env.run(&["mirrors", "--ca-file", ca, "--upstream", &nginx.json_url()]);
    assert!(out.stdout.contains("never show dotfiles"), "{}", out.stdout);
}

#[test]
fn mirrors_fails_when_no_upstream_is_usable_and_says_why() {
    let env = Env::with_sample_tree();
    let mtls = env.serve_with(Options { client_ca: Some(env.pki.client_ca.clone()), ..Default::default() });
    let plain = env.serve();
    let rogue = env.pki.rogue_ca.to_str().unwrap();
    let out = env.run(&["mirrors", "--json", "--ca-file", rogue, "--upstream", &plain.url()]);
    assert_eq!(out.code, 1, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc[0]["tls"], "FAILED");
    assert!(out.stderr.contains("no upstream is usable"));

    let ca = env.pki.ca.to_str().unwrap();
    let out = env.run(&["mirrors", "--json", "--ca-file", ca, "--upstream", &mtls.url()]);
    assert_eq!(out.code, 1, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc[0]["client_cert"], "REJECTED");
    let (cert, key) = (env.pki.client_cert.to_str().unwrap(), env.pki.client_key.to_str().unwrap());
    let out = env.run(&[
        "mirrors",
        "--json",
        "--ca-file",
        ca,
        "--client-cert",
        cert,
        "--client-key",
        key,
        "--upstream",
        &mtls.url(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc[0]["client_cert"], "accepted");
    assert!(doc[0]["client_cert_expires"].as_str().unwrap().ends_with('Z'), "{doc}");
}

#[test]
fn a_directory_symlink_loop_trips_the_depth_cap() {
    let env = crawlable();
    std::os::unix::fs::symlink("..", env.upstream.join("pool/loop")).unwrap();
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("deeper than 64 levels"), "{}", out.stderr);
    assert!(!env.current().exists());
}

#[test]
fn a_landing_page_at_the_root_is_refused_and_nothing_is_published() {
    let env = crawlable();
    // nginx's default `index index.html` serves it in place of the listing.
    env.write(
        "index.html",
        b"<html><head><title>Acme Corp &ndash; Downloads</title></head><body>\
          <a href=\"empty\">the empty file</a> <a href=\"pool/\">the pool</a></body></html>",
    );
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.html_url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("answered an HTML page that is not a directory listing (title \"Acme Corp"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("set listing = \"manifest\""), "{}", out.stderr);
    assert!(env.published_id().is_none(), "nothing published");
}

#[test]
fn mirrors_says_tls_was_verified_when_the_answer_is_no_listing() {
    let env = crawlable();
    env.write("index.html", b"<html><head><title>Acme Corp</title></head><body>Welcome</body></html>");
    let nginx = env.nginx(&env.upstream, "nginx");
    let ca = env.pki.ca.to_str().unwrap();
    let out = env.run(&["mirrors", "--json", "--ca-file", ca, "--upstream", &nginx.html_url()]);
    assert_eq!(out.code, 1, "not usable: {out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc[0]["usable"], false, "{doc}");
    assert!(doc[0]["tls"].as_str().is_some_and(|t| t.starts_with("verified")), "{doc}");
    assert!(doc[0]["error"].as_str().unwrap().contains("title \"Acme Corp\""), "{doc}");
}
