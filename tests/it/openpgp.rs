//! OpenPGP trust: a crawl's `SHA256SUMS`, signed by the real `gpg`, over a
//! real nginx listing, is trusted only with a good signature by a key of
//! `openpgp_keyring` — not another key's, not an expired key's, not none.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use crate::support::{Env, MTIME, pseudo_random};

/// A GnuPG home of the test's own, its agent stopped when dropped.
pub struct Gpg {
    home: PathBuf,
}

impl Gpg {
    pub fn new(env: &Env) -> Gpg {
        let home = env.dir.path().join("gnupg");
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(&mut fs::metadata(&home).unwrap().permissions(), 0o700);
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    /// `gpg` in batch mode, keys without a passphrase, at `when` if given.
    fn run(&self, when: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(&self.home).args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        if let Some(t) = when {
            cmd.args(["--faked-system-time", &format!("{t}!")]);
        }
        let out =
            cmd.args(args).output().expect("gpg is missing (apt-get install gpg gpg-agent); ./test.sh installs it");
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new signing key for `email` made at `when`, valid for `expire`: its fingerprint.
    pub fn key(&self, email: &str, when: Option<&str>, expire: &str) -> String {
        self.run(when, &["--quick-gen-key", &format!("Test <{email}>"), "ed25519", "sign", expire]);
        let listed = self.run(None, &["--with-colons", "--list-keys", email]);
        let fpr = listed.lines().find(|l| l.starts_with("fpr:")).unwrap();
        fpr.split(':').nth(9).unwrap().to_owned()
    }

    /// Export these keys, binary, to `file`.
    pub fn export(&self, keys: &[&str], file: &Path) {
        let file = file.to_str().unwrap();
        self.run(None, &[&["--output", file, "--export"][..], keys].concat());
    }

    pub fn detach_sign(&self, key: &str, when: Option<&str>, file: &Path, out: &Path) {
        let (file, out) = (file.to_str().unwrap(), out.to_str().unwrap());
        self.run(when, &["--local-user", key, "--output", out, "--detach-sign", file]);
    }

    pub fn clearsign(&self, key: &str, file: &Path, out: &Path) {
        let (file, out) = (file.to_str().unwrap(), out.to_str().unwrap());
        self.run(None, &["--local-user", key, "--output", out, "--clearsign", file]);
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").arg("--homedir").arg(&self.home).args(["--kill", "gpg-agent"]).status();
    }
}

/// `SHA256SUMS` in `dir` of the upstream, for the files there.
fn write_sums(env: &Env, dir: &str) -> PathBuf {
    let mut names: Vec<String> = fs::read_dir(env.upstream.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    names.sort();
    let lines: String = names
        .iter()
        .map(|n| {
            format!("{}  {n}\n", hex::encode(sha2::Sha256::digest(fs::read(env.upstream.join(dir).join(n)).unwrap())))
        })
        .collect();
    let sums = env.upstream.join(dir).join("SHA256SUMS");
    fs::write(&sums, lines).unwrap();
    sums
}

#[test]
fn a_crawls_sha256sums_is_trusted_only_with_a_good_signature_by_the_keyring() {
    let env = Env::new();
    env.write("releases/1.0/a.bin", &pseudo_random(20_000, 1));
    env.write("releases/1.0/b.bin", &pseudo_random(30_000, 2));
    env.write("README", b"covered by no SHA256SUMS\n");
    let sums = write_sums(&env, "releases/1.0");
    let detached = sums.with_file_name("SHA256SUMS.gpg");
    let gpg = Gpg::new(&env);
    let vendor = gpg.key("vendor@example.org", None, "0");
    let other = gpg.key("other@example.org", None, "0");
    let old = gpg.key("old@example.org", Some("20200101T000000"), "1d");
    let keyring = env.dir.path().join("vendor.gpg");
    gpg.export(&[&vendor, &old], &keyring);
    gpg.detach_sign(&vendor, None, &sums, &detached);
    let nginx = env.nginx(&env.upstream, "nginx");
    let url = nginx.json_url();
    let trust = ["--openpgp-keyring", keyring.to_str().unwrap()];

    let out = env.sync(&url, &trust);
    assert_eq!(out.code, 0, "{out:?}");
    for rel in ["releases/1.0/a.bin", "releases/1.0/b.bin", "README"] {
        assert_eq!(fs::read(env.current().join(rel)).unwrap(), fs::read(env.upstream.join(rel)).unwrap(), "{rel}");
    }
    let status = env.last_status();
    assert_eq!(status["signed_by"], vendor.as_str(), "{status}");
    assert_eq!(status["unsigned_files"], 1, "README: {status}");
    let published = env.published_id();

    let refused = |why: &str, needle: &str| {
        let out = env.sync(&url, &trust);
        assert_eq!(out.code, 1, "{why}: {out:?}");
        assert!(out.stderr.contains(needle), "{why}: {}", out.stderr);
        assert_eq!(env.published_id(), published, "{why}");
    };
    gpg.detach_sign(&other, None, &sums, &detached);
    refused(
        "another key",
        &format!("SHA256SUMS: not trusted: it is signed by key {other}, which is not in openpgp_keyring"),
    );
    gpg.detach_sign(&old, Some("20200101T120000"), &sums, &detached);
    refused("an expired key", &format!("it is signed by key {old}, which expired at 2020-01-02T00:00:00Z"));
    fs::write(&detached, fs::read(&detached).unwrap().iter().map(|b| b ^ 0x20).collect::<Vec<u8>>()).unwrap();
    refused("a damaged signature", "SHA256SUMS: not trusted: its signature is unreadable");
    fs::remove_file(&detached).unwrap();
    refused("no signature", "no signature beside it (SHA256SUMS.gpg, .sig or .asc) and it is not clearsigned");

    // Clearsigned by the vendor: trusted.
    let clear = env.dir.path().join("SHA256SUMS.clear");
    gpg.clearsign(&vendor, &sums, &clear);
    fs::copy(&clear, &sums).unwrap();
    // (SHA256SUMS.gpg is gone: one of five files.)
    let out = env.sync(&url, &[&trust[..], &["--max-delete-percent", "25"]].concat());
    assert_eq!(out.code, 0, "{out:?}");
    let published = env.published_id();
    // A listed file changed, its size kept: its signed digest refuses it.
    env.write_at("releases/1.0/a.bin", &pseudo_random(20_000, 9), MTIME + 60);
    let out = env.sync(&url, &trust);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sha256 mismatch"), "{}", out.stderr);
    assert_eq!(env.published_id(), published);
    assert_eq!(fs::read(env.current().join("releases/1.0/a.bin")).unwrap(), pseudo_random(20_000, 1));
}

#[test]
fn a_clearsigned_sha256sums_names_digests_without_a_keyring_too() {
    let env = Env::new();
    env.write("releases/a.bin", &pseudo_random(10_000, 1));
    let sums = env.upstream.join("releases/SHA256SUMS");
    // A digest that is not a.bin's: the download must be refused by it.
    fs::write(&sums, format!("{}  a.bin\n", hex::encode(sha2::Sha256::digest(b"other bytes")))).unwrap();
    let gpg = Gpg::new(&env);
    let vendor = gpg.key("vendor@example.org", None, "0");
    let clear = env.dir.path().join("clear");
    gpg.clearsign(&vendor, &sums, &clear);
    fs::copy(&clear, &sums).unwrap();
    let nginx = env.nginx(&env.upstream, "nginx");
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sha256 mismatch"), "{}", out.stderr);
}
