//! How many requests go to one upstream host at once: at most
//! `max_connections_per_host`, halved when the host answers 429 or 503 (it
//! is overrun: the requests that wait for a place then go fewer at a time
//! instead of retrying into the same wall), and grown back by one place for
//! every `4 × limit` answers without complaint.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calm answers per place before one more is given back.
const GROWTH: usize = 4;

pub struct HostLimit {
    places: Arc<Semaphore>,
    cap: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Places allowed now.
    limit: usize,
    /// Places taken away while they were in use: forgotten when given back.
    owed: usize,
    /// Answers without complaint since the limit last moved.
    calm: usize,
}

/// A place among the requests in flight to one host.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
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

impl HostLimit {
    pub fn new(cap: usize) -> Arc<HostLimit> {
        let state = Mutex::new(State { limit: cap, ..State::default() });
        Arc::new(HostLimit { places: Arc::new(Semaphore::new(cap)), cap, state })
    }

    pub async fn place(self: &Arc<Self>) -> Place {
        let permit = self.places.clone().acquire_owned().await.ok();
        Place { permit, host: self.clone() }
    }

    /// The host said it is overrun (429, 503): halve the places, never
    /// below one; places in use are taken away as they come back.
    pub fn overrun(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let keep = (state.limit / 2).max(1);
        let cut = state.limit - keep;
        let forgotten = self.places.forget_permits(cut);
        (state.limit, state.owed, state.calm) = (keep, state.owed + cut - forgotten, 0);
    }

    /// An answer without complaint: after `GROWTH × limit` of them, one
    /// place more.
    pub fn calm(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.limit >= self.cap {
            return;
        }
        state.calm += 1;
        if state.calm >= GROWTH * state.limit {
            (state.calm, state.limit) = (0, state.limit + 1);
            match state.owed {
                0 => self.places.add_permits(1),
                _ => state.owed -= 1,
            }
        }
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
        let host = HostLimit::new(8);
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
            host.calm();
        }
        assert_eq!((host.limit(), host.places.available_permits()), (4, 4), "one more after 4 × `limit` calm answers");
        for _ in 0..100 {
            host.calm();
        }
        assert_eq!(host.limit(), 8, "never above the cap");
    }
}
