//! The code's own rules, checked on every test run: no function over 60
//! lines.

use std::path::Path;

/// Every function in `src/`, as (lines from `fn` to its closing brace, file, name).
fn functions() -> Vec<(usize, String, String)> {
    let fn_line = regex_lite::Regex::new(r"^(\s*)(pub(\([\w:]+\))? )?(const )?(async )?fn (\w+)").unwrap();
    let mut found = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(m) = fn_line.captures(line) else { continue };
            if line.trim_end().ends_with(';') {
                continue;
            }
            let close = format!("{}}}", &m[1]);
            let end = lines[i + 1..].iter().position(|l| *l == close).expect("a function without its closing brace");
            found.push((end + 2, entry.path().display().to_string(), m[6].to_owned()));
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_60_lines() {
    let all = functions();
    assert!(all.len() > 100, "the scan found too few functions: {}", all.len());
    let long: Vec<_> = all.into_iter().filter(|(n, _, _)| *n > 60).collect();
    assert!(long.is_empty(), "functions over 60 lines: {long:?}");
}
