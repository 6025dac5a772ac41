"""`strangler demo`: the legacy shop, the extracted services and the proxy, in one command.

Prepares fresh data (migrate and seed the monolith, each service imports from it),
starts every server as a child in its own process group, waits until each is ready,
prints where to look, and on Ctrl-C or SIGTERM stops every child it started.

The children are wired to keep each other's data in sync: the monolith publishes its
domain events to every service, each service publishes its own back to the monolith
(all with one random token per run), and orders_service's saga calls inventory_service
and whichever side the config routes POST /api/payments/ to.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from strangler.config.loader import ConfigError, load_config
from strangler.config.model import Address, Config
from strangler.routing import RequestHead, RoutingTable

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_DEADLINE_S = 15.0
STOP_DEADLINE_S = 8.0

# The bundled program that serves each upstream the shipped config names.
PROGRAMS = {
    "legacy": "legacy_monolith",
    "orders": "extracted_services.orders_service",
    "inventory": "extracted_services.inventory_service",
    "payments": "extracted_services.payments_service",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Child:
    name: str
    args: list[str]
    url: str                    # what users visit
    ready_url: str              # answers 200 once the child can serve


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _prepare_commands(config: Config) -> list[list[str]]:
    """Fresh demo data on every start: the monolith first, then each service copies from it."""
    commands = []
    for upstream in config.upstreams:
        module = PROGRAMS.get(upstream.name)
        if module == "legacy_monolith":
            commands[:0] = [[sys.executable, "-m", module, "migrate"], [sys.executable, "-m", module, "seed"]]
        elif module:
            commands += [[sys.executable, "-m", module, "migrate"],
                         [sys.executable, "-m", module, "import-from-legacy", "--replace"]]
    return commands


def _owner(config: Config, method: str, path: str) -> str | None:
    """The upstream that takes most of `method path` in the config (the first listed on a tie)."""
    route = RoutingTable(config.routes).match(RequestHead(method, path, []))
    if route is None:
        return None
    return max(route.split, key=lambda share: share[1])[0]


def _wiring(config: Config) -> dict[str, list[str]]:
    """Per bundled upstream, the flags that say where its events go and whom it calls."""
    urls = {upstream.name: upstream.url for upstream in config.upstreams if upstream.name in PROGRAMS}
    services = [name for name in urls if name != "legacy"]
    flags: dict[str, list[str]] = {name: [] for name in urls}
    if "legacy" in urls:
        for name in services:
            flags["legacy"] += ["--publish-to", f"{name}={urls[name]}"]
            flags[name] += ["--publish-to", f"legacy={urls['legacy']}"]
    if "orders" in urls:
        # Charges go where the config sends payments now: the monolith until payments is extracted.
        payments = _owner(config, "POST", "/api/payments/")
        for peer, name in (("inventory", "inventory"), ("payments", payments)):
            if name in urls:
                flags["orders"] += ["--peer", f"{peer}={urls[name]}"]
    return flags


def _children(config: Config, config_path: str) -> list[Child]:
    children = []
    wiring = _wiring(config)
    for upstream in config.upstreams:
        module = PROGRAMS.get(upstream.name)
        if module is None:
            print(f"strangler demo: upstream {upstream.name!r} is not bundled; start it yourself", file=sys.stderr)
            continue
        origin = urlsplit(upstream.url)
        host, port = origin.hostname or "127.0.0.1", origin.port or 80
        args = [sys.executable, "-m", module, "runserver", "--host", host, "--port", str(port), "--log-level", "warning",
                *wiring[upstream.name]]
        base = f"http://{_reachable(host)}:{port}"
        children.append(Child(name=upstream.name, args=args, url=base, ready_url=f"{base}/health/ready"))
    admin = f"http://{_reachable(config.admin.host)}:{config.admin.port}"
    proxy_args = [sys.executable, "-m", "strangler", "run", "--config", config_path]
    children.append(Child(name="proxy", args=proxy_args, url=_origin(config.listen), ready_url=f"{admin}/health/ready"))
    return children


def _origin(address: Address) -> str:
    return f"http://{_reachable(address.host)}:{address.port}"


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Supervisor:
    """The children of one demo run: started together, watched, and stopped together."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, child: Child) -> None:
        # The proxy logs to the terminal (its access log is the show); the rest to files.
        output = None if child.name == "proxy" else open(self.log_dir / f"{child.name}.log", "ab")
        # A session of its own: Ctrl-C in the terminal reaches only us, and stop_all()
        # signals each child's whole group, worker processes included.
        self.running[child.name] = subprocess.Popen(
            child.args, cwd=REPO_ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
        if output is not None:
            output.close()

    def exited(self) -> list[str]:
        """Children that have stopped on their own, each with the end of its log."""
        return [f"{name} (exit {p.returncode}){self._log_tail(name)}" for name, p in self.running.items()
                if p.poll() is not None]

    def _log_tail(self, name: str, lines: int = 3) -> str:
        try:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "".join(f"\n    {line}" for line in tail)

    def stop_all(self) -> None:
        """SIGTERM every group, wait for all with one deadline, then SIGKILL what is left."""
        for process in self.running.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for name, process in self.running.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"strangler demo: {name} did not stop in time; killing it", file=sys.stderr)
        for process in self.running.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _banner(config: Config, config_path: str, children: list[Child], data_dir: Path, token: str) -> str:
    proxy, admin = _origin(config.listen), _origin(config.admin)
    orders, legacy = _child_url(children, "orders"), _child_url(children, "legacy")
    lines = ["", "strangler demo is up.", f"  {'proxy':<10} {proxy}   <- send requests here",
             f"  {'admin':<10} {admin}   (/routes, /shadow, /metrics, /health/ready)"]
    lines += [f"  {c.name:<10} {c.url}   ({PROGRAMS[c.name]})" for c in children if c.name in PROGRAMS]
    lines += [
        f"  data and logs in {data_dir}",
        "",
        "Try:",
        f"  curl -si {proxy}/api/inventory/ESP-001/ | grep -i x-strangler      # inventory service",
        f"  curl -si {proxy}/api/orders/1/ | grep -i x-strangler               # ramping to orders, sticky by cohort",
        f"  curl -si -b /tmp/cohort.jar -c /tmp/cohort.jar {proxy}/api/orders/1/ | grep -i x-strangler-upstream"
        "   # repeat: the cohort cookie keeps you on one side",
        f"  curl -si -X POST -H 'Content-Type: application/json' \\",
        f"       -d '{{\"customer_email\": \"you@example.com\", \"lines\": [{{\"sku\": \"BNS-1KG\", \"quantity\": 1}}]}}' \\",
        f"       {proxy}/api/orders/                                              # writes stay on legacy",
        f"  curl -s {orders}/api/orders/25/               # that order, copied to orders_service by its event",
        f"  curl -si -X POST -H 'Content-Type: application/json' -d '{{\"customer_email\": \"you@example.com\", "
        f"\"lines\": [{{\"sku\": \"ESP-001\", \"quantity\": 1}}]}}' \\",
        f"       {orders}/api/orders/             # the order saga: stock, payment, confirm; the shop gets a copy",
        f"  curl -s -H 'Authorization: Bearer {token}' {legacy}/outbox/   # events, dead letters; also /metrics",
        f"  curl -si {proxy}/orders                                  # redirect Location points at the proxy",
        f"  curl -s {proxy}/api/order-summary/1                      # one answer from orders, payments and legacy",
        f"  curl -s {admin}/routes",
        f"  curl -s {admin}/shadow                        # legacy's order reads compared with orders_service's",
        f"  curl -s {admin}/metrics | grep strangler_requests_total",
        f"  open {proxy}/accounts/login/   (alice@example.com / wonderland, staff: bob@example.com / canwefixit)",
        "",
        *_ramp_lines(config, proxy, admin, orders, token),
        f"Edit {config_path} to move traffic; Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _ramp_lines(config: Config, proxy: str, admin: str, orders: str, token: str) -> list[str]:
    """How to watch the shipped config's ramps, and where each stands now (its state survives restarts)."""
    ramps = [route for route in config.routes if route.ramp is not None]
    if not ramps:
        return []
    try:
        with urllib.request.urlopen(f"{admin}/ramps", timeout=2.0) as response:
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        document = {}
    now = {ramp["route"]: ramp for ramp in document.get("ramps", [])}
    lines = ["Watch a ramp:"]
    for route in ramps:
        ramp, found = route.ramp, now.get(route.name, {})
        steps = " -> ".join(f"{step:g}%" for step in ramp.steps)
        lines.append(f"  {route.name}: to {ramp.to}, {steps}, a step every {ramp.every_s:g}s while its gates hold; "
                     f"now {found.get('state', '?')} at {found.get('percent', 0):g}%")
    if document.get("rollback_all", {}).get("active"):
        lines.append("  roll back all is ACTIVE (kept from an earlier run): "
                     f"{sys.executable} -m strangler rollback-all --admin {admin} --lift")
    lines += [
        f"  {sys.executable} -m playground.load --url {proxy}   # generated load; who answered, each second",
        f"  curl -s {admin}/ramps | python3 -m json.tool   # step, next evaluation, last decisions, history",
        f"  curl -s {admin}/metrics | grep -E 'strangler_ramp|rollback_all'",
        f"  curl -s -X POST -H 'Authorization: Bearer {token}' -d '{{\"error_percent\": 5}}' {orders}/faults/"
        "   # plant a fault: 5% of orders_service's answers become 500",
        f"  {sys.executable} -m strangler rollback-all --admin {admin} --reason 'drill'"
        "   # all back to legacy; --lift undoes",
        "",
    ]
    return lines


def _child_url(children: list[Child], name: str) -> str:
    return next((child.url for child in children if child.name == name), "http://127.0.0.1")


def run_demo(config_path: str = "config/routes.yaml") -> int:
    """Run the demo until Ctrl-C or SIGTERM; 0 after a clean stop, 1 if it could not start."""
    if not Path(config_path).exists() and (REPO_ROOT / config_path).exists():
        config_path = str(REPO_ROOT / config_path)  # `strangler demo` run from outside the checkout
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    config_path = str(Path(config_path).resolve())
    data_dir = Path(os.environ.get("STRANGLER_DATA_DIR") or REPO_ROOT / "var").resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # One secret per run for /events/ and the other internal endpoints of the children.
    env = {**os.environ, "STRANGLER_DATA_DIR": str(data_dir), "PYTHONPATH": python_path,
           "STRANGLER_EVENTS_TOKEN": os.environ.get("STRANGLER_EVENTS_TOKEN") or secrets.token_hex(16)}

    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(env, data_dir / "logs")
    try:
        return _run(config, config_path, data_dir, env, supervisor, stop)
    finally:
        supervisor.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print("strangler demo: stopped.", file=sys.stderr)


def _run(config: Config, config_path: str, data_dir: Path, env: dict[str, str], supervisor: Supervisor,
         stop: threading.Event) -> int:
    print(f"strangler demo: preparing fresh data in {data_dir}", file=sys.stderr)
    for command in _prepare_commands(config):
        if stop.is_set():
            return 0
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"strangler demo: {' '.join(command[1:])} failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1
    children = _children(config, config_path)
    for child in children:
        supervisor.start(child)
    waiting = {child.name: child.ready_url for child in children}
    deadline = time.monotonic() + READY_DEADLINE_S
    while waiting:
        if stop.is_set():
            return 0
        if supervisor.exited() or time.monotonic() > deadline:
            problem = ", ".join(supervisor.exited()) or "not ready in time: " + ", ".join(waiting)
            print(f"strangler demo: {problem}\n  (logs in {data_dir / 'logs'})", file=sys.stderr)
            return 1
        waiting = {name: url for name, url in waiting.items() if not _is_ready(url)}
        stop.wait(0.1)
    print(_banner(config, config_path, children, data_dir, env["STRANGLER_EVENTS_TOKEN"]), flush=True)
    while not stop.wait(0.5):
        if supervisor.exited():
            print(f"strangler demo: {', '.join(supervisor.exited())}; stopping the rest", file=sys.stderr)
            return 1
    return 0
