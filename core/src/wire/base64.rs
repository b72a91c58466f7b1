//! Base64 as Google accepts it in `inlineData.data` (protobuf JSON `bytes`): the standard or the
//! URL-safe alphabet, padded or not. ASCII whitespace is tolerated (MIME-style line breaks).
//!
//! Three operations, none of which copies a large payload: [`check`] walks it once, [`Decoded`]
//! reads any byte range of the decoded data by decoding only that range (random access: an image
//! header costs a few dozen bytes of decoding, however big the image), and [`encode`] (for the
//! OpenAI embeddings' `encoding_format: "base64"`).

use std::borrow::Cow;

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Byte classes, as bit flags: 0 for a character of either alphabet.
const WS: u8 = 1;
const PAD: u8 = 2;
const BAD: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [BAD; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'/' | b'_') {
            0
        } else if b.is_ascii_whitespace() {
            WS
        } else if b == b'=' {
            PAD
        } else {
            BAD
        };
        c += 1;
    }
    t
};

/// The union of the classes of `b`: 0 when every byte is a base64 character. Branch-free over
/// 8-byte chunks, so a 20 MB image is scanned at memory speed (this is the hot loop of a media
/// request, see BENCHMARKS.md).
fn classes(b: &[u8]) -> u8 {
    let mut chunks = b.chunks_exact(8);
    let mut acc = 0u8;
    for c in &mut chunks {
        acc |= CLASS[c[0] as usize]
            | CLASS[c[1] as usize]
            | CLASS[c[2] as usize]
            | CLASS[c[3] as usize]
            | CLASS[c[4] as usize]
            | CLASS[c[5] as usize]
            | CLASS[c[6] as usize]
            | CLASS[c[7] as usize];
    }
    chunks.remainder().iter().fold(acc, |a, &c| a | CLASS[c as usize])
}

/// Checks `s` is base64 that Google accepts; the error says why (for a 400 naming the part).
pub fn check(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    // Fast path: all but the last two bytes (where padding may be) are base64 characters.
    let body = b.len().saturating_sub(2);
    if classes(&b[..body]) == 0 {
        tally(b, body, body)
    } else {
        tally(b, 0, 0)
    }
}

/// The character-by-character check of `b[from..]`, `n` significant characters before it.
fn tally(b: &[u8], from: usize, mut n: usize) -> Result<(), String> {
    let mut pad = 0usize;
    for (i, &c) in b.iter().enumerate().skip(from) {
        match CLASS[c as usize] {
            WS => continue,
            PAD => {
                pad += 1;
                if pad > 2 {
                    return Err("not valid base64 (too much padding)".into());
                }
                continue;
            }
            _ if pad > 0 => return Err(format!("not valid base64 (data after padding at offset {i})")),
            BAD => return Err(format!("not valid base64 (unexpected character at offset {i})")),
            _ => n += 1,
        }
    }
    if n == 0 {
        return Err("must not be empty".into());
    }
    if n % 4 == 1 || (pad > 0 && !(n + pad).is_multiple_of(4)) {
        return Err("not valid base64 (truncated)".into());
    }
    Ok(())
}

/// Random access into the decoded bytes of a base64 string that passed [`check`].
pub struct Decoded<'a> {
    /// The significant characters only (borrowed unless the input had whitespace).
    chars: Cow<'a, [u8]>,
    len: usize,
}

impl<'a> Decoded<'a> {
    pub fn new(s: &'a str) -> Decoded<'a> {
        let raw = s.as_bytes();
        let chars: Cow<[u8]> = if classes(raw) & WS != 0 {
            Cow::Owned(raw.iter().copied().filter(|c| !c.is_ascii_whitespace()).collect())
        } else {
            Cow::Borrowed(raw)
        };
        let sig = chars.iter().rposition(|&c| c != b'=').map_or(0, |p| p + 1);
        let len = sig / 4 * 3 + (sig % 4).saturating_sub(1);
        Decoded {
            chars: match chars {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..sig]),
                Cow::Owned(mut v) => {
                    v.truncate(sig);
                    Cow::Owned(v)
                }
            },
            len,
        }
    }

    /// Length of the decoded data.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `n` decoded bytes from byte `off` (fewer at the end; none past it, or where a
    /// character is not base64). Only the quads covering the range are decoded.
    pub fn read(&self, off: usize, n: usize) -> Vec<u8> {
        let end = off.saturating_add(n).min(self.len);
        if off >= end {
            return Vec::new();
        }
        let (first_quad, last_quad) = (off / 3, (end - 1) / 3);
        let mut out = Vec::with_capacity((last_quad - first_quad + 1) * 3);
        for q in first_quad..=last_quad {
            let c = &self.chars[q * 4..(q * 4 + 4).min(self.chars.len())];
            let mut acc = 0u32;
            for (i, &ch) in c.iter().enumerate() {
                let Some(v) = sextet(ch) else { return out };
                acc |= u32::from(v) << (18 - 6 * i);
            }
            let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
            out.extend_from_slice(&bytes[..c.len().saturating_sub(1)]);
        }
        let skip = off - first_quad * 3;
        out.drain(..skip.min(out.len()));
        out.truncate(end - off);
        out
    }

    /// Calls `f` with consecutive decoded chunks of about `chunk` bytes, until it returns false.
    pub fn for_each_chunk(&self, chunk: usize, mut f: impl FnMut(&[u8]) -> bool) {
        let chunk = chunk.max(3) / 3 * 3;
        let mut off = 0;
        while off < self.len {
            let c = self.read(off, chunk);
            if c.is_empty() || !f(&c) {
                return;
            }
            off += c.len();
        }
    }
}

/// Standard, padded base64.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let acc = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(STD[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain character-by-character rule the table-driven [`check`] must agree with.
    fn reference(s: &str) -> Result<(), String> {
        let (mut n, mut pad) = (0usize, 0usize);
        for (i, &c) in s.as_bytes().iter().enumerate() {
            if c.is_ascii_whitespace() {
                continue;
            }
            if c == b'=' {
                pad += 1;
                if pad > 2 {
                    return Err("not valid base64 (too much padding)".into());
                }
                continue;
            }
            if pad > 0 {
                return Err(format!("not valid base64 (data after padding at offset {i})"));
            }
            if sextet(c).is_none() {
                return Err(format!("not valid base64 (unexpected character at offset {i})"));
            }
            n += 1;
        }
        if n == 0 {
            return Err("must not be empty".into());
        }
        if n % 4 == 1 || (pad > 0 && !(n + pad).is_multiple_of(4)) {
            return Err("not valid base64 (truncated)".into());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn check_agrees_with_the_plain_rule(s in "[A-Za-z0-9+/_=\\-\n *é]{0,40}") {
            prop_assert_eq!(check(&s), reference(&s));
        }

        #[test]
        fn valid_encodings_pass(data in proptest::collection::vec(any::<u8>(), 1..200)) {
            prop_assert_eq!(check(&encode(&data)), Ok(()));
        }
    }

    #[test]
    fn round_trips_and_reads_any_range() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let s = encode(&data);
        assert!(check(&s).is_ok());
        let d = Decoded::new(&s);
        assert_eq!(d.len(), 1000);
        for (off, n) in [(0, 10), (1, 5), (2, 7), (997, 10), (500, 0), (1000, 3), (0, 1000)] {
            let end = (off + n).min(1000);
            assert_eq!(d.read(off, n), data[off.min(end)..end], "{off}+{n}");
        }
        let mut all = Vec::new();
        d.for_each_chunk(64, |c| {
            all.extend_from_slice(c);
            true
        });
        assert_eq!(all, data);
        assert_eq!(encode(b"ab"), "YWI=");
        assert_eq!(encode(b"a"), "YQ==");
    }

    #[test]
    fn accepts_google_variants_and_rejects_garbage() {
        // URL-safe, unpadded and wrapped forms decode the same bytes.
        let d = Decoded::new("-_8\n");
        assert_eq!(d.read(0, 5), vec![0xfb, 0xff]);
        assert!(check("YWI").is_ok());
        assert!(check("YW\r\nI=").is_ok());
        assert!(check("-_-_").is_ok());
        assert!(check("").is_err());
        assert!(check("Y").unwrap_err().contains("truncated"));
        assert!(check("YWI=x").unwrap_err().contains("after padding"));
        assert!(check("YW*I").unwrap_err().contains("offset 2"));
        assert!(check("YQ===").is_err());
        assert!(check("YWI==").is_err());
    }
}
