//! Every real file server a vendor might run, as an upstream without a
//! manifest: Apache (fancy and plain), lighttpd, Caddy, rclone, webfs,
//! nginx's XML listing and python's `http.server`, each mirrored whole with exact mtimes, then left
//! alone by a run with nothing to do, then followed change by change.
//! Listings in local time, flaky listing requests and filters that keep a
//! crawl out of a directory.

use std::time::Instant;

use crate::crawl::{assert_same_files, crawlable};
use crate::support::nginx::Hit;
use crate::support::nginx::free_port;
use crate::support::servers::{FileServer, Kind};
use crate::support::{Env, Fault, MTIME, Nginx, pseudo_random};

/// Files in `crawlable()`.
const FILES: usize = 19;

fn start(env: &Env, kind: Kind, tz: Option<&str>) -> FileServer {
    FileServer::start(kind, &env.upstream, &env.pki, &env.dir.path().join("server"), tz)
}

fn sync(env: &Env, server: &FileServer, extra: &[&str]) -> crate::support::Out {
    let mut args = extra.to_vec();
    if matches!(server.kind, Kind::Python | Kind::Webfs | Kind::Busybox) {
        args.push("--allow-plain-http");
    }
    let out = env.sync(&server.url(), &args);
    assert_eq!(out.code, 0, "{:?}: {out:?}", server.kind);
    out
}

/// A full sync, a run with nothing to do and an incremental run through
/// `kind`; prints the figures a closing note quotes.
fn mirrors_through(kind: Kind) {
    let env = crawlable();
    let server = start(&env, kind, None);
    let started = Instant::now();
    sync(&env, &server, &[]);
    let full = started.elapsed();
    assert_same_files(&env);

    let logged = kind != Kind::Rclone;
    if logged {
        server.clear_log();
    }
    sync(&env, &server, &[]);
    assert_eq!(env.snapshot_ids().len(), 1, "{kind:?}: nothing changed, nothing published");
    let noop = if logged { check_noop_requests(&server) } else { 0 };

    // A same-size rewrite, a resize, an addition and a deletion, each with a new mtime.
    env.write_at("pool/p03.deb", &pseudo_random(1000 + 3 * 37, 77), MTIME + 3600);
    env.write_at("pool/p05.deb", b"resized", MTIME + 7200);
    env.write_at("pool/new.deb", b"new", MTIME + 7200);
    env.remove("pool/p04.deb");
    if logged {
        server.clear_log();
    }
    sync(&env, &server, &[]);
    assert_same_files(&env);
    if logged {
        let mut got: Vec<String> =
            server.hits().into_iter().filter(|h| h.method == "GET" && !h.uri.ends_with('/')).map(|h| h.uri).collect();
        // Apache sends no Content-Length on a HEAD of an empty file; a GET tells.
        got.retain(|u| u != "/upmirror-manifest.json" && !(kind == Kind::ApachePlain && u == "/empty"));
        got.sort();
        got.dedup(); // a request on a connection the server was closing is retried
        assert_eq!(got, ["/pool/new.deb", "/pool/p03.deb", "/pool/p05.deb"], "{kind:?}");
    }
    eprintln!("FIGURES {kind:?}: full sync {} ms; no-op run {noop} requests", full.as_millis());
}

/// A run with nothing to do reads the listings (and, from a server whose
/// listing shows no dates, each file's HEAD); it fetches no file. Returns
/// the number of requests (retries included: webfs and Apache close idle
/// connections the client may just have picked for its next request).
fn check_noop_requests(server: &FileServer) -> usize {
    let (hits, kind) = (server.hits(), server.kind);
    let mut dirs: Vec<&str> =
        hits.iter().filter(|h| h.method == "GET" && h.uri.ends_with('/')).map(|h| h.uri.as_str()).collect();
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 7, "{kind:?}: one request per directory: {hits:?}");
    // Servers that mark no directory are asked a HEAD of each name; a
    // directory's is redirected to the name with a `/`.
    let file_head = |h: &&Hit| h.method == "HEAD" && h.status == 200 && !h.uri.ends_with('/');
    let mut heads: Vec<&str> = hits.iter().filter(file_head).map(|h| h.uri.as_str()).collect();
    heads.sort();
    heads.dedup();
    let dateless =
        matches!(kind, Kind::ApachePlain | Kind::Python | Kind::Webfs | Kind::H2o | Kind::MiniHttpd | Kind::HttpServer);
    assert_eq!(heads.len(), if dateless { FILES } else { 0 }, "{kind:?}: {hits:?}");
    let files: Vec<&str> = hits
        .iter()
        .filter(|h| h.method == "GET" && !h.uri.ends_with('/') && h.uri != "/upmirror-manifest.json")
        .map(|h| h.uri.as_str())
        .collect();
    // Apache sends no Content-Length on a HEAD of an empty file; a GET tells.
    let want: &[&str] = if kind == Kind::ApachePlain { &["/empty"] } else { &[] };
    assert_eq!(files, want, "{kind:?}: no file fetched: {hits:?}");
    hits.len()
}

#[test]
fn apache_fancy_index_is_mirrored_then_followed() {
    mirrors_through(Kind::Apache);
}

#[test]
fn apache_header_and_readme_pages_with_links_are_not_taken_for_the_listing() {
    let env = crawlable();
    env.write("docs/guide.txt", b"the guide\n");
    env.write(
        "docs/HEADER.html",
        b"<h1>Docs</h1><p>Start with <a href=\"guide.txt\">the guide</a>, see <a href=\"howto/intro.html\">howto</a>, \
          <a href=\"https://vendor.example/\">our site</a>, <a href=\"../\">up</a>, <a href=\"#list\">the list</a>.</p>",
    );
    env.write(
        "docs/README.html",
        b"<p>Also <a href=\"guide.txt\">the guide</a> and <a href=\"old/notes.txt\">notes</a>.</p>",
    );
    let server = start(&env, Kind::Apache, None);
    sync(&env, &server, &[]);
    assert_same_files(&env);
    sync(&env, &server, &[]);
    assert_eq!(env.snapshot_ids().len(), 1, "run after run: nothing changed");
}

#[test]
fn apache_without_fancy_indexing_is_mirrored_by_head_requests() {
    mirrors_through(Kind::ApachePlain);
}

#[test]
fn lighttpd_is_mirrored_then_followed() {
    mirrors_through(Kind::Lighttpd);
}

#[test]
fn caddy_is_mirrored_from_its_json_listing() {
    mirrors_through(Kind::Caddy);
}

#[test]
fn rclone_serve_http_is_mirrored_then_followed() {
    mirrors_through(Kind::Rclone);
}

#[test]
fn webfs_is_mirrored_by_head_requests() {
    mirrors_through(Kind::Webfs);
}

/// BusyBox's httpd lists no directory: without a manifest the run fails
/// at once, saying so and naming the fix; with one, it is mirrored.
#[test]
fn busybox_which_lists_no_directories_fails_at_once_naming_the_fix() {
    let env = crawlable();
    let server = start(&env, Kind::Busybox, None);
    let started = Instant::now();
    let out = env.sync(&server.url(), &["--allow-plain-http"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the server lists no directories") && out.stderr.contains("upmirror manifest"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
    assert!(env.published_id().is_none());
    env.make_manifest();
    sync(&env, &server, &[]);
    assert_same_files(&env);
}

/// webfs over TLS stops accepting for good once 32 handshakes failed, which
/// the connections a client opened past its limit become when the client
/// gives up on them: run after run, a big tree is mirrored, each run fast.
#[test]
fn webfs_over_tls_is_mirrored_run_after_run() {
    let env = crawlable();
    for i in 0..400 {
        env.write(&format!("bulk/b{i:03}.dat"), format!("{i}\n").as_bytes());
    }
    let server = start(&env, Kind::WebfsTls, None);
    for run in 0..3 {
        env.write_at("pool/p03.deb", &pseudo_random(1000 + run, run as u64), MTIME + 3600 * run as i64);
        let started = Instant::now();
        sync(&env, &server, &[]);
        assert!(started.elapsed().as_secs() < 30, "run {run} took {:?}", started.elapsed());
        assert_same_files(&env);
    }
}

#[test]
fn caddy_symlinks_are_mirrored_as_what_they_serve_and_a_dangling_one_is_skipped() {
    let env = crawlable();
    std::os::unix::fs::symlink("pool/p01.deb", env.upstream.join("latest.deb")).unwrap();
    std::os::unix::fs::symlink("releases", env.upstream.join("stable")).unwrap();
    std::os::unix::fs::symlink("nowhere", env.upstream.join("dangling")).unwrap();
    let server = start(&env, Kind::Caddy, None);
    let out = sync(&env, &server, &[]);
    assert!(out.stderr.contains("dangling: a symlink that points nowhere; skipped"), "{}", out.stderr);
    let current = env.current();
    assert_eq!(
        std::fs::read(current.join("latest.deb")).unwrap(),
        std::fs::read(env.upstream.join("pool/p01.deb")).unwrap()
    );
    assert_eq!(std::fs::read(current.join("stable/current.json")).unwrap(), b"{\"version\":\"11.2\"}\n");
    assert!(!current.join("dangling").exists());
    // Run after run, nothing changes and nothing fails.
    sync(&env, &server, &[]);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn h2o_directories_without_a_slash_are_found_and_mirrored() {
    mirrors_through(Kind::H2o);
}

#[test]
fn mini_httpd_directories_without_a_slash_are_found_and_mirrored() {
    mirrors_through(Kind::MiniHttpd);
}

#[test]
fn npm_http_server_is_mirrored_then_followed() {
    mirrors_through(Kind::HttpServer);
}

#[test]
fn npm_serve_which_sends_no_dates_fails_at_once_naming_the_fix() {
    let env = crawlable();
    let server = start(&env, Kind::Serve, None);
    let started = Instant::now();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the server sends no Last-Modified: it cannot be mirrored without a manifest"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed().as_secs() < 10, "no retries: {:?}", started.elapsed());
    assert!(env.published_id().is_none());
    // With a manifest beside the tree, it is mirrored.
    env.make_manifest();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_files(&env);
}

#[test]
fn nginx_fancyindex_is_mirrored_then_followed_without_a_head() {
    mirrors_through(Kind::NginxFancy);
}

#[test]
fn nginx_xml_listings_are_mirrored_then_followed() {
    mirrors_through(Kind::NginxXml);
}

#[test]
fn python_http_server_is_mirrored_by_head_requests() {
    mirrors_through(Kind::Python);
}

#[test]
fn listings_in_local_time_are_set_back_to_utc() {
    // Apache in New York (UTC-05:00 in November), nginx in India (UTC+05:30).
    let env = crawlable();
    let apache = start(&env, Kind::Apache, Some("EST5EDT,M3.2.0,M11.1.0"));
    let out = sync(&env, &apache, &["-v"]);
    assert!(out.stderr.contains("in local time UTC-05:00"), "{}", out.stderr);
    assert_same_files(&env);

    let env = crawlable();
    let nginx = Nginx::start_localtime(&env.upstream, &env.pki, &env.dir.path().join("nginx"), "IST-5:30");
    let out = env.sync(&nginx.html_url(), &["-v"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("in local time UTC+05:30"), "{}", out.stderr);
    assert_same_files(&env);
    // The offset is kept while the listing shows the same dates: no HEAD.
    nginx.clear_log();
    assert_eq!(env.sync(&nginx.html_url(), &[]).code, 0);
    assert!(nginx.file_hits().iter().all(|h| h.uri == "/upmirror-manifest.json"), "{:?}", nginx.file_hits());
    let probe = env.run(&["mirrors", "--upstream", &nginx.html_url(), "--ca-file", env.pki.ca.to_str().unwrap()]);
    assert_eq!(probe.code, 0, "{probe:?}");
    assert!(probe.stdout.contains("the listing shows local time UTC+05:30"), "{}", probe.stdout);
    assert!(probe.stdout.contains("autoindex-html (nginx"), "{}", probe.stdout);
}

#[test]
fn a_listing_in_a_zone_with_daylight_saving_is_read_by_the_zones_rules_when_named() {
    let env = crate::support::Env::new();
    // 2025-01-15 and 2025-07-15, 12:00 UTC: 07:00 EST and 08:00 EDT in New York.
    let (january, july) = (1_736_942_400, 1_752_580_800);
    for i in 0..6 {
        env.write_at(&format!("winter/w{i}.txt"), &pseudo_random(100 + i, i as u64), january);
        env.write_at(&format!("summer/s{i}.txt"), &pseudo_random(200 + i, 10 + i as u64), july);
    }
    env.write_at("latest.txt", b"top level\n", july);
    let apache = start(&env, Kind::Apache, Some("America/New_York"));
    // One offset for every date: one season's files are an hour off.
    let out = env.sync(&apache.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("daylight saving") && out.stderr.contains("listing_timezone"), "{}", out.stderr);
    assert!(env.published_id().is_none());
    let zone = ["--listing-timezone", "America/New_York"];
    sync(&env, &apache, &zone);
    assert_same_files(&env);
    apache.clear_log();
    sync(&env, &apache, &zone);
    assert_eq!(env.snapshot_ids().len(), 1);
    assert!(
        apache.hits().iter().all(|h| h.method == "GET" && h.uri.ends_with('/') || h.uri == "/upmirror-manifest.json")
    );
    // `mirrors` reads the dates as a sync does: by the zone, no HEAD asked.
    apache.clear_log();
    let out =
        env.run(&["mirrors", "--upstream", &apache.url(), "--ca-file", env.pki.ca.to_str().unwrap(), zone[0], zone[1]]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("America/New_York (listing_timezone)"), "{}", out.stdout);
    assert!(apache.hits().iter().all(|h| h.method == "GET"), "{:?}", apache.hits());
    let out = env.run(&[
        "sync",
        "--root",
        env.root.to_str().unwrap(),
        "--upstream",
        &apache.url(),
        "--listing-timezone",
        "Mars/Olympus",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("listing_timezone = \"Mars/Olympus\""), "{}", out.stderr);
}

#[test]
fn a_dropped_connection_or_a_503_on_a_listing_request_is_retried() {
    let env = crawlable();
    let server = env.serve();
    server.fault_times("/docs/", Fault::Hangup, 1);
    server.fault_times("/pool/", Fault::Status(503), 2);
    server.fault_times("/upmirror-manifest.json", Fault::Hangup, 1);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_files(&env);
}

#[test]
fn an_excluded_directory_is_never_listed() {
    let env = crawlable();
    env.write("site/index.html", b"<html><body><a href=\"about.html\">a web site, not a listing</a></body></html>");
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.html_url(), &["--exclude", "site/**"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(nginx.hits().iter().all(|h| !h.uri.starts_with("/site")), "{:?}", nginx.hits());
    assert!(!env.current().join("site").exists());
    let out = env.sync(&nginx.html_url(), &[]);
    assert_eq!(out.code, 1, "without the filter the page fails the run: {out:?}");
    assert!(out.stderr.contains("/site/: answered an HTML page that is not a directory listing"), "{}", out.stderr);
}

#[test]
fn a_same_size_rewrite_within_the_listed_minute_is_published_by_the_next_run() {
    let env = crawlable();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // A minute that has not begun when the first run lists the file: the
    // listing cannot show a rewrite within it.
    let minute = (now / 60 + 2) * 60;
    env.write_at("pool/p03.deb", b"first version", minute + 10);
    let nginx = env.nginx(&env.upstream, "nginx");
    assert_eq!(env.sync(&nginx.html_url(), &[]).code, 0);
    assert_same_files(&env);
    env.write_at("pool/p03.deb", b"other version", minute + 20);
    nginx.clear_log();
    let out = env.sync(&nginx.html_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_files(&env);
    let heads: Vec<String> = nginx.hits().into_iter().filter(|h| h.method == "HEAD").map(|h| h.uri).collect();
    assert_eq!(heads, ["/pool/p03.deb"], "only the racy file is asked again");
}

/// The crawl tree with eight 48 KiB files, behind an nginx that answers
/// 503 to a third request in flight from one address and sends 64 KiB/s on
/// each connection (so that requests overlap): its JSON listings.
fn crowded_nginx(env: &Env) -> Nginx {
    for i in 0..8 {
        env.write(&format!("big/b{i}.bin"), &pseudo_random(48 << 10, 100 + i));
    }
    let (json, html) = (free_port(), free_port());
    let servers = format!(
        r#"
    limit_conn_zone $binary_remote_addr zone=perip:1m;
    ssl_certificate {cert}; ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{json} ssl; root {root}; autoindex on; autoindex_format json;
             limit_conn perip 2; limit_rate 64k; }}
    server {{ listen 127.0.0.1:{html} ssl; root {root}; autoindex on; }}
"#,
        cert = env.pki.server_cert.display(),
        key = env.pki.server_key.display(),
        root = env.upstream.display(),
    );
    Nginx::with_servers(&env.dir.path().join("nginx"), &servers, html, json)
}

#[test]
fn requests_to_one_host_stay_within_max_connections_per_host() {
    // No retry is allowed: only the cap keeps the run whole.
    let env = crawlable();
    let nginx = crowded_nginx(&env);
    let out = env.sync(&nginx.json_url(), &["--max-connections-per-host", "2", "--retries", "0"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(nginx.hits().iter().all(|h| h.status != 503), "{:?}", nginx.hits());
    assert_same_files(&env);
}

#[test]
fn a_host_that_answers_503_gets_fewer_requests_at_once() {
    // 16 are allowed, and each file is retried at most 5 times within about
    // half a second: only backing off to fewer requests at once, not
    // retrying into the same wall, gets every file.
    let env = crawlable();
    let nginx = crowded_nginx(&env);
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(nginx.hits().iter().any(|h| h.status == 503), "the host was overrun at first");
    assert_same_files(&env);
}

/// The files a run asked with a HEAD, each once.
fn heads(server: &FileServer) -> std::collections::BTreeSet<String> {
    server.hits().into_iter().filter(|h| h.method == "HEAD").map(|h| h.uri).collect()
}

#[test]
fn a_listing_without_sizes_or_dates_is_rechecked_in_turn_within_a_budget() {
    // python's http.server lists names only: each file's size and date take a HEAD.
    let env = crawlable();
    let server = start(&env, Kind::Python, None);
    sync(&env, &server, &[]);
    let budget = ["--recheck-budget", "5"];
    let mut seen = std::collections::BTreeSet::new();
    for run in 0..4 {
        server.clear_log();
        sync(&env, &server, &budget);
        let asked = heads(&server);
        assert_eq!(asked.len(), 5, "run {run}: {asked:?}");
        seen.extend(asked);
        let status = env.last_status();
        assert_eq!(status["rechecks"]["deferred"], FILES - 5, "{status}");
    }
    assert_eq!(seen.len(), FILES, "every file asked in four runs: {seen:?}");

    // A rewrite that keeps the size shows within one round of the budget.
    env.write_at("pool/p03.deb", &pseudo_random(1000 + 3 * 37, 77), MTIME + 3600);
    for _ in 0..4 {
        sync(&env, &server, &budget);
    }
    assert_same_files(&env);
    // --recheck asks every file now.
    server.clear_log();
    sync(&env, &server, &["--recheck", "--recheck-budget", "5"]);
    assert_eq!(heads(&server).len(), FILES);
}
