//! Retry timing and secret masking: small pure policies with their own tests.

/// Exponential backoff with full jitter: a uniform delay in `[0, min(cap, base * 2^attempt))`.
/// `unit` is a uniform random number in `[0, 1)`, injected so tests are deterministic.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, unit: f64) -> u64 {
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(20)).min(cap_ms);
    (ceiling as f64 * unit.clamp(0.0, 1.0)).floor() as u64
}

/// Masks a Gemini key for logs as `AIzaSy…last4`. Short or odd strings show nothing of
/// themselves beyond their last 4 characters.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "…".to_string();
    }
    let last4: String = chars[chars.len() - 4..].iter().collect();
    let prefix = if key.starts_with("AIzaSy") { "AIzaSy" } else { "" };
    format!("{prefix}…{last4}")
}

/// Masks every Google API key (`AIza` and at least 30 more key characters) inside free text,
/// such as an upstream error message passed to a caller.
pub fn mask_secrets(text: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("AIza") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_key_char(c)).unwrap_or(tail.len());
        if end >= 34 {
            out.push_str(&mask_key(&tail[..end]));
        } else {
            out.push_str(&tail[..end]);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_inside_text() {
        // Key-shaped but built at run time, so no key-like literal is tracked.
        let k = format!("AIzaSy{}5p6Q", "x".repeat(29));
        assert_eq!(mask_secrets(&format!("bad key {k}, again:{k}")), "bad key AIzaSy…5p6Q, again:AIzaSy…5p6Q");
        assert_eq!(mask_secrets("AIza is a prefix"), "AIza is a prefix");
        assert_eq!(mask_secrets("é AIzaé"), "é AIzaé");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(0, 100, 2000, 0.999_999), 99);
        assert_eq!(backoff_ms(3, 100, 2000, 0.5), 400);
        assert_eq!(backoff_ms(10, 100, 2000, 0.5), 1000);
        assert_eq!(backoff_ms(63, 100, 2000, 1.0), 2000);
        assert_eq!(backoff_ms(2, 100, 2000, 0.0), 0);
    }

    #[test]
    fn masking_keeps_only_prefix_and_last4() {
        assert_eq!(mask_key("AIzaSyAq1234567890abcdefghijklmZaLs"), "AIzaSy…ZaLs");
        assert_eq!(mask_key("short"), "…");
        assert!(!mask_key("AIzaSyAq1234567890abcdefghijklmZaLs").contains("1234"));
    }
}
