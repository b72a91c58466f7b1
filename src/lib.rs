//! LLM key router: an edge router for Gemini API keys, as a Cloudflare Worker.
//!
//! The pure modules hold every decision and are tested natively with `cargo test`; `edge` is
//! the thin wasm layer (`#[event(fetch)]` and the `Fetch` adapters).

pub mod api;
pub mod auth;
pub mod classify;
pub mod config;
pub mod conversations;
pub mod error;
pub mod gemini;
pub mod ids;
pub mod log;
pub mod observe;
pub mod openai;
pub mod policy;
pub mod quota;
pub mod router;
pub mod sse;
pub mod store;
pub mod upstash;

#[cfg(target_arch = "wasm32")]
pub mod edge;
#[cfg(target_arch = "wasm32")]
mod edge_observe;
#[cfg(target_arch = "wasm32")]
mod edge_stream;
