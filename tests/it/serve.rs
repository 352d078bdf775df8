//! The shipped files beside the binary, run for real: the nginx site (TLS,
//! allow list, status endpoint, state never served, atomic publishes under
//! load), the systemd units, the cron line and the status page in Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{Env, Nginx, nginx::free_port, pseudo_random};

pub(crate) fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shipped site with its own allow list (loopback is allowed).
pub(crate) fn start_shipped_site_as_shipped(env: &Env) -> (Nginx, u16, u16) {
    let allow = std::fs::read_to_string(shipped("nginx/upmirror-allow.conf")).unwrap();
    start_shipped_site(env, &allow, "nginx")
}

/// The shipped site with only ports, certificate paths, the allow list and
/// the root substituted.
pub(crate) fn start_shipped_site(env: &Env, allow: &str, name: &str) -> (Nginx, u16, u16) {
    start_shipped_site_with(env, allow, name, (&env.pki.server_cert, &env.pki.server_key))
}

/// The shipped site with this certificate and key.
fn start_shipped_site_with(env: &Env, allow: &str, name: &str, tls: (&Path, &Path)) -> (Nginx, u16, u16) {
    let (https, http) = (free_port(), free_port());
    let allow_file = env.dir.path().join(format!("{name}-allow.conf"));
    std::fs::write(&allow_file, allow).unwrap();
    let peers = std::fs::read_to_string(shipped("nginx/upmirror-peers.conf")).unwrap();
    let site = Site { root: &env.root, allow: &allow_file, tls, ports: (https, http), peers: &peers, name };
    let text = shipped_site_text(env, &site, &[]);
    (Nginx::with_servers(&env.dir.path().join(name), &text, https, http), https, http)
}

/// What one instance of the shipped site is given.
pub(crate) struct Site<'a> {
    pub root: &'a Path,
    pub allow: &'a Path,
    pub tls: (&'a Path, &'a Path),
    pub ports: (u16, u16),
    /// The text of its `upmirror-peers.conf`.
    pub peers: &'a str,
    pub name: &'a str,
}

/// The shipped site's text with only ports, certificate paths, the allow
/// list, the peers file and the root substituted, then `extra`.
pub(crate) fn shipped_site_text(env: &Env, site: &Site, extra: &[(&str, String)]) -> String {
    let (https, http) = site.ports;
    let peers_file = env.dir.path().join(format!("{}-peers.conf", site.name));
    std::fs::write(&peers_file, site.peers).unwrap();
    let mut text = std::fs::read_to_string(shipped("nginx/upmirror.conf")).unwrap();
    let substitutions = [
        ("    listen [::]:80;\n", String::new()),
        ("    listen [::]:443 ssl http2;\n", String::new()),
        ("listen 80;", format!("listen 127.0.0.1:{http};")),
        ("listen 443 ssl http2;", format!("listen 127.0.0.1:{https} ssl http2;")),
        ("/etc/ssl/upmirror/mirror.crt", site.tls.0.display().to_string()),
        ("/etc/ssl/upmirror/mirror.key", site.tls.1.display().to_string()),
        ("/etc/nginx/upmirror-allow.conf", site.allow.display().to_string()),
        ("/etc/nginx/upmirror-peers.conf", peers_file.display().to_string()),
        ("/srv/upmirror", site.root.display().to_string()),
    ];
    for (from, to) in substitutions.iter().chain(extra) {
        assert!(text.contains(from), "the shipped config no longer has {from:?}");
        text = text.replace(from, to);
    }
    text
}

pub(crate) fn client(env: &Env) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&env.pki.ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) async fn get(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let resp = c.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

#[test]
fn the_shipped_nginx_site_serves_the_mirror_and_its_status_and_nothing_else() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let (_nginx, https, http) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}");
    let c = client(&env);
    runtime().block_on(async {
        let (status, body) = get(&c, &format!("{base}/releases/11.2/core.zip")).await;
        assert_eq!((status, body == pseudo_random(300_000, 1)), (200, true));
        let (status, body) = get(&c, &format!("{base}/docs/read%20me%20%231%20100%25%3F.txt")).await;
        assert_eq!((status, body.as_slice()), (200, &b"spaces, hash, percent, question mark\n"[..]));
        let (status, body) = get(&c, &format!("{base}/.treeinfo")).await;
        assert_eq!((status, body.as_slice()), (200, &b"dotfiles are mirrored too\n"[..]));
        let (status, body) = get(&c, &format!("{base}/pool/")).await;
        assert!(status == 200 && String::from_utf8_lossy(&body).contains("p07.deb"), "a listing for people");

        let (status, body) = get(&c, &format!("{base}/.well-known/upmirror/status.json")).await;
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["last_run"]["outcome"], "published");
        assert!(!String::from_utf8_lossy(&body).contains(env.root.to_str().unwrap()), "no host paths in public status");
        let (status, body) = get(&c, &format!("{base}/.well-known/upmirror/")).await;
        assert!(status == 200 && String::from_utf8_lossy(&body).contains("Last run"));

        for hidden in
            ["/.upmirror/status.json", "/.upmirror/state.json", "/.upmirror/lock", "/../.upmirror/lock", "/snapshots/"]
        {
            let (status, _) = get(&c, &format!("{base}{hidden}")).await;
            assert!(status == 404 || status == 400, "{hidden} answered {status}");
        }
        let post = c.post(format!("{base}/pool/p01.deb")).body("x").send().await.unwrap();
        assert_eq!(post.status().as_u16(), 403, "only GET and HEAD");
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let resp = plain.get(format!("http://127.0.0.1:{http}/pool/p01.deb")).header("Host", "evil.example").send();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status().as_u16(), 301);
        let location = resp.headers()["location"].to_str().unwrap();
        assert_eq!(location, "https://mirror.example.internal/pool/p01.deb", "never to the Host asked for");

        let resp = c.get(format!("{base}/pool/p01.deb")).send().await.unwrap();
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["content-security-policy"], "sandbox", "upstream pages run in no origin");
        let resp = c.get(format!("{base}/.well-known/upmirror/")).send().await.unwrap();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    });
}

#[test]
fn an_address_outside_the_allow_list_is_refused() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    // Only a private range the test client is not in.
    let (_nginx, https, _) = start_shipped_site(&env, "allow 10.0.0.0/8;\ndeny all;\n", "nginx");
    let c = client(&env);
    runtime().block_on(async {
        let (status, _) = get(&c, &format!("https://127.0.0.1:{https}/pool/p01.deb")).await;
        assert_eq!(status, 403);
        let (status, _) = get(&c, &format!("https://127.0.0.1:{https}/.well-known/upmirror/status.json")).await;
        assert_eq!(status, 403);
    });
}

#[test]
fn clients_see_only_whole_old_or_new_files_while_syncs_publish() {
    let env = Env::new();
    let (old, new) = (pseudo_random(700_000, 1), pseudo_random(500_000, 2));
    env.write("pool/changing.bin", &old);
    env.write("pool/constant.bin", &pseudo_random(50_000, 3));
    env.write("big/long.bin", &pseudo_random(24 << 20, 4));
    env.make_manifest();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &["--keep", "2"]).code, 0);
    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    let base = format!("https://127.0.0.1:{https}");
    let c = client(&env);
    let rt = runtime();

    // A long download that starts before the publishes and ends after them.
    let mut long = rt.block_on(c.get(format!("{base}/big/long.bin")).send()).unwrap();
    let mut long_body = rt.block_on(long.chunk()).unwrap().unwrap().to_vec();

    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let (c, base, stop, requests, failures) =
                (c.clone(), base.clone(), stop.clone(), requests.clone(), failures.clone());
            let (old, new) = (old.clone(), new.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let (status, body) = get(&c, &format!("{base}/pool/changing.bin")).await;
                    if status != 200 || (body != old && body != new) {
                        failures.lock().unwrap().push(format!("changing.bin: {status}, {} bytes", body.len()));
                    }
                    let (status, body) = get(&c, &format!("{base}/pool/constant.bin")).await;
                    if status != 200 || body.len() != 50_000 {
                        failures.lock().unwrap().push(format!("constant.bin: {status}, {} bytes", body.len()));
                    }
                    requests.fetch_add(2, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for round in 0..8 {
        env.write("pool/changing.bin", if round % 2 == 0 { &new } else { &old });
        env.write(&format!("pool/extra-{round}.bin"), b"churn");
        env.make_manifest();
        let out = env.sync(&upstream.url(), &["--keep", "2"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        rt.block_on(l).unwrap();
    }
    while let Some(chunk) = rt.block_on(long.chunk()).unwrap() {
        long_body.extend_from_slice(&chunk);
    }
    let failures = failures.lock().unwrap();
    let n = requests.load(Ordering::SeqCst);
    eprintln!("atomicity under load: {n} requests during 8 publishes, {} failures", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(n >= 16, "the client loop ran ({n} requests)");
    assert!(long_body == pseudo_random(24 << 20, 4), "the long download completed whole");
}

#[test]
fn the_systemd_units_verify_and_the_cron_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(shipped("cron/upmirror.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/upmirror sync --quiet"));
    std::fs::write(
        dir.path().join("upmirror.service"),
        service.replace("/usr/bin/upmirror", env!("CARGO_BIN_EXE_upmirror")),
    )
    .unwrap();
    std::fs::copy(shipped("cron/upmirror.timer"), dir.path().join("upmirror.timer")).unwrap();
    // The templates, as the instance `vendor` (/etc/upmirror/vendor.toml).
    let template = std::fs::read_to_string(shipped("cron/upmirror@.service")).unwrap();
    assert!(template.contains("--config /etc/upmirror/%i.toml"));
    let instance = template.replace("/usr/bin/upmirror", env!("CARGO_BIN_EXE_upmirror"));
    std::fs::write(dir.path().join("upmirror@vendor.service"), instance).unwrap();
    std::fs::copy(shipped("cron/upmirror@.timer"), dir.path().join("upmirror@vendor.timer")).unwrap();
    let verify = std::fs::read_to_string(shipped("cron/upmirror-verify.service")).unwrap();
    assert!(verify.contains("ExecStart=/usr/bin/upmirror verify --quiet --budget 50GiB"));
    let verify = verify.replace("/usr/bin/upmirror", env!("CARGO_BIN_EXE_upmirror"));
    std::fs::write(dir.path().join("upmirror-verify.service"), verify).unwrap();
    std::fs::copy(shipped("cron/upmirror-verify.timer"), dir.path().join("upmirror-verify.timer")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("upmirror.service"))
        .arg(dir.path().join("upmirror.timer"))
        .arg(dir.path().join("upmirror@vendor.service"))
        .arg(dir.path().join("upmirror@vendor.timer"))
        .arg(dir.path().join("upmirror-verify.service"))
        .arg(dir.path().join("upmirror-verify.timer"))
        .output()
        .expect("systemd-analyze is missing (apt-get install systemd); .ci/run installs it");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "warnings: {}", String::from_utf8_lossy(&out.stderr));

    let cron = std::fs::read_to_string(shipped("cron/upmirror.cron")).unwrap();
    let jobs: Vec<&str> =
        cron.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('=')).collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let fields: Vec<&str> = jobs[0].split_whitespace().collect();
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (lo, hi)) in fields[..5].iter().zip(ranges) {
        let ok = *field == "*" || field.split(',').all(|v| v.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n)));
        assert!(ok, "cron field {field:?} out of {lo}..{hi}");
    }
    assert_eq!(fields[5], "upmirror", "runs as the upmirror user");
    assert_eq!(&fields[6..9], ["/usr/bin/upmirror", "sync", "--quiet"]);
}

#[test]
fn the_status_page_renders_in_chromium_under_the_shipped_sites_policy() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    let (_nginx, https, _) = start_shipped_site_as_shipped(&env);
    // Served by nginx with its Content-Security-Policy: the script runs only
    // if the policy allows it by hash.
    let page = format!("https://127.0.0.1:{https}/.well-known/upmirror/");
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let chromium = chromium.expect("chromium is missing (apt-get install chromium); ./test.sh installs it");
    let profile = env.dir.path().join("chromium-profile");
    let shot = env.dir.path().join("status.png");
    let headless = |extra: &[String]| {
        Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg("--ignore-certificate-errors")
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let dom = headless(&["--dump-dom".into(), page.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("Last run") && dom.contains("published"), "{dom}");
    assert!(dom.contains(" ago</time>"), "the script ran under the policy: {dom}");
    let out = headless(&["--window-size=1000,900".into(), format!("--screenshot={}", shot.display()), page]);
    let png =
        std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture: {} bytes", png.len());
}

#[test]
fn the_readme_install_steps_run_as_written_and_match_the_package() {
    let readme = std::fs::read_to_string(shipped("README.md")).unwrap();
    let install = &readme[readme.find("## Install on a server").unwrap()..];
    let install = &install[..install.find("\n## ").unwrap_or(install.len())];
    assert!(!install.contains("sudo "), "a minimal Debian 12 has no sudo: use runuser");
    // Debian's cron ignores /etc/cron.d files whose names have a dot.
    for line in install.lines().filter(|l| l.contains("/etc/cron.d/")) {
        let name = line.rsplit("/etc/cron.d/").next().unwrap().split_whitespace().next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "cron would ignore {name}");
    }
    // The same user, group, home and shell as the package's postinst makes.
    let useradd = |text: &str| -> String {
        let start = text.find("useradd ").unwrap();
        let end = start + text[start..].find(" upmirror\n").unwrap();
        text[start..end].replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let postinst = std::fs::read_to_string(shipped("debian/postinst")).unwrap();
    assert_eq!(useradd(install), useradd(&postinst));
}

#[test]
fn a_second_tier_syncs_from_a_mirror_whose_certificate_comes_from_the_lab_recipe() {
    let env = Env::with_sample_tree();
    let upstream = env.serve();
    assert_eq!(env.sync(&upstream.url(), &[]).code, 0);
    // Exactly the recipe the nginx site names.
    let site = std::fs::read_to_string(shipped("nginx/upmirror.conf")).unwrap();
    assert!(site.contains("nginx/lab-tls.sh mirror.example.internal /etc/ssl/upmirror"));
    let tls = env.dir.path().join("lab-tls");
    let out = Command::new("sh").arg(shipped("nginx/lab-tls.sh")).arg("127.0.0.1").arg(&tls).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let allow = std::fs::read_to_string(shipped("nginx/upmirror-allow.conf")).unwrap();
    let (_nginx, https, _) =
        start_shipped_site_with(&env, &allow, "nginx", (&tls.join("mirror.crt"), &tls.join("mirror.key")));

    let tier2 = Env::new();
    let url = format!("https://127.0.0.1:{https}/");
    let root = tier2.root.to_str().unwrap();
    let out =
        tier2.run(&["sync", "--root", root, "--upstream", &url, "--ca-file", tls.join("lab-ca.pem").to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let files = |dir: &Path| {
        let mut all = crate::support::files(dir);
        all.remove("upmirror-manifest.json"); // each tier writes its own
        all
    };
    assert_eq!(files(&tier2.current()), files(&env.current()));
}
