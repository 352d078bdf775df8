//! Air-gap bundles: `upmirror export` at the connected hub, carried through a
//! one-way transfer, applied by `sync --upstream file:///BUNDLE` at the
//! air-gapped site.

use std::path::Path;

use crate::support::{Env, Out, files};

fn root_of(env: &Env, name: &str) -> String {
    env.dir.path().join(name).to_str().unwrap().to_owned()
}

fn export(env: &Env, to: &Path, since: Option<&str>) -> Out {
    let mut args = vec!["export", "--root", env.root.to_str().unwrap(), "--to", to.to_str().unwrap()];
    args.extend(since.map(|s| ["--since", s]).into_iter().flatten());
    env.run(&args)
}

fn apply(env: &Env, site: &str, bundle: &Path) -> Out {
    env.run(&["sync", "--root", site, "--upstream", &format!("file://{}", bundle.display())])
}

/// The trees two roots publish.
fn assert_same_trees(a: &Path, b: &Path) {
    crate::support::assert_same_trees(&a.join("current"), &b.join("current"));
}

#[test]
fn a_full_bundle_seeds_a_site_and_a_delta_applies_only_onto_its_base() {
    let env = Env::with_sample_tree();
    let vendor = env.serve();
    assert_eq!(env.sync(&vendor.url(), &[]).code, 0);
    let first = env.published_id().unwrap();

    let full = env.dir.path().join("bundle-full");
    let out = export(&env, &full, None);
    assert_eq!(out.code, 0, "{out:?}");
    let site = root_of(&env, "site");
    let out = apply(&env, &site, &full);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_trees(&env.root, Path::new(&site));

    // The vendor publishes a change; the hub follows it online.
    env.write("pool/p03.deb", b"changed");
    env.write("pool/new.deb", b"new");
    env.remove("pool/p04.deb");
    env.make_manifest();
    assert_eq!(env.sync(&vendor.url(), &[]).code, 0);

    let delta = env.dir.path().join("bundle-delta");
    let out = export(&env, &delta, Some(&first));
    assert_eq!(out.code, 0, "{out:?}");
    let mut carried: Vec<String> = files(&delta).into_keys().collect();
    carried.sort();
    assert_eq!(carried, ["pool/new.deb", "pool/p03.deb", "upmirror-bundle.json", "upmirror-manifest.json"]);

    // Onto a site that does not hold the base: refused, naming it, nothing written.
    let other = root_of(&env, "other");
    let out = apply(&env, &other, &delta);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(&format!("since snapshot {first}")), "{}", out.stderr);
    assert!(!Path::new(&other).join("current").exists());

    // Onto its base: the same tree as the hub's online sync.
    let out = apply(&env, &site, &delta);
    assert_eq!(out.code, 0, "{out:?}");
    assert_same_trees(&env.root, Path::new(&site));

    // A bundle directory is never mixed with another.
    let out = export(&env, &delta, None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
}
