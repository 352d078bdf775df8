//! What a run saw of each upstream: whether it was used, its first error,
//! and the bytes of the files it delivered.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// An upstream as a run found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamState {
    Ok,
    Failed,
    #[default]
    #[serde(rename = "not used")]
    NotUsed,
}

impl UpstreamState {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamState::Ok => "ok",
            UpstreamState::Failed => "failed",
            UpstreamState::NotUsed => "not used",
        }
    }
}

/// One upstream in the run's status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamHealth {
    pub url: String,
    #[serde(default)]
    pub state: UpstreamState,
    pub error: Option<String>,
    /// Bytes of the files it delivered this run, and over all runs.
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub bytes_total: u64,
}

/// Shared by every clone of [`super::Upstreams`].
#[derive(Clone)]
pub(super) struct Health(Arc<Mutex<Vec<UpstreamHealth>>>);

impl Health {
    pub fn new(urls: &[url::Url]) -> Health {
        Health(Arc::new(Mutex::new(
            urls.iter().map(|u| UpstreamHealth { url: u.to_string(), ..UpstreamHealth::default() }).collect(),
        )))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<UpstreamHealth>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Upstream `i` was used; its first failure, if any, is kept.
    pub fn note(&self, i: usize, error: Option<String>) {
        self.with(|all| {
            let entry = &mut all[i];
            if entry.error.is_none() {
                entry.error = error.map(|e| crate::output::clip(&e, crate::output::MAX_ERROR_BYTES).to_owned());
            }
            entry.state = if entry.error.is_some() { UpstreamState::Failed } else { UpstreamState::Ok };
        })
    }

    pub fn delivered(&self, i: usize, bytes: u64) {
        self.with(|all| all[i].bytes = all[i].bytes.saturating_add(bytes))
    }

    pub fn report(&self) -> Vec<UpstreamHealth> {
        self.with(|all| all.clone())
    }
}

impl super::Upstreams {
    /// Remember that upstream `i` was used, and its first failure if any.
    pub fn note(&self, i: usize, error: Option<String>) {
        self.health.note(i, error);
    }

    /// Count `bytes` of a file that upstream `i` delivered.
    pub fn delivered(&self, i: usize, bytes: u64) {
        self.health.delivered(i, bytes);
    }

    /// Each upstream as this run found it.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.health.report()
    }
}
