//! How many requests go to one upstream host at once. Adaptive (without a
//! fixed `concurrency`), a host starts with [`START`] places and earns more
//! each time the bytes it sends per second beat the best rate seen before,
//! up to `max_connections_per_host` (a host that answers over HTTP/2: from
//! 128 up to 50 streams on each of its connections, as many as its round
//! trip needs): twice as many while every window beats the last (a slow
//! start), a quarter more after the first that did not. A long link gets
//! the requests in flight it needs to be filled, a short one stays where
//! more would not help. A host that answers 429 or 503 is overrun: its
//! places are halved (the requests that wait for a place then go fewer at
//! a time instead of retrying into the same wall), and given back one for
//! every `4 × limit` answers without complaint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Calm answers per place before one more is given back.
const GROWTH: usize = 4;
/// The places an adaptive host starts with.
pub const START: usize = 32;
/// The places of an adaptive host that answered over HTTP/2: streams cost
/// a server far less than connections (a browser opens 100 on one).
const MULTIPLEXED_START: usize = 128;
/// Throughput is compared over windows this long.
const WINDOW: Duration = Duration::from_millis(250);
/// How much a window's rate must beat the best before it to earn places.
const GAIN: f64 = 1.1;

pub struct HostLimit {
    places: Arc<Semaphore>,
    /// The most places ever; lowered for a server known to take few.
    cap: std::sync::atomic::AtomicUsize,
    /// Held at a few places: each request on a connection of its own too.
    held: std::sync::atomic::AtomicBool,
    /// It answered over HTTP/2: its requests share a few connections.
    multiplexed: std::sync::atomic::AtomicBool,
    /// The connections left beside those, if any: each a large body's own.
    bulk: Option<Arc<Semaphore>>,
    adaptive: bool,
    state: Mutex<State>,
}

struct State {
    /// Places allowed now.
    limit: usize,
    /// Places earned by throughput: calm answers give back places up to it.
    ceiling: usize,
    /// Places taken away while they were in use: forgotten when given back.
    owed: usize,
    /// Answers without complaint since the limit last moved.
    calm: usize,
    /// Bytes received since `since`, and the best rate of a window before.
    bytes: u64,
    since: Instant,
    best: f64,
    /// Every window so far beat the one before: places double.
    slow_start: bool,
    /// Answers since `since`, and the shortest wait for one seen: a round
    /// trip to the host.
    answers: u64,
    round_trip: Option<Duration>,
}

/// A place among the requests in flight to one host.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    /// One of the host's bulk connections, when the request has one.
    bulk: Option<OwnedSemaphorePermit>,
    host: Arc<HostLimit>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.host.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.owed > 0
            && let Some(permit) = self.permit.take()
        {
            state.owed -= 1;
            permit.forget();
        }
    }
}

impl Place {
    /// Hold one of the bulk connections of a host that answered over
    /// HTTP/2 as well, until the answer is read whole: whether it has any.
    pub async fn take_bulk(&mut self) -> bool {
        match &self.host.bulk {
            Some(bulk) if self.host.multiplexed() => self.bulk = bulk.clone().acquire_owned().await.ok(),
            _ => return false,
        }
        self.bulk.is_some()
    }

    /// `n` bytes of an answer arrived.
    pub fn received(&self, n: usize) {
        self.host.received(n);
    }
}

impl HostLimit {
    /// At most `cap` places; adaptive, [`START`] of them at first; `bulk`
    /// connections for large bodies once it answered over HTTP/2.
    pub fn new(cap: usize, adaptive: bool, bulk: usize) -> Arc<HostLimit> {
        let limit = if adaptive { START.min(cap) } else { cap };
        let (since, best) = (Instant::now(), 0.0);
        let state = State {
            limit,
            ceiling: limit,
            owed: 0,
            calm: 0,
            bytes: 0,
            since,
            best,
            slow_start: true,
            answers: 0,
            round_trip: None,
        };
        let cap = cap.into();
        let (places, held) = (Arc::new(Semaphore::new(limit)), false.into());
        let (multiplexed, bulk) = (false.into(), (bulk > 0).then(|| Arc::new(Semaphore::new(bulk))));
        Arc::new(HostLimit { places, cap, held, multiplexed, bulk, adaptive, state: Mutex::new(state) })
    }

    pub async fn place(self: &Arc<Self>) -> Place {
        let permit = self.places.clone().acquire_owned().await.ok();
        Place { permit, bulk: None, host: self.clone() }
    }

    /// The host said it is overrun (429, 503): halve the places, never
    /// below one; places in use are taken away as they come back.
    pub fn overrun(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let keep = (state.limit / 2).max(1);
        self.shrink(&mut state, keep);
    }

    /// The host is a server that takes only a few connections: at most
    /// `n` places from now on, whatever it answers.
    pub fn hold_at(&self, n: usize) {
        let n = n.max(1);
        self.held.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cap.fetch_min(n, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ceiling = state.ceiling.min(n);
        if state.limit > n {
            self.shrink(&mut state, n);
        }
    }

    /// The host answered over HTTP/2: its requests are streams of a few
    /// connections, so up to `cap` of them may be in flight: at once when
    /// the number is fixed, else from [`MULTIPLEXED_START`] on as the
    /// throughput grows.
    pub fn multiplexes(&self, cap: usize) {
        if self.held() || self.multiplexed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.cap.fetch_max(cap, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = if self.adaptive { MULTIPLEXED_START.min(cap) } else { cap };
        if state.limit == state.ceiling && state.limit < start {
            let more = start - state.limit;
            state.ceiling += more;
            self.give(&mut state, more);
        }
    }

    /// Whether it answered over HTTP/2.
    pub fn multiplexed(&self) -> bool {
        self.multiplexed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether [`HostLimit::hold_at`] held it.
    pub fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Down to `keep` places; those in use are taken away as they come back.
    fn shrink(&self, state: &mut State, keep: usize) {
        let cut = state.limit - keep;
        let forgotten = self.places.forget_permits(cut);
        (state.limit, state.owed, state.calm) = (keep, state.owed + cut - forgotten, 0);
    }

    /// An answer without complaint, `waited` after it was asked: after
    /// `GROWTH × limit` of them, one place more.
    pub fn calm(&self, waited: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.answers += 1;
        state.round_trip = Some(state.round_trip.map_or(waited, |r| r.min(waited)));
        if state.limit >= state.ceiling {
            return;
        }
        state.calm += 1;
        if state.calm >= GROWTH * state.limit {
            state.calm = 0;
            self.give(&mut state, 1);
        }
    }

    /// `n` bytes arrived from the host. At the end of each window (the first
    /// begins with the first bytes), a rate above the best before earns more
    /// places (twice as many in the slow start, else a quarter more), when
    /// the host is adaptive, not recovering from an overrun, and below its
    /// cap.
    pub fn received(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.best == 0.0 && state.bytes == 0 {
            state.since = Instant::now();
        }
        state.bytes += n as u64;
        let elapsed = state.since.elapsed();
        if elapsed < WINDOW {
            return;
        }
        let rate = state.bytes as f64 / elapsed.as_secs_f64();
        let better = rate > state.best * GAIN && self.needs_more(&state, elapsed);
        (state.bytes, state.since, state.best) = (0, Instant::now(), state.best.max(rate));
        state.answers = 0;
        state.slow_start &= better;
        let cap = self.cap.load(std::sync::atomic::Ordering::Relaxed);
        if better && self.adaptive && state.limit >= state.ceiling && state.ceiling < cap {
            let step = if state.slow_start { state.ceiling } else { state.ceiling / 4 };
            let more = step.clamp(1, cap - state.ceiling);
            state.ceiling += more;
            self.give(&mut state, more);
        }
    }

    /// Whether more places could carry more: always over HTTP/1.1 (the
    /// cap is the connections); over HTTP/2, past [`MULTIPLEXED_START`],
    /// only while the places are fewer than twice the answers of one round
    /// trip (Little's law: the requests a link of this rate and this delay
    /// holds). On a short link, more streams only queue.
    fn needs_more(&self, state: &State, elapsed: Duration) -> bool {
        let Some(round_trip) = state.round_trip.filter(|_| self.multiplexed()) else { return true };
        let in_one_trip = state.answers as f64 / elapsed.as_secs_f64() * round_trip.as_secs_f64();
        state.ceiling < MULTIPLEXED_START || (state.ceiling as f64) < 2.0 * in_one_trip
    }

    /// `more` places back, first to cancel places owed.
    fn give(&self, state: &mut State, more: usize) {
        state.limit += more;
        let paid = more.min(state.owed);
        state.owed -= paid;
        self.places.add_permits(more - paid);
    }

    #[cfg(test)]
    fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_overrun_host_gets_fewer_places_then_more_again() {
        let host = HostLimit::new(8, false, 1);
        let held: Vec<Place> = futures_util::future::join_all((0..6).map(|_| host.place())).await;
        host.overrun();
        assert_eq!(host.limit(), 4);
        assert_eq!(host.places.available_permits(), 0, "the two free places are gone first");
        drop(held);
        assert_eq!(host.places.available_permits(), 4, "two of the six in use were owed");
        host.overrun();
        host.overrun();
        host.overrun();
        assert_eq!((host.limit(), host.places.available_permits()), (1, 1), "never below one");
        for _ in 0..GROWTH * (1 + 2 + 3) {
            host.calm(Duration::ZERO);
        }
        assert_eq!((host.limit(), host.places.available_permits()), (4, 4), "one more after 4 × `limit` calm answers");
        for _ in 0..100 {
            host.calm(Duration::ZERO);
        }
        assert_eq!(host.limit(), 8, "never above the cap");
    }

    /// A window of 0.25 s in which 2,000 answers come, each `waited`
    /// after it was asked, with `bytes`.
    async fn answers(host: &HostLimit, waited: Duration, bytes: usize) {
        for _ in 0..2000 {
            host.calm(waited);
        }
        window(host, bytes).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_answers_over_http2_gets_the_streams_its_round_trip_needs() {
        let far = HostLimit::new(64, true, 1);
        far.multiplexes(400);
        assert_eq!((far.limit(), far.places.available_permits()), (128, 128), "adaptive: from 128");
        for mib in [1, 2, 4, 8] {
            answers(&far, Duration::from_millis(50), mib << 20).await;
        }
        assert_eq!(far.limit(), 400, "8,000 answers a second 50 ms away: 400 in one trip; up to the cap");
        far.multiplexes(800);
        assert_eq!(far.limit(), 400, "once");
        let near = HostLimit::new(64, true, 1);
        near.multiplexes(400);
        for mib in [1, 2, 4, 8] {
            answers(&near, Duration::from_micros(200), mib << 20).await;
        }
        assert_eq!(near.limit(), 128, "0.2 ms away, two in one trip: more streams would only queue");
        let fixed = HostLimit::new(64, false, 1);
        fixed.multiplexes(400);
        assert_eq!(fixed.limit(), 400, "a fixed number: all at once");
        let webfs = HostLimit::new(64, true, 1);
        webfs.hold_at(8);
        webfs.multiplexes(400);
        assert_eq!(webfs.limit(), 8, "a host held at a few stays there");
    }

    /// One window in which `bytes` arrive.
    async fn window(host: &HostLimit, bytes: usize) {
        host.received(bytes);
        tokio::time::advance(WINDOW).await;
        host.received(0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_adaptive_host_earns_places_while_its_rate_grows_and_holds_when_it_stops() {
        let host = HostLimit::new(256, true, 1);
        window(&host, 1 << 20).await;
        assert_eq!(host.limit(), 64, "the first window beats nothing: twice as many");
        window(&host, 2 << 20).await;
        assert_eq!(host.limit(), 128, "twice again while the rate grows");
        window(&host, 2 << 20).await;
        assert_eq!(host.limit(), 128, "a window that did not beat the best ends the slow start");
        window(&host, 4 << 20).await;
        assert_eq!(host.limit(), 160, "then a quarter more");
        for _ in 0..5 {
            window(&host, 4 << 20).await;
        }
        assert_eq!(host.limit(), 160, "a rate that stopped growing earns nothing");
        host.overrun();
        window(&host, 64 << 20).await;
        assert_eq!(host.limit(), 80, "no growth while recovering from an overrun");
        for _ in 0..GROWTH * 160 * 160 {
            host.calm(Duration::ZERO);
        }
        assert_eq!(host.limit(), 160, "calm answers give back what the overrun took");
        for i in 0..10 {
            window(&host, 64 << (30 + i)).await;
        }
        assert_eq!((host.limit(), host.places.available_permits()), (256, 256), "never above the cap");
        host.hold_at(8);
        window(&host, 1 << 62).await;
        assert_eq!((host.limit(), host.places.available_permits()), (8, 8), "held: never more again");
    }
}
