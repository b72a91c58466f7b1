//! Names that become parts of Redis keys: configured ids (keys, groups, models, clients) and
//! conversation ids (128 random bits, URL-safe), validated strictly so no name can smuggle `*`,
//! `:`, `{` or whitespace into a Redis key name.

/// Prefix + 32 lowercase hex characters (128 bits).
pub const PREFIX: &str = "conv_";

pub fn conversation_id_from(bytes: [u8; 16]) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 32);
    s.push_str(PREFIX);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Ids, groups and models become parts of Redis key names, so they are held to a strict charset.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub fn valid_conversation_id(id: &str) -> bool {
    id.len() == PREFIX.len() + 32
        && id.starts_with(PREFIX)
        && id[PREFIX.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_hostile_ids_fail() {
        let id = conversation_id_from([0xab; 16]);
        assert!(valid_conversation_id(&id));
        for bad in ["", "conv_", "conv_*", "conv_{llmr}", &format!("{id}\n"), &id.to_uppercase(), "x:y"] {
            assert!(!valid_conversation_id(bad), "{bad:?}");
        }
    }
}
