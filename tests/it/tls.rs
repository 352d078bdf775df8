//! TLS: the CA pin, mutual TLS and redirects.

use crate::support::{Env, Fault, Options};

#[test]
fn a_server_from_another_ca_is_refused_and_nothing_is_published() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let out = env.run(&[
        "sync",
        "--root",
        env.root.to_str().unwrap(),
        "--upstream",
        &server.url(),
        "--ca-file",
        env.pki.rogue_ca.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("UnknownIssuer") || out.stderr.contains("certificate"), "{}", out.stderr);
    assert!(!env.current().exists());
    env.assert_sentinel_intact();
}

#[test]
fn the_pin_replaces_the_system_roots() {
    let env = Env::with_sample_tree();
    let rogue = env.serve_with(Options {
        cert: Some((env.pki.rogue_cert.clone(), env.pki.rogue_key.clone())),
        ..Default::default()
    });
    let trust_rogue = [("SSL_CERT_FILE", env.pki.rogue_ca.to_str().unwrap())];
    let root = env.root.to_str().unwrap();
    // The control: without a pin, a system-trusted root is accepted.
    let out = env.run_env(&["sync", "--dry-run", "--root", root, "--upstream", &rogue.url()], &trust_rogue);
    assert_eq!(out.code, 0, "the system roots (SSL_CERT_FILE) trust the rogue CA: {out:?}");
    // With the pin, the same system-trusted server is refused.
    let out = env.run_env(
        &["sync", "--root", root, "--upstream", &rogue.url(), "--ca-file", env.pki.ca.to_str().unwrap()],
        &trust_rogue,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("does not sign the certificate 127.0.0.1 presented"), "{}", out.stderr);
    assert!(!env.current().exists());
}

#[test]
fn mutual_tls_works_with_the_client_certificate() {
    let env = Env::with_sample_tree();
    let server = env.serve_with(Options { client_ca: Some(env.pki.client_ca.clone()), ..Default::default() });
    let key_mode = |mode| {
        std::fs::set_permissions(&env.pki.client_key, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    let mtls =
        ["--client-cert", env.pki.client_cert.to_str().unwrap(), "--client-key", env.pki.client_key.to_str().unwrap()];
    key_mode(0o600);
    let out = env.sync(&server.url(), &mtls);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("readable by every user"), "{}", out.stderr);
    env.assert_mirrors_upstream();
    key_mode(0o644);
    let out = env.sync(&server.url(), &mtls);
    assert!(out.stderr.contains("is readable by every user; fix: chmod o-r"), "{}", out.stderr);
}

#[test]
fn a_missing_or_foreign_client_certificate_fails_clearly() {
    let env = Env::with_sample_tree();
    let server = env.serve_with(Options { client_ca: Some(env.pki.client_ca.clone()), ..Default::default() });
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("client certificate"), "{}", out.stderr);
    // A certificate from a CA the upstream does not accept (the server's own leaf).
    let out = env.sync(
        &server.url(),
        &["--client-cert", env.pki.server_cert.to_str().unwrap(), "--client-key", env.pki.server_key.to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!env.current().exists());
}

#[test]
fn a_redirect_to_another_host_is_refused_and_named() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let elsewhere = format!("https://localhost:{}/pool/p01.deb", server.addr.port());
    server.fault("/pool/p01.deb", Fault::Redirect(elsewhere.clone()));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("redirect to another origin refused") && out.stderr.contains(&elsewhere),
        "{}",
        out.stderr
    );
    assert!(!env.current().exists());
}

#[test]
fn a_same_origin_redirect_is_followed_and_a_loop_stops() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p01.deb", Fault::Redirect("/pool/p01-moved.deb".into()));
    std::fs::copy(env.upstream.join("pool/p01.deb"), env.upstream.join("pool/p01-moved.deb")).unwrap();
    env.make_manifest();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);

    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p01.deb", Fault::Redirect("/pool/p01.deb".into()));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("more than 5 redirects"), "{}", out.stderr);
}

#[test]
fn a_client_identity_is_checked_before_any_request() {
    use crate::support::pki::client_cert_valid_for;
    let env = Env::with_sample_tree();
    let server = env.serve_with(Options { client_ca: Some(env.pki.client_ca.clone()), ..Default::default() });
    let (cert, key) = (env.pki.client_cert.to_str().unwrap(), env.pki.server_key.to_str().unwrap());
    let out = env.sync(&server.url(), &["--client-cert", cert, "--client-key", key]);
    assert_eq!(out.code, 2, "a key of another certificate: {out:?}");
    assert!(
        out.stderr.contains(cert) && out.stderr.contains(key) && out.stderr.contains("does not belong"),
        "{}",
        out.stderr
    );
    assert!(server.log().is_empty(), "no request was made");

    let (old_cert, old_key) = client_cert_valid_for(env.dir.path(), "expired", -1);
    let out = env
        .sync(&server.url(), &["--client-cert", old_cert.to_str().unwrap(), "--client-key", old_key.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("the certificate expired at") && out.stderr.contains("renew"), "{}", out.stderr);
    assert!(server.log().is_empty());

    // Ten days left: a warning, the expiry in mirrors, status and the metric.
    let (soon_cert, soon_key) = client_cert_valid_for(env.dir.path(), "soon", 10);
    let (soon_cert, soon_key) = (soon_cert.to_str().unwrap(), soon_key.to_str().unwrap());
    let ca = env.pki.ca.to_str().unwrap();
    let out = env.run(&[
        "mirrors",
        "--upstream",
        &server.url(),
        "--ca-file",
        ca,
        "--client-cert",
        soon_cert,
        "--client-key",
        soon_key,
    ]);
    assert!(
        out.stderr.contains(&format!("client_cert {soon_cert} expires in ")) && out.stderr.contains("renew it"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("client certificate CN=soon expires 20"), "{}", out.stdout);
    let metrics = env.dir.path().join("m.prom");
    let args = ["--client-cert", soon_cert, "--client-key", soon_key, "--metrics-file", metrics.to_str().unwrap()];
    env.sync(&server.url(), &args);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("\nupmirror_client_cert_expiry_timestamp_seconds 1"), "{text}");
}
