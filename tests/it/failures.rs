//! Failures are quick and say what happened: what no retry can fix fails at
//! once with the default five retries (here a backoff of a second, so a
//! retried refusal would take half a minute), in a line that names the
//! proxy, file or host and the fix.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::{Env, dead_address};

/// The backoff the default of five retries would wait out: 1+2+4+8+16 s.
const BACKOFF: [&str; 2] = ["--retry-backoff", "1s"];
const AT_ONCE: Duration = Duration::from_secs(5);

#[test]
fn a_proxy_that_refuses_connect_fails_the_run_at_once_with_its_answer() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    // ConnectPort 443: tinyproxy answers 403 to a CONNECT to any other port.
    let proxy = Proxy::start_conf(&env.dir.path().join("forbidding"), "ConnectPort 443\n");
    let started = Instant::now();
    let out = env.sync(&server.url(), &[&["--proxy", &proxy.url()][..], &BACKOFF].concat());
    assert_eq!(out.code, 1, "{out:?}");
    let upstream = server.url().trim_end_matches('/').to_owned();
    let said = format!("proxy {} refused CONNECT to {upstream}: 403", proxy.url());
    assert!(out.stderr.contains(&said) && out.stderr.contains("rules forbid"), "{}", out.stderr);
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
    assert!(fs::symlink_metadata(env.current()).is_err());

    let proxy = Proxy::start_with(&env.dir.path().join("asking"), Some(("mirror", "s3cret")));
    let started = Instant::now();
    let out = env.sync(&server.url(), &[&["--proxy", &proxy.url()][..], &BACKOFF].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("407") && out.stderr.contains("set proxy_credentials_file"), "{}", out.stderr);
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
}

/// A real TLS server that speaks TLS 1.1 alone (openssl s_server).
struct OldTls(Child, u16);

impl OldTls {
    fn start(env: &Env) -> OldTls {
        let port = crate::support::nginx::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&env.pki.server_cert)
            .arg("-key")
            .arg(&env.pki.server_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is missing (apt-get install openssl); ./test.sh installs it");
        crate::support::wait_listening(port, Duration::from_secs(10), || "openssl s_server did not start".into());
        OldTls(child, port)
    }
}

impl Drop for OldTls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_that_speaks_only_an_old_tls_fails_at_once() {
    let env = Env::new();
    let old = OldTls::start(&env);
    let started = Instant::now();
    let out = env.sync(&format!("https://127.0.0.1:{}/", old.1), &BACKOFF);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("TLS handshake failed"), "{}", out.stderr);
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
}

#[test]
fn a_certificate_from_another_ca_names_the_ca_file_and_the_issuer() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let rogue = env.pki.rogue_ca.to_str().unwrap();
    let args = ["sync", "--root", env.root.to_str().unwrap(), "--upstream", &server.url(), "--ca-file", rogue];
    let out = env.run(&[&args[..], &BACKOFF].concat());
    assert_eq!(out.code, 1, "{out:?}");
    let said = format!("ca_file {rogue} does not sign the certificate 127.0.0.1 presented (issuer CN=");
    assert!(out.stderr.contains(&said), "{}", out.stderr);
    assert!(out.stderr.lines().count() == 1 && out.stderr.len() < 600, "one short line: {}", out.stderr);
}

#[test]
fn a_host_name_that_does_not_resolve_fails_at_once() {
    let env = Env::new();
    // No DNS here: the name is looked up in these files alone.
    let (hosts, nsswitch) = (env.dir.path().join("hosts"), env.dir.path().join("nsswitch.conf"));
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    fs::write(&nsswitch, "hosts: files\n").unwrap();
    let started = Instant::now();
    let args = ["sync", "--root", env.root.to_str().unwrap(), "--upstream", "https://mirror.upmirror.invalid/"];
    let out = env
        .run_with_files(&[(&hosts, "/etc/hosts"), (&nsswitch, "/etc/nsswitch.conf")], &[&args[..], &BACKOFF].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no such host mirror.upmirror.invalid"), "{}", out.stderr);
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
}

/// A server at its connection limit (webfs over TLS once wedged) takes the
/// TCP connection and never answers: the message says that, not "no
/// connection".
#[test]
fn a_server_that_takes_connections_but_answers_none_is_named_so() {
    let env = Env::with_sample_tree();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    let started = Instant::now();
    let out = env.sync(&url, &["--connect-timeout", "1s", "--retries", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("it accepts connections but answers none within connect_timeout"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    drop(listener);
}

#[test]
fn a_dead_primary_costs_one_connect_timeout_and_mirrors_says_so() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let port = crate::support::nginx::free_port();
    let _dead = dead_address(port);
    let primary = format!("https://[::1]:{port}/");
    let started = Instant::now();
    let timeout = ["--connect-timeout", "2s"];
    let out = env.sync_from(&[&primary, &server.url()], &[&timeout[..], &BACKOFF].concat());
    assert_eq!(out.code, 0, "{out:?}");
    // One connect timeout (2 s), not five retries of it (more than 40 s).
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    env.assert_mirrors_upstream();
    let status = env.last_status();
    assert_eq!(status["upstreams"][0]["state"], "failed", "{status}");
    assert!(status["upstreams"][0]["error"].as_str().unwrap().contains("skipped for the rest of this run"), "{status}");

    let ca = env.pki.ca.to_str().unwrap();
    let args = ["mirrors", "--upstream", &primary, "--upstream", &server.url(), "--ca-file", ca];
    let out = env.run(&[&args[..], &timeout].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("1 of 2 upstreams usable; the primary is DOWN"), "{}", out.stderr);
}

#[test]
fn a_refused_primary_is_skipped_without_waiting_out_its_retries() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let closed = format!("https://127.0.0.1:{}/", crate::support::nginx::free_port());
    let started = Instant::now();
    let out = env.sync_from(&[&closed, &server.url()], &BACKOFF);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(started.elapsed() < AT_ONCE, "took {:?}", started.elapsed());
    env.assert_mirrors_upstream();
}

#[test]
fn an_upstream_at_localhost_is_a_url_not_a_local_path() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let url = format!("https://localhost:{}/", server.addr.port());
    let out = env.sync(&url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn each_failed_upstream_is_told_on_its_own_line() {
    let env = Env::with_sample_tree();
    let rogue = env.serve_with(crate::support::Options {
        cert: Some((env.pki.rogue_cert.clone(), env.pki.rogue_key.clone())),
        ..Default::default()
    });
    let closed = format!("https://127.0.0.1:{}/", crate::support::nginx::free_port());
    let out = env.sync_from(&[&rogue.url(), &closed], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert_eq!(lines[0], "upmirror: no upstream gave a valid listing:");
    assert!(lines[1].starts_with(&format!("  {}", rogue.url())) && lines[1].contains("does not sign"), "{}", lines[1]);
    assert!(lines[2].starts_with(&format!("  {closed}")) && lines[2].contains("refused"), "{}", lines[2]);
    // One line in the status; a line per upstream from status --check.
    assert!(!env.last_status()["error"].as_str().unwrap().contains('\n'));
    let out = env.run(&["status", "--check", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(lines[0].starts_with("upmirror: the last run failed (exit 1)"), "{}", lines[0]);
}
