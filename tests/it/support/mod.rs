//! The harness: a temp directory holding an upstream tree, a mirror root, a
//! sentinel file outside both, certificates, and a runner for the real binary.

#![allow(dead_code)]

pub mod casefold;
pub mod nginx;
pub mod pki;
pub mod proxy;
pub mod rgw;
pub mod server;
pub mod servers;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use filetime::FileTime;
use tempfile::TempDir;

pub use nginx::Nginx;
pub use pki::Pki;
pub use server::{Fault, Options, Server};

/// The mtime every test file gets unless a test says otherwise.
pub const MTIME: i64 = 1_700_000_000;
const SENTINEL: &[u8] = b"outside the mirror root; must never change\n";

pub struct Env {
    pub dir: TempDir,
    pub pki: Pki,
    pub upstream: PathBuf,
    pub root: PathBuf,
    pub sentinel: PathBuf,
    config: PathBuf,
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir(&pki_dir).unwrap();
        let upstream = dir.path().join("upstream");
        std::fs::create_dir(&upstream).unwrap();
        let sentinel = dir.path().join("sentinel.txt");
        std::fs::write(&sentinel, SENTINEL).unwrap();
        let config = dir.path().join("empty.toml");
        // Tests wait milliseconds between retry rounds, not seconds.
        std::fs::write(&config, "retry_backoff = \"10ms\"\n").unwrap();
        Env { pki: Pki::new(&pki_dir), root: dir.path().join("mirror"), upstream, sentinel, config, dir }
    }

    /// A small tree with nested directories and awkward names.
    pub fn with_sample_tree() -> Env {
        let env = Env::new();
        env.write("releases/11.2/core.zip", &pseudo_random(300_000, 1));
        env.write("releases/11.2/SHA256SUMS", b"not checked in manifest mode\n");
        env.write("releases/current.json", b"{\"version\":\"11.2\"}\n");
        env.write("docs/read me #1 100%?.txt", b"spaces, hash, percent, question mark\n");
        env.write(".treeinfo", b"dotfiles are mirrored too\n");
        env.write("empty", b"");
        for i in 0..20 {
            env.write(&format!("pool/p{i:02}.deb"), &pseudo_random(1000 + i * 37, i as u64));
        }
        env.make_manifest();
        env
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.upstream.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        filetime::set_file_mtime(&path, FileTime::from_unix_time(MTIME, 0)).unwrap();
    }

    /// Write `rel` with this mtime, as a real rewrite moves it.
    pub fn write_at(&self, rel: &str, bytes: &[u8], mtime: i64) {
        self.write(rel, bytes);
        filetime::set_file_mtime(self.upstream.join(rel), FileTime::from_unix_time(mtime, 0)).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.upstream.join(rel)).unwrap();
    }

    /// Publish the upstream's manifest with `upmirror manifest`.
    pub fn make_manifest(&self) {
        let out = self.run(&["manifest", self.upstream.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    /// Replace the upstream manifest's text.
    pub fn edit_manifest(&self, f: impl FnOnce(String) -> String) {
        let path = self.upstream.join("upmirror-manifest.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
    }

    pub fn set_generated_at(&self, when: &str) {
        self.edit_manifest(|t| {
            let start = t.find("\"generated_at\":\"").unwrap() + 16;
            let end = start + t[start..].find('"').unwrap();
            format!("{}{when}{}", &t[..start], &t[end..])
        });
    }

    pub fn serve(&self) -> Server {
        self.serve_with(Options::default())
    }

    pub fn serve_with(&self, opts: Options) -> Server {
        Server::start(&self.upstream, &self.pki, opts)
    }

    /// A real nginx serving `dir` (HTML and JSON autoindex).
    pub fn nginx(&self, dir: &Path, name: &str) -> Nginx {
        Nginx::start(dir, &self.pki, &self.dir.path().join(name))
    }

    /// Run the binary with a clean environment and an empty config file.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_command(args, env, None)
    }

    /// Run the binary, killed after `secs` seconds (exit 124 then, as
    /// coreutils' `timeout` says): a test of a hang ends either way.
    pub fn run_within(&self, secs: u32, args: &[&str]) -> Out {
        let secs = secs.to_string();
        let mut all = vec!["-s", "KILL", &secs, env!("CARGO_BIN_EXE_upmirror")];
        all.extend_from_slice(args);
        self.run_program("timeout", &all, &[], None)
    }

    /// Run the binary in the working directory `cwd`.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Out {
        self.run_command(args, &[], Some(cwd))
    }

    /// Run the binary in a mount namespace of its own where `hosts` is
    /// `/etc/hosts`: a host name gets the addresses a test gives it.
    pub fn run_with_hosts(&self, hosts: &Path, args: &[&str]) -> Out {
        self.run_with_files(&[(hosts, "/etc/hosts")], args)
    }

    /// Run the binary in a mount namespace of its own where each (file,
    /// path) pair puts the file at that path (`/etc/hosts`, `/etc/nsswitch.conf`).
    pub fn run_with_files(&self, files: &[(&Path, &str)], args: &[&str]) -> Out {
        let mounts: Vec<String> =
            files.iter().map(|(file, at)| format!("mount --bind '{}' '{at}' && ", file.display())).collect();
        let script = format!("{}exec \"$@\"", mounts.concat());
        let mut all = vec!["--mount", "sh", "-c", &script, "sh", env!("CARGO_BIN_EXE_upmirror")];
        all.extend_from_slice(args);
        self.run_program("unshare", &all, &[], None)
    }

    fn run_command(&self, args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Out {
        self.run_program(env!("CARGO_BIN_EXE_upmirror"), args, env, cwd)
    }

    fn run_program(&self, program: &str, args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Out {
        let mut cmd = Command::new(program);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        for (k, _) in std::env::vars() {
            let ours = k.starts_with("UPMIRROR_") || k.starts_with("SSL_CERT") || k == "JOURNAL_STREAM";
            if ours || k.ends_with("_proxy") || k.ends_with("_PROXY") {
                cmd.env_remove(k);
            }
        }
        cmd.env("UPMIRROR_CONFIG", &self.config).args(args).envs(env.iter().copied());
        let out = cmd.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `upmirror sync` of `url` into the root, trusting the test CA.
    pub fn sync(&self, url: &str, extra: &[&str]) -> Out {
        self.sync_env(url, extra, &[])
    }

    /// `sync` with extra environment variables.
    pub fn sync_env(&self, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Out {
        let root = self.root.to_str().unwrap();
        let mut args = vec!["sync", "--root", root, "--upstream", url, "--ca-file", self.pki.ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run_env(&args, env)
    }

    /// `upmirror sync` from several upstreams in order, trusting the test CA.
    pub fn sync_from(&self, urls: &[&str], extra: &[&str]) -> Out {
        let mut args = vec!["sync", "--root", self.root.to_str().unwrap(), "--ca-file", self.pki.ca.to_str().unwrap()];
        for url in urls {
            args.extend(["--upstream", url]);
        }
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The last run's `.upmirror/status.json`.
    pub fn last_status(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.root.join(".upmirror/status.json")).unwrap()).unwrap()
    }

    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The snapshot `current` points to, if any.
    pub fn published_id(&self) -> Option<String> {
        let target = std::fs::read_link(self.current()).ok()?;
        Some(target.file_name()?.to_str()?.to_owned())
    }

    /// The kept snapshots, in the order they were first published (as the
    /// store's state says; older ids by name).
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.root.join("snapshots"))
            .map(|rd| rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        let state: serde_json::Value = std::fs::read(self.root.join(".upmirror/state.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default();
        ids.sort_by_key(|id| (state["snapshots"][id]["publish_order"].as_u64().unwrap_or(0), id.clone()));
        ids
    }

    /// The published tree equals the upstream tree: names, bytes and mtimes
    /// (the upstream's, or the later one the snapshot's manifest records
    /// for a same-size rewrite that kept its mtime).
    pub fn assert_mirrors_upstream(&self) {
        let mut want = files(&self.upstream);
        let got = files(&self.current());
        // The listing's signature is carried only when it was checked (trusted_keys).
        // The upstream's patches are a sidecar, never mirrored as files.
        want.retain(|rel, _| rel != "upmirror-deltas.json" && !rel.starts_with(".upmirror-deltas/"));
        let carried = got.contains_key("upmirror-manifest.json.minisig");
        if !carried {
            want.remove("upmirror-manifest.json.minisig");
        }
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "file names differ");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.current().join("upmirror-manifest.json")).unwrap()).unwrap();
        let local: BTreeMap<&str, i64> = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| Some((f["path"].as_str()?, f["local_mtime"].as_i64()?)))
            .collect();
        for (rel, (bytes, mtime)) in &want {
            if rel == "upmirror-manifest.json" {
                continue;
            }
            assert!(got[rel].0 == *bytes, "{rel}: bytes differ");
            let expected = local.get(rel.as_str()).copied().unwrap_or(*mtime);
            assert!(expected >= *mtime, "{rel}: a local mtime never goes back");
            if carried {
                // The upstream's signed manifest cannot record a moved-forward local mtime.
                assert!(got[rel].1 >= *mtime, "{rel}: a local mtime never goes back");
            } else {
                assert_eq!(got[rel].1, expected, "{rel}: mtime differs");
            }
        }
    }

    pub fn assert_sentinel_intact(&self) {
        assert_eq!(std::fs::read(&self.sentinel).unwrap(), SENTINEL);
        let outside: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        for name in &outside {
            let n = name.to_str().unwrap();
            assert!(
                [
                    "pki",
                    "upstream",
                    "mirror",
                    "sentinel.txt",
                    "empty.toml",
                    "mirror2",
                    "nginx",
                    "nginx2",
                    "other",
                    "nginx-allow.conf",
                    "chromium-profile",
                    "status.png"
                ]
                .contains(&n),
                "unexpected {n} beside the root"
            );
        }
    }
}

/// Two mirrors publish the same tree: names, bytes and mtimes (but the
/// manifest's own mtime, which is when each wrote it).
pub fn assert_same_trees(a: &Path, b: &Path) {
    let (a, b) = (files(a), files(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (bytes, mtime)) in &a {
        assert!(b[k].0 == *bytes, "{k}: bytes differ");
        if k != "upmirror-manifest.json" {
            assert_eq!(b[k].1, *mtime, "{k}: mtime differs");
        }
    }
}

/// Every regular file below `dir` (but a snapshot's trace of the tiers):
/// relative path → (bytes, mtime).
pub fn files(dir: &Path) -> BTreeMap<String, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
            if rel == "upmirror-trace.json" {
                continue; // each tier's own record of the chain (tests/it/trust.rs checks it)
            }
            out.insert(rel, (std::fs::read(e.path()).unwrap(), e.metadata().unwrap().mtime()));
        }
    }
    out
}

/// Wait until 127.0.0.1:`port` accepts connections, at most `within`;
/// past it, fail with what `why` says (a log, a hint).
pub fn wait_listening(port: u16, within: std::time::Duration, why: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}: {}", why());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Deterministic bytes that do not compress.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A listener on `[::1]:port` that takes no connection: its queue is full,
/// so a connect there waits until the client gives up, like a dead host.
pub fn dead_address(port: u16) -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind(("::1", port)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)) {
        queued.push(s);
        assert!(queued.len() < 1000, "the accept queue never filled");
    }
    (listener, queued)
}

/// Move `field` of every snapshot in the store's state back by `hours`, as
/// time passing would (`replaced_at` for grace, `first_published_at` for
/// channel cooldowns).
pub fn age_snapshots(env: &Env, field: &str, hours: u64) {
    let file = env.root.join(".upmirror/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for (_, info) in state["snapshots"].as_object_mut().unwrap() {
        if let Some(t) = info[field].as_u64() {
            info[field] = (t - hours * 3600).into();
        }
    }
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
}

/// Sets its flag when dropped: a loop in another thread that waits for the
/// flag ends even when the thread that should set it panics.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
