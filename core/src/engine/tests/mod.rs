//! Native tests of the request path against the fakes of `crate::testing`, with real Google
//! bodies. Each test declares the upstream answers it expects and asserts the exact calls,
//! sleeps and specs written to the store.

mod conversation;
mod embed;
mod failover;
mod stream;
mod tools;

use super::{Caller, Failure, Outcome, Router, Success};
use crate::config::{KeyPool, Settings};
use crate::testing::{Answer, FakeClock, FakeRuntime, FakeSecrets, FakeStore, FakeStream, FakeUpstream};
use crate::wire::gemini::GenerateRequest;
use futures_executor::block_on;
use serde_json::json;

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

fn pool() -> KeyPool {
    KeyPool::parse(
        r#"{"keys": [
            {"key_id": "k1", "model_name": "gemini-2.5-flash", "rpm": 10, "tpm": 250000, "rpd": 250},
            {"key_id": "k2", "model_name": "gemini-2.5-flash", "rpm": 10, "tpm": 250000, "rpd": 250},
            {"key_id": "k3", "model_name": "gemini-2.5-flash", "rpm": 10, "tpm": 250000, "rpd": 250},
            {"key_id": "p1", "model_name": "gemini-2.5-pro", "rpm": 5, "tpm": 250000, "rpd": 100}
        ], "fallbacks": {"gemini-2.5-pro": ["gemini-2.5-flash"]}}"#,
    )
    .expect("test pool is valid")
}

/// Every port faked, on one clock.
struct World {
    clock: FakeClock,
    rt: FakeRuntime,
    store: FakeStore,
    upstream: FakeUpstream,
    secrets: FakeSecrets,
    pool: KeyPool,
    settings: Settings,
}

impl World {
    fn new(script: impl IntoIterator<Item = Answer>) -> World {
        let clock = FakeClock::new();
        World {
            rt: FakeRuntime::new(clock.clone()),
            store: FakeStore::new(clock.clone()),
            upstream: FakeUpstream::new(clock.clone(), script),
            secrets: FakeSecrets::for_keys(["k1", "k2", "k3", "p1"]),
            pool: pool(),
            settings: Settings::default(),
            clock,
        }
    }

    fn router(&self) -> Router<'_, FakeStore, FakeUpstream, FakeRuntime> {
        Router {
            pool: &self.pool,
            settings: &self.settings,
            store: &self.store,
            upstream: &self.upstream,
            rt: &self.rt,
            secrets: &self.secrets,
            cfg_fingerprint: "cfg-1".into(),
        }
    }

    /// A request as the worker runs it: the engine, then the settle it deferred past the answer
    /// (the worker's `wait_until`). A failed deferred settle does not change the answer.
    fn generate(&self, req: &GenerateRequest) -> Result<Success, Failure> {
        let r = block_on(self.router().generate(req, &caller()));
        if let Ok(Some(d)) = r.as_ref().map(|s| s.deferred.as_ref()) {
            let _ = block_on(self.router().settle_deferred(d));
        }
        r
    }

    /// [`World::generate`] for embeddings.
    fn embed(&self, req: &crate::wire::embeddings::EmbedRequest) -> Result<Success, Failure> {
        let r = block_on(self.router().embed(req, &caller()));
        if let Ok(Some(d)) = r.as_ref().map(|s| s.deferred.as_ref()) {
            let _ = block_on(self.router().settle_deferred(d));
        }
        r
    }

    fn stream(&self, req: &GenerateRequest) -> Result<Outcome<FakeStream>, Failure> {
        block_on(self.router().run(req, &caller(), true))
    }

    /// The key id behind each upstream call, from the secret it carried.
    fn keys_called(&self) -> Vec<String> {
        self.upstream
            .calls()
            .iter()
            .map(|c| {
                let id = self.secrets.0.iter().find(|(_, v)| v.trim() == c.api_key).map(|(k, _)| k.clone());
                id.unwrap_or_else(|| format!("?{}", c.api_key))
            })
            .collect()
    }

    fn outcomes(&self) -> Vec<&'static str> {
        self.store.settles().iter().map(|s| s.outcome).collect()
    }
}

fn caller() -> Caller {
    Caller { client_id: "alice".into(), rpm: 60, burst: 10, daily_tokens: None, tpm: None, models: None }
}

fn req(model: &str, prompt: &str) -> GenerateRequest {
    GenerateRequest::parse(&json!({"model": model, "prompt": prompt}), None).expect("test request is valid")
}

fn text_answer(text: &str) -> crate::wire::gemini::ModelOutput {
    crate::wire::gemini::ModelOutput { text: text.into(), ..Default::default() }
}

fn ok(text: &str) -> Answer {
    Answer::reply(200, crate::testing::bodies::ok(text, 12, 3))
}
