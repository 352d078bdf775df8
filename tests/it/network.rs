//! A hostile network: resets, retries, stalls, trickles, lies about ranges
//! and lengths, compression, dead hosts, a bandwidth cap and a run deadline.
//! Every failure leaves the published snapshot as it was.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Env, Fault, Options, pseudo_random};

const BIG: &str = "/releases/11.2/core.zip";

#[test]
fn a_reset_mid_file_is_resumed_from_the_offset_not_downloaded_again() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault_times(BIG, Fault::ResetAfter(100_000), 1);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = server.requests_for(BIG);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range"), None);
    assert_eq!(reqs[1].headers.get("range").map(String::as_str), Some("bytes=100000-"));
    assert!(reqs[1].headers.contains_key("if-range"), "resumed with If-Range");
    assert_eq!(reqs[1].status, 206);
    env.assert_mirrors_upstream();
}

#[test]
fn a_failed_run_keeps_its_partial_file_and_the_next_run_resumes_it() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let published = env.published_id();
    env.write("releases/11.2/core.zip", &pseudo_random(300_000, 77));
    env.make_manifest();
    server.fault(BIG, Fault::ResetAfter(120_000));
    let out = env.sync(&server.url(), &["--retries", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.published_id(), published, "the published snapshot is untouched");
    let status: serde_json::Value = env.last_status();
    assert_eq!(status["outcome"], "failed");
    let partial = largest_staged(&env).unwrap();
    // Two attempts (--retries 1), each cut after 120,000 bytes, the second resuming the first.
    assert_eq!(partial, 240_000, "the partial download is kept");

    server.clear_faults();
    server.clear_log();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = server.requests_for(BIG);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range").map(String::as_str), Some("bytes=240000-"));
    env.assert_mirrors_upstream();
    let left = std::fs::read_dir(env.root.join(".upmirror/partial")).unwrap().count();
    assert_eq!(left, 0, "staging is empty after a publish");
}

#[test]
fn partial_downloads_past_max_partial_size_start_over() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    env.write("releases/11.2/core.zip", &pseudo_random(300_000, 77));
    env.make_manifest();
    server.fault(BIG, Fault::ResetAfter(120_000));
    assert_eq!(env.sync(&server.url(), &["--retries", "0"]).code, 1);
    assert_eq!(largest_staged(&env), Some(120_000));

    server.clear_faults();
    server.clear_log();
    let out = env.sync(&server.url(), &["--max-partial-size", "64KiB", "-v"]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = server.requests_for(BIG);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range"), None, "the partial file past the cap was dropped: {reqs:?}");
    assert!(out.stderr.contains("removed 117.2 KiB of partial downloads"), "{}", out.stderr);
    env.assert_mirrors_upstream();
}

/// The size of the largest file in staging.
fn largest_staged(env: &Env) -> Option<u64> {
    crate::support::files(&env.root.join(".upmirror/partial")).values().map(|(bytes, _)| bytes.len() as u64).max()
}

#[test]
fn a_server_that_ignores_range_replaces_the_partial_instead_of_appending() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault_times(BIG, Fault::ResetAfter(50_000), 1);
    server.fault_times(BIG, Fault::IgnoreRange, 1);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = server.requests_for(BIG);
    assert_eq!((reqs.len(), reqs[1].status), (2, 200), "{reqs:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn a_206_from_the_wrong_offset_is_rejected_and_the_file_restarts_from_zero() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault_times(BIG, Fault::ResetAfter(50_000), 1);
    server.fault_times(BIG, Fault::WrongStart, 1);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = server.requests_for(BIG);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[1].status, 206);
    assert_eq!(reqs[2].headers.get("range"), None, "restarted from zero");
    env.assert_mirrors_upstream();
}

#[test]
fn retry_after_is_honoured_and_the_file_then_arrives() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault_times("/pool/p01.deb", Fault::RetryAfter(1), 2);
    let start = Instant::now();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(server.requests_for("/pool/p01.deb").len(), 3);
    assert!(start.elapsed() >= Duration::from_millis(1900), "waited {:?}", start.elapsed());
    env.assert_mirrors_upstream();
}

#[test]
fn a_client_error_is_not_retried() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p01.deb", Fault::Status(403));
    let out = env.sync(&server.url(), &["--retries", "5"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("HTTP 403"), "{}", out.stderr);
    assert_eq!(server.requests_for("/pool/p01.deb").len(), 1, "no retry storm");
}

#[test]
fn a_stalled_upstream_fails_over_within_the_idle_timeout() {
    let env = Env::with_sample_tree();
    let (primary, secondary) = (env.serve(), env.serve());
    primary.fault(BIG, Fault::Stall);
    let start = Instant::now();
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &["--idle-timeout", "1s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert_eq!(secondary.requests_for(BIG).len(), 1);
    env.assert_mirrors_upstream();
}

#[test]
fn a_trickle_below_the_speed_floor_is_aborted_and_failed_over() {
    let env = Env::with_sample_tree();
    let (primary, secondary) = (env.serve(), env.serve());
    primary.fault("/pool/p05.deb", Fault::Drip(100));
    let start = Instant::now();
    let out =
        env.sync_from(&[&primary.url(), &secondary.url()], &["--low-speed-limit", "1KiB", "--low-speed-time", "1s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert_eq!(secondary.requests_for("/pool/p05.deb").len(), 1);
    env.assert_mirrors_upstream();
}

#[test]
fn a_connection_that_never_completes_tls_times_out_and_the_next_upstream_is_used() {
    let env = Env::with_sample_tree();
    let good = env.serve();
    // Accepts TCP, never answers the TLS handshake.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://127.0.0.1:{}/", silent.local_addr().unwrap().port());
    let start = Instant::now();
    let out = env.sync_from(&[&silent_url, &good.url()], &["--connect-timeout", "1s", "--idle-timeout", "2s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    env.assert_mirrors_upstream();
    drop(silent);
}

#[test]
fn a_body_longer_than_declared_is_cut_and_rejected() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault(BIG, Fault::Extra(1 << 20));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("longer than the listed 300000 bytes"), "{}", out.stderr);
    assert!(!env.current().exists());
    let largest = largest_staged(&env);
    assert!(largest.unwrap_or(0) < 300_000, "nothing of the oversized body is kept: {largest:?}");
}

#[test]
fn a_compressed_body_is_never_decoded_into_the_mirror() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p02.deb", Fault::Gzip);
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("pool/p02.deb"), "{}", out.stderr);
    assert!(!env.current().exists());
}

#[test]
fn the_run_deadline_ends_a_hung_run() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault(BIG, Fault::Stall);
    let start = Instant::now();
    let out = env.sync(&server.url(), &["--run-timeout", "2s", "--idle-timeout", "60s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("run_timeout"), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert!(!env.current().exists());
}

#[test]
fn the_bandwidth_limit_holds_over_a_multi_second_transfer() {
    // A plain rate, and a timetable whose every-day entry covers the run.
    for limit in ["1MiB/s", "00:00,1MiB/s"] {
        let env = Env::new();
        env.write("a.bin", &pseudo_random(2 << 20, 1));
        env.write("b.bin", &pseudo_random(1 << 20, 2));
        env.make_manifest();
        let server = env.serve();
        let start = Instant::now();
        let out = env.sync(&server.url(), &["--bandwidth-limit", limit]);
        let took = start.elapsed();
        assert_eq!(out.code, 0, "{out:?}");
        // 3 MiB at 1 MiB/s, shared by both transfers: at least 2.7 s (10% under).
        assert!(took >= Duration::from_millis(2700), "{limit}: 3 MiB took only {took:?}");
        assert!(took < Duration::from_secs(9), "{limit}: 3 MiB took {took:?}");
        env.assert_mirrors_upstream();
    }
    let out = Env::new().run(&["sync", "--root", "/tmp/x", "--upstream", "https://h/", "--bandwidth-limit", "8:00"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("bandwidth_limit \"8:00\""), "{}", out.stderr);
}

#[test]
fn a_partial_file_from_one_upstream_is_resumed_from_another() {
    let env = Env::with_sample_tree();
    let (primary, secondary) = (env.serve(), env.serve());
    primary.fault(BIG, Fault::ResetAfter(100_000));
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let reqs = secondary.requests_for(BIG);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range").map(String::as_str), Some("bytes=100000-"));
    env.assert_mirrors_upstream();
}

#[test]
fn files_completed_by_a_failed_run_are_not_fetched_again() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p09.deb", Fault::Status(403));
    assert_eq!(env.sync(&server.url(), &[]).code, 1);
    server.clear_faults();
    server.clear_log();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let fetched: Vec<String> = server.file_requests().into_iter().map(|r| r.path).collect();
    assert_eq!(fetched, ["/pool/p09.deb"], "the verified files of the failed run were reused");
    env.assert_mirrors_upstream();
}

#[test]
fn a_dropped_connection_is_retried_whatever_words_its_url_holds() {
    // A failure is classified by its type: a URL naming "certificate" or
    // "redirect" does not make a dropped connection permanent.
    let env = Env::with_sample_tree();
    env.write("pki/certificate.bin", &pseudo_random(5000, 5));
    env.write("docs/redirect-map.bin", &pseudo_random(5000, 6));
    env.make_manifest();
    let server = env.serve();
    for path in ["/pki/certificate.bin", "/docs/redirect-map.bin"] {
        server.fault_times(path, Fault::Hangup, 1);
    }
    let out = env.sync(&server.url(), &["--retries", "1", "--retry-backoff", "10ms"]);
    assert_eq!(out.code, 0, "{out:?}");
    for path in ["/pki/certificate.bin", "/docs/redirect-map.bin"] {
        let reqs = server.requests_for(path);
        assert_eq!(reqs.iter().map(|r| r.status).collect::<Vec<_>>(), [0, 200], "{path}: {reqs:?}");
    }
    env.assert_mirrors_upstream();
}

#[test]
fn every_request_goes_through_the_company_proxy_unless_no_proxy_exempts_the_host() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let proxy = crate::support::proxy::Proxy::start(&env.dir.path().join("proxy"));
    let out = env.sync(&server.url(), &["--proxy", &proxy.url()]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let upstream = format!("127.0.0.1:{}", server.addr.port());
    assert!(!proxy.connects().is_empty() && proxy.connects().iter().all(|c| *c == upstream), "{:?}", proxy.connects());

    // The environment's HTTPS_PROXY is honoured too, and NO_PROXY exempts a host.
    env.write("releases/current.json", b"{\"version\":\"11.5\"}\n");
    env.make_manifest();
    let before = proxy.connects().len();
    let out = env.sync_env(&server.url(), &[], &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(proxy.connects().len(), before, "NO_PROXY: straight to the upstream");
    env.write("releases/current.json", b"{\"version\":\"11.6\"}\n");
    env.make_manifest();
    let out = env.sync_env(&server.url(), &[], &[("HTTPS_PROXY", &proxy.url())]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(proxy.connects().len() > before, "HTTPS_PROXY from the environment");

    // A proxy that is down fails the run and names the upstream; credentials never show.
    let dead = format!("http://user:secret@127.0.0.1:{}", crate::support::nginx::free_port());
    env.write("releases/current.json", b"{\"version\":\"11.7\"}\n");
    env.make_manifest();
    let out = env.sync(&server.url(), &["--proxy", &dead, "--retries", "0", "--connect-timeout", "2s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("secret"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("through the proxy {}", &dead.replace("user:secret@", ""))), "{}", out.stderr);
}

#[test]
fn a_proxy_that_wants_credentials_refuses_without_them_and_passes_with_them() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let proxy = crate::support::proxy::Proxy::start_with(&env.dir.path().join("proxy"), Some(("alice", "s3cret")));
    let out = env.sync(&server.url(), &["--proxy", &proxy.url(), "--retries", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    let said = format!("proxy {} refused CONNECT", proxy.url());
    assert!(out.stderr.contains(&said) && out.stderr.contains("407"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(!env.current().exists());

    let with_credentials = proxy.url().replace("http://", "http://alice:s3cret@");
    let out = env.sync(&server.url(), &["--proxy", &with_credentials]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let status = std::fs::read_to_string(env.root.join(".upmirror/status.json")).unwrap();
    assert!(!out.stderr.contains("s3cret") && !status.contains("s3cret"), "credentials never show");
    let ca = env.pki.ca.to_str().unwrap();
    let probe = env.run(&["mirrors", "--upstream", &server.url(), "--ca-file", ca, "--proxy", &with_credentials]);
    assert_eq!(probe.code, 0, "{probe:?}");
    let through = format!("through the proxy {}", proxy.url());
    assert!(probe.stdout.contains(&through) && !probe.stdout.contains("s3cret"), "{}", probe.stdout);

    // Or kept in a file of their own, out of the URL and the config.
    let file = env.dir.path().join("proxy.cred");
    std::fs::write(&file, "alice:s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = env.sync(&server.url(), &["--proxy", &proxy.url(), "--proxy-credentials-file", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("warning") && !out.stderr.contains("s3cret"), "{}", out.stderr);
    std::fs::write(&file, "no colon\n").unwrap();
    let out = env.sync(&server.url(), &["--proxy", &proxy.url(), "--proxy-credentials-file", file.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("expected one line user:password") && !out.stderr.contains("no colon"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_upstream_over_ipv6_is_mirrored() {
    let env = Env::with_sample_tree();
    let port = crate::support::nginx::free_port();
    let servers = format!(
        "ssl_certificate {}; ssl_certificate_key {};\n\
         server {{ listen 127.0.0.1:{port} ssl; listen [::1]:{port} ssl; root {}; }}\n",
        env.pki.server_cert.display(),
        env.pki.server_key.display(),
        env.upstream.display()
    );
    let _nginx = crate::support::Nginx::with_servers(&env.dir.path().join("nginx6"), &servers, port, port);
    let url = format!("https://[::1]:{port}/");
    let out = env.sync(&url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("[::1]"), "{}", out.stderr);
    env.assert_mirrors_upstream();
    let out = env.run(&["mirrors", "--json", "--upstream", &url, "--ca-file", env.pki.ca.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_tls_proxy_is_trusted_by_its_own_ca_and_that_ca_never_vouches_for_an_upstream() {
    let env = Env::with_sample_tree();
    let pki = &env.pki;
    let server = env.serve_with(Options { client_ca: Some(pki.client_ca.clone()), ..Default::default() });
    let proxy = crate::support::proxy::Proxy::start(&env.dir.path().join("proxy"));
    // The proxy's certificate comes from a CA of its own (the test's "rogue" one).
    let front = proxy.tls_front(&env.dir.path().join("stunnel"), &pki.rogue_cert, &pki.rogue_key);
    let via = format!("https://localhost:{}", front.port);
    let client = ["--client-cert", pki.client_cert.to_str().unwrap(), "--client-key", pki.client_key.to_str().unwrap()];
    let proxy_ca = ["--proxy-ca-file", pki.rogue_ca.to_str().unwrap()];

    let out = env.sync(&server.url(), &[&["--proxy", &via][..], &client].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("certificate") && out.stderr.contains(&via), "{}", out.stderr);
    assert!(proxy.connects().is_empty(), "{:?}", proxy.connects());

    let out = env.sync(&server.url(), &[&["--proxy", &via][..], &client, &proxy_ca].concat());
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let upstream = format!("127.0.0.1:{}", server.addr.port());
    assert!(!proxy.connects().is_empty() && proxy.connects().iter().all(|c| *c == upstream), "{:?}", proxy.connects());

    // A proxy reached by an upstream's name: its CA would vouch for that upstream.
    let same_name = format!("https://127.0.0.1:{}", front.port);
    let out = env.sync(&server.url(), &[&["--proxy", &same_name][..], &client, &proxy_ca].concat());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("has the name of an upstream"), "{}", out.stderr);

    // An upstream whose certificate that CA signed is refused through the tunnel.
    let impostor =
        env.serve_with(Options { cert: Some((pki.rogue_cert.clone(), pki.rogue_key.clone())), ..Default::default() });
    let out = env.sync(&impostor.url(), &[&["--proxy", &via][..], &proxy_ca].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
}

#[test]
fn a_name_whose_first_address_is_dead_fails_over_to_the_next() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let port = server.addr.port();
    let _dead = crate::support::dead_address(port);
    // The name resolves to the dead IPv6 address first, then the live IPv4 one.
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, "::1 two.upmirror.test\n127.0.0.1 two.upmirror.test\n").unwrap();
    let resolved = Command::new("unshare")
        .args(["--mount", "sh", "-c", "mount --bind \"$0\" /etc/hosts && getent ahosts two.upmirror.test"])
        .arg(&hosts)
        .output()
        .unwrap();
    let resolved = String::from_utf8_lossy(&resolved.stdout).into_owned();
    assert!(resolved.starts_with("::1 "), "the dead address must come first: {resolved}");

    let url = format!("https://two.upmirror.test:{port}/");
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    let started = Instant::now();
    let timeout = ["--connect-timeout", "20s"];
    let out = env.run_with_hosts(
        &hosts,
        &[&["sync", "--root", root, "--upstream", &url, "--ca-file", ca][..], &timeout].concat(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "waited out the dead address: {:?}", started.elapsed());
    env.assert_mirrors_upstream();

    let out = env.run_with_hosts(&hosts, &[&["mirrors", "--upstream", &url, "--ca-file", ca][..], &timeout].concat());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("answered from 127.0.0.1:{port}")), "{}", out.stdout);
}

#[test]
fn an_upstream_may_go_through_its_own_proxy_or_none() {
    let env = Env::with_sample_tree();
    let (primary, secondary, third) = (env.serve(), env.serve(), env.serve());
    primary.fault("/pool/p03.deb", Fault::Status(404));
    secondary.fault("/pool/p03.deb", Fault::Status(404));
    let company = crate::support::proxy::Proxy::start(&env.dir.path().join("company"));
    let partner = crate::support::proxy::Proxy::start(&env.dir.path().join("partner"));
    let config = env.dir.path().join("proxies.toml");
    let text = format!(
        "proxy = \"{}\"\nretry_backoff = \"10ms\"\nupstreams = [\"{}\", {{ url = \"{}\", proxy = \"direct\" }}, {{ url = \"{}\", proxy = \"{}\" }}]\n",
        company.url(),
        primary.url(),
        secondary.url(),
        third.url(),
        partner.url()
    );
    std::fs::write(&config, text).unwrap();
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    let out = env.run(&["sync", "--config", config.to_str().unwrap(), "--root", root, "--ca-file", ca]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let hostport = |s: &crate::support::Server| format!("127.0.0.1:{}", s.addr.port());
    assert!(company.connects().iter().all(|c| *c == hostport(&primary)), "{:?}", company.connects());
    assert!(!secondary.requests_for("/pool/p03.deb").is_empty(), "the direct upstream was asked");
    assert!(partner.connects().iter().all(|c| *c == hostport(&third)), "{:?}", partner.connects());
    assert!(!partner.connects().is_empty() && !company.connects().is_empty());

    let out = env.run(&["mirrors", "--config", config.to_str().unwrap(), "--ca-file", ca]);
    let said = |p: &crate::support::proxy::Proxy| format!("through the proxy http://127.0.0.1:{}", p.port);
    assert!(out.stdout.contains(&said(&company)) && out.stdout.contains(&said(&partner)), "{}", out.stdout);
    assert_eq!(out.stdout.matches("through the proxy").count(), 2, "{}", out.stdout);
}

#[test]
fn many_files_from_an_http2_server_share_a_few_connections_and_http2_false_keeps_http11() {
    let env = Env::new();
    let count = 600;
    for i in 0..count {
        env.write(&format!("pool/{:02}/f{i:03}", i % 10), &pseudo_random(500 + i * 7, i as u64));
    }
    env.write("big.iso", &pseudo_random(9 << 20, 7));
    env.make_manifest();
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let hits = nginx.hits();
    let pool: Vec<_> = hits.iter().filter(|h| h.uri.starts_with("/pool/")).collect();
    assert_eq!(pool.len(), count, "each file once");
    assert!(pool.iter().all(|h| h.protocol == "HTTP/2.0"), "{:?}", pool.iter().find(|h| h.protocol != "HTTP/2.0"));
    let files: std::collections::BTreeSet<u64> = pool.iter().map(|h| h.connection).collect();
    assert!(files.len() >= 2 && files.len() <= 8, "small files over a few HTTP/2 connections: {files:?}");
    let big: Vec<_> = hits.iter().filter(|h| h.uri == "/big.iso").collect();
    assert!(big.len() == 1 && big[0].protocol == "HTTP/1.1", "a large body over a connection of its own: {big:?}");
    let all: std::collections::BTreeSet<u64> = hits.iter().map(|h| h.connection).collect();
    assert!(all.len() <= 10, "the manifest's connection, 8 HTTP/2 ones and the large body's: {all:?}");

    // max_connections_per_host bounds the connections, not the streams.
    std::fs::remove_dir_all(&env.root).unwrap();
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &["--max-connections-per-host", "3"]);
    assert_eq!(out.code, 0, "{out:?}");
    let all: std::collections::BTreeSet<u64> = nginx.hits().iter().map(|h| h.connection).collect();
    assert!(all.len() <= 3, "{all:?}");

    // http2 = false: every request over HTTP/1.1.
    std::fs::remove_dir_all(&env.root).unwrap();
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &["--http2", "false"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let hits = nginx.hits();
    assert!(hits.iter().all(|h| h.protocol == "HTTP/1.1"), "{:?}", hits.iter().find(|h| h.protocol != "HTTP/1.1"));
}
