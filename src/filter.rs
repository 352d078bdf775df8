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
        Ok(Filter {
            include: if include.is_empty() { None } else { Some(set("include", include)?) },
            exclude: set("exclude", exclude)?,
        })
    }

    /// Everything is in scope.
    pub fn all() -> Filter {
        Filter { include: None, exclude: GlobSet::empty() }
    }

    pub fn allows(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.is_match(path)) && !self.exclude.is_match(path)
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
}
