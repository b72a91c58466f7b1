"""Overload end to end (issue 3): 2 minutes at 5x the pool's capacity from 100 concurrent
clients against the real worker and the mock Gemini, which enforces the same quotas."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from .conftest import MAIN

RPM = 30
KEYS = {
    "keys": [
        {"key_id": f"load-{i}", "model_name": "gemini-2.5-flash", "rpm": RPM, "tpm": 1_000_000, "rpd": 100_000}
        for i in range(3)
    ]
}
DURATION_S = float(os.environ.get("OVERLOAD_SECONDS", "120"))
WINDOW_S = 61  # the router's default QUOTA_WINDOW_MS


def test_overload_never_makes_upstream_refuse_and_uses_the_capacity(env, clean):
    env.mock_reset(KEYS)
    w = env.start_worker(keys=KEYS, vars={"GLOBAL_RPM_MAX": "1000000", "GLOBAL_BURST_MAX": "1000000"})
    pool_rpm = RPM * len(KEYS["keys"])
    rate = 5 * pool_rpm / 60.0  # requests per second: 5x the pool's capacity
    total = int(DURATION_S * rate)
    start = time.monotonic() + 1.0
    codes: dict[int, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i):
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.headers["Authorization"] = f"Bearer {MAIN}"
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            r = s.post(w.url + "/v1/generate", json={"prompt": "What is 2+2?", "model": "gemini-2.5-flash"}, timeout=30)
            code = r.status_code
        except requests.RequestException:
            code = -1
        with lock:
            codes[code] = codes.get(code, 0) + 1

    with ThreadPoolExecutor(100) as ex:
        list(ex.map(one, range(total)))

    stats = env.mock_stats()
    served_429 = sum(k["status_429"] for k in stats["keys"].values())
    assert served_429 == 0, stats
    for name, g in stats["groups"].items():
        assert g["max_requests_in_rolling_minute"] <= RPM, (name, g)
    # Capacity in the run: each key's rpm once per started window.
    windows = int(DURATION_S // WINDOW_S) + 1
    capacity = pool_rpm * windows
    admitted = codes.get(200, 0)
    assert admitted >= 0.95 * capacity, (admitted, capacity, codes)
    assert admitted <= capacity, (admitted, capacity, codes)
    assert set(codes) <= {200, 429}, codes
    print(f"overload: sent={total} admitted={admitted} capacity={capacity} codes={codes}")
    env.mock_reset()
