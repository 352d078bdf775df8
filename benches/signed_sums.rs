//! Checking a signed `SHA256SUMS`: the OpenPGP signature (detached, or the
//! clearsigned text) by a keyring key, then the parse of every line. The
//! files come from `bench/signed-sums.sh`, which makes them with gpg.
//!
//!     bench/signed-sums.sh            # 100,000 lines
//!     cargo bench --bench signed_sums -- KEYRING SUMS SUMS.gpg SUMS.clearsigned

use std::time::{Instant, SystemTime};

use upmirror::openpgp::Keyring;
use upmirror::upstream::autoindex::parse_sha256sums;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [keyring, sums, detached, clear] = &args[..] else {
        eprintln!(
            "usage: cargo bench --bench signed_sums -- KEYRING SUMS SUMS.gpg SUMS.clearsigned (bench/signed-sums.sh)"
        );
        std::process::exit(2);
    };
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let (sums, detached, clear) = (read(sums), read(detached), read(clear));
    let t = Instant::now();
    let keys = Keyring::load(&[keyring.into()]).unwrap_or_else(|e| panic!("{e}"));
    println!("load the keyring                  {:>8.3} ms", t.elapsed().as_secs_f64() * 1e3);
    for run in 1..=3 {
        let t = Instant::now();
        keys.check_detached(&sums, &detached, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
        let check = t.elapsed();
        let t = Instant::now();
        let lines = parse_sha256sums(&String::from_utf8_lossy(&sums)).unwrap().len();
        let parse = t.elapsed();
        let t = Instant::now();
        let (text, _) = keys.check_clearsigned(&String::from_utf8_lossy(&clear), SystemTime::now()).unwrap();
        let clearsigned = t.elapsed();
        assert_eq!(parse_sha256sums(&text).unwrap().len(), lines);
        println!(
            "run {run}: {lines} lines ({:.1} MiB): detached check {:.3} ms + parse {:.3} ms; clearsigned check {:.3} ms",
            sums.len() as f64 / 1048576.0,
            check.as_secs_f64() * 1e3,
            parse.as_secs_f64() * 1e3,
            clearsigned.as_secs_f64() * 1e3
        );
    }
}
