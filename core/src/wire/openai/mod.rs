//! OpenAI Chat Completions ⇄ Gemini translation, so agents written against the OpenAI SDK
//! work with only the base URL and key changed. Fields we do not implement are refused with a
//! 400 that names them, never silently dropped.
//!
//! - [`request`]: the top-level fields, generation settings, structured output, reasoning and
//!   the `google` options;
//! - [`messages`]: messages → `contents` (tool calls, tool results, thought signatures);
//! - [`tools`]: `tools` and `tool_choice` → `tools` and `toolConfig`;
//! - [`response`]: a whole answer (`chat.completion`), errors and the model list;
//! - [`stream`]: `chat.completion.chunk` deltas, tool-call deltas included.

mod messages;
mod request;
mod response;
mod stream;
mod tools;

pub use request::{thinking_config, ChatRequest, ReasoningEffort, IGNORED, UNSUPPORTED};
pub use response::{completion, error_body, finish_reason, models_list, usage_json};
pub use stream::{chunk, usage_chunk, StreamShaper};

use crate::error::RouterError;

fn bad(code: &'static str, m: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, m)
}
