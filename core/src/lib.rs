//! Every decision of the LLM key router, as pure Rust tested natively with `cargo test`.
//!
//! The worker crate at the repository root is only glue: it turns `fetch` events into calls of
//! this crate and gives it adapters for its ports (the Redis transport, the upstream, the
//! clock and randomness, secrets). Nothing here depends on `worker` or `wasm-bindgen`, so
//! `std::time` is never reached: time comes from the injected clock or from Redis `TIME`.
//! Layout and request flow: `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod conversations;
pub mod engine;
pub mod error;
pub mod files;
pub mod ids;
pub mod json;
pub mod log;
pub mod observe;
pub mod policy;
pub mod quota;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wire;
