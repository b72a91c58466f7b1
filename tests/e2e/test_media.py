"""Media and embeddings end to end (issue 16) through the real `openai` and `google-genai` SDKs:
images (data: URL, http URL, `Part.from_bytes`), audio, PDFs, a 1.5 MB PNG admitted on a key
of 250,000 TPM, embeddings in both encodings and both surfaces, the body cap, bad base64, a
burst of embeddings on 2 keys x 10 rpm, and a conversation that keeps its image. The mock
Gemini describes what it received ("Describe this" -> "I received 1 image (image/png, WxH)")."""

import base64
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from google import genai
from google.genai import types
from openai import OpenAI

from .conftest import MAIN, SEED_KEYS, mock_config

FLASH = "gemini-2.5-flash"
EMBED = "gemini-embedding-001"

EMBED_KEYS = [
    {"key_id": f"embed-0{i}", "model_name": EMBED, "provider": "gemini", "rpm": 10, "tpm": 1000000, "rpd": 1000,
     "active": True} for i in (1, 2)
]
KEYS = {"keys": SEED_KEYS["keys"] + EMBED_KEYS, "fallbacks": SEED_KEYS.get("fallbacks", {})}
# Embeddings only: 2 keys in separate quota groups (each its own Google project in the mock).
EMBED_ONLY = {"keys": EMBED_KEYS}


def png(w: int, h: int, noise: bool = False) -> bytes:
    """A real PNG (RGB, 8 bit); `noise` fills it with random pixels so it does not compress."""
    row = (lambda: os.urandom(w * 3)) if noise else (lambda: bytes(w * 3))
    raw = b"".join(b"\0" + row() for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


def wav(seconds: int, rate: int = 16000) -> bytes:
    data = bytes(rate * 2 * seconds)  # 16-bit mono PCM silence
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >> endobj\n"
       b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\n4 0 obj << /Type /Page /Parent 2 0 R >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def data_url(mime: str, b: bytes) -> str:
    return f"data:{mime};base64,{b64(b)}"


@pytest.fixture(scope="module")
def media(env):
    return env.start_worker(keys=KEYS, vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})


@pytest.fixture()
def fresh(env, clean):
    """`clean`, with the mock serving the embedding keys too."""
    env.mock_reset(KEYS)
    yield env


def oai(w) -> OpenAI:
    return OpenAI(base_url=w.url + "/v1", api_key=MAIN, max_retries=0)


def gclient(w) -> genai.Client:
    return genai.Client(api_key=MAIN, http_options=types.HttpOptions(base_url=w.url))


def upstream_parts(env) -> list:
    """The parts of the last user turn the mock received."""
    return env.mock_requests()[-1]["body"]["contents"][-1]["parts"]


def describe(c: OpenAI, *parts, **kw) -> str:
    r = c.chat.completions.create(model=FLASH, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Describe this"}, *parts]}], **kw)
    return r.choices[0].message.content


# --- OpenAI surface --------------------------------------------------------------------------

def test_openai_data_url_image(media, fresh):
    img = png(64, 32)
    said = describe(oai(media), {"type": "image_url", "image_url": {"url": data_url("image/png", img)}})
    assert said == "I received 1 image (image/png, 64x32)"
    assert upstream_parts(fresh)[1] == {"inlineData": {"mimeType": "image/png", "data": b64(img)}}


def test_openai_http_image_url_becomes_file_data(media, fresh):
    url = "https://example.com/pics/cat.png?v=2"
    said = describe(oai(media), {"type": "image_url", "image_url": {"url": url, "detail": "low"}})
    assert url in said
    assert upstream_parts(fresh)[1] == {"fileData": {"mimeType": "image/png", "fileUri": url}}


def test_openai_audio(media, fresh):
    said = describe(oai(media), {"type": "input_audio", "input_audio": {"data": b64(wav(2)), "format": "wav"}})
    assert said == "I received 1 audio (audio/wav, 2 s)"
    assert upstream_parts(fresh)[1]["inlineData"]["mimeType"] == "audio/wav"


def test_openai_pdf_file(media, fresh):
    part = {"type": "file", "file": {"filename": "report.pdf", "file_data": data_url("application/pdf", PDF)}}
    said = describe(oai(media), part)
    assert said == "I received 1 document (application/pdf, 2 pages)"
    assert upstream_parts(fresh)[1] == {"inlineData": {"mimeType": "application/pdf", "data": b64(PDF)}}
    # Bare base64 with a filename works too; an uploaded file id is a clear 400.
    said = describe(oai(media), {"type": "file", "file": {"filename": "report.pdf", "file_data": b64(PDF)}})
    assert "application/pdf" in said
    with pytest.raises(openai.BadRequestError) as e:
        describe(oai(media), {"type": "file", "file": {"file_id": "file-abc123"}})
    assert e.value.code == "unsupported_field" and "messages[0].content[1].file.file_id" in e.value.message


def test_openai_embeddings_base64_and_float(media, fresh):
    c = oai(media)
    r = c.embeddings.create(model=EMBED, input=["hello world", "goodbye"])  # the SDK asks for base64
    assert [d.index for d in r.data] == [0, 1]
    v = r.data[0].embedding
    assert len(v) > 0 and all(isinstance(x, float) for x in v)
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    f = c.embeddings.create(model=EMBED, input="hello world", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(v, rel=1e-6), "base64 decodes to the same floats"
    d = c.embeddings.create(model=EMBED, input="hello world", encoding_format="float", dimensions=8)
    assert len(d.data[0].embedding) == 8


def test_bad_base64_is_400_naming_the_part(media, fresh):
    with pytest.raises(openai.BadRequestError) as e:
        describe(oai(media), {"type": "image_url", "image_url": {"url": "data:image/png;base64,not*base64"}})
    assert e.value.code == "invalid_base64"
    assert "messages[0].content[1].image_url.url: not valid base64" in e.value.message
    r = media.post(f"/v1beta/models/{FLASH}:generateContent",
                   {"contents": [{"parts": [{"text": "x"}, {"inline_data": {"mime_type": "image/png", "data": "%%"}}]}]})
    assert r.status_code == 400 and "contents[0].parts[1].inline_data.data" in r.json()["error"]["message"]
    assert fresh.mock_stats()["total_requests"] == 0


def test_a_25_mb_body_is_413(media, fresh):
    big = "A" * (25 * 1024 * 1024)
    r = media.post("/v1/chat/completions", {"model": FLASH, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + big}}]}]})
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "payload_too_large" and str(20 * 1024 * 1024) in err["message"]
    assert fresh.mock_stats()["total_requests"] == 0


# --- google-genai surface ----------------------------------------------------------------------

def test_genai_part_from_bytes_images(media, fresh):
    c = gclient(media)
    r = c.models.generate_content(model=FLASH, contents=[
        types.Part.from_bytes(data=png(64, 32), mime_type="image/png"),
        types.Part.from_bytes(data=png(800, 400), mime_type="image/png"),
        "Describe this"])
    assert r.text == "I received 2 images (image/png, 64x32; image/png, 800x400)"


def test_genai_a_1_5_mb_png_is_admitted_on_a_250k_tpm_key(media, fresh):
    img = png(1000, 500, noise=True)
    assert 1_400_000 < len(img) < 1_700_000
    assert max(k["tpm"] for k in SEED_KEYS["keys"] if k["model_name"] == FLASH) == 250_000
    c = gclient(media)
    r = c.models.generate_content(model=FLASH, contents=[types.Part.from_bytes(data=img, mime_type="image/png"),
                                                          "Describe this"])
    assert r.text == "I received 1 image (image/png, 1000x500)"
    # Google counts 2 tiles; the prompt is far below the 2 MB the base64 weighs.
    assert 516 <= r.usage_metadata.prompt_token_count < 1000


def test_genai_a_17_mb_image_outside_a_conversation_is_served(media, fresh):
    img = png(2400, 1800, noise=True)  # 13 MB; 17 MB of base64, under the 20 MiB body cap
    c = gclient(media)  # kept alive: its HTTP client closes with it
    r = c.models.generate_content(
        model=FLASH, contents=[types.Part.from_bytes(data=img, mime_type="image/png"), "Describe this"])
    assert r.text == "I received 1 image (image/png, 2400x1800)"
    assert r.usage_metadata.prompt_token_count >= 258 * 4 * 3


def test_genai_embed_content_list(media, fresh):
    c = gclient(media)
    r = c.models.embed_content(model=EMBED, contents=["one", "two", "three"])
    assert len(r.embeddings) == 3 and all(len(e.values) > 0 for e in r.embeddings)
    assert r.embeddings[0].values != r.embeddings[1].values


# --- quotas ------------------------------------------------------------------------------------

def test_an_embedding_burst_on_2_keys_x_10_rpm_admits_exactly_20(env, clean):
    w = env.start_worker(keys=EMBED_ONLY, vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})
    requests.put(env.mock.url + "/_mock/config", json=mock_config(EMBED_ONLY), timeout=10).raise_for_status()
    requests.post(env.mock.url + "/_mock/reset", timeout=10).raise_for_status()

    def one(i):
        return w.post("/v1/embeddings", {"model": EMBED, "input": f"text {i}"}).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(one, range(30)))
    assert codes.count(200) == 20 and codes.count(429) == 10, codes
    stats = env.mock_stats()
    assert sum(k["status_429"] for k in stats["keys"].values()) == 0
    assert stats["total_requests"] == 20
    w.svc.stop()


# --- media in stored conversations -----------------------------------------------------------

def test_a_conversation_keeps_its_image_for_the_next_turn(media, fresh):
    cid = media.post("/v1/conversations", {"model": FLASH}).json()["id"]
    c, h = oai(media), {"X-Conversation-Id": cid}
    img = png(640, 480)
    said = describe(c, {"type": "image_url", "image_url": {"url": data_url("image/png", img)}}, extra_headers=h)
    assert said == "I received 1 image (image/png, 640x480)"
    r = c.chat.completions.create(model=FLASH, extra_headers=h,
                                  messages=[{"role": "user", "content": "Describe this again"}])
    assert r.choices[0].message.content == "I received 1 image (image/png, 640x480)"
    history = fresh.mock_requests()[-1]["body"]["contents"]
    assert [t["role"] for t in history] == ["user", "model", "user"]
    assert history[0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": b64(img)}}
    msgs = media.get(f"/v1/conversations/{cid}/messages").json()["data"]
    assert msgs[0]["media"] == [{"mime_type": "image/png", "bytes": len(b64(img))}]


def test_a_conversation_turn_over_the_media_cap_is_413(media, fresh):
    cid = media.post("/v1/conversations", {"model": FLASH}).json()["id"]
    big = os.urandom(3_300_000)  # 4.4 MB of base64: over the 4 MiB per-turn cap
    with pytest.raises(openai.APIStatusError) as e:
        describe(oai(media), {"type": "file", "file": {"file_data": data_url("application/pdf", big)}},
                 extra_headers={"X-Conversation-Id": cid})
    assert e.value.status_code == 413 and e.value.code == "conversation_too_large"
    assert fresh.mock_stats()["total_requests"] == 0
    # The conversation is unlocked and still usable.
    r = oai(media).chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"X-Conversation-Id": cid})
    assert r.choices[0].message.content
