//! Seeds (`seed_from`): files a local tree already holds are taken from it,
//! checked by their sha256, never requested; the seed is only read.

use std::fs;
use std::path::Path;

use filetime::FileTime;

use crate::support::{Env, MTIME, inode, pseudo_random};

fn mtime(path: &Path) -> i64 {
    FileTime::from_last_modification_time(&fs::metadata(path).unwrap()).unix_seconds()
}

/// Each file its own size: a seed is looked for by size first.
fn size(i: u64) -> usize {
    50_000 + i as usize * 10
}

#[test]
fn files_a_seed_holds_are_never_requested_and_a_wrong_seed_is_passed_over() {
    let env = Env::new();
    for i in 0..20 {
        env.write(&format!("pool/a{i:02}.deb"), &pseudo_random(size(i), i));
    }
    env.make_manifest();
    let server = env.serve();
    // Half the files under other names: five with the listed mtime (taken
    // by a link), five with another (copied); and a file of the right size
    // but other bytes at the very path of a10.
    let seed = env.dir.path().join("dvd");
    for i in 0..10 {
        let path = seed.join(format!("old/copy-{i}.bin"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, pseudo_random(size(i), i)).unwrap();
        let when = if i < 5 { MTIME } else { MTIME - 86400 };
        filetime::set_file_mtime(&path, FileTime::from_unix_time(when, 0)).unwrap();
    }
    fs::create_dir_all(seed.join("pool")).unwrap();
    fs::write(seed.join("pool/a10.deb"), pseudo_random(size(10), 99)).unwrap();
    let before: Vec<(Vec<u8>, i64)> =
        (0..10).map(|i| seed.join(format!("old/copy-{i}.bin"))).map(|p| (fs::read(&p).unwrap(), mtime(&p))).collect();
    let seeded = ["--seed-from", seed.to_str().unwrap()];

    let out = env.sync(&server.url(), &[&seeded[..], &["--dry-run"]].concat());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("seed_from may give 11 files (537.6 KiB)"), "{}", out.stderr);
    let out = env.sync(&server.url(), &seeded);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("took 10 files (488.7 KiB) from seed_from; 1 of the right size"), "{}", out.stderr);
    env.assert_mirrors_upstream();
    let asked: Vec<String> = server.file_requests().into_iter().map(|r| r.path).collect();
    let expected: Vec<String> = (10..20).map(|i| format!("/pool/a{i:02}.deb")).collect();
    let mut sorted = asked.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "only what no seed held was requested");
    let status = env.last_status();
    assert_eq!(status["seeded"], serde_json::json!({"files": 10, "bytes": 500_450, "mismatched": 1}));

    // Linked only where that changed nothing of the seed; the seed as it was.
    for i in 0..10u64 {
        let (published, seeded) =
            (env.current().join(format!("pool/a{i:02}.deb")), seed.join(format!("old/copy-{i}.bin")));
        assert_eq!(inode(&published) == inode(&seeded), i < 5, "a{i:02}");
        assert_eq!((fs::read(&seeded).unwrap(), mtime(&seeded)), before[i as usize], "seed file {i} unchanged");
    }
    assert_eq!(fs::read(seed.join("pool/a10.deb")).unwrap(), pseudo_random(size(10), 99));
}
