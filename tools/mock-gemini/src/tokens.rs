//! The mock's token rule, shared by answers, tools and embeddings.

/// Tokens for one text: ceil(utf8_len / 4). Never more than the byte length, so a router that
/// reserves bytes always reserves at least what the mock counts.
pub fn text_tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(4)
}
