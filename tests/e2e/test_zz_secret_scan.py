"""Secret scan (issue 6): runs last (file name sorts last). No configured secret - a Gemini key,
a client token or the Upstash REST token - may appear in any worker log of this session, in
any response or header a worker sent, or anywhere in Redis (now, and before every flush)."""

from pathlib import Path

from .conftest import RESPONSES, find_secrets


def worker_urls(env):
    return {w.url for w in env.workers}


def test_no_secret_in_worker_logs(env, worker):
    secrets = env.secrets()
    assert len(secrets) >= 10
    leaks = []
    for w in env.workers:
        text = Path(w.svc.log).read_text(errors="replace")
        assert text, f"no log captured for {w.url}"
        leaks += [f"{w.svc.log.name}: {label}" for label in find_secrets(text, secrets)]
    assert not leaks, leaks
    # The default worker logs at DEBUG: its per-attempt lines were written and scanned too.
    assert '"event":"attempt"' in worker.logs()


def test_no_secret_in_any_response(env, worker):
    secrets = env.secrets()
    urls = worker_urls(env)
    seen = 0
    leaks = []
    for r in RESPONSES:
        if not any(r.url.startswith(u + "/") or r.url == u for u in urls):
            continue
        seen += 1
        head = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        # Bodies read into memory (streamed bodies that were never read are checked by headers).
        body = r._content.decode("utf-8", "replace") if isinstance(r._content, bytes) else ""
        leaks += [f"{r.request.method} {r.url} -> {r.status_code}: {label}"
                  for label in find_secrets(head + "\n" + body, secrets)]
    assert seen > 0
    assert not leaks, leaks[:20]


def test_no_secret_in_redis(env, worker):
    # Make sure Redis holds the full range of state right now: a request, a conversation, a turn.
    assert worker.generate("What is 2+2?").status_code == 200
    cid = worker.post("/v1/conversations", {"model": "gemini-2.5-flash", "title": "scan"}).json()["id"]
    assert worker.post(f"/v1/conversations/{cid}/messages", {"content": "Hello"}).status_code == 200
    # The scanner itself works: a planted secret is found, then removed.
    env.redis_cmd("HSET", "{llmr}:scan-probe", "f", "x" + next(iter(env.secrets().values())) + "x")
    assert find_secrets(repr(env.redis_dump()), env.secrets())
    env.redis_cmd("DEL", "{llmr}:scan-probe")
    dump = env.redis_dump()
    assert dump, "Redis is empty"
    types = {t for _, t, _ in dump}
    assert {"hash", "zset"} <= types, types
    text = "\n".join(f"{k} {t} {v!r}" for k, t, v in dump)
    leaks = find_secrets(text, env.secrets())
    assert not leaks, leaks
    # ...and what earlier tests left behind, scanned before each flush.
    assert not env.redis_leaks, env.redis_leaks
