//! The plan: a pure, sorted merge of the new listing against the published
//! snapshot's manifest. `--dry-run` prints a `Plan`; `sync` executes the same
//! `Plan`, so what is shown is what runs. No I/O, no clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::filter::Filter;
use crate::manifest::Entry;
use crate::output::human_bytes;

#[derive(Debug, Default)]
pub struct Plan {
    /// New paths, to download.
    pub add: Vec<Entry>,
    /// Paths whose content or metadata changed: (new entry, old size).
    pub change: Vec<(Entry, u64)>,
    /// Published paths the listing no longer has.
    pub remove: Vec<Entry>,
    /// Unchanged paths, hardlinked from the published snapshot. Carries the
    /// published digest when the listing has none. Published paths outside
    /// the filter are kept as they are.
    pub keep: Vec<Entry>,
    /// Listed paths outside the filter: neither fetched nor deleted.
    pub skipped: usize,
    /// Kept paths the listing does not name (published, outside the filter).
    pub unlisted: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub kept: usize,
    pub skipped: usize,
    pub download_bytes: u64,
}

/// Compare `listing` with `published`, both sorted by path, for the paths
/// `filter` allows. The listing's entries move into the plan, not copied.
pub fn diff(listing: Vec<Entry>, published: &[Entry], filter: &Filter) -> Plan {
    let mut differ = Differ::new(handing_back(listing), filter);
    for old in published {
        differ.old(old.clone());
    }
    differ.finish()
}

/// A plan made as the published entries come, in path order, each met
/// with the listed ones (sorted by path) up to it: the published manifest
/// need not be held to plan against it.
pub struct Differ<'f, I: Iterator<Item = Entry>> {
    listing: std::iter::Peekable<I>,
    filter: &'f Filter,
    plan: Plan,
}

impl<'f, I: Iterator<Item = Entry>> Differ<'f, I> {
    pub fn new(listing: I, filter: &'f Filter) -> Self {
        Differ { listing: listing.peekable(), filter, plan: Plan::default() }
    }

    /// The next published entry: the listed ones before it are new.
    pub fn old(&mut self, old: Entry) {
        while let Some(new) = self.listing.next_if(|n| n.path < old.path) {
            self.plan.take(Some(new), None, self.filter);
        }
        let new = self.listing.next_if(|n| n.path == old.path);
        self.plan.take(new, Some(old), self.filter);
    }

    /// The plan, once every published entry came: the listed ones left are new.
    pub fn finish(mut self) -> Plan {
        for new in self.listing {
            self.plan.take(Some(new), None, self.filter);
        }
        self.plan
    }
}

impl Plan {
    /// Place a listed entry `new`, the published `old` of the same path, or both.
    fn take(&mut self, new: Option<Entry>, old: Option<Entry>, filter: &Filter) {
        match (new, old) {
            (Some(new), None) if filter.allows(new.path.as_str()) => self.add.push(Entry { local_mtime: None, ..new }),
            (Some(_), None) => self.skipped += 1,
            (None, Some(old)) if filter.allows(old.path.as_str()) => self.remove.push(old),
            (None, Some(old)) => {
                self.unlisted += 1;
                self.keep.push(old);
            }
            (Some(new), Some(old)) if !filter.allows(new.path.as_str()) => {
                self.skipped += 1;
                self.keep.push(old);
            }
            (Some(new), Some(old)) if same(&new, &old) => {
                let sha256 = new.sha256.or(old.sha256);
                self.keep.push(Entry { sha256, local_mtime: old.local_mtime, ..new });
            }
            (Some(new), Some(old)) => {
                let local_mtime = nudged(&new, &old);
                self.change.push((Entry { local_mtime, ..new }, old.size));
            }
            (None, None) => {}
        }
    }
}

/// The items of `v` in order, its memory handed back as they are taken (a
/// `Vec`'s own iterator holds all of it to the end): a million entries
/// moving from one list to another are not held twice.
pub fn handing_back<T>(mut v: Vec<T>) -> impl Iterator<Item = T> {
    const STEP: usize = 1 << 16;
    v.reverse();
    std::iter::from_fn(move || {
        let item = v.pop();
        if v.len().is_multiple_of(STEP) && v.capacity() > v.len() + STEP {
            v.shrink_to_fit();
        }
        item
    })
}

/// The local mtime a changed file gets: past the previous version's when
/// the size is the same and the mtime would not move forward, so that
/// validators made of mtime and size change with the content.
fn nudged(new: &Entry, old: &Entry) -> Option<i64> {
    (new.size == old.size && new.mtime <= old.disk_mtime()).then(|| old.disk_mtime() + 1)
}

/// Same size and mtime, and the same digest where both are known.
fn same(new: &Entry, old: &Entry) -> bool {
    new.size == old.size
        && new.mtime == old.mtime
        && match (new.sha256, old.sha256) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

impl Plan {
    pub fn summary(&self) -> Summary {
        Summary {
            added: self.add.len(),
            changed: self.change.len(),
            removed: self.remove.len(),
            kept: self.keep.len(),
            skipped: self.skipped,
            download_bytes: self.download_bytes().unwrap_or(u64::MAX),
        }
    }

    /// The bytes to download, or `None` when the listed sizes overflow.
    pub fn download_bytes(&self) -> Option<u64> {
        self.downloads().try_fold(0u64, |sum, e| sum.checked_add(e.size))
    }

    /// Every entry to fetch, added then changed.
    pub fn downloads(&self) -> impl Iterator<Item = &Entry> {
        self.add.iter().chain(self.change.iter().map(|(e, _)| e))
    }

    /// The files of the published snapshot it was planned against: each
    /// is changed, removed or kept.
    pub fn published_len(&self) -> usize {
        self.change.len() + self.remove.len() + self.keep.len()
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change.is_empty() && self.remove.is_empty()
    }

    /// The entries of the snapshot this plan builds, unsorted.
    pub fn result_len(&self) -> usize {
        self.add.len() + self.change.len() + self.keep.len()
    }

    /// The plan as a JSON document for `--dry-run --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let file = |e: &Entry| serde_json::json!({"path": e.path.as_str(), "size": e.size, "mtime": e.mtime});
        serde_json::json!({
            "added": self.add.iter().map(file).collect::<Vec<_>>(),
            "changed": self.change.iter().map(|(e, old)| {
                let mut v = file(e);
                v["old_size"] = (*old).into();
                v
            }).collect::<Vec<_>>(),
            "removed": self.remove.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            "summary": self.summary(),
        })
    }
}

/// The dry-run listing: one `+`/`~`/`-` line per path, then the summary.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Measured first, then written: a million paths are never held at once.
        let listed = || self.add.iter().chain(self.change.iter().map(|(e, _)| e)).chain(&self.remove);
        let width = listed().map(|e| e.path.to_string().chars().count() + 2).max().unwrap_or(0).max(30);
        for e in &self.add {
            writeln!(f, "+ {:<width$}{:>9}", e.path, human_bytes(e.size))?;
        }
        for (e, old) in &self.change {
            writeln!(f, "~ {:<width$}{:>9}   (was {})", e.path, human_bytes(e.size), human_bytes(*old))?;
        }
        for e in &self.remove {
            writeln!(f, "- {}", e.path)?;
        }
        let s = self.summary();
        write!(
            f,
            "{} added, {} changed, {} removed · {} to download",
            s.added,
            s.changed,
            s.removed,
            human_bytes(s.download_bytes)
        )?;
        if s.skipped > 0 {
            write!(f, " · {} skipped by filters", s.skipped)?;
        }
        write!(f, " · published tree unchanged")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Digest, RelPath};

    fn e(path: &str, size: u64, mtime: i64, d: Option<u8>) -> Entry {
        Entry {
            path: RelPath::parse(path).unwrap(),
            size,
            mtime,
            sha256: d.map(|b| Digest([b; 32])),
            local_mtime: None,
        }
    }

    #[test]
    fn handing_back_keeps_the_order_and_gives_back_the_memory() {
        let v: Vec<usize> = (0..200_000).collect();
        let mut it = handing_back(v);
        assert!(it.by_ref().take(150_000).eq(0..150_000));
        assert!(it.eq(150_000..200_000));
    }

    #[test]
    fn diff_sorts_paths_into_add_change_remove_keep() {
        let old = [e("a", 1, 1, Some(1)), e("b", 2, 2, Some(2)), e("c", 3, 3, Some(3)), e("d", 4, 4, Some(4))];
        let new = [e("b", 2, 2, Some(2)), e("c", 3, 3, Some(9)), e("d", 4, 5, Some(4)), e("e", 5, 5, Some(5))];
        let p = diff(new.to_vec(), &old, &Filter::all());
        let names = |v: Vec<&Entry>| v.iter().map(|e| e.path.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(p.add.iter().collect()), ["e"]);
        assert_eq!(names(p.change.iter().map(|(e, _)| e).collect()), ["c", "d"]);
        assert_eq!(names(p.remove.iter().collect()), ["a"]);
        assert_eq!(names(p.keep.iter().collect()), ["b"]);
        assert_eq!(p.summary().download_bytes, 3 + 4 + 5);
    }

    #[test]
    fn size_or_mtime_alone_is_a_change_without_digests() {
        let old = [e("m", 1, 1, Some(7)), e("s", 1, 1, Some(7)), e("u", 1, 1, Some(7))];
        let new = [e("m", 1, 2, None), e("s", 2, 1, None), e("u", 1, 1, None)];
        let p = diff(new.to_vec(), &old, &Filter::all());
        assert_eq!(p.change.len(), 2);
        assert_eq!(p.keep[0].sha256, Some(Digest([7; 32])), "kept entry carries the published digest");
    }

    #[test]
    fn a_same_size_change_that_keeps_its_mtime_moves_the_local_mtime_forward() {
        let old = [e("a", 5, 100, Some(1)), e("b", 5, 100, Some(1)), e("c", 5, 100, Some(1))];
        let new = [e("a", 5, 100, Some(2)), e("b", 6, 100, Some(2)), e("c", 5, 200, Some(2))];
        let p = diff(new.to_vec(), &old, &Filter::all());
        let local: Vec<Option<i64>> = p.change.iter().map(|(e, _)| e.local_mtime).collect();
        assert_eq!(local, [Some(101), None, None], "only the same-size, same-mtime rewrite is nudged");
        // The next same-size rewrite moves past the nudged time, not the listed one.
        let nudged = [Entry { local_mtime: Some(101), ..new[0].clone() }];
        let p = diff(vec![e("a", 5, 100, Some(3))], &nudged, &Filter::all());
        assert_eq!(p.change[0].0.local_mtime, Some(102));
        let p = diff(
            vec![e("a", 5, 100, Some(3))],
            &[Entry { sha256: Some(Digest([3; 32])), ..nudged[0].clone() }],
            &Filter::all(),
        );
        assert_eq!(p.keep[0].local_mtime, Some(101), "an unchanged file keeps its local mtime");
    }

    #[test]
    fn dry_run_lines_match_the_spec_layout() {
        let old = [e("releases/10.9/core.zip", 5, 1, Some(1)), e("releases/current.json", 2048, 1, Some(2))];
        let new = [e("releases/11.3/core.zip", 100 << 20, 1, Some(3)), e("releases/current.json", 2150, 2, Some(4))];
        let text = diff(new.to_vec(), &old, &Filter::all()).to_string();
        assert_eq!(
            text,
            "+ releases/11.3/core.zip        100.0 MiB\n\
             ~ releases/current.json           2.1 KiB   (was 2.0 KiB)\n\
             - releases/10.9/core.zip\n\
             1 added, 1 changed, 1 removed · 100.0 MiB to download · published tree unchanged"
        );
    }

    #[test]
    fn filtered_paths_are_neither_fetched_nor_deleted() {
        let filter = Filter::new(&["keep/**".into()], &[]).unwrap();
        let old = [e("keep/a", 1, 1, Some(1)), e("other/gone", 1, 1, Some(2)), e("other/old", 1, 1, Some(3))];
        let new = [
            e("keep/a", 1, 1, Some(1)),
            e("keep/b", 2, 2, Some(4)),
            e("other/new", 5, 5, Some(5)),
            e("other/old", 9, 9, Some(6)),
        ];
        let p = diff(new.to_vec(), &old, &filter);
        assert_eq!(p.add.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["keep/b"]);
        assert!(p.change.is_empty() && p.remove.is_empty(), "{p:?}");
        assert_eq!(p.skipped, 2);
        let kept: Vec<&str> = p.keep.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(kept, ["keep/a", "other/gone", "other/old"], "out-of-scope published files stay");
        assert_eq!(p.keep[2].size, 1, "kept as published");
        assert!(p.to_string().ends_with(
            "1 added, 0 changed, 0 removed · 2 B to download · 2 skipped by filters · published tree unchanged"
        ));
    }

    #[test]
    fn an_empty_plan_says_so() {
        let same = [e("a", 1, 1, Some(1))];
        let p = diff(same.to_vec(), &same, &Filter::all());
        assert!(p.is_empty());
        assert_eq!(p.to_string(), "0 added, 0 changed, 0 removed · 0 B to download · published tree unchanged");
    }
}
