//! LLM key router: an edge router for Gemini API keys, as a Cloudflare Worker.
//!
//! This crate is only the wasm glue: the fetch event, the route table, small handlers, the
//! adapters for Fetch, env, secrets and logging, and the stream relay. Every decision lives in
//! `llm-key-router-core` (`core/`), which is tested natively.

#[cfg(target_arch = "wasm32")]
pub mod edge;
#[cfg(target_arch = "wasm32")]
mod edge_observe;
#[cfg(target_arch = "wasm32")]
mod edge_stream;
