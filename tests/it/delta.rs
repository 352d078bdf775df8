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
