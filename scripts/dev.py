"""Runs the router locally: redis-server, the local Upstash-REST server, the mock Gemini when no
real keys are configured, and the worker in `wrangler dev` in the foreground.

Real keys: put `API_KEY_<key_id>=...` lines (see .dev.vars.example) in `.dev.vars`. Without any,
the bundled mock Gemini serves every key of keys.json and this script says so.
"""

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import stack  # noqa: E402
from e2e.conftest import fake_key, mock_config  # noqa: E402

PORT = int(os.environ.get("PORT", "8787"))
TOKEN = "local-dev-token"


def dev_vars() -> dict:
    path = ROOT / ".dev.vars"
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip().strip('"')
    return out


def main():
    keys = json.loads((ROOT / "keys.json").read_text())
    configured = {k for k, v in dev_vars().items() if k.startswith("API_KEY_") and v}
    services = []
    redis = stack.start_redis(int(os.environ.get("REDIS_PORT", "0")) or None)
    services.append(redis)
    rest = stack.start_upstash_local(redis.port, TOKEN)
    services.append(rest)
    vars = {"UPSTASH_REDIS_REST_URL": rest.url, "UPSTASH_REDIS_REST_TOKEN": TOKEN}
    # A local admin client with a fresh token (or DEV_TOKEN), unless .dev.vars defines clients.
    client_token = os.environ.get("DEV_TOKEN") or "dev-" + secrets.token_urlsafe(18)
    if "CLIENTS_JSON" not in dev_vars():
        digest = hashlib.sha256(client_token.encode()).hexdigest()
        vars["CLIENTS_JSON"] = json.dumps({"clients": [{"id": "dev", "token_sha256": digest, "scopes": ["admin"]}]})
    else:
        client_token = "<a token from your CLIENTS_JSON>"
    if not configured:
        mock = stack.start_mock_gemini(mock_config(keys, latency_ms=int(os.environ.get("MOCK_LATENCY_MS", "0"))))
        services.append(mock)
        vars["GEMINI_BASE_URL"] = mock.url
        for k in keys["keys"]:
            vars["API_KEY_" + k["key_id"].upper().replace("-", "_")] = fake_key(k["key_id"])
        print(f"\n*** No real Gemini keys configured (.dev.vars has no API_KEY_*): using the bundled MOCK Gemini at {mock.url}")
        print("*** Answers are canned (e.g. 'What is 2+2?' -> '4'). Add real keys to .dev.vars to call Google.\n")
    else:
        print(f"\n*** Using real Gemini keys from .dev.vars: {', '.join(sorted(configured))}\n")
    print(f"Redis: 127.0.0.1:{redis.port}  Upstash REST: {rest.url}")
    print(f"Router: http://127.0.0.1:{PORT}   token: {client_token}\nTry:\n"
          f"  curl -s http://127.0.0.1:{PORT}/v1/generate -H 'authorization: Bearer {client_token}' \\\n"
          f"    -H 'content-type: application/json' -d '{{\"prompt\": \"What is 2+2?\", \"model\": \"gemini-2.5-flash\"}}'\n"
          f"Dashboard: http://127.0.0.1:{PORT}/dashboard\n")
    args = [str(ROOT / "node_modules/.bin/wrangler"), "dev", "--ip", "127.0.0.1", "--port", str(PORT),
            "--show-interactive-dev-session=false"]
    for k, v in vars.items():
        args += ["--var", f"{k}:{v}"]
    env = {**os.environ, "PATH": f"{ROOT / 'node_modules/.bin'}:{os.environ['PATH']}", "WRANGLER_SEND_METRICS": "false"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env)
    # SIGTERM (e.g. from `timeout` or a supervisor) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for s in reversed(services):
            s.stop()


if __name__ == "__main__":
    main()
