//! Which upstream paths this mirror carries: `include` and `exclude` globs
//! over the whole relative path (`*` stays within a segment, `**` crosses
//! them). A path is in scope when it matches an include (or there are none)
//! and no exclude. Out-of-scope paths are neither downloaded nor deleted.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that is not a glob; the key and pattern are named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// `P` of every exclude `P/**`: a directory matching it holds nothing in scope.
    excluded_dirs: GlobSet,
    /// The literal leading segments of each include (up to its first glob).
    include_prefixes: Vec<Vec<String>>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, FilterError> {
        let set = |key: &str, patterns: &[String]| -> Result<GlobSet, FilterError> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(glob(p).map_err(|e| FilterError(format!("{key} pattern \"{p}\": {e}")))?);
            }
            b.build().map_err(|e| FilterError(format!("{key}: {e}")))
        };
        let dirs: Vec<String> = exclude.iter().filter_map(|p| p.strip_suffix("/**")).map(str::to_owned).collect();
        let literal = |p: &String| -> Vec<String> {
            p.split('/').take_while(|seg| !seg.contains(['*', '?', '[', '{', '\\'])).map(str::to_owned).collect()
        };
        Ok(Filter {
            include: if include.is_empty() { None } else { Some(set("include", include)?) },
            exclude: set("exclude", exclude)?,
            excluded_dirs: set("exclude", &dirs)?,
            include_prefixes: include.iter().map(literal).collect(),
        })
    }

    /// Everything is in scope.
    pub fn all() -> Filter {
        Filter {
            include: None,
            exclude: GlobSet::empty(),
            excluded_dirs: GlobSet::empty(),
            include_prefixes: Vec::new(),
        }
    }

    pub fn allows(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.is_match(path)) && !self.exclude.is_match(path)
    }

    /// Whether directory `dir` may hold a path in scope, so that a crawl
    /// need not list what the filters leave out: not when an exclude `P/**`
    /// covers it, nor when it is off the literal leading segments of every
    /// include. Errs on the side of yes.
    pub fn may_hold(&self, dir: &str) -> bool {
        if self.excluded_dirs.is_match(dir) {
            return false;
        }
        let on_the_way = |prefix: &Vec<String>| dir.split('/').zip(prefix).all(|(d, p)| d == p);
        self.include.is_none() || self.include_prefixes.iter().any(on_the_way)
    }
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> Filter {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Filter::new(&v(include), &v(exclude)).unwrap()
    }

    #[test]
    fn includes_and_excludes_match_whole_paths() {
        let only_11 = f(&["releases/11.*/**", "releases/current.json"], &["**/*.iso"]);
        assert!(only_11.allows("releases/11.2/core.zip"));
        assert!(only_11.allows("releases/current.json"));
        assert!(!only_11.allows("releases/10.9/core.zip"));
        assert!(!only_11.allows("releases/11.2/dvd.iso"), "exclude wins");
        assert!(!only_11.allows("releases/11.2"), "a star stays within its segment");
        let all_but_debug = f(&[], &["debug/**"]);
        assert!(all_but_debug.allows("pool/a.deb") && !all_but_debug.allows("debug/x/y"));
        assert!(Filter::all().allows("anything/at/all"));
        assert!(Filter::new(&["a[".into()], &[]).unwrap_err().0.contains("include pattern \"a[\""));
    }

    #[test]
    fn directories_out_of_scope_are_known_before_they_are_listed() {
        let f = f(&["releases/11.*/**", "docs/index.txt"], &["site/**", "**/tmp/**"]);
        assert!(f.may_hold("releases") && f.may_hold("releases/10.9") && f.may_hold("docs"));
        assert!(!f.may_hold("pool"), "off every include");
        assert!(!f.may_hold("releases/tmp"), "an excluded directory");
        let f = super::Filter::new(&[], &["site/**".into(), "*.iso".into()]).unwrap();
        assert!(!f.may_hold("site") && f.may_hold("sites") && f.may_hold("a/site"));
        assert!(Filter::all().may_hold("anything"));
    }
}
