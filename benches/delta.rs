//! One patch made or applied, for `bench/delta.sh` to time and measure
//! (wall, peak RSS) in a process of its own:
//!
//!     cargo bench --bench delta -- make OLD NEW PATCH
//!     cargo bench --bench delta -- apply OLD PATCH OUT

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let t = Instant::now();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["make", old, new, patch] => {
            let size =
                upmirror::delta::make(old.as_ref(), new.as_ref(), patch.as_ref()).unwrap_or_else(|e| panic!("{e:#}"));
            println!("made a patch of {size} bytes in {:.3} s", t.elapsed().as_secs_f64());
        }
        ["apply", old, patch, out] => {
            let patch_file = std::fs::File::open(patch).unwrap_or_else(|e| panic!("{patch}: {e}"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap_or_else(|e| panic!("{out}: {e}")));
            let n = upmirror::delta::apply(old.as_ref(), patch_file, &mut file, u64::MAX - 1)
                .unwrap_or_else(|e| panic!("{e:#}"));
            println!("applied: {n} bytes in {:.3} s", t.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!("usage: cargo bench --bench delta -- make OLD NEW PATCH | apply OLD PATCH OUT (bench/delta.sh)");
            std::process::exit(2);
        }
    }
}
