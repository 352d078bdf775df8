//! Only the newest versions: a vendor tree of 5 products × 20 versions with
//! `keep = 2` is mirrored from a tenth of its bytes, a new version drops
//! exactly the oldest kept one of its series, and a rule that keeps every
//! version plans exactly what no rule plans.

use crate::support::{Env, pseudo_random};

const RULE: &str = "releases/{series}/{version}/**=2";

/// 5 products × 20 versions, two files each of 16 KiB.
fn vendor_tree() -> Env {
    let env = Env::new();
    for p in 0..5 {
        for v in 1..=20 {
            for f in ["image.iso", "SHA256SUMS"] {
                env.write(&format!("releases/p{p}/{p}.{v}/{f}"), &pseudo_random(16 << 10, (p * 100 + v) as u64));
            }
        }
    }
    env.write("README", b"the vendor's tree\n");
    env.make_manifest();
    env
}

fn file_gets(server: &crate::support::Server) -> usize {
    server.file_requests().into_iter().filter(|r| r.method == "GET" && r.path != "/upmirror-manifest.json").count()
}

#[test]
fn only_the_newest_versions_of_each_series_are_fetched() {
    let env = vendor_tree();
    let server = env.serve();
    let out = env.sync(&server.url(), &["--dry-run", "--keep-versions", RULE]);
    assert_eq!(out.code, 0, "{out:?}");
    let said = "versions releases/{series}/{version}/**: p0 keeps 0.20, 0.19; leaves out 0.18, 0.17,";
    assert!(out.stderr.contains(said), "{}", out.stderr);

    let out = env.sync(&server.url(), &["--keep-versions", RULE]);
    assert_eq!(out.code, 0, "{out:?}");
    // 5 series × 2 versions × 2 files, of 200 files (and the README).
    assert_eq!(file_gets(&server), 21, "{:?}", server.file_requests());
    assert!(env.current().join("releases/p3/3.20/image.iso").exists());
    assert!(!env.current().join("releases/p3/3.18").exists());

    // A new version of p0: p0's 0.19 goes, nothing else moves.
    env.write("releases/p0/0.21/image.iso", b"new image");
    env.write("releases/p0/0.21/SHA256SUMS", b"new sums");
    env.make_manifest();
    server.clear_log();
    let out = env.sync(&server.url(), &["--keep-versions", RULE, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((status["added"].as_u64(), status["removed"].as_u64()), (Some(2), Some(2)), "{status}");
    assert_eq!(file_gets(&server), 2);
    assert!(!env.current().join("releases/p0/0.19").exists() && env.current().join("releases/p0/0.20").exists());
}

#[test]
fn a_rule_that_keeps_every_version_plans_what_no_rule_plans() {
    let env = vendor_tree();
    let server = env.serve();
    let plain = env.sync(&server.url(), &["--dry-run", "--json"]);
    let all = env.sync(&server.url(), &["--dry-run", "--json", "--keep-versions", "releases/{series}/{version}/**=20"]);
    assert_eq!((plain.code, all.code), (0, 0), "{plain:?} {all:?}");
    assert_eq!(plain.stdout, all.stdout);
}
