"""Start and stop the real local stack for tests: redis-server, the Upstash-REST server,
the mock Gemini and the worker in `wrangler dev`.

Every service binds a free loopback port picked here, logs to a file under `.run/`, and is
stopped when the `Stack` is closed, even if a test failed. Binaries are the release builds
in `target/release/` (`scripts/test.sh` builds them before pytest starts).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
BIN_DIR = ROOT / "target" / "release"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - readiness probes fail in many ways
            last_err = e
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s ({last_err}):\n{tail}")


def http_ok(url: str, headers: dict | None = None, any_status: bool = False) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return 200 <= r.status < 500
    except urllib.error.HTTPError as e:
        return any_status or e.code < 500


class Service:
    def __init__(self, name: str, args: list[str], port: int, env: dict | None = None, cwd: Path | None = None):
        RUN_DIR.mkdir(exist_ok=True)
        self.name = name
        self.port = port
        self.log = RUN_DIR / f"{name}-{port}.log"
        self.args = args
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            self.args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd or ROOT,
            start_new_session=True,  # own process group, so stop() also ends children (workerd)
        )
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_redis(port: int | None = None) -> Service:
    port = port or free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    svc = Service("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port).start()

    def ping():
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    wait_for(ping, 10, "redis-server", svc.proc, svc.log)
    return svc


def start_upstash_local(redis_port: int, token: str, port: int | None = None) -> Service:
    port = port or free_port()
    svc = Service(
        "upstash-local",
        [str(BIN_DIR / "upstash-local"), "--port", str(port), "--redis-url", f"redis://127.0.0.1:{redis_port}", "--token", token],
        port,
    ).start()
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/_local/health"), 15, "upstash-local", svc.proc, svc.log)
    svc.url = f"http://127.0.0.1:{port}"
    svc.token = token
    return svc


def start_mock_gemini(config: dict, port: int | None = None) -> Service:
    port = port or free_port()
    RUN_DIR.mkdir(exist_ok=True)
    cfg_path = RUN_DIR / f"mock-gemini-{port}.json"
    cfg_path.write_text(json.dumps(config))
    svc = Service("mock-gemini", [str(BIN_DIR / "mock-gemini"), "--port", str(port), "--config", str(cfg_path)], port).start()
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/_mock/health"), 15, "mock-gemini", svc.proc, svc.log)
    svc.url = f"http://127.0.0.1:{port}"
    return svc


def start_worker(vars: dict[str, str], port: int | None = None) -> Service:
    """Run the already-built worker (`build/`) in workerd through `wrangler dev`.

    `SKIP_WORKER_BUILD=1` makes the wrangler build command a no-op, so several workers with
    different settings start in seconds from one build.
    """
    port = port or free_port()
    inspector = free_port()
    args = [
        str(ROOT / "node_modules" / ".bin" / "wrangler"),
        "dev",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--inspector-port", str(inspector),
        "--persist-to", str(RUN_DIR / f"wrangler-state-{port}"),
        "--show-interactive-dev-session=false",
        "--log-level", "log",  # "log" includes the worker's console.log lines
    ]
    for k, v in vars.items():
        args += ["--var", f"{k}:{v}"]
    env = {
        "PATH": f"{ROOT / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}",
        "SKIP_WORKER_BUILD": "1",
        "WRANGLER_SEND_METRICS": "false",
        "CI": "true",
    }
    svc = Service("worker", args, port, env=env).start()
    # Any HTTP answer means workerd is serving (a disabled router's /health is a 503).
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health", any_status=True), 90, "wrangler dev", svc.proc, svc.log)
    svc.url = f"http://127.0.0.1:{port}"
    return svc
