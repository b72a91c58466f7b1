//! Media in requests, counted the way Google's docs say (Gemini 2.x): an image is 258 tokens
//! if both sides are ≤ 384 px, else 258 per 768 × 768 tile; audio 32 tokens per second; video
//! 263 per second; a PDF 258 per page. Dimensions come from the real header (PNG, JPEG, GIF,
//! WebP), durations from WAV headers; where the mock cannot read a format it assumes generous
//! bitrates (audio 128 kbit/s, video 2 Mbit/s), so it never counts more than the router's
//! upper-bound estimate. Both field spellings are accepted (`inlineData`/`inline_data`,
//! `mimeType`/`mime_type`, `fileData`/`file_data`, `fileUri`/`file_uri`).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde_json::Value;

const TILE: u64 = 258;

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// Google accepts the standard and the URL-safe alphabet, padded or not.
pub fn decode(data: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let std = GeneralPurpose::new(&alphabet::STANDARD, cfg);
    let url = GeneralPurpose::new(&alphabet::URL_SAFE, cfg);
    std.decode(&clean).or_else(|_| url.decode(&clean)).ok()
}

/// One media part as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub mime: String,
    pub kind: Kind,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Image(Option<(u64, u64)>),
    Audio { seconds: u64 },
    Video { seconds: u64 },
    Pdf { pages: u64 },
    File { uri: String },
    Other { bytes: usize },
}

pub fn tile_tokens(w: u64, h: u64) -> u64 {
    if w <= 384 && h <= 384 {
        TILE
    } else {
        TILE * w.div_ceil(768) * h.div_ceil(768)
    }
}

fn be(b: &[u8], i: usize, n: usize) -> Option<u64> {
    Some(b.get(i..i + n)?.iter().fold(0u64, |a, &x| a << 8 | u64::from(x)))
}
fn le(b: &[u8], i: usize, n: usize) -> Option<u64> {
    Some(b.get(i..i + n)?.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x)))
}

/// Width and height of a PNG, GIF, WebP or JPEG image.
pub fn dimensions(b: &[u8]) -> Option<(u64, u64)> {
    let d = if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        (be(b, 16, 4)?, be(b, 20, 4)?)
    } else if b.starts_with(b"GIF8") {
        (le(b, 6, 2)?, le(b, 8, 2)?)
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        match b.get(12..16)? {
            b"VP8 " => (le(b, 26, 2)? & 0x3fff, le(b, 28, 2)? & 0x3fff),
            b"VP8L" => {
                let bits = le(b, 21, 4)?;
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            b"VP8X" => (le(b, 24, 3)? + 1, le(b, 27, 3)? + 1),
            _ => return None,
        }
    } else if b.starts_with(&[0xff, 0xd8]) {
        let mut i = 2;
        loop {
            if *b.get(i)? != 0xff {
                return None;
            }
            let m = *b.get(i + 1)?;
            match m {
                0xff => i += 1,
                0x01 | 0xd0..=0xd7 => i += 2,
                0xc0..=0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => break (be(b, i + 7, 2)?, be(b, i + 5, 2)?),
                0xd9 | 0xda => return None,
                _ => i += 2 + be(b, i + 2, 2)? as usize,
            }
        }
    } else {
        return None;
    };
    (d.0 > 0 && d.1 > 0).then_some(d)
}

fn wav_seconds(b: &[u8]) -> Option<u64> {
    if !(b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WAVE")) {
        return None;
    }
    let (mut i, mut rate) = (12usize, None);
    while i + 8 <= b.len() {
        let size = le(b, i + 4, 4)? as usize;
        match b.get(i..i + 4)? {
            b"fmt " => rate = le(b, i + 16, 4),
            b"data" => return Some(((b.len() - i - 8) as u64).div_ceil(rate.filter(|r| *r > 0)?)),
            _ => {}
        }
        i += 8 + size + (size & 1);
    }
    None
}

fn pdf_pages(b: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = b[i..].windows(5).position(|w| w == b"/Type") {
        let mut k = i + p + 5;
        while b.get(k).is_some_and(|c| c.is_ascii_whitespace()) {
            k += 1;
        }
        if b.get(k..k + 5) == Some(b"/Page") && !b.get(k + 5).is_some_and(|c| c.is_ascii_alphanumeric()) {
            n += 1;
        }
        i = i + p + 5;
    }
    n.max(1)
}

fn inline_item(mime: &str, bytes: &[u8]) -> Item {
    let kind = match mime.split('/').next().unwrap_or("") {
        "image" => Kind::Image(dimensions(bytes)),
        "audio" => Kind::Audio { seconds: wav_seconds(bytes).unwrap_or((bytes.len() as u64).div_ceil(16_000)).max(1) },
        "video" => Kind::Video { seconds: (bytes.len() as u64).div_ceil(250_000).max(1) },
        _ if mime == "application/pdf" => Kind::Pdf { pages: pdf_pages(bytes) },
        _ => Kind::Other { bytes: bytes.len() },
    };
    let tokens = match &kind {
        Kind::Image(Some((w, h))) => tile_tokens(*w, *h),
        Kind::Image(None) => TILE,
        Kind::Audio { seconds } => 32 * seconds,
        Kind::Video { seconds } => 263 * seconds,
        Kind::Pdf { pages } => TILE * pages,
        Kind::File { .. } => TILE,
        Kind::Other { bytes } => (*bytes as u64).div_ceil(4),
    };
    Item { mime: mime.to_string(), kind, tokens }
}

/// Every media part of a request (system instruction and contents), in order, or the
/// INVALID_ARGUMENT message Google gives for undecodable base64.
pub fn items(req: &Value) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten().enumerate();
    let contents = contents.map(|(i, c)| (format!("contents[{i}]"), c));
    let system = field(req, "systemInstruction", "system_instruction").map(|s| ("system_instruction".to_string(), s));
    for (at, c) in contents.chain(system) {
        for (pi, p) in c.get("parts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(d) = field(p, "inlineData", "inline_data") {
                let mime = field(d, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("");
                let data = d.get("data").and_then(Value::as_str).unwrap_or("");
                let Some(bytes) = decode(data) else {
                    return Err(format!(
                        "Invalid value at '{at}.parts[{pi}].inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                    ));
                };
                out.push(inline_item(mime, &bytes));
            } else if let Some(f) = field(p, "fileData", "file_data") {
                let mime = field(f, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("");
                let uri = field(f, "fileUri", "file_uri").and_then(Value::as_str).unwrap_or("").to_string();
                out.push(Item { mime: mime.to_string(), kind: Kind::File { uri }, tokens: TILE });
            }
        }
    }
    Ok(out)
}

/// Tokens of every media part.
pub fn tokens(req: &Value) -> u64 {
    items(req).map(|v| v.iter().map(|i| i.tokens).sum()).unwrap_or(0)
}

fn plural(n: usize, one: &str) -> String {
    match (n, one) {
        (1, _) => format!("1 {one}"),
        (_, "audio") => format!("{n} audio clips"),
        _ => format!("{n} {one}s"),
    }
}

/// "I received 1 image (image/png, 1000x500)": what the request carried, for prompts that
/// ask to describe it. `None` when it carried no media.
pub fn describe(items: &[Item]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let groups = [("image", 0), ("audio", 1), ("video", 2), ("document", 3), ("file", 4), ("attachment", 5)];
    let rank = |k: &Kind| match k {
        Kind::Image(_) => 0,
        Kind::Audio { .. } => 1,
        Kind::Video { .. } => 2,
        Kind::Pdf { .. } => 3,
        Kind::File { .. } => 4,
        Kind::Other { .. } => 5,
    };
    let mut parts = Vec::new();
    for (name, r) in groups {
        let of: Vec<String> = items
            .iter()
            .filter(|i| rank(&i.kind) == r)
            .map(|i| match &i.kind {
                Kind::Image(Some((w, h))) => format!("{}, {w}x{h}", i.mime),
                Kind::Image(None) => format!("{}, unknown size", i.mime),
                Kind::Audio { seconds } | Kind::Video { seconds } => format!("{}, {seconds} s", i.mime),
                Kind::Pdf { pages } => format!("{}, {pages} pages", i.mime),
                Kind::File { uri } => format!("{}, {uri}", i.mime),
                Kind::Other { bytes } => format!("{}, {bytes} bytes", i.mime),
            })
            .collect();
        if !of.is_empty() {
            parts.push(format!("{} ({})", plural(of.len(), name), of.join("; ")));
        }
    }
    Some(format!("I received {}", parts.join(" and ")))
}

/// Whether the last user text asks about the media ("Describe this", "What is in this image?").
pub fn asks_to_describe(req: &Value) -> bool {
    let contents = req.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let last_user = contents.iter().rev().find(|c| c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user"));
    let text: String = last_user
        .and_then(|c| c.get("parts").and_then(Value::as_array))
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    ["describe", "what is in", "what's in", "what do you see"].iter().any(|k| text.contains(k))
}

/// The generate plan with media counted in `promptTokenCount`, and described when asked.
pub fn adjust(mut plan: crate::gen::Plan, req: &Value) -> crate::gen::Plan {
    let items = items(req).unwrap_or_default();
    plan.prompt += items.iter().map(|i| i.tokens).sum::<u64>();
    if asks_to_describe(req) {
        if let Some(d) = describe(&items) {
            plan.candidates = crate::gen::text_tokens(&d);
            plan.text = d;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dimensions_of_every_format() {
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 11, 8, 0x01, 0xf4, 0x03, 0xe8];
        jpeg.extend_from_slice(&[1, 1, 0x11, 0]);
        assert_eq!(dimensions(&jpeg), Some((1000, 500)));
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&[0x2c, 0x01, 0xc8, 0x00]);
        assert_eq!(dimensions(&gif), Some((300, 200)));
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0x1f, 0x03, 0, 0x09, 0, 0]);
        assert_eq!(dimensions(&webp), Some((800, 10)));
        assert_eq!(tile_tokens(1000, 500), 516);
        assert_eq!(tile_tokens(384, 384), 258);
    }

    #[test]
    fn wav_duration_and_pdf_pages() {
        let mut wav =
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data\0\0\0\0".to_vec();
        wav.resize(wav.len() + 32_000 * 3, 0);
        assert_eq!(wav_seconds(&wav), Some(3));
        assert_eq!(pdf_pages(b"<</Type /Pages>> <</Type /Page>> <</Type/Page>>"), 2);
        assert!(decode("-_8").is_some() && decode("YWI=").is_some() && decode("**").is_none());
    }
}
