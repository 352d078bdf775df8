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

#[test]
fn a_bundle_description_that_is_a_fifo_or_a_link_to_a_device_is_not_read() {
    let env = Env::with_sample_tree();
    let vendor = env.serve();
    assert_eq!(env.sync(&vendor.url(), &[]).code, 0);
    let first = env.published_id().unwrap();
    env.write("pool/p03.deb", b"changed");
    env.make_manifest();
    assert_eq!(env.sync(&vendor.url(), &[]).code, 0);
    for plant in ["fifo", "zero"] {
        let delta = env.dir.path().join(format!("bundle-{plant}"));
        assert_eq!(export(&env, &delta, Some(&first)).code, 0);
        let description = delta.join("upmirror-bundle.json");
        std::fs::remove_file(&description).unwrap();
        match plant {
            "fifo" => assert!(std::process::Command::new("mkfifo").arg(&description).status().unwrap().success()),
            _ => std::os::unix::fs::symlink("/dev/zero", &description).unwrap(),
        }
        // A site without the base: the bundle is refused, its description unread.
        let site = root_of(&env, &format!("site-{plant}"));
        let bundle = format!("file://{}", delta.display());
        let out = env.run_within(60, &["sync", "--root", &site, "--upstream", &bundle]);
        assert_eq!(out.code, 3, "{plant}: {out:?}");
        assert!(out.stderr.contains("lacks 25 files its manifest lists"), "{plant}: {}", out.stderr);
    }
}

#[test]
fn export_writes_copies_into_a_directory_of_its_own() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let env = Env::with_sample_tree();
    let vendor = env.serve();
    assert_eq!(env.sync(&vendor.url(), &[]).code, 0);
    // Copies: editing the bundle never edits what is served.
    let bundle = env.dir.path().join("bundle");
    assert_eq!(export(&env, &bundle, None).code, 0);
    let served = env.current().join("pool/p01.deb");
    assert_ne!(
        std::fs::metadata(bundle.join("pool/p01.deb")).unwrap().ino(),
        std::fs::metadata(&served).unwrap().ino()
    );
    let mut args = vec!["export", "--root", env.root.to_str().unwrap(), "--link", "--to"];
    let linked = env.dir.path().join("linked");
    args.push(linked.to_str().unwrap());
    assert_eq!(env.run(&args).code, 0);
    assert_eq!(
        std::fs::metadata(linked.join("pool/p01.deb")).unwrap().ino(),
        std::fs::metadata(&served).unwrap().ino()
    );

    // A directory others can write into (where a link could be planted) is refused.
    let open = env.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = export(&env, &open, None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("others can write into it"), "{}", out.stderr);
    // So is a link to a directory.
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&bundle, &link).unwrap();
    let out = export(&env, &link, None);
    assert_eq!(out.code, 2, "{out:?}");
}
