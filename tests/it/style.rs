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

/// The modules below `src/` (a file, or a folder with its files) and the
/// ones each names as `crate::NAME`, test code and comments left out.
fn module_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let uses = regex_lite::Regex::new(r"crate::(\w+)").unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs")
            || rel.components().count() == 1 && rel.ends_with("lib.rs")
        {
            continue;
        }
        let module = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            deps.extend(uses.captures_iter(line).map(|c| c[1].to_owned()).filter(|d| *d != module));
        }
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = module_imports();
    assert!(graph.len() > 20 && graph["commands"].contains("upstream"), "the scan found too little: {graph:?}");
    // A depth-first search: a module met again on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Some(path[at..].iter().chain([&m]).map(|s| s.to_string()).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        let cycle = graph.get(m).into_iter().flatten().find_map(|d| visit(d, graph, path, done));
        path.pop();
        cycle
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        let cycle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "an import cycle: {}", cycle.unwrap_or_default().join(" → "));
    }
}
