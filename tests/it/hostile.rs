//! Hostile upstreams: numbers that overflow, text that floods, trees that
//! go too deep. Whatever they send, the run ends with a short error and
//! nothing published changes.

use std::fs;

use crate::support::Env;

/// A manifest listing `files` (path, size), every digest zero.
fn crafted(files: impl IntoIterator<Item = (String, String)>) -> String {
    let entries: Vec<String> = files
        .into_iter()
        .map(|(path, size)| {
            format!(r#"{{"path":"{path}","size":{size},"mtime":1700000000,"sha256":"{}"}}"#, "0".repeat(64))
        })
        .collect();
    format!(
        r#"{{"format":"upmirror-manifest/1","generated_at":"2026-11-24T19:00:00Z","files":[{}]}}"#,
        entries.join(",")
    )
}

fn serve_manifest(env: &Env, body: &str) -> crate::support::Server {
    fs::create_dir_all(&env.upstream).unwrap();
    fs::write(env.upstream.join("upmirror-manifest.json"), body).unwrap();
    env.serve()
}

#[test]
fn sizes_that_would_overflow_are_refused_before_any_download() {
    // 2048 files of 2^53 bytes sum to exactly 2^64: a wrapping sum is 0.
    let env = Env::new();
    let server = serve_manifest(&env, &crafted((0..2048).map(|i| (format!("f{i:04}"), (1u64 << 53).to_string()))));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("sizes add up to more than"), "{}", out.stderr);
    assert!(server.file_requests().is_empty(), "no file was requested");
    assert!(fs::symlink_metadata(env.current()).is_err());

    // One absurd size rejects the listing whole.
    let env = Env::new();
    let server = serve_manifest(&env, &crafted([("a".into(), (1u64 << 63).to_string())]));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("more than the 2^53 accepted"), "{}", out.stderr);
    assert!(server.file_requests().is_empty());
}

#[test]
fn upstream_text_is_cut_short_in_errors_and_status() {
    let huge = "A".repeat(5 << 20);
    let bad_format = crafted([("a".into(), "1".into())]).replace("upmirror-manifest/1", &huge);
    let bad_size = crafted([("a".into(), format!("\"{huge}\""))]);
    for body in [bad_format, bad_size] {
        let env = Env::new();
        let server = serve_manifest(&env, &body);
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 1, "{}", &out.stderr[..out.stderr.len().min(500)]);
        assert!(out.stderr.len() < 8 << 10, "stderr has {} bytes", out.stderr.len());
        assert!(out.stderr.contains("bytes)"), "says how long the value was: {}", out.stderr);
        for file in [".upmirror/status.json", ".upmirror/history.json", "public/status.json", "public/index.html"] {
            let len = fs::metadata(env.root.join(file)).unwrap().len();
            assert!(len < 64 << 10, "{file} has {len} bytes");
        }
    }
}

#[test]
fn a_path_deeper_than_64_levels_rejects_the_listing() {
    let env = Env::new();
    let deep = format!("{}f", "d/".repeat(64));
    let server = serve_manifest(&env, &crafted([(deep, "1".into()), ("ok".into(), "1".into())]));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("more than 64 levels deep"), "{}", out.stderr);
    assert!(server.file_requests().is_empty());
    assert!(fs::symlink_metadata(env.current()).is_err());
}
