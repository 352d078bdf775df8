//! Hostile upstreams: numbers that overflow, text that floods, trees that
//! go too deep. Whatever they send, the run ends with a short error and
//! nothing published changes.

use std::fs;

use crate::support::{Env, Fault};

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

#[test]
fn a_listing_that_makes_a_snapshots_own_file_a_directory_is_rejected_before_any_download() {
    for own in ["upmirror-manifest.json", "upmirror-manifest.json.minisig", "upmirror-trace.json"] {
        let env = Env::new();
        let server = serve_manifest(&env, &crafted([(format!("{own}/x"), "1".into()), ("ok".into(), "1".into())]));
        let out = env.sync(&server.url(), &[]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(&format!("{own} is each snapshot's own file, not a directory")), "{}", out.stderr);
        assert!(server.file_requests().is_empty(), "{own}: rejected at validation, not at build");
        assert!(fs::symlink_metadata(env.current()).is_err());
    }
}

#[test]
fn a_206_to_a_plain_request_is_that_upstreams_fault_and_fails_over() {
    let env = Env::with_sample_tree();
    let (primary, secondary) = (env.serve(), env.serve());
    primary.fault("/releases/11.2/core.zip", Fault::AlwaysPartial);
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(secondary.requests_for("/releases/11.2/core.zip").len(), 1);
    let status: serde_json::Value = env.last_status();
    assert!(status["upstreams"][0]["error"].as_str().unwrap().contains("206"), "{status}");
    env.assert_mirrors_upstream();
}

/// A manifest naming `path` with the size and digest of `bytes`.
fn listing_of(path: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    format!(
        r#"{{"format":"upmirror-manifest/1","generated_at":"2026-11-24T19:00:00Z","files":[{{"path":"{path}","size":{},"mtime":1700000000,"sha256":"{sha}"}}]}}"#,
        bytes.len()
    )
}

#[test]
fn a_file_upstream_opens_only_regular_files_and_follows_no_symlink() {
    let secret = b"-----BEGIN PRIVATE KEY----- the client key\n";
    for (path, plant) in [("keys/client.key", "file link"), ("linked/client.key", "dir link"), ("pipe", "fifo")] {
        let env = Env::new();
        let outside = env.dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("client.key"), secret).unwrap();
        fs::create_dir_all(env.upstream.join("keys")).unwrap();
        match plant {
            "file link" => std::os::unix::fs::symlink(outside.join("client.key"), env.upstream.join(path)).unwrap(),
            "dir link" => std::os::unix::fs::symlink(&outside, env.upstream.join("linked")).unwrap(),
            _ => assert!(std::process::Command::new("mkfifo").arg(env.upstream.join(path)).status().unwrap().success()),
        }
        fs::write(env.upstream.join("upmirror-manifest.json"), listing_of(path, secret)).unwrap();
        let start = std::time::Instant::now();
        // The default five retries, a second apart: a refusal retried would take 31 s.
        let out = env.sync(&format!("file://{}", env.upstream.display()), &["--retry-backoff", "1s"]);
        assert_eq!(out.code, 1, "{plant}: {out:?}");
        assert!(out.stderr.contains("only regular files"), "{plant}: {}", out.stderr);
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{plant}: took {:?}", start.elapsed());
        assert!(fs::symlink_metadata(env.current()).is_err(), "{plant}: nothing published");
    }
}

#[test]
fn a_trickled_listing_cannot_hold_a_run_or_mirrors() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/upmirror-manifest.json", Fault::Drip(200));
    let pace = ["--low-speed-limit", "1KiB", "--low-speed-time", "1s", "--connect-timeout", "2s"];
    let start = std::time::Instant::now();
    let out = env.sync(&server.url(), &[&pace[..], &["--run-timeout", "60s"]].concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("slower than 1024 bytes/s"), "{}", out.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(15), "sync took {:?}", start.elapsed());

    let start = std::time::Instant::now();
    let args =
        [&["mirrors", "--json", "--upstream", &server.url(), "--ca-file", env.pki.ca.to_str().unwrap()], &pace[..]];
    let out = env.run(&args.concat());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(15), "mirrors took {:?}", start.elapsed());
}

/// Bytes under `.upmirror/partial/`.
fn staged_bytes(env: &Env) -> u64 {
    walkdir::WalkDir::new(env.root.join(".upmirror/partial"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn partial_downloads_that_no_listing_needs_are_reclaimed() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/releases/11.2/core.zip", Fault::ResetAfter(200_000));
    let mut sizes = Vec::new();
    for seed in 0..4 {
        // Each run the upstream lists a new version of the file, then cuts it short.
        env.write("releases/11.2/core.zip", &crate::support::pseudo_random(300_000, 100 + seed));
        env.make_manifest();
        assert_eq!(env.sync(&server.url(), &["--retries", "0"]).code, 1);
        sizes.push(staged_bytes(&env));
    }
    // The cut file's 200,000 bytes and the small files verified for the next run; no older versions.
    assert!(sizes[0] < 300_000, "{sizes:?}");
    assert_eq!(sizes, [sizes[0]; 4], "only the current version's partial is kept");
}

#[test]
fn a_name_listed_twice_in_a_page_stops_the_crawl_at_that_page() {
    // One JSON page naming the same sizeless file 100,000 times: without the
    // check, 100,000 HEAD requests came before "listed twice".
    let env = Env::new();
    fs::create_dir_all(&env.upstream).unwrap();
    let server = env.serve();
    let item = r#"{"name":"x","type":"file","mtime":"Tue, 24 Nov 2026 19:00:00 GMT"}"#;
    let page = format!("[{}]", vec![item; 100_000].join(","));
    server.fault("/", Fault::Body(page.into_bytes()));
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"x\" is listed twice"), "{}", out.stderr);
    assert!(server.log().len() <= 2, "the manifest probe and the page: {} requests", server.log().len());

    // `a/` and `%61/` are one directory: crawling both would double every level.
    let html = "<html><head><title>Index of /</title></head><body><h1>Index of /</h1><hr><pre>\
        <a href=\"a/\">a/</a>  24-Nov-2026 19:00  -\n<a href=\"%61/\">%61/</a>  24-Nov-2026 19:00  -\n</pre></body></html>";
    server.fault("/", Fault::Body(html.as_bytes().to_vec()));
    server.clear_log();
    let out = env.sync(&server.url(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"a\" is listed twice"), "{}", out.stderr);
    assert!(server.log().iter().all(|r| !r.path.starts_with("/a/") && !r.path.starts_with("/%61/")));
}

#[test]
fn without_a_digest_a_body_from_another_upstream_needs_its_mtime_confirmed() {
    let env = Env::with_sample_tree();
    env.remove("releases/11.2/SHA256SUMS");
    // A secondary with other bytes of the same size, and no Last-Modified.
    let other = env.dir.path().join("other");
    for (path, (bytes, _)) in crate::support::files(&env.upstream) {
        let to = other.join(&path);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::write(to, if path == "pool/p02.deb" { vec![b'!'; bytes.len()] } else { bytes }).unwrap();
    }
    let primary = env.serve();
    let secondary = crate::support::Server::start(&other, &env.pki, Default::default());
    primary.fault("/pool/p02.deb", Fault::Status(500));
    secondary.fault("/pool/p02.deb", Fault::NoLastModified);
    let out = env.sync_from(&[&primary.url(), &secondary.url()], &["--listing", "autoindex", "--retries", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no Last-Modified to confirm"), "{}", out.stderr);
    assert!(fs::symlink_metadata(env.current()).is_err(), "the unconfirmed bytes are not published");
}

#[test]
fn names_a_case_insensitive_file_system_takes_for_one_fail_the_run_naming_both() {
    let env = Env::new();
    env.write("docs/README", b"the upper-case one\n");
    env.write("docs/Readme", b"the mixed-case one, another file\n");
    env.write("other.txt", b"unrelated\n");
    env.make_manifest();
    let server = env.serve();
    let fs = crate::support::casefold::CaseFold::mount(&env.dir.path().join("backing"), &env.dir.path().join("ci"));
    let root = fs.mountpoint.join("mirror");
    let (ca, url) = (env.pki.ca.to_str().unwrap(), server.url());
    let out = env.run(&["sync", "--root", root.to_str().unwrap(), "--upstream", &url, "--ca-file", ca]);
    assert_eq!(out.code, 1, "{out:?}");
    let both = |a: &str, b: &str| out.stderr.contains(&format!("docs/{a} and docs/{b} are one name"));
    assert!(both("README", "Readme") || both("Readme", "README"), "{}", out.stderr);
    assert!(!root.join("current").exists(), "nothing published");
}

#[test]
fn a_listing_page_of_megabytes_is_parsed_in_one_pass() {
    // An nginx page of 40,000 rows (2.4 MiB): its rows close their links
    // but no `</tr>` follows, and a parser that looked for one to the end
    // of the page for every row took minutes with the lock held.
    let env = Env::new();
    env.write("f00000.bin", b""); // the file whose dates tell the listing's time zone
    let server = env.serve();
    let rows: String = (0..40_000)
        .map(|i| format!("<a href=\"f{i:05}.bin\">f{i:05}.bin</a>      24-Nov-2026 19:00   {i}\n"))
        .collect();
    let page = format!(
        "<html><head><title>Index of /</title></head><body><h1>Index of /</h1><hr><pre>{rows}</pre></body></html>"
    );
    server.fault("/", Fault::Body(page.into_bytes()));
    let start = std::time::Instant::now();
    let out = env.sync(&server.url(), &["--dry-run", "--json", "--listing", "autoindex"]);
    assert_eq!(out.code, 0, "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["added"], 40_000, "{}", &out.stdout[..out.stdout.len().min(300)]);
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "took {:?}", start.elapsed());
}
