//! Delta transfer: the vendor writes patches with `upmirror manifest
//! --delta-from`; a mirror that holds the previous version fetches the
//! patch from a real nginx instead of the file. A patch that is damaged,
//! made for another base or makes too much falls back to the whole file;
//! a run killed while applying one is finished by the next.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{Env, pseudo_random};

/// A C program of 3,000 functions; those in `changed` return other values.
fn build_program(env: &Env, changed: &[usize], out: &Path) {
    let mut src = String::from("#include <stdio.h>\n");
    for i in 0..3000 {
        let k = if changed.contains(&i) { i * 7919 + 13 } else { i * 7919 };
        src += &format!("long f{i}(long x) {{ return x * {k} + (x >> {}) - {}; }}\n", i % 13, i * 31);
    }
    src += "int main(void) { long s = 0;\n";
    for i in 0..3000 {
        src += &format!("  s += f{i}({i});\n");
    }
    src += "  printf(\"%ld\\n\", s); return 0; }\n";
    let c = env.dir.path().join("program.c");
    fs::write(&c, src).unwrap();
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let built =
        Command::new("cc").args(["-O2", "-o"]).arg(out).arg(&c).output().expect("cc is missing (apt-get install gcc)");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    fs::remove_file(c).unwrap();
}

/// A 64 MiB disk image; `changes` of its 64 KiB blocks rewritten.
fn image(changes: usize) -> Vec<u8> {
    let mut img = pseudo_random(64 << 20, 7);
    for n in 0..changes {
        let at = (n * 97 % 1024) << 16;
        img[at..at + (64 << 10)].copy_from_slice(&pseudo_random(64 << 10, 1000 + n as u64));
    }
    img
}

/// Write the new release over `env.upstream` and its manifest and patches
/// from the copy of the old one in `old`.
fn release_with_patches(env: &Env, old: &Path) {
    let out = env.run(&[
        "manifest",
        env.upstream.to_str().unwrap(),
        "--delta-from",
        old.to_str().unwrap(),
        "--delta-min-size",
        "64KiB",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
}

fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn changed_files_travel_as_patches_and_publish_the_vendors_bytes() {
    let env = Env::new();
    build_program(&env, &[], &env.upstream.join("bin/tool"));
    env.write("images/disk.img", &image(0));
    env.write("README", b"release 1\n");
    env.make_manifest();
    let old = env.dir.path().join("release-1");
    copy_tree(&env.upstream, &old);
    let nginx = env.nginx(&env.upstream, "nginx");
    assert_eq!(env.sync(&nginx.json_url(), &[]).code, 0);

    build_program(&env, &[10, 500, 2000], &env.upstream.join("bin/tool"));
    env.write("images/disk.img", &image(10));
    env.write("README", b"release 2\n");
    release_with_patches(&env, &old);
    let changed: u64 =
        ["bin/tool", "images/disk.img"].iter().map(|p| fs::metadata(env.upstream.join(p)).unwrap().len()).sum();
    let out = env.sync(&nginx.json_url(), &["--dry-run"]);
    assert!(out.stderr.contains("~ images/disk.img (delta "), "{}", out.stderr);
    assert!(out.stderr.contains("~ bin/tool (delta "), "{}", out.stderr);

    nginx.clear_log();
    let metrics = env.dir.path().join("m.prom");
    let out = env.sync(&nginx.json_url(), &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let hits = nginx.file_hits();
    let whole: Vec<&str> =
        hits.iter().map(|h| h.uri.as_str()).filter(|u| u.contains("tool") || u.contains("disk.img")).collect();
    assert!(whole.is_empty(), "the changed files came as patches: {whole:?}");
    let bytes: u64 = hits.iter().map(|h| h.bytes).sum();
    eprintln!("second sync: {bytes} bytes served for {changed} bytes of changed files");
    assert!(bytes * 100 <= changed * 40, "{bytes} bytes served for {changed} bytes of changed files");
    let status = env.last_status();
    assert_eq!(status["deltas"]["files"], 2, "{status}");
    assert_eq!(status["deltas"]["fell_back"], 0, "{status}");
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(!text.contains("upmirror_delta_bytes_saved_total 0\n"), "{text}");
}

/// Three files of release 1 mirrored, then release 2 with each changed a
/// little and patches from release 1 beside it: (env, nginx, the copy of release 1).
fn two_releases() -> (Env, crate::support::nginx::Nginx, std::path::PathBuf) {
    let env = Env::new();
    for (name, seed) in [("a.bin", 1), ("b.bin", 2), ("c.bin", 3)] {
        env.write(name, &pseudo_random(300_000, seed));
    }
    env.make_manifest();
    let old = env.dir.path().join("release-1");
    copy_tree(&env.upstream, &old);
    let nginx = env.nginx(&env.upstream, "nginx");
    assert_eq!(env.sync(&nginx.json_url(), &[]).code, 0);
    for (name, seed) in [("a.bin", 1), ("b.bin", 2), ("c.bin", 3)] {
        let mut bytes = pseudo_random(300_000, seed);
        bytes[1000..1100].fill(9);
        env.write(name, &bytes);
    }
    release_with_patches(&env, &old);
    moved_on(&env);
    (env, nginx, old)
}

/// The new manifest, written in the same second as the last at the same
/// size (nginx's ETag would not change): moved on, as a later write would be.
fn moved_on(env: &Env) {
    let manifest = env.upstream.join("upmirror-manifest.json");
    filetime::set_file_mtime(&manifest, filetime::FileTime::from_unix_time(crate::support::MTIME + 3600, 0)).unwrap();
}

/// Replace the patch for `path` with the one `upmirror manifest` makes from
/// `old_bytes` to `new_bytes`, keeping what the list says it patches.
fn swap_patch(env: &Env, path: &str, old_bytes: &[u8], new_bytes: &[u8]) {
    let (from, to) = (env.dir.path().join(format!("craft-{path}-old")), env.dir.path().join(format!("craft-{path}")));
    for (dir, bytes) in [(&from, old_bytes), (&to, new_bytes)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(path), bytes).unwrap();
    }
    let args = ["manifest", to.to_str().unwrap(), "--delta-from", from.to_str().unwrap(), "--delta-min-size", "1"];
    assert_eq!(env.run(&args).code, 0);
    let crafted: serde_json::Value =
        serde_json::from_slice(&fs::read(to.join("upmirror-deltas.json")).unwrap()).unwrap();
    let patch = fs::read(to.join(crafted["deltas"][0]["patch"].as_str().unwrap())).unwrap();
    set_patch(env, path, &patch);
}

/// Put `patch` where the list's patch for `path` is, its size and sha256 listed.
fn set_patch(env: &Env, path: &str, patch: &[u8]) {
    use sha2::Digest as _;
    let list_file = env.upstream.join("upmirror-deltas.json");
    let mut list: serde_json::Value = serde_json::from_slice(&fs::read(&list_file).unwrap()).unwrap();
    let entry = list["deltas"].as_array_mut().unwrap().iter_mut().find(|d| d["path"] == path).unwrap();
    fs::write(env.upstream.join(entry["patch"].as_str().unwrap()), patch).unwrap();
    entry["patch_size"] = patch.len().into();
    entry["patch_sha256"] = hex::encode(sha2::Sha256::digest(patch)).into();
    fs::write(&list_file, serde_json::to_vec(&list).unwrap()).unwrap();
}

#[test]
fn a_patch_that_is_damaged_for_another_base_or_too_big_falls_back_to_the_whole_file() {
    let (env, nginx, old) = two_releases();
    let list: serde_json::Value =
        serde_json::from_slice(&fs::read(env.upstream.join("upmirror-deltas.json")).unwrap()).unwrap();
    assert_eq!(list["deltas"].as_array().unwrap().len(), 3, "{list}");
    // a: damaged in its middle (its listed digest made to match the damage).
    let a_patch = env.upstream.join(
        list["deltas"].as_array().unwrap().iter().find(|d| d["path"] == "a.bin").unwrap()["patch"].as_str().unwrap(),
    );
    let mut damaged = fs::read(&a_patch).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    set_patch(&env, "a.bin", &damaged);
    // b: made from another base than the published b: its two halves
    // swapped (the same bytes, or no patch would pay).
    let published_b = fs::read(old.join("b.bin")).unwrap();
    let other_base = [&published_b[150_000..], &published_b[..150_000]].concat();
    swap_patch(&env, "b.bin", &other_base, &fs::read(env.upstream.join("b.bin")).unwrap());
    // c: makes 64 MiB of zeros from the published c.
    swap_patch(&env, "c.bin", &fs::read(old.join("c.bin")).unwrap(), &vec![0u8; 64 << 20]);

    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &["-v"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let status = env.last_status();
    assert_eq!(
        (status["deltas"]["files"].as_u64(), status["deltas"]["fell_back"].as_u64()),
        (Some(0), Some(3)),
        "{status}"
    );
    let mut whole: Vec<String> = nginx.file_hits().into_iter().map(|h| h.uri).filter(|u| u.ends_with(".bin")).collect();
    whole.sort();
    assert_eq!(whole, ["/a.bin", "/b.bin", "/c.bin"], "each came whole after its patch failed");
    assert!(out.stderr.contains("a.bin: its patch did not apply"), "{}", out.stderr);
    // Nothing was written outside staging, and staging holds nothing of it.
    let mut top: Vec<String> =
        fs::read_dir(&env.root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, [".upmirror", "current", "grace-1", "public", "snapshots"]);
    let left: Vec<_> = walkdir::WalkDir::new(env.root.join(".upmirror/partial"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_run_killed_while_applying_a_patch_is_finished_by_the_next() {
    let (env, nginx, _) = two_releases();
    let before = env.published_id();
    let out = env.sync_env(&nginx.json_url(), &[], &[("UPMIRROR_FAILPOINT", "patch-applied")]);
    assert!(out.stderr.contains("failpoint patch-applied"), "{out:?}");
    assert_eq!(env.published_id(), before, "nothing was published");
    nginx.clear_log();
    let out = env.sync(&nginx.json_url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    assert_eq!(env.last_status()["deltas"]["files"], 3);
    assert!(nginx.file_hits().iter().all(|h| !h.uri.ends_with(".bin")), "patches, not whole files");
}

#[test]
fn a_hub_makes_patches_for_the_site_below_and_the_vendors_signature_still_verifies() {
    let env = Env::new();
    let (vendor_pub, vendor_key) = crate::trust::minisign_keypair(&env, "vendor");
    let signed = |env: &Env| {
        let out = env.run(&["manifest", env.upstream.to_str().unwrap(), "--sign", vendor_key.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out:?}");
    };
    for (name, seed) in [("iso/a.iso", 1), ("iso/b.iso", 2)] {
        env.write(name, &pseudo_random(400_000, seed));
    }
    signed(&env);
    let vendor = env.nginx(&env.upstream, "vendor-nginx");
    let trust = ["--trusted-key", vendor_pub.to_str().unwrap()];
    let hub_args = [&trust[..], &["--make-deltas", "64KiB"]].concat();
    assert_eq!(env.sync(&vendor.json_url(), &hub_args).code, 0);
    let hub = env.nginx(&env.current(), "hub-nginx");
    let site = env.dir.path().join("site");
    let (ca, root, hub_url) = (env.pki.ca.to_str().unwrap(), site.to_str().unwrap(), hub.json_url());
    let site_sync = || {
        let args = [&["sync", "--root", root, "--upstream", &hub_url, "--ca-file", ca, "-v"][..], &trust].concat();
        env.run(&args)
    };
    assert_eq!(site_sync().code, 0);

    // Release 2, from the vendor without patches: the hub fetches it whole and makes them.
    for (name, seed) in [("iso/a.iso", 1), ("iso/b.iso", 2)] {
        let mut bytes = pseudo_random(400_000, seed);
        bytes[200_000..200_500].fill(5);
        env.write(name, &bytes);
    }
    signed(&env);
    moved_on(&env);
    let out = env.sync(&vendor.json_url(), &hub_args);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("wrote 2 patches"), "{}", out.stderr);
    assert_eq!(env.run(&["verify", "--root", env.root.to_str().unwrap()]).code, 0, "patches are no extra files");
    hub.clear_log();
    let out = site_sync();
    assert_eq!(out.code, 0, "{out:?}");
    let whole: Vec<String> = hub.file_hits().into_iter().map(|h| h.uri).filter(|u| u.ends_with(".iso")).collect();
    assert!(whole.is_empty(), "the site fetched patches from the hub: {whole:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(site.join(".upmirror/status.json")).unwrap()).unwrap();
    assert_eq!(status["deltas"]["files"], 2, "{status}");
    assert!(status["signed_by"].is_string(), "the vendor's signature verified at the site: {status}");
    for name in ["iso/a.iso", "iso/b.iso"] {
        assert_eq!(fs::read(site.join("current").join(name)).unwrap(), fs::read(env.upstream.join(name)).unwrap());
    }
}
