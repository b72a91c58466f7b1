"""Client compatibility with the real SDKs agents use (openai, google-genai), changing nothing but
the base URL and the key, plus SSE-level tests of failover and mid-stream failures."""

import json

import requests
from google import genai
from google.genai import types
from openai import OpenAI

from .conftest import MAIN

FLASH = "gemini-2.5-flash"
HELLO = "Say 'Hello from Multi-Key Router!' and nothing else."


def openai_client(worker):
    return OpenAI(base_url=worker.url + "/v1", api_key=MAIN, max_retries=0)


def genai_client(worker):
    return genai.Client(api_key=MAIN, http_options=types.HttpOptions(base_url=worker.url))


def test_openai_chat_completion(worker, clean):
    r = openai_client(worker).chat.completions.create(
        model=FLASH,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        temperature=0.1,
        max_tokens=50,
    )
    assert r.choices[0].message.content == "4"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == FLASH
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    sent = clean.mock_requests()[-1]["body"]
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["generationConfig"] == {"temperature": 0.1, "maxOutputTokens": 50}


def test_openai_stream_with_usage(worker, clean):
    stream = openai_client(worker).chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": HELLO}], stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, chunks = "", None, None, 0
    for ch in stream:
        chunks += 1
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            finish = ch.choices[0].finish_reason or finish
        if ch.usage:
            usage = ch.usage
    assert text == "Hello from Multi-Key Router!"
    assert chunks >= 4  # streamed in pieces, not one buffered blob
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    # The streamed request was settled with its real input tokens, not 0.
    key = clean.mock_requests()[-1]["label"]
    toks = clean.redis_cmd("HGET", f"{{llmr}}:t:{key}:{FLASH}", "_sum")
    assert int(toks) == usage.prompt_tokens


def test_openai_errors_have_openai_shape(worker, clean):
    c = OpenAI(base_url=worker.url + "/v1", api_key="wrong-token", max_retries=0)
    try:
        c.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected an error")
    except Exception as e:  # openai.AuthenticationError
        assert getattr(e, "status_code", None) == 401
    r = worker.post("/v1/chat/completions", {"model": FLASH, "messages": [{"role": "user", "content": "x"}], "n": 2})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_field" and "'n'" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openai_conversation_header(worker, clean):
    cid = worker.post("/v1/conversations", {"model": FLASH}).json()["id"]
    c = openai_client(worker)
    h = {"X-Conversation-Id": cid}
    r1 = c.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "What is 2+2?"}], extra_headers=h)
    assert r1.choices[0].message.content == "4"
    r2 = c.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "What was my previous question?"}], extra_headers=h
    )
    assert r2.choices[0].message.content == "What is 2+2?"
    assert worker.get(f"/v1/conversations/{cid}").json()["message_count"] == 4


def test_models_list(worker, clean):
    c = openai_client(worker)
    models = c.models.list()
    ids = {m.id for m in models.data}
    assert ids == {"gemini-2.5-flash", "gemini-2.5-pro"}


def test_genai_generate_content(worker, clean):
    c = genai_client(worker)  # keep the client alive: its HTTP client closes with it
    r = c.models.generate_content(
        model=FLASH, contents="What is 2+2?", config=types.GenerateContentConfig(temperature=0.2)
    )
    assert r.text == "4"
    assert r.usage_metadata.prompt_token_count > 0
    assert clean.mock_requests()[-1]["body"]["generationConfig"]["temperature"] == 0.2


def test_genai_stream_and_count_tokens(worker, clean):
    c = genai_client(worker)
    parts = [ch.text or "" for ch in c.models.generate_content_stream(model=FLASH, contents=HELLO)]
    assert "".join(parts) == "Hello from Multi-Key Router!"
    assert len(parts) >= 3
    n = c.models.count_tokens(model=FLASH, contents="What is 2+2?")
    assert n.total_tokens == 3  # the mock counts ceil(bytes / 4)


def test_genai_errors_have_gemini_shape(worker, clean):
    c = genai.Client(api_key="wrong-token", http_options=types.HttpOptions(base_url=worker.url))
    try:
        c.models.generate_content(model=FLASH, contents="x")
        raise AssertionError("expected an error")
    except genai.errors.ClientError as e:
        assert e.code == 401
    r = worker.post(f"/v1beta/models/{FLASH}:generateContent", {"contents": []})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def sse_events(resp):
    out = []
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data: "):
            out.append(line[6:])
    return out


def test_stream_failure_before_first_byte_fails_over(worker, clean):
    clean.fault("503", 1)
    r = worker.http.post(
        f"{worker.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", json={"contents": [{"parts": [{"text": HELLO}]}]},
        stream=True, timeout=30,
    )
    assert r.status_code == 200
    events = [json.loads(e) for e in sse_events(r)]
    text = "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"].get("parts", []))
    assert text == "Hello from Multi-Key Router!"
    assert not any("error" in e for e in events)
    assert clean.mock_stats()["total_requests"] == 2


def test_stream_cut_after_first_byte_ends_with_error_event_and_settles(worker, clean):
    for surface in ("gemini", "openai"):
        clean.flush()
        clean.mock_reset()
        clean.fault("cut_stream", 1)
        if surface == "gemini":
            r = worker.http.post(
                f"{worker.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
                json={"contents": [{"parts": [{"text": HELLO}]}]}, stream=True, timeout=30,
            )
        else:
            r = worker.http.post(
                f"{worker.url}/v1/chat/completions",
                json={"model": FLASH, "messages": [{"role": "user", "content": HELLO}], "stream": True}, stream=True, timeout=30,
            )
        assert r.status_code == 200
        events = sse_events(r)
        assert len(events) >= 2, events
        last = json.loads(events[-1])
        assert "error" in last, events
        assert "[DONE]" not in events
        # Only one upstream call: no failover after the first byte.
        assert clean.mock_stats()["total_requests"] == 1
        # The quota was still settled with the usage seen (the first chunk's promptTokenCount).
        key = clean.mock_requests()[-1]["label"]
        st = clean.redis_cmd("HGETALL", f"{{llmr}}:st:k:{key}")
        st = dict(zip(st[::2], st[1::2]))
        assert st.get("outcome:stream_cut") == "1", st
        toks = int(clean.redis_cmd("HGET", f"{{llmr}}:t:{key}:{FLASH}", "_sum"))
        assert toks == int(st["tokens_in"]) > 0


def test_stream_stores_conversation_turn_before_final_event(worker, clean):
    cid = worker.post("/v1/conversations", {"model": FLASH}).json()["id"]
    r = worker.http.post(
        f"{worker.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}]},
        headers={"X-Conversation-Id": cid}, stream=True, timeout=30,
    )
    events = sse_events(r)
    assert json.loads(events[-1])["candidates"][0]["finishReason"] == "STOP"
    turns = worker.get(f"/v1/conversations/{cid}/messages").json()["data"]
    assert [t["content"] for t in turns] == ["What is 2+2?", "4"]
