//! A manual clock, a runtime whose `sleep` advances it, and secrets from a map.

use crate::engine::{Runtime, Secrets};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Milliseconds since the epoch, moved only by tests and by the fakes (a sleep, a timeout, an
/// upstream's latency). Cloned handles share one time.
#[derive(Debug, Clone)]
pub struct FakeClock(Rc<Cell<u64>>);

impl FakeClock {
    /// 2026-12-01T00:00:00Z, so windows and days look real.
    pub const START: u64 = 1_796_083_200_000;

    pub fn new() -> FakeClock {
        FakeClock(Rc::new(Cell::new(Self::START)))
    }
    pub fn now(&self) -> u64 {
        self.0.get()
    }
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock::new()
    }
}

/// A [`Runtime`] on a [`FakeClock`]: `sleep` returns at once after advancing the clock and is
/// recorded, so backoff is asserted, not waited for. Randomness is a fixed value.
#[derive(Debug)]
pub struct FakeRuntime {
    pub clock: FakeClock,
    pub sleeps: RefCell<Vec<u64>>,
    /// What `random_u64` returns; the default gives a backoff jitter of one half.
    pub random: Cell<u64>,
}

impl FakeRuntime {
    pub fn new(clock: FakeClock) -> FakeRuntime {
        FakeRuntime { clock, sleeps: RefCell::new(Vec::new()), random: Cell::new(1 << 63) }
    }
    pub fn sleeps(&self) -> Vec<u64> {
        self.sleeps.borrow().clone()
    }
}

impl Runtime for FakeRuntime {
    fn now_ms(&self) -> u64 {
        self.clock.now()
    }
    async fn sleep(&self, ms: u64) {
        self.sleeps.borrow_mut().push(ms);
        self.clock.advance(ms);
    }
    fn random_u64(&self) -> u64 {
        self.random.get()
    }
}

/// Secrets by `key_id`, with the production contract: trimmed, blank is unset.
#[derive(Debug, Clone, Default)]
pub struct FakeSecrets(pub BTreeMap<String, String>);

impl FakeSecrets {
    /// A plausible distinct key for each id.
    pub fn for_keys<'k>(ids: impl IntoIterator<Item = &'k str>) -> FakeSecrets {
        FakeSecrets(ids.into_iter().map(|id| (id.to_string(), format!("AIzaSyFAKE-{id:0>30}"))).collect())
    }
    pub fn with(mut self, key_id: &str, value: &str) -> FakeSecrets {
        self.0.insert(key_id.to_string(), value.to_string());
        self
    }
}

impl Secrets for FakeSecrets {
    fn api_key(&self, key_id: &str) -> Option<String> {
        self.0.get(key_id).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }
}
