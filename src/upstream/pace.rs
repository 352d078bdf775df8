//! The pace every transfer must keep, listings included: no chunk later
//! than `idle_timeout`, and at least `low_speed_limit` bytes/s over each
//! window of `low_speed_time`. A trickle cannot hold a run.

use std::time::{Duration, Instant};

use crate::config::Net;

/// A transfer stopped making progress (retried).
#[derive(Debug, thiserror::Error)]
pub enum Stalled {
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("slower than {limit} bytes/s over {window:?}")]
    TooSlow { limit: u64, window: Duration },
}

/// The low-speed rule over one transfer.
pub struct Pace {
    limit: u64,
    window: Duration,
    start: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(net: &Net) -> Pace {
        Pace { limit: net.low_speed_limit, window: net.low_speed_time, start: Instant::now(), bytes: 0 }
    }

    /// Count `n` bytes that arrived; an error once a whole window was too slow.
    pub fn add(&mut self, n: usize) -> Result<(), Stalled> {
        self.bytes += n as u64;
        let elapsed = self.start.elapsed();
        if elapsed >= self.window {
            if (self.bytes as f64) < self.limit as f64 * elapsed.as_secs_f64() {
                return Err(Stalled::TooSlow { limit: self.limit, window: self.window });
            }
            (self.start, self.bytes) = (Instant::now(), 0);
        }
        Ok(())
    }
}
