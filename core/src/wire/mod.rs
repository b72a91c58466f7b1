//! Wire formats: Gemini's, OpenAI's, the router's own API, server-sent events, and the
//! tool-call id that carries a thought signature.

pub mod api;
pub mod base64;
pub mod call_id;
pub mod embeddings;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod url;
