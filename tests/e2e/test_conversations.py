"""Conversations end to end: durable multi-turn history in Redis, owned by its client."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from .conftest import CLIENT_TOKENS

FLASH = "gemini-2.5-flash"
OTHER = next(t for t, v in CLIENT_TOKENS.items() if v[0] == "other")


def create(worker, **body):
    r = worker.post("/v1/conversations", body or {"model": FLASH})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def send(worker, cid, content, session=None, **extra):
    s = session or worker.http
    return s.post(f"{worker.url}/v1/conversations/{cid}/messages", json={"content": content, **extra}, timeout=60)


def test_create_append_read_delete_seed_test_5(worker, clean):
    cid = create(worker, model=FLASH, title="seed test 5", metadata={"suite": "e2e"})
    assert cid.startswith("conv_") and len(cid) == 37
    r = send(worker, cid, "Hello, test message")
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == cid
    assert r.json()["message_count"] == 2
    msgs = worker.get(f"/v1/conversations/{cid}/messages").json()
    assert [m["role"] for m in msgs["data"]] == ["user", "assistant"]
    assert msgs["data"][0]["content"] == "Hello, test message"
    assert msgs["total"] == 2
    meta = worker.get(f"/v1/conversations/{cid}").json()
    assert meta["message_count"] == 2
    assert meta["title"] == "seed test 5" and meta["model"] == FLASH
    assert meta["metadata"] == {"suite": "e2e"}
    assert meta["total_tokens"] == r.json()["usage"]["total"]
    assert meta["created_at"] <= meta["updated_at"]
    d = worker.http.delete(f"{worker.url}/v1/conversations/{cid}", timeout=10)
    assert d.status_code == 200 and d.json()["deleted"] is True
    g = worker.get(f"/v1/conversations/{cid}")
    assert g.status_code == 404 and g.json()["error"]["code"] == "conversation_not_found"
    assert clean.redis_cmd("KEYS", f"{{llmr}}:conv:{cid}*") == []


def test_follow_up_sees_history_seed_test_7(worker, clean):
    cid = create(worker, model=FLASH, system="Answer briefly.")
    r1 = send(worker, cid, "What is 2+2? Answer with just the number.")
    assert r1.json()["content"] == "4"
    # Sent the moment the first answer arrived: the turn is already stored.
    r2 = send(worker, cid, "What was my previous question?")
    assert r2.status_code == 200, r2.text
    assert r2.json()["content"] == "What is 2+2? Answer with just the number."
    log = clean.mock_requests()
    last = log[-1]["body"]
    assert [c["role"] for c in last["contents"]] == ["user", "model", "user"]
    assert last["contents"][1]["parts"][0]["text"] == "4"
    assert last["systemInstruction"]["parts"][0]["text"] == "Answer briefly."
    # Only role and parts go upstream, never the router's bookkeeping.
    assert set(last["contents"][0].keys()) == {"role", "parts"}


def test_generate_accepts_conversation_id(worker, clean):
    cid = create(worker, model=FLASH)
    r = worker.post("/v1/generate", {"prompt": "What is 2+2?", "conversation_id": cid})
    assert r.status_code == 200, r.text
    assert r.json()["model_used"] == FLASH
    assert worker.get(f"/v1/conversations/{cid}").json()["message_count"] == 2


def test_concurrent_sends_never_interleave_or_lose_turns(worker, clean):
    cid = create(worker, model=FLASH)
    clean.mock_reset(latency_ms=200)
    barrier = threading.Barrier(10)

    def one(i):
        s = requests.Session()
        s.headers.update(worker.http.headers)
        barrier.wait()
        return send(worker, cid, f"message {i}", session=s)

    with ThreadPoolExecutor(10) as ex:
        results = list(ex.map(one, range(10)))
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 409}, codes
    ok = codes.count(200)
    assert ok >= 1
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "conversation_busy"
            assert r.headers["retry-after"] == "1"
    meta = worker.get(f"/v1/conversations/{cid}").json()
    assert meta["message_count"] == 2 * ok
    turns = worker.get(f"/v1/conversations/{cid}/messages?limit=100").json()["data"]
    assert [t["role"] for t in turns] == ["user", "assistant"] * ok
    clean.mock_reset()


def test_failed_upstream_call_leaves_history_unchanged(worker, clean):
    cid = create(worker, model=FLASH)
    send(worker, cid, "What is 2+2?")
    clean.fault("503", 10)
    r = send(worker, cid, "this one fails")
    assert r.status_code == 502
    meta = worker.get(f"/v1/conversations/{cid}").json()
    assert meta["message_count"] == 2
    # The lock was released: the next send works at once.
    requests.delete(clean.mock.url + "/_mock/faults", timeout=10)
    assert send(worker, cid, "What is 2+2?").status_code == 200


def test_other_clients_get_404_and_nothing_else(worker, clean):
    cid = create(worker, model=FLASH)
    send(worker, cid, "secret plans")
    other = worker.as_client(OTHER)
    for method, path, body in [
        ("GET", f"/v1/conversations/{cid}", None),
        ("GET", f"/v1/conversations/{cid}/messages", None),
        ("DELETE", f"/v1/conversations/{cid}", None),
        ("POST", f"/v1/conversations/{cid}/messages", {"content": "hi", "model": FLASH}),
    ]:
        r = other.request(method, worker.url + path, json=body, timeout=30)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "conversation_not_found"
        assert "secret plans" not in r.text
    assert other.get(worker.url + "/v1/conversations", timeout=10).json()["data"] == []
    # The owner still has it, untouched.
    assert worker.get(f"/v1/conversations/{cid}").json()["message_count"] == 2


def test_pagination(worker, clean):
    ids = []
    for i in range(5):
        ids.append(create(worker, model=FLASH, title=f"c{i}"))
        time.sleep(0.005)
    p1 = worker.get("/v1/conversations?limit=2").json()
    p2 = worker.get(f"/v1/conversations?limit=2&offset={p1['next_offset']}").json()
    p3 = worker.get(f"/v1/conversations?limit=2&offset={p2['next_offset']}").json()
    got = [c["id"] for c in p1["data"] + p2["data"] + p3["data"]]
    assert got == list(reversed(ids))  # newest first
    assert p3["next_offset"] is None
    cid = ids[0]
    for i in range(3):
        send(worker, cid, f"turn {i}")
    m1 = worker.get(f"/v1/conversations/{cid}/messages?limit=4").json()
    m2 = worker.get(f"/v1/conversations/{cid}/messages?limit=4&offset=4").json()
    assert [m["content"] for m in m1["data"][::2]] == ["turn 0", "turn 1"]
    assert [m["content"] for m in m2["data"][::2]] == ["turn 2"]
    assert m1["total"] == 6 and m1["next_offset"] == 4 and m2["next_offset"] is None
    assert worker.get(f"/v1/conversations/{cid}/messages?limit=0").status_code == 400


def test_expiry(env, clean):
    w = env.start_worker(vars={"CONVERSATION_TTL_SECONDS": "2"})
    cid = create(w, model=FLASH)
    assert send(w, cid, "What is 2+2?").status_code == 200
    time.sleep(3.2)
    r = w.get(f"/v1/conversations/{cid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    r = send(w, cid, "still there?", model=FLASH)
    assert r.status_code == 404
    assert w.get("/v1/conversations").json()["data"] == []


def test_context_budget_leaves_oldest_turns_out_upstream_only(env, clean):
    w = env.start_worker(vars={"CONTEXT_BUDGET_TOKENS": "300"})
    cid = create(w, model=FLASH)
    for i in range(4):
        assert send(w, cid, f"turn {i} " + "x" * 100).status_code == 200
    r = send(w, cid, "What was my previous question?")
    b = r.json()
    assert b["omitted_turns"] > 0
    sent = clean.mock_requests()[-1]["body"]["contents"]
    assert len(sent) == 8 - b["omitted_turns"] + 1
    assert sent[0]["role"] == "user"
    # Storage keeps everything.
    assert w.get(f"/v1/conversations/{cid}").json()["message_count"] == 10


def test_redis_unreachable_mid_request_is_503_and_nothing_half_written(worker, clean):
    cid = create(worker, model=FLASH)
    send(worker, cid, "What is 2+2?")
    clean.fault("slow", 1, delay_ms=1500)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", send(worker, cid, "during the outage")))
    t.start()
    time.sleep(0.6)
    clean.rest_http.post(clean.rest.url + "/_local/fault", json={"down": True}, timeout=10)
    t.join()
    clean.rest_http.post(clean.rest.url + "/_local/fault", json={"down": False}, timeout=10)
    r = result["r"]
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "store_unavailable"
    meta = worker.get(f"/v1/conversations/{cid}").json()
    assert meta["message_count"] == 2
    assert len(clean.redis_cmd("LRANGE", f"{{llmr}}:conv:{cid}:turns", 0, -1)) == 2


def test_conversation_send_costs_one_round_trip_before_upstream_and_one_after(worker, clean):
    cid = create(worker, model="gemini-2.5-pro")
    send(worker, cid, "warm the script cache")
    clean.rest_stats_reset()
    r = send(worker, cid, "What is 2+2?")  # no model: the conversation's own is used
    assert r.status_code == 200, r.text
    assert r.json()["model_used"] == "gemini-2.5-pro"
    # Both before the answer: the stored turn is readable as soon as the send is answered.
    assert clean.rest_stats()["http_requests"] == 2
    time.sleep(0.2)
    assert clean.rest_stats()["http_requests"] == 2, "nothing is left for after the answer"
