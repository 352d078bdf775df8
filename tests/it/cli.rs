//! Configuration layering and usage errors.

use crate::support::Env;

#[test]
fn a_plain_http_upstream_is_a_configuration_error_before_any_request() {
    let env = Env::new();
    let out = env.sync("http://127.0.0.1:9/", &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("plain http is refused"), "{}", out.stderr);
    assert!(!env.root.exists(), "nothing created");
}

#[test]
fn a_missing_config_file_named_on_the_command_line_is_an_error() {
    let env = Env::new();
    let out = env.run(&["--config", "/nonexistent/upmirror.toml", "sync"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("/nonexistent/upmirror.toml"), "{}", out.stderr);
}

#[test]
fn config_file_env_and_flags_layer_in_order() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    let config = env.dir.path().join("upmirror.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"/nonexistent/never-used\"\nupstreams = [\"{}\"]\nca_file = \"{}\"\nkeep = 0\n",
            server.url(),
            env.pki.ca.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    // keep = 0 in the file is invalid; the env value wins over it, and the flag's root over the file's.
    let out = env.run_env(&["--config", cfg, "sync", "--root", env.root.to_str().unwrap()], &[("UPMIRROR_KEEP", "2")]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
    // The file alone is used when nothing overrides it, and its error names the key.
    let out = env.run(&["--config", cfg, "sync"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("keep must be at least 1"), "{}", out.stderr);
}

#[test]
fn an_unknown_config_key_is_an_error_naming_the_file() {
    let env = Env::new();
    let config = env.dir.path().join("bad.toml");
    std::fs::write(&config, "upstream = \"https://x/\"\n").unwrap();
    let out = env.run(&["--config", config.to_str().unwrap(), "sync"]);
    assert_eq!(out.code, 2, "{out:?}");
    let said = "there is no key upstream; did you mean upstreams?";
    assert!(out.stderr.contains("bad.toml") && out.stderr.contains(said), "{}", out.stderr);
}

#[test]
fn upstreams_from_the_environment_are_comma_separated_and_tried_in_order() {
    let env = Env::with_sample_tree();
    let server = env.serve();
    // The first upstream refuses connections (port 9 on loopback: discard, not listening).
    let list = format!("https://127.0.0.1:9/,{}", server.url());
    let out = env.run_env(
        &["sync", "--root", env.root.to_str().unwrap(), "--ca-file", env.pki.ca.to_str().unwrap()],
        &[("UPMIRROR_UPSTREAMS", &list)],
    );
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_mirrors_upstream();
}

#[test]
fn manifest_writes_a_valid_manifest_for_any_directory() {
    let env = Env::with_sample_tree();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.upstream.join("upmirror-manifest.json")).unwrap()).unwrap();
    assert_eq!(doc["format"], "upmirror-manifest/1");
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 26, "every file but the manifest itself");
    let empty = files.iter().find(|f| f["path"] == "empty").unwrap();
    assert_eq!(empty["sha256"], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(empty["mtime"], crate::support::MTIME);
    // Writing it again does not list the manifest itself.
    env.make_manifest();
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.upstream.join("upmirror-manifest.json")).unwrap()).unwrap();
    assert_eq!(again["files"], doc["files"]);
}

#[test]
fn a_config_mistake_names_the_file_line_column_and_key() {
    let env = Env::new();
    let config = env.dir.path().join("mistake.toml");
    std::fs::write(&config, "# the mirror\nroot = \"/srv/upmirror\"\nkeep = \"3\"\n").unwrap();
    let out = env.run(&["--config", config.to_str().unwrap(), "status"]);
    assert_eq!(out.code, 2, "{out:?}");
    let want = format!(
        "config {}: line 3, column 8, key keep: invalid type: string \"3\", expected a whole number",
        config.display()
    );
    assert_eq!(out.stderr.trim(), format!("upmirror: {want}"));
}

#[test]
fn each_subcommand_shows_its_own_flags_and_only_the_keys_it_uses() {
    let env = Env::new();
    let help = |cmd: &str| env.run(&[cmd, "--help"]).stdout;
    let completions = help("completions");
    assert!(!completions.contains("--upstream") && !completions.contains("--root"), "{completions}");
    let status = help("status");
    assert!(status.contains("--check") && status.contains("--root") && !status.contains("--upstream"), "{status}");
    let mirrors = help("mirrors");
    assert!(mirrors.contains("--ca-file") && !mirrors.contains("--keep"), "{mirrors}");
    let sync = help("sync");
    let own = sync.find("--dry-run").unwrap();
    for key in ["--root", "--keep", "--max-delete-percent", "--upstream", "--bandwidth-limit"] {
        assert!(sync.find(key).unwrap() > own, "{key} comes after the subcommand's own flags");
    }
}

#[test]
fn the_manual_has_a_page_per_subcommand_with_exit_status_environment_and_files() {
    let env = Env::new();
    let dir = env.dir.path().join("man");
    assert_eq!(env.run(&["man", dir.to_str().unwrap()]).code, 0);
    for page in
        ["upmirror", "upmirror-sync", "upmirror-verify", "upmirror-status", "upmirror-rollback", "upmirror-mirrors"]
    {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1"))).unwrap();
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES"] {
            assert!(text.contains(section), "{page}.1 lacks {section}");
        }
    }
    let sync = std::fs::read_to_string(dir.join("upmirror-sync.1")).unwrap();
    assert!(sync.contains("dry\\-run") && sync.contains("UPMIRROR_BANDWIDTH_LIMIT"), "the sync page has its flags");
}
