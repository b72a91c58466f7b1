use super::*;
use crate::wire::base64::encode;
use proptest::prelude::*;
use serde_json::json;

pub(crate) fn png(w: u32, h: u32, body: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b.resize(b.len() + body, 0x5a);
    b
}

fn gif(w: u16, h: u16) -> Vec<u8> {
    let mut b = b"GIF89a".to_vec();
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&[0xf7, 0, 0, 1, 2, 3]);
    b
}

/// A JPEG with `app` bytes of APP1 (EXIF, thumbnails) before its SOF2 frame header.
fn jpeg(w: u16, h: u16, app: usize) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8];
    let mut left = app;
    while left > 0 {
        let n = left.min(60_000);
        b.extend_from_slice(&[0xff, 0xe1]);
        b.extend_from_slice(&((n + 2) as u16).to_be_bytes());
        b.resize(b.len() + n, 0x11);
        left -= n;
    }
    b.extend_from_slice(&[0xff, 0xdb, 0, 4, 0, 0]); // a tiny DQT
    b.extend_from_slice(&[0xff, 0xc2, 0, 11, 8]);
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&[1, 1, 0x11, 0, 0xff, 0xda, 0, 8, 1, 2, 3, 4, 5, 6, 0xff, 0xd9]);
    b
}

fn webp(chunk: &[u8; 4], w: u32, h: u32) -> Vec<u8> {
    let mut b = b"RIFF\0\0\0\0WEBP".to_vec();
    b.extend_from_slice(chunk);
    b.extend_from_slice(&[0, 0, 0, 0]);
    match chunk {
        b"VP8 " => {
            b.extend_from_slice(&[0, 0, 0, 0x9d, 0x01, 0x2a]);
            b.extend_from_slice(&(w as u16).to_le_bytes());
            b.extend_from_slice(&(h as u16).to_le_bytes());
        }
        b"VP8L" => {
            b.push(0x2f);
            b.extend_from_slice(&((w - 1) | (h - 1) << 14).to_le_bytes());
        }
        _ => {
            b.extend_from_slice(&[0, 0, 0, 0]);
            b.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
            b.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
        }
    }
    b.extend_from_slice(&[0; 16]);
    b
}

fn wav(rate: u32, channels: u16, secs: u32) -> Vec<u8> {
    let byte_rate = rate * u32::from(channels) * 2;
    let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
    b.extend_from_slice(b"LIST\x04\0\0\0abcd");
    b.extend_from_slice(b"fmt \x10\0\0\0\x01\0");
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&byte_rate.to_le_bytes());
    b.extend_from_slice(&[4, 0, 16, 0]);
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(byte_rate * secs).to_le_bytes());
    b.resize(b.len() + (byte_rate * secs) as usize, 0);
    b
}

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// An MP4 whose `moov` comes after a large `mdat`, as cameras write them.
fn mp4(timescale: u32, duration: u32, mdat: usize) -> Vec<u8> {
    let mut mvhd = vec![0u8; 4 + 8];
    mvhd.extend_from_slice(&timescale.to_be_bytes());
    mvhd.extend_from_slice(&duration.to_be_bytes());
    mvhd.resize(100, 0);
    let mut b = mp4_box(b"ftyp", b"isom\0\0\0\0isomavc1");
    b.extend(mp4_box(b"mdat", &vec![7u8; mdat]));
    b.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
    b
}

fn inline(mime: &str, bytes: &[u8]) -> Value {
    json!({"inlineData": {"mimeType": mime, "data": encode(bytes)}})
}

fn cost(part: Value) -> u64 {
    part_tokens(&part, Family::Tiles, None)
}

#[test]
fn google_tile_rule() {
    assert_eq!(tile_tokens(384, 384), 258);
    assert_eq!(tile_tokens(385, 10), 258);
    assert_eq!(tile_tokens(1000, 500), 516);
    assert_eq!(tile_tokens(1536, 1537), 258 * 2 * 3);
}

#[test]
fn a_large_screenshot_costs_its_tiles_not_its_bytes() {
    // 1.5 MB of PNG at 1000 × 500: 2 tiles, far below a 250k TPM key.
    let part = inline("image/png", &png(1000, 500, 1_500_000));
    assert_eq!(cost(part.clone()), 516);
    let req = json!({"contents": [{"role": "user", "parts": [{"text": "Describe this"}, part]}]});
    assert_eq!(non_text_tokens(&req, Family::Tiles), 516);
    assert_eq!(non_text_tokens_for(&req, &["gemini-2.5-flash".into(), "gemini-3-pro-preview".into()]), 1120);
}

#[test]
fn every_image_format_reads_its_dimensions() {
    let read = |b: Vec<u8>| image_dimensions(&Decoded::new(&encode(&b)));
    assert_eq!(read(png(1920, 1080, 10)), Some((1920, 1080)));
    assert_eq!(read(gif(300, 200)), Some((300, 200)));
    assert_eq!(read(jpeg(4032, 3024, 150_000)), Some((4032, 3024)));
    assert_eq!(read(webp(b"VP8 ", 800, 600)), Some((800, 600)));
    assert_eq!(read(webp(b"VP8L", 16383, 2)), Some((16383, 2)));
    assert_eq!(read(webp(b"VP8X", 5000, 70)), Some((5000, 70)));
    assert_eq!(read(b"\0\0\0\x18ftypheic".to_vec()), None);
    assert_eq!(read(png(0, 10, 0)), None);
    assert_eq!(read(jpeg(100, 0, 0)), None);
}

#[test]
fn unreadable_images_fall_back_to_the_worst_case_tiles() {
    assert_eq!(cost(inline("image/heic", b"\0\0\0\x18ftypheic")), UNREADABLE_IMAGE_TOKENS);
    assert_eq!(cost(inline("image/png", &png(10, 10, 0)[..20])), UNREADABLE_IMAGE_TOKENS);
}

#[test]
fn both_field_spellings_count() {
    let snake = json!({"inline_data": {"mime_type": "image/png", "data": encode(&png(2000, 100, 0))}});
    assert_eq!(cost(snake), 258 * 3);
    let file = json!({"file_data": {"mime_type": "video/mp4", "file_uri": "https://x/v.mp4"}});
    assert_eq!(cost(file), 120 * 263);
}

#[test]
fn gemini_3_counts_by_media_resolution() {
    let part = inline("image/png", &png(4000, 4000, 0));
    assert_eq!(part_tokens(&part, Family::Resolution, None), 1120);
    assert_eq!(part_tokens(&part, Family::Resolution, Some("MEDIA_RESOLUTION_LOW")), 280);
    assert_eq!(part_tokens(&part, Family::Resolution, Some("MEDIA_RESOLUTION_MEDIUM")), 560);
    assert_eq!(part_tokens(&part, Family::Resolution, Some("MEDIA_RESOLUTION_ULTRA_HIGH")), 2240);
    let mut per_part = part.clone();
    per_part["mediaResolution"] = json!({"level": "MEDIA_RESOLUTION_LOW"});
    assert_eq!(part_tokens(&per_part, Family::Resolution, Some("MEDIA_RESOLUTION_HIGH")), 280);
    let req =
        json!({"generationConfig": {"mediaResolution": "MEDIA_RESOLUTION_MEDIUM"}, "contents": [{"parts": [part]}]});
    assert_eq!(non_text_tokens(&req, Family::Resolution), 560);
    assert_eq!(Family::of("gemini-3-flash-preview"), Family::Resolution);
    assert_eq!(Family::of("gemini-2.5-flash"), Family::Tiles);
}

#[test]
fn audio_by_duration_or_by_bytes() {
    // 10 s of 16 kHz mono PCM: 320 tokens, not its 320 000 bytes.
    assert_eq!(cost(inline("audio/wav", &wav(16_000, 1, 10))), 320);
    assert_eq!(cost(inline("audio/x-wav", &wav(44_100, 2, 3))), 96);
    // An MP3 of 64 000 bytes: at most 64 s at 8 kbit/s.
    assert_eq!(cost(inline("audio/mp3", &[0xff; 64_000])), 64 * 32);
    assert_eq!(cost(inline("audio/mp4", &mp4(1000, 30_500, 10))), 31 * 32);
}

#[test]
fn video_by_container_duration_or_by_bytes() {
    let v = mp4(90_000, 90_000 * 12, 200_000);
    assert_eq!(cost(inline("video/mp4", &v)), 12 * 263);
    let mut fps2 = inline("video/mp4", &v);
    fps2["videoMetadata"] = json!({"fps": 2});
    assert_eq!(cost(fps2), 12 * 263 * 2);
    assert_eq!(part_tokens(&inline("video/mp4", &v), Family::Resolution, None), 12 * (280 + 32));
    assert_eq!(cost(inline("video/webm", &[1; 125_000])), 10 * 263);
}

#[test]
fn pdfs_by_their_pages() {
    let pdf = b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>>\n2 0 obj <</Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3>>\n\
        3 0 obj <</Type /Page>>\n4 0 obj <</Type/Page /Parent 2 0 R>>\n5 0 obj <</Type  /Page\n>>\n%%EOF\n";
    assert_eq!(cost(inline("application/pdf", pdf)), 3 * 258);
    // Page objects across chunk boundaries are counted once each.
    let mut big = b"%PDF-1.7\n".to_vec();
    for _ in 0..40 {
        big.extend_from_slice(&[b' '; 5_000]);
        big.extend_from_slice(b"<</Type /Page>>");
    }
    assert_eq!(pdf_pages(&Decoded::new(&encode(&big))), 40);
    // Compressed object streams hide the pages: one per 2 KiB.
    assert_eq!(pdf_pages(&Decoded::new(&encode(&[0x78; 10_000]))), 5);
    assert_eq!(part_tokens(&inline("application/pdf", pdf), Family::Resolution, Some("MEDIA_RESOLUTION_LOW")), 840);
}

#[test]
fn text_like_and_other_parts() {
    assert_eq!(cost(inline("text/plain", b"hello world")), 11);
    assert_eq!(cost(json!({"fileData": {"mimeType": "application/pdf", "fileUri": "files/x"}})), 64 * 258);
    assert_eq!(cost(json!({"fileData": {"mimeType": "image/png", "fileUri": "files/x"}})), 4128);
    // Function calls and text are not media: `quota::non_text_bytes` and the estimator count them.
    assert_eq!(cost(json!({"functionCall": {"name": "f", "args": {}}})), 0);
    assert_eq!(cost(json!({"text": "hello"})), 0);
    assert!(is_media(&json!({"file_data": {}})) && !is_media(&json!({"text": "x"})));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn png_estimate_is_at_least_googles_rule(w in 1u32..20_000, h in 1u32..20_000, body in 0usize..2_000) {
        let est = cost(inline("image/png", &png(w, h, body)));
        prop_assert!(est >= tile_tokens(w.into(), h.into()));
        prop_assert_eq!(est, tile_tokens(w.into(), h.into()));
    }

    #[test]
    fn gif_estimate_is_at_least_googles_rule(w in 1u16.., h in 1u16..) {
        let est = cost(inline("image/gif", &gif(w, h)));
        prop_assert!(est >= tile_tokens(w.into(), h.into()));
    }

    #[test]
    fn jpeg_and_webp_estimates_are_at_least_googles_rule(w in 1u16..16_383, h in 1u16..16_383, app in 0usize..200_000) {
        let rule = tile_tokens(w.into(), h.into());
        prop_assert!(cost(inline("image/jpeg", &jpeg(w, h, app))) >= rule);
        for chunk in [b"VP8 ", b"VP8L", b"VP8X"] {
            prop_assert!(cost(inline("image/webp", &webp(chunk, w.into(), h.into()))) >= rule);
        }
    }

    #[test]
    fn any_bytes_are_estimated_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600), mime in "(image/(png|jpeg|webp|gif)|audio/wav|video/mp4|application/pdf)") {
        let est = cost(inline(&mime, &bytes));
        prop_assert!(est >= 1);
    }
}
