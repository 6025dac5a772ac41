"""Start real servers on loopback with free ports, and stop every one of them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def answers_200(process: subprocess.Popen[bytes], url: str, log_path: Path, name: str) -> bool:
    """Whether GET `url` answers 200 now; fails at once, with the log, if `process` has exited."""
    if process.poll() is not None:
        raise AssertionError(f"{name} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then wait; SIGKILL if it does not stop in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def refused(port: int) -> bool:
    """Whether a connection to 127.0.0.1:`port` is refused (nothing listens there)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


class ThreadedServer:
    """An ASGI app served by a real uvicorn in a background thread with its own event loop."""

    def __init__(self, app: Any, *, http: str = "httptools", **config: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            http=http, loop="asyncio", access_log=False, **config,
        ))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> "ThreadedServer":
        self._thread.start()
        wait_until(lambda: self.server.started, what=f"upstream on {self.port}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """`strangler run` (or `strangler control`, with `command`) as a child process, as users start it.

    It keeps its ports (given, or free ones) and its log, which each start after the first appends to.
    """

    def __init__(self, config_path: Path, *extra_args: str, env: dict[str, str] | None = None, command: str = "run",
                 port: int | None = None, admin_port: int | None = None, name: str | None = None) -> None:
        self.config_path = config_path
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.log_path = config_path.with_suffix(".log") if name is None else config_path.with_name(f"{name}.log")
        listen = ["--port", str(self.port)] if command == "run" else []
        self.args = [sys.executable, "-m", "strangler", command, "--config", str(config_path),
                     *listen, "--admin-port", str(self.admin_port), *extra_args]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, timeout_s: float = 20.0) -> "ProxyProcess":
        self._log = open(self.log_path, "ab" if self._starts else "wb")
        self._starts += 1
        self.process = subprocess.Popen(self.args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True)
        wait_until(self._ready, timeout_s=timeout_s, what=f"proxy ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        return answers_200(self.process, self.admin_url + "/health/ready", self.log_path, "proxy")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def kill(self) -> int:
        """SIGKILL, as a crash or an OOM kill would."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        return self.terminate()

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait; kill (and fail loudly) if it does not stop."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()


class GetInThread:
    """A GET sent from a thread of its own, so that the test can act while it is in flight."""

    def __init__(self, url: str, timeout_s: float = 20.0) -> None:
        self._result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._get, args=(url, timeout_s))
        self._thread.start()

    def _get(self, url: str, timeout_s: float) -> None:
        try:
            self._result["response"] = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as error:
            self._result["error"] = error

    def join(self, timeout_s: float = 20.0) -> None:
        self._thread.join(timeout=timeout_s)

    def response(self) -> httpx.Response:
        """Its response, once joined; fails if it ended in an error instead."""
        assert "error" not in self._result, self._result
        return self._result["response"]


class Named:
    """An ASGI app that answers every request 200 with its name, as text/plain."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.name.encode()})


class Recorder:
    """What an upstream test app received, request by request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, **request: Any) -> None:
        with self._lock:
            self.requests.append(request)

    def __len__(self) -> int:
        with self._lock:
            return len(self.requests)
