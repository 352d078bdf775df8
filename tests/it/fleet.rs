//! Several hosts, one mirror: snapshot ids named by what they hold, so that
//! hosts which publish the same upstream state agree on them.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::apt::{Apt, Repo};
use crate::crawl::crawlable;
use crate::serve::{Site, client, get, runtime, shipped_site_text};
use crate::support::nginx::free_port;
use crate::support::{Env, Nginx, Out, SetOnDrop, wait_listening};

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

/// One mirror host: its root, and the shipped site serving it.
struct Host {
    root: PathBuf,
    nginx: Nginx,
    port: u16,
}

/// A real HAProxy terminating TLS and sending each request to the next
/// host in turn (HTTP mode: a client's keep-alive connection is spread too).
struct Haproxy {
    child: Child,
    port: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    fn start(env: &Env, name: &str, backends: &[u16]) -> Haproxy {
        let port = free_port();
        let pem = env.dir.path().join(format!("{name}.pem"));
        let (cert, key) = (fs::read(&env.pki.server_cert).unwrap(), fs::read(&env.pki.server_key).unwrap());
        fs::write(&pem, [cert, key].concat()).unwrap();
        let ca = env.pki.ca.display();
        let servers: String = (backends.iter().enumerate())
            .map(|(n, p)| {
                format!("    server h{n} 127.0.0.1:{p} ssl verify required ca-file {ca} sni str(localhost)\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 512\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\nfrontend fleet\n    bind 127.0.0.1:{port} ssl crt {}\n    default_backend hosts\n\
             backend hosts\n    balance roundrobin\n{servers}",
            pem.display()
        );
        let file = env.dir.path().join(format!("{name}.cfg"));
        fs::write(&file, config).unwrap();
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&file).output();
        let check = check.expect("haproxy is not installed (./test.sh installs it)");
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("haproxy").arg("-db").arg("-f").arg(&file).stdout(Stdio::null()).spawn().unwrap();
        wait_listening(port, Duration::from_secs(10), || format!("haproxy did not start ({})", file.display()));
        Haproxy { child, port }
    }
}

/// Three hosts, each with its own root and shipped site, behind HAProxy;
/// with `peers`, each site's `upmirror-peers.conf` lists the other two.
fn start_fleet(env: &Env, name: &str, peers: bool) -> (Vec<Host>, Haproxy) {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let allow = crate::serve::shipped("nginx/upmirror-allow.conf");
    let shipped_peers = fs::read_to_string(crate::serve::shipped("nginx/upmirror-peers.conf")).unwrap();
    let mut hosts = Vec::new();
    for (n, &(https, http)) in ports.iter().enumerate() {
        let root = env.dir.path().join(format!("{name}-host{n}"));
        let others: String =
            ports.iter().filter(|p| p.0 != https).map(|p| format!("    server 127.0.0.1:{};\n", p.0)).collect();
        let listed = format!("upstream upmirror_peers {{\n{others}    keepalive 8;\n}}\n");
        let tls = (env.pki.server_cert.as_path(), env.pki.server_key.as_path());
        let site_name = format!("{name}-host{n}");
        let peers_text = if peers { listed.as_str() } else { shipped_peers.as_str() };
        let site = Site { root: &root, allow: &allow, tls, ports: (https, http), peers: peers_text, name: &site_name };
        let extra = [
            ("/etc/ssl/certs/ca-certificates.crt", env.pki.ca.display().to_string()),
            ("server_name mirror.example.internal;", "server_name localhost;".to_owned()),
        ];
        let text = shipped_site_text(env, &site, &extra);
        let nginx = Nginx::with_servers(&env.dir.path().join(&site_name), &text, https, http);
        hosts.push(Host { root, nginx, port: https });
    }
    let haproxy = Haproxy::start(env, &format!("{name}-haproxy"), &ports.iter().map(|p| p.0).collect::<Vec<_>>());
    (hosts, haproxy)
}

/// The vendor's tree: an apt repository (by-hash, three index versions
/// kept) and an index of 50 files whose names change with each version
/// (the last three versions kept), published as a manifest.
struct Vendor<'e> {
    env: &'e Env,
    repo: Repo,
    version: u32,
}

impl<'e> Vendor<'e> {
    fn new(env: &'e Env) -> Vendor<'e> {
        let mut vendor = Vendor { env, repo: Repo::new(env), version: 0 };
        vendor.publish();
        vendor
    }

    fn publish(&mut self) {
        self.version += 1;
        let v = self.version;
        *self.repo.packages.get_mut(&format!("vendor-tool{}", v % 6 + 1)).unwrap() = v + 1;
        self.repo.build();
        let mut index = String::new();
        for i in 0..50 {
            let (rel, bytes) = (format!("data/v{v}/f{i:02}"), format!("{v} {i}\n").repeat(10 + i));
            self.env.write(&rel, bytes.as_bytes());
            index += &format!("{} {rel}\n", hex::encode(Sha256::digest(&bytes)));
        }
        self.env.write("index/files.txt", index.as_bytes());
        if v > 3 {
            fs::remove_dir_all(self.env.upstream.join(format!("data/v{}", v - 3))).unwrap();
        }
        self.env.make_manifest();
    }
}

/// What the clients saw through the load balancer.
#[derive(Default)]
struct Tally {
    updates: usize,
    apt_failures: Vec<String>,
    passes: usize,
    mismatches: usize,
    /// One line per pass that met a file it could not get.
    index_failures: Vec<String>,
}

/// Read the index, then each file it names; a file whose sha256 is not the
/// index's is a mismatch, any answer but 200 a failure.
async fn index_pass(c: &reqwest::Client, base: &str, tally: &Mutex<Tally>) {
    let (status, body) = get(c, &format!("{base}/index/files.txt")).await;
    let mut failures = Vec::new();
    let mut mismatches = 0;
    if status != 200 {
        failures.push(format!("index/files.txt: {status}"));
    }
    for line in String::from_utf8_lossy(&body).lines().filter(|_| status == 200) {
        let (digest, rel) = line.split_once(' ').unwrap();
        match get(c, &format!("{base}/{rel}")).await {
            (200, bytes) => mismatches += usize::from(hex::encode(Sha256::digest(&bytes)) != digest),
            (status, _) => failures.push(format!("{rel}: {status}")),
        }
    }
    let mut t = tally.lock().unwrap();
    (t.passes, t.mismatches) = (t.passes + 1, t.mismatches + mismatches);
    t.index_failures.extend((!failures.is_empty()).then(|| failures.join(", ")));
}

/// Sync every host, start the fleet, then `rounds` vendor publishes, each
/// reaching host 0 first, host 1 once both clients went round twice more,
/// host 2 after as long again; meanwhile a real apt client updates and an
/// index client reads, both through HAProxy, over and over.
fn publishes_under_load(env: &Env, vendor: &mut Vendor, name: &str, peers: bool, rounds: u32) -> (Tally, Vec<Host>) {
    let vendor_site = env.nginx(&env.upstream, &format!("{name}-vendor"));
    let url = vendor_site.html_url();
    let (hosts, haproxy) = start_fleet(env, name, peers);
    let sync = |host: &Host| sync_into(env, &host.root, &url, &["--max-delete-percent", "90"]);
    hosts.iter().for_each(|h| drop(sync(h)));
    let apt = Apt::strict(env, &format!("{name}-apt"), haproxy.port);
    let (ok, text) = apt.apt_get(&["update"], None);
    assert!(ok, "{text}");
    let tally = Mutex::new(Tally::default());
    let done = AtomicBool::new(false);
    let moved = |t: &Mutex<Tally>| t.lock().map(|t| (t.updates, t.passes)).unwrap();
    let wait_for_clients = || {
        let (u, p) = moved(&tally);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(moved(&tally).0 >= u + 2 && moved(&tally).1 >= p + 2) {
            assert!(Instant::now() < deadline, "the clients stopped: {:?} from {:?}", moved(&tally), (u, p));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let (ok, text) = apt.apt_get(&["update"], None);
                let mut t = tally.lock().unwrap();
                t.updates += 1;
                t.apt_failures.extend((!ok).then_some(text));
            }
        });
        s.spawn(|| {
            let (c, base) = (client(env), format!("https://127.0.0.1:{}", haproxy.port));
            let rt = runtime();
            while !done.load(Ordering::SeqCst) {
                rt.block_on(index_pass(&c, &base, &tally));
            }
        });
        let _stop = SetOnDrop(&done);
        for _ in 0..rounds {
            vendor.publish();
            for host in &hosts {
                sync(host);
                wait_for_clients();
            }
        }
        done.store(true, Ordering::SeqCst);
    });
    (tally.into_inner().unwrap(), hosts)
}

#[test]
fn a_fleet_behind_haproxy_serves_one_consistent_mirror_only_with_its_peers() {
    let env = Env::new();
    let mut vendor = Vendor::new(&env);
    // Without peers: a client that read an index from a host that already
    // published asks another for what it names, which has not yet.
    let (alone, _) = publishes_under_load(&env, &mut vendor, "alone", false, 10);
    assert!(!alone.apt_failures.is_empty(), "without peers no apt update failed: the test would not show the need");
    assert!(!alone.index_failures.is_empty(), "without peers no file was missing");

    let (fleet, hosts) = publishes_under_load(&env, &mut vendor, "fleet", true, 10);
    assert!(fleet.updates >= 20 && fleet.passes >= 20, "{} updates, {} passes", fleet.updates, fleet.passes);
    assert!(
        fleet.apt_failures.is_empty(),
        "{} of {} updates failed: {:#?}",
        fleet.apt_failures.len(),
        fleet.updates,
        fleet.apt_failures
    );
    assert_eq!(fleet.mismatches, 0);
    assert!(fleet.index_failures.is_empty(), "{:?}", fleet.index_failures);
    eprintln!(
        "without peers: {} of {} apt updates failed, {} of {} index passes met a missing file; with peers: 0 of {} and 0 of {}",
        alone.apt_failures.len(),
        alone.updates,
        alone.index_failures.len(),
        alone.passes,
        fleet.updates,
        fleet.passes
    );
    pinned_urls_resolve_on_every_host(&env, &mut vendor, &hosts);
}

/// A pinned URL read from host 0's status resolves on the other hosts with
/// the same bytes: through the peer hop right after host 0 published, from
/// their own snapshot (the same id) once they have too.
fn pinned_urls_resolve_on_every_host(env: &Env, vendor: &mut Vendor, hosts: &[Host]) {
    let vendor_site = env.nginx(&env.upstream, "pinned-vendor");
    vendor.publish();
    sync_into(env, &hosts[0].root, &vendor_site.html_url(), &["--max-delete-percent", "90"]);
    let (c, rt) = (client(env), runtime());
    let at = |host: &Host, path: &str| rt.block_on(get(&c, &format!("https://127.0.0.1:{}{path}", host.port)));
    let (status, body) = at(&hosts[0], "/.well-known/upmirror/status.json");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["host"].as_str().is_some_and(|h| !h.is_empty()), "the status names its host: {doc}");
    let snapshots = doc["snapshots"].as_array().unwrap();
    let id = snapshots.iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_owned();
    let path = format!("/.well-known/upmirror/snapshots/{id}/index/files.txt");
    let (status, want) = at(&hosts[0], &path);
    assert_eq!(status, 200);
    let asked_of_host0 = || hosts[0].nginx.hits().iter().filter(|h| h.uri == path).count();
    for host in &hosts[1..] {
        assert!(!host.root.join("snapshots").join(&id).exists(), "not published here yet");
        assert_eq!(at(host, &path), (200, want.clone()), "through the peer hop");
    }
    assert_eq!(asked_of_host0(), 3, "each other host asked host 0 once");
    for host in &hosts[1..] {
        sync_into(env, &host.root, &vendor_site.html_url(), &["--max-delete-percent", "90"]);
        assert_eq!(fs::read_link(host.root.join("current")).unwrap(), Path::new("snapshots").join(&id), "one id");
        assert_eq!(at(host, &path), (200, want.clone()), "from its own snapshot");
    }
    assert_eq!(asked_of_host0(), 3, "no more hops once every host holds it");
    let (status, _) = at(&hosts[1], "/.well-known/upmirror/snapshots/20200101T000000Z-000000000000/index/files.txt");
    assert_eq!(status, 404, "a snapshot no host holds stays 404");
}
