//! Channels: names (`stable`, `testing`) that point at a kept snapshot,
//! served at `/channels/<name>/` while `current` moves on. A channel moves
//! when an operator promotes a snapshot to it, or, with `auto_promote`, at
//! every run to the newest snapshot published at least its cooldown ago.
//! Pure rules here; the store keeps the links (`ROOT/channels/<name>`).

use serde::{Deserialize, Serialize};

/// A channel as the status lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub snapshot: String,
    /// When it was pointed at `snapshot` (RFC 3339).
    pub promoted_at: Option<String>,
}

/// Whether `name` may name a channel: 1 to 64 letters, digits, `.`, `_`
/// and `-`, not starting with `.` (a link's temporary name does).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A kept snapshot as `auto_promote` weighs it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    /// When it was first published (seconds since the epoch).
    pub first_published: u64,
    /// Rolled back: never promoted again.
    pub withdrawn: bool,
}

/// The snapshot a channel with this cooldown names at `now`: the newest
/// (by first publish) published at least `cooldown` seconds ago and not
/// withdrawn; none when no snapshot is that old.
pub fn newest_aged<'a>(candidates: &[Candidate<'a>], now: u64, cooldown: u64) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| !c.withdrawn && now.saturating_sub(c.first_published) >= cooldown && c.first_published <= now)
        .max_by_key(|c| (c.first_published, c.id))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for good in ["stable", "test-ring", "v1.2", "A_b"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "sp ace", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    /// A store as the rules see it: snapshots (oldest first) with their first
    /// publish, the current one, the withdrawn, when each was replaced, and
    /// the channels.
    #[derive(Default)]
    struct Model {
        ids: Vec<(String, u64)>,
        current: Option<String>,
        withdrawn: Vec<String>,
        replaced: Vec<(String, u64)>,
        channels: Vec<(String, String)>,
    }

    const KEEP: usize = 3;
    const GRACE: u64 = 50;
    const COOLDOWN: u64 = 100;

    impl Model {
        fn candidates(&self) -> Vec<Candidate<'_>> {
            let withdrawn = |id: &String| self.withdrawn.contains(id);
            self.ids.iter().map(|(id, t)| Candidate { id, first_published: *t, withdrawn: withdrawn(id) }).collect()
        }

        /// Every run: `stable` follows its cooldown.
        fn refresh(&mut self, now: u64) {
            if let Some(id) = newest_aged(&self.candidates(), now, COOLDOWN).map(str::to_owned) {
                self.channels.retain(|(name, _)| name != "stable");
                self.channels.push(("stable".into(), id));
            }
        }

        /// Make `id` current and prune, as a run does before its refresh:
        /// the grace links name the three newest replaced within the
        /// window, the channels theirs.
        fn publish(&mut self, id: String, now: u64, grace: bool) {
            if let Some(old) = self.current.replace(id.clone()).filter(|_| grace) {
                self.replaced.push((old, now));
            }
            self.replaced.retain(|(r, _)| *r != id);
            let ids: Vec<String> = self.ids.iter().map(|(id, _)| id.clone()).collect();
            let mut in_grace: Vec<&(String, u64)> = self.replaced.iter().filter(|(_, t)| now - t < GRACE).collect();
            in_grace.sort_by_key(|e| std::cmp::Reverse(e.1));
            let mut protect: Vec<String> = in_grace.iter().take(3).map(|(id, _)| id.clone()).collect();
            protect.extend(self.channels.iter().map(|(_, id)| id.clone()));
            let gone = crate::snapshot::victims(&ids, KEEP, &id, &protect);
            self.ids.retain(|(id, _)| !gone.contains(id));
        }
    }

    #[test]
    fn channels_never_lose_their_snapshot_and_stable_follows_its_cooldown() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..100 {
            let (mut m, mut now) = (Model::default(), 1_000);
            for step in 0..60 {
                now += next(60);
                match next(4) {
                    0 | 1 => {
                        let id = format!("s{step:04}");
                        m.ids.push((id.clone(), now));
                        m.publish(id, now, true);
                    }
                    2 if m.ids.len() > 1 => {
                        let (id, _) = m.ids[next(m.ids.len() as u64) as usize].clone();
                        m.channels.retain(|(name, _)| name != "testing");
                        m.channels.push(("testing".into(), id));
                    }
                    3 => {
                        let current = m.current.clone();
                        let at = m.ids.iter().position(|(id, _)| Some(id) == current.as_ref());
                        if let Some(previous) = at.and_then(|at| at.checked_sub(1)).map(|p| m.ids[p].0.clone()) {
                            m.withdrawn.extend(current);
                            m.publish(previous, now, false);
                        }
                    }
                    _ => {}
                }
                // Every run ends with the refresh, whatever it did.
                m.refresh(now);
                let kept: Vec<&String> = m.ids.iter().map(|(id, _)| id).collect();
                for (name, id) in &m.channels {
                    assert!(kept.contains(&id), "channel {name} lost snapshot {id}");
                }
                let newest = newest_aged(&m.candidates(), now, COOLDOWN);
                let stable = m.channels.iter().find(|(name, _)| name == "stable").map(|(_, id)| id.as_str());
                assert!(newest.is_none() || stable == newest, "stable {stable:?}, newest aged {newest:?}");
                assert!(m.ids.len() <= KEEP + 3 + m.channels.len(), "{} snapshots kept", m.ids.len());
            }
        }
    }

    #[test]
    fn the_newest_snapshot_past_its_cooldown_is_chosen() {
        let c = |id, first_published, withdrawn| Candidate { id, first_published, withdrawn };
        let all = [c("a", 100, false), c("b", 200, false), c("c", 300, true), c("d", 400, false)];
        assert_eq!(newest_aged(&all, 450, 100), Some("b"), "c is withdrawn, d too young");
        assert_eq!(newest_aged(&all, 500, 100), Some("d"));
        assert_eq!(newest_aged(&all, 150, 100), None, "nothing old enough");
    }
}
