//! One retry rule for every request to an upstream — listing pages, the
//! manifest, HEADs, `SHA256SUMS` and file bodies alike: an error a retry can
//! fix (a reset, a timeout, 408/429/5xx) waits an exponential backoff with
//! jitter, at least the server's `Retry-After`, within `retries` rounds and
//! a retry budget shared by the whole run.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{HttpStatus, TooLarge, Transport};

/// The longest wait between two tries, whatever `Retry-After` says.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A retry cannot help (a 4xx, a certificate, a refused redirect).
    Fatal,
    /// Try again later, not before the given time.
    Retry(Option<Duration>),
}

/// The verdict on a request's error, from its type.
pub fn verdict(e: &anyhow::Error) -> Verdict {
    if e.is::<TooLarge>()
        || e.is::<super::errors::ListingsTooLarge>()
        || e.is::<crate::disk::NotServed>()
        || e.is::<super::errors::Spool>()
    {
        return Verdict::Fatal;
    }
    if let Some(s) = e.downcast_ref::<HttpStatus>() {
        return match s.status {
            408 | 416 | 429 | 500..=599 => Verdict::Retry(s.retry_after),
            _ => Verdict::Fatal,
        };
    }
    match e.downcast_ref::<Transport>() {
        Some(t) if t.kind.is_permanent() => Verdict::Fatal,
        _ => Verdict::Retry(None),
    }
}

/// How long to wait before round `round + 1`: `base × 2^round`, capped,
/// plus up to half of it again as jitter, and never less than `after`.
pub fn backoff(base: Duration, round: u32, after: Option<Duration>) -> Duration {
    let d = base.saturating_mul(1 << round.min(16)).min(MAX_BACKOFF);
    let jitter = std::hash::RandomState::new().build_hasher().finish() % (d.as_millis() as u64 / 2 + 1);
    (d + Duration::from_millis(jitter)).max(after.unwrap_or_default().min(MAX_BACKOFF))
}

/// Retry rounds left for the whole run, shared by every request.
#[derive(Clone, Debug)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    pub fn new(rounds: usize) -> Budget {
        Budget(Arc::new(AtomicUsize::new(rounds)))
    }

    /// Allow `rounds` more retries (a run's downloads bring their own).
    pub fn grant(&self, rounds: usize) {
        self.0.fetch_add(rounds, Ordering::Relaxed);
    }

    /// Spend one retry; false when none is left.
    pub fn take(&self) -> bool {
        self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_and_stays_out() {
        let budget = Budget::new(2);
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
        assert!(!budget.take(), "an empty budget does not wrap around");
        budget.grant(1);
        assert!(budget.take());
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 0, None) >= base && backoff(base, 0, None) <= base * 3 / 2);
        assert!(backoff(base, 3, None) >= base * 8);
        assert!(backoff(base, 40, None) <= MAX_BACKOFF * 3 / 2);
        assert!(backoff(base, 0, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert!(backoff(base, 0, Some(Duration::from_secs(86_400))) <= MAX_BACKOFF * 3 / 2);
    }
}
