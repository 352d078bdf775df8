//! Real apt against the shipped nginx site while snapshots are published:
//! a by-hash repository (apt-ftparchive, the last three index versions
//! kept), a slow client whose requests straddle publishes, and a package
//! deleted upstream one publish ago.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::openpgp::Gpg;
use crate::serve::start_shipped_site_as_shipped;
use crate::support::Env;

const INDEX: &str = "dists/stable/main/binary-amd64";
/// Index versions kept under by-hash, as apt-ftparchive's `By-Hash-Keep`.
const BY_HASH_KEEP: usize = 3;

/// A Debian repository in the upstream tree: packages by name and version.
pub(crate) struct Repo {
    root: PathBuf,
    work: PathBuf,
    pub(crate) packages: BTreeMap<String, u32>,
    /// by-hash names of each index version, oldest first.
    by_hash: Vec<Vec<PathBuf>>,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (./test.sh installs apt-utils and xz-utils)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl Repo {
    pub(crate) fn new(env: &Env) -> Repo {
        let packages = (1..=6).map(|i| (format!("vendor-tool{i}"), 1)).collect();
        let work = env.dir.path().join("repo-work");
        fs::create_dir_all(&work).unwrap();
        Repo { root: env.upstream.clone(), work, packages, by_hash: Vec::new() }
    }

    /// Write the pool, the indexes, their by-hash copies and the Release file.
    pub(crate) fn build(&mut self) {
        // As a vendor does: a package is built once; a new version replaces it.
        let pool = self.root.join("pool/main");
        fs::create_dir_all(&pool).unwrap();
        let wanted: Vec<String> = self.packages.iter().map(|(n, v)| format!("{n}_{v}.0_all.deb")).collect();
        for old in fs::read_dir(&pool).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()) {
            if !wanted.contains(&old) {
                fs::remove_file(pool.join(old)).unwrap();
            }
        }
        for (name, version) in &self.packages {
            if pool.join(format!("{name}_{version}.0_all.deb")).exists() {
                continue;
            }
            let dir = self.work.join(format!("{name}-{version}"));
            fs::create_dir_all(dir.join("DEBIAN")).unwrap();
            fs::create_dir_all(dir.join("usr/share/doc").join(name)).unwrap();
            let control = format!(
                "Package: {name}\nVersion: {version}.0\nArchitecture: all\nMaintainer: Vendor <v@example.com>\nDescription: {name}\n"
            );
            fs::write(dir.join("DEBIAN/control"), control).unwrap();
            fs::write(dir.join("usr/share/doc").join(name).join("README"), format!("{name} {version}\n")).unwrap();
            run(Command::new("dpkg-deb")
                .args(["--build", "-Zxz"])
                .arg(&dir)
                .arg(pool.join(format!("{name}_{version}.0_all.deb"))));
        }
        let index = self.root.join(INDEX);
        fs::create_dir_all(&index).unwrap();
        let packages = run(Command::new("apt-ftparchive").args(["packages", "pool"]).current_dir(&self.root));
        fs::write(index.join("Packages"), &packages).unwrap();
        run(Command::new("xz").args(["-kf"]).arg(index.join("Packages")));
        self.keep_by_hash(&index);
        // Indexes of other architectures: apt here never fetches them, but
        // they make Release long enough (4 KB, 4 s at 1 KB/s) that the
        // slow client's requests straddle the publishes.
        for arch in ["arm64", "armhf", "i386", "ppc64el"] {
            let other = self.root.join(format!("dists/stable/main/binary-{arch}"));
            fs::create_dir_all(&other).unwrap();
            fs::write(other.join("Packages"), format!("# {arch}\n")).unwrap();
            run(Command::new("xz").args(["-kf"]).arg(other.join("Packages")));
        }
        self.release();
    }

    /// Write `dists/stable/Release` for the indexes there now.
    fn release(&self) {
        let _ = fs::remove_file(self.root.join("dists/stable/Release"));
        let release = run(Command::new("apt-ftparchive")
            .args(["-o", "APT::FTPArchive::Release::Suite=stable", "-o", "APT::FTPArchive::Release::Codename=stable"])
            .args(["-o", "APT::FTPArchive::Release::Acquire-By-Hash=yes", "release", "dists/stable"])
            .current_dir(&self.root));
        fs::write(self.root.join("dists/stable/Release"), release).unwrap();
    }

    /// Copy this version's indexes under by-hash (SHA256 and SHA512, which
    /// apt prefers) and drop the versions beyond the last three.
    fn keep_by_hash(&mut self, index: &Path) {
        let mut names = Vec::new();
        for file in ["Packages", "Packages.xz"] {
            let bytes = fs::read(index.join(file)).unwrap();
            for (algo, hex) in [
                ("SHA256", hex::encode(sha2::Sha256::digest(&bytes))),
                ("SHA512", hex::encode(sha2::Sha512::digest(&bytes))),
            ] {
                let path = index.join("by-hash").join(algo).join(hex);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &bytes).unwrap();
                names.push(path);
            }
        }
        self.by_hash.push(names);
        while self.by_hash.len() > BY_HASH_KEEP {
            for old in self.by_hash.remove(0) {
                let _ = fs::remove_file(old);
            }
        }
    }
}

/// An apt client with lists and caches of its own.
pub(crate) struct Apt {
    pub(crate) dir: PathBuf,
    ca: PathBuf,
    /// More `-o` options.
    options: Vec<(&'static str, &'static str)>,
}

impl Apt {
    pub(crate) fn new(env: &Env, name: &str, port: u16) -> Apt {
        Apt::with_source(env, name, &format!("deb [trusted=yes] https://127.0.0.1:{port}/ stable main\n"))
    }

    /// A client that checks the repository's signature with `keyring`.
    fn signed_by(env: &Env, name: &str, port: u16, keyring: &Path) -> Apt {
        let line = format!("deb [signed-by={}] https://127.0.0.1:{port}/ stable main\n", keyring.display());
        Apt::with_source(env, name, &line)
    }

    fn with_source(env: &Env, name: &str, source: &str) -> Apt {
        let dir = env.dir.path().join(name);
        for sub in ["lists/partial", "cache/archives/partial", "parts", "get"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("status"), "").unwrap();
        fs::write(dir.join("sources.list"), source).unwrap();
        Apt { dir, ca: env.pki.ca.clone(), options: Vec::new() }
    }

    /// A client that takes indices only by hash and never retries: what
    /// one host serves that another named is never papered over.
    pub(crate) fn strict(env: &Env, name: &str, port: u16) -> Apt {
        let apt = Apt::new(env, name, port);
        Apt { options: vec![("Acquire::By-Hash", "force"), ("Acquire::Retries", "0")], ..apt }
    }

    pub(crate) fn apt_get(&self, args: &[&str], limit_kb: Option<u32>) -> (bool, String) {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new("apt-get");
        for (key, value) in [
            ("Dir::State::Lists", d("lists")),
            ("Dir::State::status", d("status")),
            ("Dir::Cache", d("cache")),
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", d("parts")),
            ("Acquire::https::CaInfo", self.ca.display().to_string()),
            ("Acquire::https::Dl-Limit", limit_kb.unwrap_or(0).to_string()),
            ("Acquire::http::Dl-Limit", limit_kb.unwrap_or(0).to_string()),
            ("Acquire::Languages", "none".into()),
            ("APT::Sandbox::User", "root".into()),
            ("Debug::NoLocking", "true".into()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        for (key, value) in &self.options {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        let out = cmd.args(args).current_dir(self.dir.join("get")).output().expect("apt-get is missing");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // apt-get update exits 0 on some fetch errors; they still print "E:" or "W: Failed".
        let ok =
            out.status.success() && !text.contains("\nE:") && !text.contains("W: Failed") && !text.contains("Err:");
        (ok, text)
    }
}

#[test]
fn apt_sees_one_snapshot_while_snapshots_are_published_and_finds_what_it_listed() {
    let env = Env::new();
    let mut repo = Repo::new(&env);
    repo.build();
    env.make_manifest();
    let url = format!("file://{}", env.upstream.display());
    assert_eq!(env.sync(&url, &["--max-delete-percent", "50"]).code, 0);
    let (nginx, https, _) = start_shipped_site_as_shipped(&env);
    let (fast, slow) = (Apt::new(&env, "apt-fast", https), Apt::new(&env, "apt-slow", https));
    let (ok, text) = fast.apt_get(&["update"], None);
    assert!(ok, "{text}");

    // The fast client's lists name vendor-tool1 1.0; the next publish deletes
    // it. During the grace window it is still served; after it, it is gone.
    let publish = |repo: &mut Repo, version: u32| {
        *repo.packages.get_mut("vendor-tool1").unwrap() = version;
        repo.build();
        env.make_manifest();
        assert_eq!(env.sync(&url, &["--max-delete-percent", "50"]).code, 0);
    };
    publish(&mut repo, 2);
    let (ok, text) = fast.apt_get(&["download", "vendor-tool1"], None);
    assert!(ok, "{text}");
    let got = fast.dir.join("get/vendor-tool1_1.0_all.deb");
    assert!(got.exists());
    fs::remove_file(&got).unwrap();
    close_grace_windows(&env, &url);
    let (ok, text) = fast.apt_get(&["download", "vendor-tool2"], None);
    assert!(ok, "an unchanged package is still served: {text}");
    let (ok, text) = fast.apt_get(&["download", "vendor-tool1"], None);
    assert!(!ok && text.contains("404"), "after the window the deleted package is gone: {text}");

    // A slow client (1 KB/s) updates over and over: its Release (5 KB)
    // takes 5 s. A second into it, three publishes follow, each a new index
    // version: when it then asks for the index its Release names, the
    // upstream has dropped that version from by-hash, and only the grace
    // window still has it. (The second's wait only places the publishes
    // inside the transfer; each update checks that its request for the index
    // did straddle them.)
    let done = AtomicBool::new(false);
    let (mut publishes, mut updates, mut straddled, mut failures) = (0, 0, 0, Vec::new());
    let in_release = || nginx.hits().iter().filter(|h| h.uri.ends_with("/InRelease")).count();
    let mut seen = in_release();
    std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            for round in 0..4 {
                let deadline = Instant::now() + Duration::from_secs(60);
                while in_release() <= seen {
                    assert!(Instant::now() < deadline, "the slow client never asked for InRelease");
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen = in_release();
                std::thread::sleep(Duration::from_secs(1));
                for n in 0..3 {
                    publish(&mut repo, 3 + round * 3 + n);
                    publishes += 1;
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) && !publisher.is_finished() {
            let (ok, text) = slow.apt_get(&["update"], Some(1));
            updates += 1;
            if !ok {
                failures.push(text);
            }
            let last = nginx.hits().into_iter().rev().find(|h| h.uri.contains("/by-hash/"));
            if last.is_some_and(|h| !env.current().join(h.uri.trim_start_matches('/')).exists()) {
                straddled += 1;
            }
        }
        publisher.join().unwrap();
    });
    assert!(publishes >= 12 && updates >= 4, "{publishes} publishes, {updates} updates");
    assert!(straddled >= 2, "only {straddled} of {updates} updates asked for an index their snapshot no longer had");
    assert!(failures.is_empty(), "{} of {updates} slow updates failed: {:#?}", failures.len(), failures);
}

/// Move every grace window three hours into the past, then run a sync (no
/// change), which drops the links of the closed windows.
fn close_grace_windows(env: &Env, url: &str) {
    let file = env.root.join(".upmirror/state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    for (_, info) in state["snapshots"].as_object_mut().unwrap() {
        if let Some(t) = info["replaced_at"].as_u64() {
            info["replaced_at"] = (t - 3 * 3600).into();
        }
    }
    fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(env.sync(url, &["--max-delete-percent", "50"]).code, 0);
}

#[test]
fn a_signed_apt_repository_is_mirrored_by_crawl_only_as_its_keys_signed_it() {
    let env = Env::new();
    let mut repo = Repo::new(&env);
    repo.build();
    // As Debian's archive: Release names the plain index, only the packed one is served.
    fs::remove_file(env.upstream.join(INDEX).join("Packages")).unwrap();
    for plain in &repo.by_hash[0][..2] {
        fs::remove_file(plain).unwrap();
    }
    let gpg = Gpg::new(&env);
    let vendor = gpg.key("archive@vendor.example", None, "0");
    let keyring = env.dir.path().join("vendor-archive.gpg");
    gpg.export(&[&vendor], &keyring);
    let dists = env.upstream.join("dists/stable");
    gpg.clearsign(&vendor, &dists.join("Release"), &dists.join("InRelease"));
    gpg.detach_sign(&vendor, None, &dists.join("Release"), &dists.join("Release.gpg"));
    let upstream = env.nginx(&env.upstream, "nginx-upstream");
    let trust = ["--openpgp-keyring", keyring.to_str().unwrap()];

    let out = env.sync(&upstream.json_url(), &trust);
    assert_eq!(out.code, 0, "{out:?}");
    let status = env.last_status();
    assert_eq!(status["signed_by"], vendor.as_str(), "{status}");
    assert_eq!(status["unsigned_files"], 0, "every index and package is covered: {status}");
    let (_site, https, _) = start_shipped_site_as_shipped(&env);
    let apt = Apt::signed_by(&env, "apt-signed", https, &keyring);
    let (ok, updated) = apt.apt_get(&["update"], None);
    assert!(ok, "{updated}");
    let (ok, text) = apt.apt_get(&["download", "vendor-tool3"], None);
    assert!(ok, "{updated}\n{text}");

    // An index changed after it was signed: refused, nothing published.
    let published = env.published_id();
    let packages = env.upstream.join(INDEX).join("Packages.xz");
    let text = run(Command::new("xz").arg("-dc").arg(&packages));
    let text = String::from_utf8(text).unwrap().replacen("Version: 1.0", "Version: 9.0", 1);
    fs::write(env.dir.path().join("Packages"), text).unwrap();
    fs::write(&packages, run(Command::new("xz").arg("-c").arg(env.dir.path().join("Packages")))).unwrap();
    let out = env.sync(&upstream.json_url(), &trust);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("Packages.xz: not trusted: its sha256 is"), "{}", out.stderr);
    assert_eq!(env.published_id(), published);
}
