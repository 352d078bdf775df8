//! The operator's moments: filters, plan/apply for a change window, init,
//! completions and the manual page, and the exact shape of what `sync
//! --dry-run` and `status` print (so a change of format is deliberate).

use std::fs;

use crate::support::{Env, pseudo_random};

#[test]
fn include_and_exclude_decide_what_is_fetched_and_nothing_outside_is_deleted() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let filters = ["--include", "releases/**", "--include", "docs/**", "--exclude", "**/SHA256SUMS"];
    let out = env.sync(&server.url(), &[&filters[..], &["--dry-run"]].concat());
    assert!(
        out.stdout.ends_with(
            "3 added, 0 changed, 0 removed · 293.0 KiB to download · 23 skipped by filters · published tree unchanged\n"
        ),
        "{}",
        out.stdout
    );
    let out = env.sync(&server.url(), &filters);
    assert_eq!(out.code, 0, "{out:?}");
    let files: Vec<String> = crate::support::files(&env.current()).into_keys().collect();
    assert_eq!(
        files,
        ["docs/read me #1 100%?.txt", "releases/11.2/core.zip", "releases/current.json", "upmirror-manifest.json"],
        "only what the filters allow"
    );
    assert!(server.file_requests().iter().all(|r| !r.path.starts_with("/pool/")), "excluded paths are not fetched");

    // Everything, then a filter that leaves pool/ out: pool/ stays published.
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    for i in 0..20 {
        env.remove(&format!("pool/p{i:02}.deb"));
    }
    env.write("releases/current.json", b"{\"version\":\"11.3\"}\n");
    env.make_manifest();
    let out = env.sync(&server.url(), &["--dry-run", "--exclude", "pool/**"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with("0 added, 1 changed, 0 removed · 19 B to download · published tree unchanged\n"),
        "{}",
        out.stdout
    );
    let out = env.sync(&server.url(), &["--exclude", "pool/**"]);
    assert_eq!(out.code, 0, "the delete guard is not tripped by filtered paths: {out:?}");
    assert!(env.current().join("pool/p05.deb").exists(), "filtered paths are not deleted");
    assert_eq!(fs::read(env.current().join("releases/current.json")).unwrap(), b"{\"version\":\"11.3\"}\n");
}

#[test]
fn a_saved_plan_applies_exactly_and_is_refused_after_upstream_drift() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    env.write("releases/11.3/core.zip", &pseudo_random(5000, 9));
    env.make_manifest();
    let plan = env.dir.path().join("mirror2");
    let plan = plan.to_str().unwrap();
    let out = env.sync(&server.url(), &["--dry-run", "--save-plan", plan]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("+ releases/11.3/core.zip"), "{}", out.stdout);
    let published = env.published_id();

    // The upstream moves on before the change window: the saved plan is refused.
    env.write("releases/11.3/notes.txt", b"late addition");
    env.make_manifest();
    let out = env.sync(&server.url(), &["--plan", plan]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("the upstream listing changed"), "{}", out.stderr);
    assert_eq!(env.published_id(), published);

    // A fresh plan applies, and only once.
    assert_eq!(env.sync(&server.url(), &["--dry-run", "--save-plan", plan]).code, 0);
    let out = env.sync(&server.url(), &["--plan", plan]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    let out = env.sync(&server.url(), &["--plan", plan]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("another snapshot was published"), "{}", out.stderr);
}

#[test]
fn init_creates_the_layout_and_says_what_comes_next() {
    let env = Env::new();
    let root = env.root.to_str().unwrap();
    let out = env.run(&["init", root]);
    assert_eq!(out.code, 0, "{out:?}");
    for dir in ["snapshots", ".upmirror", "public"] {
        assert!(env.root.join(dir).is_dir(), "{dir}");
    }
    assert!(out.stdout.contains("next steps") && out.stdout.contains("upmirror mirrors"), "{}", out.stdout);
    assert_eq!(env.run(&["init", root]).code, 0, "init twice is fine");
}

#[test]
fn completions_and_the_version_come_from_the_command_line_definition() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("upmirror") && out.stdout.contains("--dry-run"), "{shell}");
    }
    let version = env.run(&["--version"]);
    assert_eq!(version.stdout.trim(), format!("upmirror {}", env!("CARGO_PKG_VERSION")));
}

/// Replace what changes from run to run (ids, times, ports, temp paths).
fn normalise(text: &str, env: &Env) -> String {
    let mut out = text.replace(env.dir.path().to_str().unwrap(), "TMP");
    for (pattern, with) in [
        (r"\d{8}T\d{6}Z(-[0-9a-f]{12}|-\d+)?", "SNAPSHOT"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME"),
        (r"127\.0\.0\.1:\d+", "HOST"),
        (r"listing generated [^,\n]+ ago", "listing generated AGE ago"),
        (r"mirror size [0-9.]+ [KMG]?i?B", "mirror size SIZE"),
    ] {
        out = regex_lite::Regex::new(pattern).unwrap().replace_all(&out, with).into_owned();
    }
    out
}

#[test]
fn dry_run_and_status_print_exactly_this() {
    let env = Env::with_sample_tree();
    env.set_generated_at("2026-11-24T19:00:00Z");
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    env.write("releases/11.3/core.zip", &pseudo_random(100 << 10, 9));
    env.write("releases/current.json", b"{\"version\":\"11.3.0\"}\n");
    env.remove("pool/p19.deb");
    env.make_manifest();

    let out = env.sync(&server.url(), &["--dry-run"]);
    assert_eq!(
        out.stdout,
        "+ releases/11.3/core.zip        100.0 KiB\n\
         ~ releases/current.json              21 B   (was 19 B)\n\
         - pool/p19.deb\n\
         1 added, 1 changed, 1 removed · 100.0 KiB to download · published tree unchanged\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.sync(&server.url(), &["--dry-run", "--json"]).stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "added": [{"path": "releases/11.3/core.zip", "size": 102400, "mtime": crate::support::MTIME}],
            "changed": [{"path": "releases/current.json", "size": 21, "mtime": crate::support::MTIME, "old_size": 19}],
            "removed": ["pool/p19.deb"],
            "summary": {"added": 1, "changed": 1, "removed": 1, "kept": 24, "skipped": 0, "download_bytes": 102421},
        })
    );

    let root = env.root.to_str().unwrap();
    let status = normalise(&env.run(&["status", "--root", root]).stdout, &env);
    assert_eq!(
        status,
        "published   SNAPSHOT: 26 files, 319.5 KiB, listing generated AGE ago\n\
         last run    published at TIME (exit 0)\n\
         snapshots   1 kept: SNAPSHOT (current)\n\
         mirror size SIZE\n"
    );
    let doc: serde_json::Value = serde_json::from_str(&env.run(&["status", "--root", root, "--json"]).stdout).unwrap();
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["last_run", "mirror_bytes", "published", "running", "snapshots"]);
    let last: Vec<&str> = doc["last_run"].as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "started",
        "finished",
        "outcome",
        "exit_code",
        "error",
        "snapshot",
        "upstream",
        "added",
        "changed",
        "removed",
        "download_bytes",
        "upstreams",
    ] {
        assert!(last.contains(&key), "status.json has no {key}: {last:?}");
    }
    assert_eq!(doc["published"]["generated_at"], "2026-11-24T19:00:00Z");
}

#[test]
fn a_plan_saves_to_a_relative_path_and_never_touches_a_neighbouring_tmp_file() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let cwd = env.dir.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("keepme.tmp"), b"an operator's file").unwrap();
    let (root, ca) = (env.root.to_str().unwrap(), env.pki.ca.to_str().unwrap());
    let sync = ["sync", "--root", root, "--upstream", &server.url(), "--ca-file", ca, "--dry-run", "--save-plan"];
    for name in ["plan.json", "keepme.json"] {
        let out = env.run_in(&cwd, &[&sync[..], &[name]].concat());
        assert_eq!(out.code, 0, "{name}: {out:?}");
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(cwd.join(name)).unwrap()).unwrap();
        assert_eq!(saved["format"], "upmirror-plan/1");
    }
    assert_eq!(std::fs::read(cwd.join("keepme.tmp")).unwrap(), b"an operator's file");
    let mut left: Vec<String> =
        std::fs::read_dir(&cwd).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["keepme.json", "keepme.tmp", "plan.json"], "no temporary file is left");
    let out = env
        .run_in(&cwd, &["sync", "--root", root, "--upstream", &server.url(), "--ca-file", ca, "--plan", "plan.json"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_never_silent() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let metrics = env.dir.path().join("no-such-dir/upmirror.prom");
    let out = env.sync(&server.url(), &["--quiet", "--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("metrics_file") && out.stderr.contains("no-such-dir"),
        "even under --quiet: {}",
        out.stderr
    );
    assert!(out.stderr.contains("the run's metrics were (status.json was written) not recorded"), "{}", out.stderr);
    assert!(env.published_id().is_some(), "the snapshot itself was published");
    let status: serde_json::Value = env.last_status();
    assert!(status["warnings"][0].as_str().unwrap().contains("was not written"), "{status}");
}

#[test]
fn under_systemd_a_quiet_run_leaves_one_line_in_the_journal_and_cron_stays_silent() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let out = env.sync(&server.url(), &["--quiet"]);
    assert!(out.code == 0 && out.stderr.is_empty() && out.stdout.is_empty(), "cron mails nothing: {out:?}");
    let out = env.sync_env(&server.url(), &["--quiet"], &[("JOURNAL_STREAM", "8:12345")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("nothing to do: "), "{}", out.stderr);
}

#[test]
fn metrics_show_each_upstreams_health_and_traffic_and_the_run_duration() {
    let env = Env::with_sample_tree();
    let (primary, secondary) = (env.serve(), env.serve());
    primary.fault("/releases/11.2/core.zip", crate::support::Fault::Status(500));
    let metrics = env.dir.path().join("upmirror.prom");
    let args = ["--retries", "0", "--metrics-file", metrics.to_str().unwrap()];
    assert_eq!(env.sync_from(&[&primary.url(), &secondary.url()], &args).code, 0);
    let text = fs::read_to_string(&metrics).unwrap();
    let value = |series: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (p, s) = (primary.url(), secondary.url());
    assert_eq!(value(&format!("upmirror_upstream_up{{upstream=\"{p}\"}}")), 0, "a dead primary is visible");
    assert_eq!(value(&format!("upmirror_upstream_up{{upstream=\"{s}\"}}")), 1);
    assert_eq!(
        value(&format!("upmirror_upstream_bytes_total{{upstream=\"{s}\"}}")),
        300_000,
        "the big file came from it"
    );
    assert!(value(&format!("upmirror_upstream_bytes_total{{upstream=\"{p}\"}}")) > 0);
    assert!(text.contains("# TYPE upmirror_last_run_duration_seconds gauge\nupmirror_last_run_duration_seconds "));

    // A rollback asks no upstream: the counters carry on, never back to zero.
    env.write("pool/p05.deb", b"changed");
    env.make_manifest();
    primary.clear_faults();
    assert_eq!(env.sync_from(&[&primary.url(), &secondary.url()], &args).code, 0);
    let out = env.run(&["rollback", "--root", env.root.to_str().unwrap(), "--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = fs::read_to_string(&metrics).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("upmirror_upstream_bytes_total{{upstream=\"{s}\"}}")));
    assert_eq!(line.and_then(|l| l.rsplit(' ').next()), Some("300000"), "{text}");
}

#[test]
fn json_documents_keep_their_schema_on_failure_too() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    server.fault("/pool/p01.deb", crate::support::Fault::Status(500));
    let out = env.sync(&server.url(), &["--json", "--retries", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("sync --json prints the recorded status");
    assert_eq!(doc["outcome"], "failed");
    assert!(doc["error"].as_str().unwrap().contains("HTTP 500"));

    server.clear_faults();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    fs::write(env.current().join("pool/p02.deb"), b"damaged").unwrap();
    let out = env.run(&["verify", "--json", "--root", env.root.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        doc["problems"],
        serde_json::json!([{"kind": "size", "path": "pool/p02.deb", "listed": 1074, "found": 7}])
    );
}

#[test]
fn a_reader_that_goes_away_ends_status_quietly() {
    // `upmirror status | head -1`: the pipe closes before status writes.
    let env = Env::with_sample_tree();
    let server = env.serve();
    assert_eq!(env.sync(&server.url(), &[]).code, 0);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_upmirror"))
        .args(["status", "--root", env.root.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
