//! Wire formats: Gemini's, OpenAI's, the router's own API, and server-sent events.

pub mod api;
pub mod base64;
pub mod embeddings;
pub mod gemini;
pub mod openai;
pub mod sse;
