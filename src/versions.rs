//! Only the newest versions: `[[versions]] pattern = "releases/{series}/{version}/**"
//! keep = 2` keeps, of the listed paths the pattern matches, those of the
//! newest `keep` versions of each series, decided when planning, so nothing
//! older is downloaded. Versions compare as Debian compares them: digit runs
//! as numbers, letters before other characters, `~` before anything, even
//! the end.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::Entry;

/// A pattern that cannot be read; the pattern is named.
#[derive(Debug, thiserror::Error)]
#[error("versions pattern \"{0}\": {1}")]
pub struct PatternError(pub String, pub &'static str);

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Exactly this text.
    Lit(String),
    /// Any one segment.
    Any,
    /// Text, then `{series}` or `{version}`, then text.
    Hole { before: String, series: bool, after: String },
    /// `**`: one or more segments, the rest of the path.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub keep: usize,
    segs: Vec<Seg>,
}

impl Rule {
    pub fn new(pattern: &str, keep: usize) -> Result<Rule, PatternError> {
        let err = |why| PatternError(pattern.to_owned(), why);
        if keep == 0 {
            return Err(err("keep must be at least 1"));
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut segs = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            segs.push(match *part {
                "**" if i + 1 == parts.len() => Seg::Rest,
                "**" => return Err(err("** may only end the pattern")),
                "*" => Seg::Any,
                p if p.matches('{').count() > 1 => return Err(err("one {series} or {version} per segment")),
                p => {
                    match p.split_once("{series}").map(|s| (s, true)).or(p.split_once("{version}").map(|s| (s, false)))
                    {
                        Some(((before, after), series)) => {
                            Seg::Hole { before: before.into(), series, after: after.into() }
                        }
                        None if p.contains(['{', '}', '*']) || p.is_empty() => {
                            return Err(err("a segment is text, *, ** or holds {series} or {version}"));
                        }
                        None => Seg::Lit(p.to_owned()),
                    }
                }
            });
        }
        if !segs.iter().any(|s| matches!(s, Seg::Hole { series: false, .. })) {
            return Err(err("it names no {version}"));
        }
        Ok(Rule { pattern: pattern.to_owned(), keep, segs })
    }

    /// `(series, version)` of `path` when the pattern matches it.
    fn matches(&self, path: &str) -> Option<(String, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        let (mut series, mut version) = (String::new(), None);
        for (i, seg) in self.segs.iter().enumerate() {
            let part = match seg {
                Seg::Rest => return version.filter(|_| parts.len() > i).map(|v| (series, v)),
                _ => *parts.get(i)?,
            };
            match seg {
                Seg::Lit(text) if text != part => return None,
                Seg::Hole { before, series: is_series, after } => {
                    let value = part.strip_prefix(before.as_str())?.strip_suffix(after.as_str())?;
                    if value.is_empty() {
                        return None;
                    }
                    match is_series {
                        true => series = value.to_owned(),
                        false => version = Some(value.to_owned()),
                    }
                }
                _ => {}
            }
        }
        version.filter(|_| parts.len() == self.segs.len()).map(|v| (series, v))
    }
}

/// What a rule kept and dropped of one series, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    pub pattern: String,
    pub series: String,
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
}

/// The entries of `listing` to mirror: those no rule matches, and of each
/// rule's series the newest `keep` versions; with what each series kept.
pub fn select(rules: &[Rule], listing: Vec<Entry>) -> (Vec<Entry>, Vec<Series>) {
    if rules.is_empty() {
        return (listing, Vec::new());
    }
    let matched: Vec<Option<(usize, String, String)>> = listing
        .iter()
        .map(|e| rules.iter().enumerate().find_map(|(r, rule)| rule.matches(e.path.as_str()).map(|(s, v)| (r, s, v))))
        .collect();
    let mut found: BTreeMap<(usize, &str), BTreeSet<&str>> = BTreeMap::new();
    for (r, s, v) in matched.iter().flatten() {
        found.entry((*r, s.as_str())).or_default().insert(v.as_str());
    }
    let mut report = Vec::new();
    let mut keep: BTreeSet<(usize, &str, &str)> = BTreeSet::new();
    for ((r, series), versions) in &found {
        let mut newest: Vec<&str> = versions.iter().copied().collect();
        newest.sort_by(|a, b| compare(b, a));
        let (kept, dropped) = newest.split_at(rules[*r].keep.min(newest.len()));
        keep.extend(kept.iter().map(|v| (*r, *series, *v)));
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        report.push(Series {
            pattern: rules[*r].pattern.clone(),
            series: series.to_string(),
            kept: owned(kept),
            dropped: owned(dropped),
        });
    }
    let wanted = |m: &Option<(usize, String, String)>| {
        m.as_ref().is_none_or(|(r, s, v)| keep.contains(&(*r, s.as_str(), v.as_str())))
    };
    let flags: Vec<bool> = matched.iter().map(wanted).collect();
    let entries = listing.into_iter().zip(flags).filter(|(_, w)| *w).map(|(e, _)| e).collect();
    (entries, report)
}

/// Debian's order of two versions (`verrevcmp`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let weight = |c: Option<u8>| -> i32 {
        match c {
            Some(b'~') => -1,
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    };
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
            let (x, y) = (weight(a.first().copied()), weight(b.first().copied()));
            if x != y {
                return x.cmp(&y);
            }
            (a, b) = (a.get(1..).unwrap_or_default(), b.get(1..).unwrap_or_default());
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (da, db) = (digits(a), digits(b));
        let strip = |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|c| *c == b'0').collect() };
        let (na, nb) = (strip(&a[..da]), strip(&b[..db]));
        let by_number = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
        if by_number != Ordering::Equal {
            return by_number;
        }
        (a, b) = (&a[da..], &b[db..]);
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::RelPath;

    #[test]
    fn versions_compare_as_debian_compares_them() {
        let ordered = ["1.0~rc1", "1.0", "1.0a", "1.0+b1", "1.2", "1.10", "2", "10.0"];
        for pair in ordered.windows(2) {
            assert_eq!(compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(compare(pair[1], pair[0]), Ordering::Greater, "{pair:?}");
        }
        assert_eq!(compare("1.01", "1.1"), Ordering::Equal);
        assert_eq!(compare("1.0~~", "1.0~"), Ordering::Less);
    }

    fn entry(path: &str) -> Entry {
        Entry { path: RelPath::parse(path).unwrap(), size: 1, mtime: 0, sha256: None, local_mtime: None }
    }

    #[test]
    fn the_newest_versions_of_each_series_are_kept() {
        let rule = Rule::new("releases/{series}/{version}/**", 2).unwrap();
        let paths = [
            "README",
            "releases/app/1.9/app.iso",
            "releases/app/1.10/app.iso",
            "releases/app/1.10/SHA256SUMS",
            "releases/app/1.2/app.iso",
            "releases/db/3.0~rc1/db.iso",
            "releases/db/3.0/db.iso",
            "releases/db/notes.txt",
        ];
        let (kept, report) = select(&[rule], paths.iter().map(|p| entry(p)).collect());
        let kept: Vec<&str> = kept.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            kept,
            [
                "README",
                "releases/app/1.9/app.iso",
                "releases/app/1.10/app.iso",
                "releases/app/1.10/SHA256SUMS",
                "releases/db/3.0~rc1/db.iso",
                "releases/db/3.0/db.iso",
                "releases/db/notes.txt"
            ]
        );
        assert_eq!(report[0].kept, ["1.10", "1.9"]);
        assert_eq!(report[0].dropped, ["1.2"]);
    }

    #[test]
    fn a_version_in_a_file_name_and_bad_patterns() {
        let rule = Rule::new("isos/tool-{version}.iso", 1).unwrap();
        let (kept, _) =
            select(&[rule], ["isos/tool-1.0.iso", "isos/tool-1.1.iso", "isos/other.iso"].map(entry).to_vec());
        let kept: Vec<&str> = kept.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(kept, ["isos/tool-1.1.iso", "isos/other.iso"]);
        for bad in ["releases/{series}/**", "a/**/b/{version}", "{version}{series}", "a//{version}"] {
            assert!(Rule::new(bad, 2).is_err(), "{bad}");
        }
        assert!(Rule::new("a/{version}", 0).is_err());
    }
}
