//! What the media parts of a request cost in input tokens, as Google counts them, read from the
//! media itself: an image's dimensions from its header, an audio or video's duration from its
//! container, a PDF's pages. Only the bytes needed are decoded from the base64
//! ([`crate::wire::base64::Decoded`] reads any range without decoding the rest), except for PDFs,
//! which are scanned in 48 KiB chunks without being held whole.
//!
//! The reservation must stay an upper bound of what Google counts, or the sliding log could
//! admit more than a key's TPM; settling still replaces the estimate with the real
//! `promptTokenCount`. Which rules are strict:
//!
//! | part | rule | kind |
//! |---|---|---|
//! | image PNG, GIF, WebP (VP8, VP8L, VP8X), JPEG (SOF marker), Gemini 2.x | 258 if both sides ≤ 384 px, else 258 × ⌈w/768⌉ × ⌈h/768⌉ | strict (Google's rule on the real dimensions) |
//! | image, Gemini 3 (counts by `media_resolution`) | low 280, medium 560, high 1120 per image; unset: high (1120, the default for images); an unknown level (ultra high…): 2240 | strict for the documented levels, estimate for unknown ones |
//! | image whose header cannot be read (HEIC, truncated, …) | 16 tiles = 4128 (Gemini 3: its level's cost) | estimate: assumes Google's downscale to fit 3072 × 3072 |
//! | audio WAV | ⌈(bytes after the header) / byteRate⌉ s × 32 | strict for PCM; estimate for compressed WAV |
//! | audio / video MP4, M4A, MOV (`mvhd`) | ⌈duration⌉ s × (32 audio; 263 × fps video on 2.x, (280 × fps + 32) on 3) | strict at the container's duration (`videoMetadata.fps` taken into account) |
//! | other audio (MP3, AAC, OGG, FLAC, AIFF…) | bytes at 8 kbit/s: ⌈bytes / 1000⌉ × 32 | strict for codecs whose bitrate is ≥ 8 kbit/s; an estimate for lower-bitrate Opus/AMR |
//! | other video (WebM, MPEG, AVI…) | bytes at 100 kbit/s: ⌈bytes / 12 500⌉ × the per-second rate | estimate |
//! | PDF | pages × 258 (Gemini 3: × its level, unset 1120); pages = `/Type /Page` objects, or the largest `/Count`, or else ⌈bytes / 2048⌉ capped at Google's 1000 pages | strict when the page objects are visible; estimate for PDFs whose objects are compressed |
//! | inline text (`text/*`, JSON, XML…) | its decoded bytes | strict under the byte estimator |
//! | `fileData` (Google fetches it) | a fixed charge by type: image 4128, PDF 64 pages, audio 10 min, video 2 min, other 4128 | estimate: the file is never read by the router |
//! | any other non-text part (function calls and responses, code) | its JSON bytes, in `quota::non_text_bytes` | strict under the byte estimator |

use crate::wire::base64::Decoded;
use serde_json::Value;

pub const IMAGE_TILE_TOKENS: u64 = 258;
/// An image whose header cannot be read, on Gemini 2.x: 4 × 4 tiles.
pub const UNREADABLE_IMAGE_TOKENS: u64 = 16 * IMAGE_TILE_TOKENS;
pub const AUDIO_TOKENS_PER_S: u64 = 32;
pub const VIDEO_TOKENS_PER_S: u64 = 263;
/// The lowest bitrate assumed for audio whose container gives no duration: 8 kbit/s.
pub const AUDIO_MIN_BYTES_PER_S: u64 = 1_000;
/// The lowest bitrate assumed for video whose container gives no duration: 100 kbit/s.
pub const VIDEO_MIN_BYTES_PER_S: u64 = 12_500;
pub const PDF_MAX_PAGES: u64 = 1_000;

/// How a model family counts media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemini 1.5 / 2.x: 258-token tiles of 768 × 768.
    Tiles,
    /// Gemini 3: a fixed cost per image (or frame, or page) by `media_resolution`.
    Resolution,
}

impl Family {
    pub fn of(model: &str) -> Family {
        if model.contains("gemini-3") {
            Family::Resolution
        } else {
            Family::Tiles
        }
    }
}

/// Gemini 3's per-image cost for a `media_resolution` level (`MEDIA_RESOLUTION_LOW`, …).
pub fn resolution_image_tokens(level: Option<&str>) -> u64 {
    match level.map(|l| l.trim_start_matches("MEDIA_RESOLUTION_").to_ascii_uppercase()).as_deref() {
        Some("LOW") => 280,
        Some("MEDIUM") => 560,
        None | Some("HIGH") | Some("UNSPECIFIED") | Some("") => 1120,
        Some(_) => 2240,
    }
}

/// Gemini 3's per-frame cost of video: 70 at low and medium, 280 at high (the unset default
/// taken as high, the safe side).
fn resolution_frame_tokens(level: Option<&str>) -> u64 {
    match resolution_image_tokens(level) {
        280 | 560 => 70,
        1120 => 280,
        _ => 560,
    }
}

/// Google's Gemini 2.x rule for an image of `w` × `h` pixels.
pub fn tile_tokens(w: u64, h: u64) -> u64 {
    if w <= 384 && h <= 384 {
        IMAGE_TILE_TOKENS
    } else {
        IMAGE_TILE_TOKENS * w.div_ceil(768).max(1) * h.div_ceil(768).max(1)
    }
}

fn get<'v>(v: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// The request-wide `generationConfig.mediaResolution`.
fn config_level(gen: Option<&Value>) -> Option<&str> {
    get(gen?, "mediaResolution", "media_resolution")?.as_str()
}

/// Input tokens of every media part of `req` (a `GenerateContentRequest`), for a model of
/// `family`.
pub fn non_text_tokens(req: &Value, family: Family) -> u64 {
    let contents = req.get("contents").and_then(Value::as_array).into_iter().flatten();
    let gen = get(req, "generationConfig", "generation_config");
    contents_tokens(contents.chain(req.get("systemInstruction")), gen, family)
}

/// Input tokens of the media parts of `contents` (each `{parts: [...]}`), read in place.
pub fn contents_tokens<'a>(contents: impl Iterator<Item = &'a Value>, gen: Option<&Value>, family: Family) -> u64 {
    let level = config_level(gen);
    let mut n = 0u64;
    for c in contents {
        for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
            n = n.saturating_add(part_tokens(p, family, level));
        }
    }
    n
}

/// The model families of a chain (it may mix them), each once.
pub fn families(models: &[String]) -> Vec<Family> {
    let mut fams: Vec<Family> = Vec::new();
    for f in models.iter().map(|m| Family::of(m)) {
        if !fams.contains(&f) {
            fams.push(f);
        }
    }
    fams
}

/// The worst case over the families of `models`.
pub fn non_text_tokens_for(req: &Value, models: &[String]) -> u64 {
    families(models).into_iter().map(|f| non_text_tokens(req, f)).max().unwrap_or(0)
}

/// Bytes of inline media in `contents`: the length of every `inlineData.data` (base64, as sent
/// and as stored in a conversation). `fileData` holds only a URI, so it counts 0.
pub fn inline_bytes<'a>(contents: impl IntoIterator<Item = &'a Value>) -> u64 {
    let mut n = 0u64;
    for c in contents {
        for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(d) = get(p, "inlineData", "inline_data").and_then(|d| d.get("data")).and_then(Value::as_str) {
                n = n.saturating_add(d.len() as u64);
            }
        }
    }
    n
}

/// Whether a part is media (`inlineData`, `fileData`, in either spelling).
pub fn is_media(p: &Value) -> bool {
    ["inlineData", "inline_data", "fileData", "file_data"].iter().any(|k| p.get(k).is_some())
}

/// One part's media cost; 0 for a part that is not media (text, function calls and results
/// are counted by `quota::non_text_bytes`).
pub fn part_tokens(p: &Value, family: Family, request_level: Option<&str>) -> u64 {
    let part_level =
        get(p, "mediaResolution", "media_resolution").and_then(|m| m.get("level").or(Some(m))).and_then(Value::as_str);
    let level = part_level.or(request_level);
    let fps = get(p, "videoMetadata", "video_metadata")
        .and_then(|m| m.get("fps"))
        .and_then(Value::as_f64)
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(1, |f| f.ceil() as u64)
        .max(1);
    let media = Media { family, level, fps };
    if let Some(d) = get(p, "inlineData", "inline_data") {
        let mime = get(d, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("");
        let data = d.get("data").and_then(Value::as_str).unwrap_or("");
        return media.inline(mime, &Decoded::new(data));
    }
    if let Some(f) = get(p, "fileData", "file_data") {
        let mime = get(f, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("");
        return media.file(mime);
    }
    0
}

struct Media<'l> {
    family: Family,
    level: Option<&'l str>,
    fps: u64,
}

fn kind(mime: &str) -> &str {
    mime.split('/').next().unwrap_or("")
}

fn is_textual(mime: &str) -> bool {
    kind(mime) == "text" || ["json", "xml", "javascript", "x-python", "csv", "yaml"].iter().any(|t| mime.contains(t))
}

impl Media<'_> {
    fn image_cost(&self, dims: Option<(u64, u64)>) -> u64 {
        match (self.family, dims) {
            (Family::Resolution, _) => resolution_image_tokens(self.level),
            (Family::Tiles, Some((w, h))) => tile_tokens(w, h),
            (Family::Tiles, None) => UNREADABLE_IMAGE_TOKENS,
        }
    }

    fn page_cost(&self) -> u64 {
        match self.family {
            Family::Tiles => IMAGE_TILE_TOKENS,
            Family::Resolution => resolution_image_tokens(self.level),
        }
    }

    fn video_per_s(&self) -> u64 {
        match self.family {
            Family::Tiles => VIDEO_TOKENS_PER_S * self.fps,
            Family::Resolution => resolution_frame_tokens(self.level) * self.fps + AUDIO_TOKENS_PER_S,
        }
    }

    fn inline(&self, mime: &str, d: &Decoded) -> u64 {
        let bytes = d.len() as u64;
        match kind(mime) {
            "image" => self.image_cost(image_dimensions(d)),
            "audio" => {
                let secs = wav_seconds(d).or_else(|| mp4_seconds(d));
                secs.unwrap_or_else(|| bytes.div_ceil(AUDIO_MIN_BYTES_PER_S)).max(1) * AUDIO_TOKENS_PER_S
            }
            "video" => {
                let secs = mp4_seconds(d).unwrap_or_else(|| bytes.div_ceil(VIDEO_MIN_BYTES_PER_S));
                secs.max(1).saturating_mul(self.video_per_s())
            }
            _ if mime == "application/pdf" => pdf_pages(d) * self.page_cost(),
            _ if is_textual(mime) => bytes,
            // Anything else Google may accept: its decoded bytes, a strict bound for text-like
            // data under the byte estimator.
            _ => bytes.max(UNREADABLE_IMAGE_TOKENS),
        }
    }

    fn file(&self, mime: &str) -> u64 {
        match kind(mime) {
            "image" => self.image_cost(None),
            "audio" => 600 * AUDIO_TOKENS_PER_S,
            "video" => 120 * self.video_per_s(),
            _ if mime == "application/pdf" => 64 * self.page_cost(),
            _ => UNREADABLE_IMAGE_TOKENS,
        }
    }
}

// --- Headers -----------------------------------------------------------------------------------

fn be16(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)))
}
fn be32(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)))
}
fn be64(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}
fn le16(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?)))
}
fn le24(b: &[u8], i: usize) -> Option<u64> {
    let s = b.get(i..i + 3)?;
    Some(u64::from(s[0]) | u64::from(s[1]) << 8 | u64::from(s[2]) << 16)
}
fn le32(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)))
}

/// Width and height of a PNG, GIF, WebP or JPEG image, from its header. `None` for any other
/// format, or a header that does not read.
pub fn image_dimensions(d: &Decoded) -> Option<(u64, u64)> {
    let head = d.read(0, 32);
    let dims = if head.starts_with(b"\x89PNG\r\n\x1a\n") && head.get(12..16) == Some(b"IHDR") {
        (be32(&head, 16)?, be32(&head, 20)?)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        (le16(&head, 6)?, le16(&head, 8)?)
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        match head.get(12..16)? {
            b"VP8 " if head.get(23..26) == Some(&[0x9d, 0x01, 0x2a]) => {
                (le16(&head, 26)? & 0x3fff, le16(&head, 28)? & 0x3fff)
            }
            b"VP8L" if head.get(20) == Some(&0x2f) => {
                let bits = le32(&head, 21)?;
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            b"VP8X" => (le24(&head, 24)? + 1, le24(&head, 27)? + 1),
            _ => return None,
        }
    } else if head.starts_with(&[0xff, 0xd8]) {
        jpeg_dimensions(d)?
    } else {
        return None;
    };
    (dims.0 > 0 && dims.1 > 0).then_some(dims)
}

/// Walks the JPEG segments (reading 4 bytes per segment, skipping their bodies) to the first
/// start-of-frame marker.
fn jpeg_dimensions(d: &Decoded) -> Option<(u64, u64)> {
    let mut pos = 2usize;
    for _ in 0..10_000 {
        let m = d.read(pos, 2);
        if m.len() < 2 || m[0] != 0xff {
            return None;
        }
        let marker = m[1];
        match marker {
            // Fill bytes and stand-alone markers carry no length.
            0xff => pos += 1,
            0x01 | 0xd0..=0xd7 => pos += 2,
            0xd9 | 0xda => return None,
            0xc0..=0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => {
                let sof = d.read(pos + 2, 7);
                return Some((be16(&sof, 5)?, be16(&sof, 3)?));
            }
            _ => {
                let len = be16(&d.read(pos + 2, 2), 0)? as usize;
                if len < 2 {
                    return None;
                }
                pos += 2 + len;
            }
        }
    }
    None
}

/// Duration in whole seconds (rounded up) of a WAV file: the bytes after its header over its
/// byte rate. The bytes present bound the duration even when the `data` size lies.
pub fn wav_seconds(d: &Decoded) -> Option<u64> {
    let head = d.read(0, 12);
    if !(head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE")) {
        return None;
    }
    let mut pos = 12usize;
    let mut byte_rate = None;
    for _ in 0..64 {
        let h = d.read(pos, 8);
        let size = le32(&h, 4)? as usize;
        match h.get(0..4)? {
            b"fmt " => byte_rate = le32(&d.read(pos + 8, 16), 8),
            b"data" => {
                let rate = byte_rate.filter(|r| *r >= 1_000)?;
                let audio = (d.len() - (pos + 8).min(d.len())) as u64;
                return Some(audio.div_ceil(rate));
            }
            _ => {}
        }
        pos = pos.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// Duration in whole seconds (rounded up) of an ISO-BMFF file (MP4, M4A, MOV, 3GP) from its
/// `moov/mvhd` box, wherever `moov` is: boxes are skipped by their sizes, never decoded.
pub fn mp4_seconds(d: &Decoded) -> Option<u64> {
    let boxes = |start: usize, end: usize, want: &[u8; 4]| -> Option<(usize, usize)> {
        let mut pos = start;
        for _ in 0..1_000 {
            if pos + 8 > end {
                return None;
            }
            let h = d.read(pos, 16);
            let (size, header) = match be32(&h, 0)? {
                0 => (end - pos, 8),
                1 => (usize::try_from(be64(&h, 8)?).ok()?, 16),
                s => (s as usize, 8),
            };
            if size < header {
                return None;
            }
            if h.get(4..8)? == want {
                return Some((pos + header, (pos + size).min(end)));
            }
            pos = pos.checked_add(size)?;
        }
        None
    };
    let ftyp = d.read(4, 4);
    if ftyp != b"ftyp" {
        return None;
    }
    let (ms, me) = boxes(0, d.len(), b"moov")?;
    let (hs, _) = boxes(ms, me, b"mvhd")?;
    let v = d.read(hs, 32);
    let (scale, dur) = if v.first()? == &1 { (be32(&v, 20)?, be64(&v, 24)?) } else { (be32(&v, 12)?, be32(&v, 16)?) };
    if scale == 0 {
        return None;
    }
    Some(dur.div_ceil(scale))
}

/// A bound of a PDF's pages: the `/Type /Page` objects, or the largest `/Count` of a pages tree,
/// or else one page per 2 KiB; at least 1, at most Google's 1000.
pub fn pdf_pages(d: &Decoded) -> u64 {
    const OVERLAP: usize = 32;
    let mut pages = 0u64;
    let mut max_count = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    d.for_each_chunk(48 * 1024, |chunk| {
        let start = carry.len();
        carry.extend_from_slice(chunk);
        let buf = &carry;
        let mut i = 0;
        while let Some(j) = find(&buf[i..], b"/Type") {
            let at = i + j;
            let mut k = at + 5;
            while buf.get(k).is_some_and(|c| c.is_ascii_whitespace()) {
                k += 1;
            }
            // A match must end inside the new bytes, or it was counted with the last chunk.
            let end = k + 6;
            if end > buf.len() {
                break;
            }
            if &buf[k..k + 5] == b"/Page" && !buf[k + 5].is_ascii_alphanumeric() && end > start {
                pages += 1;
            }
            i = at + 5;
        }
        let mut i = 0;
        while let Some(j) = find(&buf[i..], b"/Count") {
            let at = i + j + 6;
            let digits: String = buf[at..]
                .iter()
                .skip_while(|c| c.is_ascii_whitespace())
                .take_while(|c| c.is_ascii_digit())
                .take(7)
                .map(|&c| c as char)
                .collect();
            max_count = max_count.max(digits.parse().unwrap_or(0));
            i = at;
        }
        let keep = carry.len().saturating_sub(OVERLAP);
        carry.drain(..keep);
        true
    });
    let pages = if pages > 0 || max_count > 0 { pages.max(max_count) } else { (d.len() as u64).div_ceil(2048) };
    pages.clamp(1, PDF_MAX_PAGES)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
pub(crate) mod tests;
