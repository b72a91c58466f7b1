//! Tool-call ids, and the thought signature they carry.
//!
//! Gemini gives no call ids (2.x) and wants each `functionCall` part's `thoughtSignature` back
//! unchanged on the next turn, while OpenAI clients and agent frameworks replay only `id`, `type`
//! and `function` of a tool call. So the id is the carrier (LiteLLM's way):
//!
//! ```text
//! call_<24 hex>                                   a call without a signature
//! call_<24 hex>__thought__<base64url(signature)>  a call with one (no padding)
//! ```
//!
//! The 24 hex digits are the first 12 bytes of `sha256("{salt}:{index}")`, where the salt is the
//! answer's reservation id: the same call gets the same id in a stream's deltas, in the final
//! accumulation and in the stored conversation turn. The signature is re-encoded in base64url so
//! the id stays `[A-Za-z0-9_-]`, and decoding gives back the exact bytes Gemini sent.

use sha2::{Digest, Sha256};

/// Separator between the id and the encoded signature.
pub const SIGNATURE_SEP: &str = "__thought__";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url without padding; None on any other character or an impossible length.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// The id of call `index` of the answer salted by `salt`, carrying `signature` if any.
pub fn call_id(salt: &str, index: usize, signature: Option<&str>) -> String {
    let digest = Sha256::digest(format!("{salt}:{index}").as_bytes());
    let mut id = format!("call_{}", hex::encode(&digest[..12]));
    if let Some(sig) = signature {
        id.push_str(SIGNATURE_SEP);
        id.push_str(&b64url_encode(sig.as_bytes()));
    }
    id
}

/// The thought signature carried by a tool-call id, if it carries a well-formed one.
pub fn signature_of(id: &str) -> Option<String> {
    let (_, enc) = id.split_once(SIGNATURE_SEP)?;
    String::from_utf8(b64url_decode(enc)?).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let enc = b64url_encode(&data[..n]);
            assert!(enc.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(b64url_decode(&enc).unwrap(), &data[..n]);
        }
        assert_eq!(b64url_encode(b"foob"), "Zm9vYg");
        assert_eq!(b64url_decode("a"), None);
        assert_eq!(b64url_decode("ab=c"), None);
    }

    #[test]
    fn ids_are_stable_and_carry_the_signature() {
        let sig = "CiQBcsjafx+/Q==";
        let a = call_id("rid:0", 1, Some(sig));
        assert_eq!(a, call_id("rid:0", 1, Some(sig)), "same call, same id");
        assert_ne!(call_id("rid:0", 0, None), call_id("rid:0", 1, None));
        assert_ne!(call_id("rid:0", 0, None), call_id("rid:1", 0, None));
        assert_eq!(signature_of(&a).as_deref(), Some(sig));
        let plain = call_id("rid:0", 0, None);
        assert!(plain.starts_with("call_") && plain.len() == 29, "{plain}");
        assert_eq!(signature_of(&plain), None);
        assert_eq!(signature_of("call_x__thought__!!"), None);
        assert_eq!(signature_of("client-made-id"), None);
    }
}
