"""The benchmark: strangler side by side with its peers, in one run, on one machine.

    .venv/bin/python bench/run.py [--quick] [--duration S] [--warmup S] [--rounds N]

Origin: nginx (one worker) serving /small (1 KiB JSON), /large (10 MiB) and POST /upload; for S6
(S1 with shadow traffic, strangler alone) a second one receives the copies.
Contenders: direct to the origin (the limit), nginx as a reverse proxy (keep-alive upstream),
asgiproxy (PyPI) and strangler with bench/strangler.yaml, each with one worker; S5, a composite
route of three parts, is strangler's alone. The proxy runs
on CPU 0, the origin and wrk on CPU 1. Every contender's answers must equal the origin's
before anything is timed. Then strangler's `--workers 2` and, where there are 3 or more CPUs,
S1 through HAProxy to 2 strangler instances, each on a CPU of its own, against 1. Writes
bench/results/YYYY-MM-DD-HHMM.md and bench/results/latest.md and prints the table. Standard
library only.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Answer, Processes, Started, WrkResult, answer_problems, fmt, log, markdown_table, ratio  # noqa: E402,F401

CONFIG = harness.BENCH_DIR / "strangler.yaml"
CONFIG_ORIGIN = "127.0.0.1:18080"      # the origin address written in bench/strangler.yaml
CONFIG_SHADOW_ORIGIN = "127.0.0.1:18081"   # and the second origin's, S6's shadow upstream
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    method: str
    path: str
    connections: int
    per_mib: bool = False      # throughput in MiB/s rather than requests/s
    only: str | None = None            # the one contender that can run it
    baseline: str | None = None        # the scenario it is judged against, for the same contender


# S5's route (bench/strangler.yaml): three parts, each a GET of /small, as one JSON object.
COMPOSITE_PATH = "/composite/7"
COMPOSITE_PARTS = ("summary", "stock", "reviews")

SCENARIOS = (
    Scenario("S1", "GET /small (1 KiB), 64 connections", "GET", "/small", 64),
    Scenario("S2", "GET /small (1 KiB), 8 connections: latency", "GET", "/small", 8),
    Scenario("S3", "POST /upload (64 KiB body), 32 connections", "POST", "/upload", 32),
    Scenario("S4", "GET /large (10 MiB), 4 connections", "GET", "/large", 4, per_mib=True),
    Scenario("S5", f"GET {COMPOSITE_PATH}: a composite of {len(COMPOSITE_PARTS)} parts of /small, 64 connections",
             "GET", COMPOSITE_PATH, 64, only="strangler"),
    Scenario("S6", "S1 with shadow: {percent: 10} to a second origin, 64 connections", "GET", "/shadowed", 64,
             only="strangler", baseline="S1"),
)
CONTENDERS = ("direct", "nginx", "asgiproxy", "strangler")


@dataclass
class Contender:
    name: str
    description: str
    port: int | None = None
    process: Started | None = None
    failure: str | None = None
    results: dict[str, list[WrkResult]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    log_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.port is not None

    def result(self, scenario: Scenario) -> WrkResult | None:
        """The median round by throughput."""
        rounds = self.results.get(scenario.key)
        if not rounds:
            return None
        ordered = sorted(rounds, key=lambda r: r.requests_per_s)
        return ordered[(len(ordered) - 1) // 2]


def config_for_origin(text: str, origin_port: int, shadow_origin_port: int | None = None) -> str:
    """bench/strangler.yaml with its upstreams pointed at the origins' actual ports (the shadow
    upstream at the one origin when no second one runs)."""
    if CONFIG_ORIGIN not in text:
        raise ValueError(f"{CONFIG.name} names no upstream at {CONFIG_ORIGIN}")
    text = text.replace(CONFIG_SHADOW_ORIGIN, f"127.0.0.1:{shadow_origin_port or origin_port}")
    return text.replace(CONFIG_ORIGIN, f"127.0.0.1:{origin_port}")


def check_answers(expected: dict[str, Answer], got: dict[str, list[Answer]]) -> list[str]:
    """The correctness gate: a contender is timed only when every answer equals the origin's."""
    return answer_problems(expected, got)


# --- starting the contenders ---------------------------------------------------------------------

def start_nginx_proxy(processes: Processes, nginx: str, workdir: Path, origin_port: int, cpus: str) -> tuple[Started, int]:
    port = harness.free_port()
    conf = harness.write_nginx_conf(workdir / "nginx-proxy",
                                    harness.PROXY_SERVER.format(port=port, origin_port=origin_port))
    harness.make_world_readable(workdir / "nginx-proxy")
    return processes.start("nginx-proxy", harness.nginx_argv(nginx, conf), cpus=cpus), port


def start_asgiproxy(processes: Processes, peers_python: Path, origin_port: int, cpus: str) -> tuple[Started, int]:
    port = harness.free_port()
    argv = [str(peers_python.parent / "uvicorn"), "asgiproxy_app:app", "--app-dir", str(harness.PEERS_DIR),
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--workers", "1", "--no-access-log", "--log-level", "warning"]
    return processes.start("asgiproxy", argv, cpus=cpus, env={"BENCH_ORIGIN": f"http://127.0.0.1:{origin_port}"}), port


def strangler_command() -> list[str]:
    """`python -m strangler`, run from this checkout (Processes.start's directory), so that the code
    measured is the checkout's own whichever checkout the venv's `strangler` script was installed from."""
    return [sys.executable, "-m", "strangler"]


def start_strangler(processes: Processes, workdir: Path, origin_port: int, cpus: str, workers: int = 1,
                    name: str = "strangler", shadow_origin_port: int | None = None) -> tuple[Started, int, int]:
    config = workdir / f"{name}.yaml"
    config.write_text(config_for_origin(CONFIG.read_text(), origin_port, shadow_origin_port))
    port, admin_port = harness.free_port(), harness.free_port()
    argv = [*strangler_command(), "run", "--config", str(config), "--port", str(port), "--admin-port",
            str(admin_port), "--workers", str(workers), "--log-level", "warning"]
    return processes.start(name, argv, cpus=cpus), port, admin_port


def verify(contender: Contender, expected: dict[str, Answer], small: bytes | None = None) -> None:
    """With `small` (the origin's /small), S5's composite must hold it as each of its parts."""
    # Repeats, because a split may send each request to either side.
    problems = check_answers(expected, harness.fetch_probes(contender.port, repeat=4))
    if small is not None:
        problems += composite_problems(contender.port, small)
    if problems:
        raise RuntimeError("answers differ from the origin's: " + "; ".join(problems))


def composite_problems(port: int, small: bytes) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", COMPOSITE_PATH)
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    want = {**{part: json.loads(small) for part in COMPOSITE_PARTS}, "partial": []}
    if status != 200 or json.loads(body) != want:
        return [f"GET {COMPOSITE_PATH}: got {status}, {len(body)} bytes, not each part's /small"]
    return []


# --- measuring -------------------------------------------------------------------------------------

def measure(contender: Contender, scenario: Scenario, scripts: dict[str, Path], wrk: str, args: argparse.Namespace,
            origin_pid: int, shadow_origin_pid: int | None = None) -> None:
    url = f"http://127.0.0.1:{contender.port}{scenario.path}"
    # Watched: the origin, then the proxy (if any), so their CPU use is told apart from the rest; the
    # second origin (S6) last, so that its work is not taken for other load.
    watch = (origin_pid,) + ((contender.process.pid,) if contender.process is not None else ())
    if shadow_origin_pid is not None and contender.process is not None:
        watch += (shadow_origin_pid,)
    script = scripts[scenario.method]
    log(f"{scenario.key} {contender.name}: {scenario.method} {scenario.path} at {scenario.connections} connections")
    try:
        if args.quiet_wait > 0:
            harness.wait_for_quiet(args.quiet_wait)
        harness.run_wrk(wrk, script, url, connections=scenario.connections, duration_s=args.warmup,
                        cpus=args.load_cpus)
        result = harness.run_wrk(wrk, script, url, connections=scenario.connections, duration_s=args.duration,
                                 cpus=args.load_cpus, watch=watch)
    except Exception as exc:
        contender.errors[scenario.key] = str(exc).splitlines()[0]
        log(f"{scenario.key} {contender.name}: {exc}")
        return
    if contender.process is not None and contender.process.process.poll() is not None:
        contender.errors[scenario.key] = f"the process exited ({contender.process.process.returncode})"
    contender.results.setdefault(scenario.key, []).append(result)


def strangler_traffic(admin_port: int, family: str = "strangler_requests_total",
                      labels: tuple[str, str, str] = ("route", "upstream", "code")) -> dict[tuple[str, str, str], float]:
    """A counter by three of its labels (strangler_requests_total by route, upstream, code), from the admin listener."""
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(family + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = tuple(found.get(name, "") for name in labels)
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])   # type: ignore[index]
    return counts


@dataclass
class WorkerScaling:
    cpus_one: str
    cpus_two: str
    proxy_cpu_count: int
    one: WrkResult | None = None
    two: WrkResult | None = None
    failure: str | None = None
    log_problems: list[str] = field(default_factory=list)

    @property
    def per_cpu_ratio(self) -> float | None:
        if not (self.one and self.two):
            return None
        return (self.two.requests_per_s / self.proxy_cpu_count) / self.one.requests_per_s


def measure_worker_scaling(processes: Processes, workdir: Path, origin: Started, origin_port: int, strangler: Contender,
                           expected: dict[str, Answer], scripts: dict[str, Path], wrk: str,
                           args: argparse.Namespace) -> WorkerScaling:
    """S1 with --workers 2 against one worker, measured back to back."""
    spare = sorted(os.sched_getaffinity(0) - _cpu_set(args.proxy_cpus) - _cpu_set(args.load_cpus))
    if spare:
        scaling = WorkerScaling(args.proxy_cpus, f"{args.proxy_cpus},{spare[0]}", 2)
    else:
        # Two cores: the second worker shares CPU 0, which shows the cost of running several
        # workers (multiprocess metrics, accept contention), not how they scale.
        scaling = WorkerScaling(args.proxy_cpus, args.proxy_cpus, len(_cpu_set(args.proxy_cpus)))
    s1 = SCENARIOS[0]
    two = Contender("strangler --workers 2", "")
    try:
        two.process, two.port, _ = start_strangler(processes, workdir, origin_port, scaling.cpus_two, workers=2,
                                                   name="strangler-2-workers")
        harness.wait_until_serving(two.process, two.port, "/small", timeout_s=30)
        verify(two, expected)
    except Exception as exc:
        scaling.failure = str(exc).splitlines()[0]
        log(f"strangler --workers 2: {exc}")
        if two.process is not None:
            processes.stop(two.process)
        return scaling
    # A fresh one-worker figure next to the two-worker one; the main table keeps its own rounds.
    one = Contender(strangler.name, "", port=strangler.port, process=strangler.process)
    measure(one, s1, scripts, wrk, args, origin.pid)
    scaling.one = one.result(s1)
    measure(two, s1, scripts, wrk, args, origin.pid)
    scaling.two = two.result(s1)
    if s1.key in two.errors:
        scaling.failure = two.errors[s1.key]
    processes.stop(two.process)
    scaling.log_problems = log_problems(two.process.log_path)
    return scaling


HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend public
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    balance roundrobin
{servers}
"""


@dataclass
class InstanceScaling:
    """S1 through HAProxy: to one strangler instance, then to two, each on a CPU of its own."""

    cpus: tuple[str, str] = ("", "")
    one: WrkResult | None = None
    two: WrkResult | None = None
    failure: str | None = None
    unmeasurable: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.two.requests_per_s / self.one.requests_per_s if self.one and self.two else None


def instance_cpus(args: argparse.Namespace) -> tuple[str, str] | None:
    """The CPUs of the two instances: the proxy's, and one that neither the proxy nor the load uses."""
    if args.instance_cpus:
        first, _, second = args.instance_cpus.partition(",")
        return first, second
    spare = sorted(os.sched_getaffinity(0) - _cpu_set(args.proxy_cpus) - _cpu_set(args.load_cpus))
    return (args.proxy_cpus.split(",")[0], str(spare[0])) if spare else None


def measure_instance_scaling(processes: Processes, workdir: Path, origin: Started, origin_port: int,
                             expected: dict[str, Answer], scripts: dict[str, Path], tools: dict[str, str],
                             args: argparse.Namespace) -> InstanceScaling:
    """S1 through HAProxy (on the load CPUs) to 1 strangler instance, then to 2, each pinned to its own CPU."""
    cpus = instance_cpus(args)
    if cpus is None:
        return InstanceScaling(unmeasurable=(
            f"not measurable on {len(os.sched_getaffinity(0))} CPUs: two instances need a CPU each, besides the "
            "one of HAProxy, the origin and wrk (3 or more CPUs)"))
    scaling = InstanceScaling(cpus=cpus)
    s1 = SCENARIOS[0]
    try:
        instances = []
        for name, cpu in zip(("strangler-a", "strangler-b"), cpus):
            started, port, _ = start_strangler(processes, workdir, origin_port, cpu, name=name)
            harness.wait_until_serving(started, port, "/small", timeout_s=30)
            instances.append(port)
        for count in (1, 2):
            port = harness.free_port()
            conf = workdir / f"haproxy-{count}.cfg"
            conf.write_text(HAPROXY_CONF.format(port=port, servers="\n".join(
                f"    server s{n} 127.0.0.1:{instance}" for n, instance in enumerate(instances[:count]))))
            front = Contender(f"haproxy -> {count} strangler", "", port=port)
            front.process = processes.start(f"haproxy-{count}", [tools["haproxy"], "-db", "-f", str(conf)],
                                            cpus=args.load_cpus)
            harness.wait_until_serving(front.process, port, "/small")
            verify(front, expected)
            measure(front, s1, scripts, tools["wrk"], args, origin.pid)
            processes.stop(front.process)
            if s1.key in front.errors:
                raise RuntimeError(front.errors[s1.key])
            if count == 1:
                scaling.one = front.result(s1)
            else:
                scaling.two = front.result(s1)
    except Exception as exc:
        scaling.failure = str(exc).splitlines()[0]
        log(f"strangler behind haproxy: {exc}")
    return scaling


LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback|\[(emerg|alert|crit|error)\])\b")


def log_problems(path: Path, keep: int = 8) -> list[str]:
    """The log lines that report something wrong: a count, then the first few of them."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [line.strip() for line in lines if LOG_PROBLEM.search(line)]
    if not found:
        return []
    return [f"{len(found)} line(s) reporting a problem; the first:"] + [line[:300] for line in found[:keep]]


def _cpu_set(cpus: str) -> set[int]:
    found: set[int] = set()
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


# --- the report ------------------------------------------------------------------------------------

TARGETS = ("S1 and S3 >= 1.0x asgiproxy req/s (aim 1.5x); S2 p99 <= 2x nginx; S4 >= 0.9x nginx MiB/s; peak RSS < 80 MiB; "
           "S5's CPU per composite answer reported against 3 x S1's per request; "
           "S6 (S1 with shadow) CPU per client request <= 1.15x S1's, p99 <= 1.10x S1's")
SHADOW_CPU_LIMIT, SHADOW_P99_LIMIT = 1.15, 1.10


def render(contenders: dict[str, Contender], scaling: WorkerScaling | None, traffic: dict | None,
           args: argparse.Namespace, tools: dict[str, str], started_at: datetime.datetime,
           shadow_counts: dict | None = None, instances: InstanceScaling | None = None) -> str:
    lines = [
        f"# strangler benchmark, {started_at.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Reproduce: `make bench` (or `.venv/bin/python bench/run.py{' --quick' if args.quick else ''}`). "
        f"{args.duration:g} s per measurement after {args.warmup:g} s of warm-up, {args.rounds} round(s), "
        "the median round kept.",
        "",
        f"Machine: {harness.machine_summary()}. Proxy pinned to CPU {args.proxy_cpus}; origin and wrk "
        f"(one thread) to CPU {args.load_cpus}. This machine is noisy: compare the ratios, not the absolute "
        "figures.",
        "",
        "Contenders, one worker each:",
        "",
    ]
    for contender in contenders.values():
        state = f"**failed**: {contender.failure}" if contender.failure else "answers equal the origin's"
        lines.append(f"- `{contender.name}`: {contender.description} ({state})")
    lines.append("")

    for scenario in SCENARIOS:
        unit = "MiB/s" if scenario.per_mib else "req/s"
        lines += [f"## {scenario.key}: {scenario.title}", ""]
        base = {name: _throughput(contenders.get(name), scenario) for name in ("direct", "nginx", "asgiproxy")}
        nginx_p99 = _p99(contenders.get("nginx"), scenario)
        asgiproxy_cost = _cost(contenders.get("asgiproxy"), scenario)
        rows = []
        for contender in contenders.values():
            if scenario.only is not None and contender.name != scenario.only:
                continue
            result = contender.result(scenario)
            if result is None:
                reason = contender.failure and "did not start" or contender.errors.get(scenario.key, "not run")
                rows.append([contender.name, reason] + ["-"] * 13)
                continue
            mine = _throughput(contender, scenario)
            rows.append([
                contender.name, fmt(result.requests_per_s), fmt(result.mib_per_s, 1), fmt(result.p50_ms, 2),
                fmt(result.p99_ms, 2), str(result.errors) + (" !" if contender.errors.get(scenario.key) else ""),
                ratio(mine, base["direct"]), ratio(mine, base["nginx"]), ratio(mine, base["asgiproxy"]),
                ratio(result.p99_ms, nginx_p99), _cpu_share(result, proxy=True),
                fmt(result.proxy_cpu_us_per_request), ratio(result.proxy_cpu_us_per_request, asgiproxy_cost),
                _cpu_share(result, proxy=False),
            ])
        lines += [markdown_table(["contender", "req/s", "MiB/s", "p50 ms", "p99 ms", "errors",
                                  f"{unit} vs direct", f"{unit} vs nginx", f"{unit} vs asgiproxy",
                                  "p99 vs nginx", "proxy CPU", "CPU µs/req", "CPU/req vs asgiproxy",
                                  "other load"], rows), ""]

    lines += _against_baselines(contenders.get("strangler"), shadow_counts)
    lines += ["## Peak RSS of the proxy after S4", ""]
    rows = [[c.name, "-" if c.peak_rss_bytes is None else fmt(c.peak_rss_bytes / MIB, 1)]
            for c in contenders.values() if c.name != "direct"]
    lines += [markdown_table(["contender", "peak RSS MiB (VmHWM, all its processes)"], rows), ""]

    lines += ["## strangler against the targets", "", f"Targets: {TARGETS}; `--workers 2` S1 per proxy CPU "
              ">= 0.8x one worker.", ""]
    lines += [markdown_table(["target", "measured", "verdict"], _verdicts(contenders, scaling)), ""]

    if scaling is not None:
        lines += ["## strangler `--workers 2`, S1", ""]
        if scaling.log_problems:
            lines += [f"Its log: {scaling.log_problems[0]}", "", "```", *scaling.log_problems[1:], "```", ""]
        if scaling.failure:
            lines += [f"Failed: {scaling.failure}", ""]
        elif scaling.one and scaling.two:
            lines += [markdown_table(
                ["workers", "proxy CPUs", "req/s", "p50 ms", "p99 ms", "req/s per proxy CPU"],
                [["1", scaling.cpus_one, fmt(scaling.one.requests_per_s), fmt(scaling.one.p50_ms, 2),
                  fmt(scaling.one.p99_ms, 2), fmt(scaling.one.requests_per_s)],
                 ["2", scaling.cpus_two, fmt(scaling.two.requests_per_s), fmt(scaling.two.p50_ms, 2),
                  fmt(scaling.two.p99_ms, 2), fmt(scaling.two.requests_per_s / scaling.proxy_cpu_count)]]), ""]
            if scaling.proxy_cpu_count == 1:
                lines += ["This machine has no spare CPU for a second worker: both workers share "
                          f"CPU {scaling.cpus_two}, so this shows the cost of running two workers (multiprocess "
                          "metrics, accept contention) rather than how they scale. Scaling needs 3 or more CPUs.",
                          ""]

    if instances is not None:
        lines += render_instance_scaling(instances)

    problems = [(c.name, c.log_problems) for c in contenders.values() if c.log_problems]
    lines += ["## Problems in the contenders' logs", ""]
    if problems:
        for name, found in problems:
            lines += [f"`{name}`: {found[0]}", "", "```", *found[1:], "```", ""]
    else:
        lines += ["None: no contender logged an error or a warning during the run.", ""]

    if traffic:
        lines += ["## What strangler saw (its own metrics, whole run)", ""]
        rows = [[route, upstream, code, fmt(count)] for (route, upstream, code), count in sorted(traffic.items())]
        lines += [markdown_table(["route", "upstream", "code", "requests"], rows), ""]

    lines += [
        "## Notes",
        "",
        "- `proxy CPU`: the proxy's processes' CPU time over the measurement (100% = one CPU). `other load`: CPU "
        "used by everything else on the machine meanwhile (not the origin, the proxy or wrk); above "
        f"{NOISY_OTHER_LOAD:.0%} of a CPU the row is marked noisy. `CPU µs/req`: the proxy's CPU time per "
        "answered request, which other work on the machine disturbs far less than req/s; lower is better.",
        "- wrk runs one thread; p50 and p99 are wrk's latency percentiles. GET requests cycle through 100 "
        "prepared requests, nine in ten carrying one of 90 `strangler_cohort` cookies (returning visitors) "
        "and one in ten none (a first visit, which gets a new cohort); the peers ignore the cookie.",
        "- The origin answers POST /upload only after reading the whole body (nginx `mirror` reads it first).",
        "- nginx as a proxy: `keepalive 128` upstream, HTTP/1.1, response buffering on but never spooled to "
        "disk (`proxy_max_temp_file_size 0`). asgiproxy: its concurrency cap raised from 20 to 256 "
        "(strangler's default bulkhead); uvicorn with httptools and uvloop, as strangler uses.",
        f"- Tools: {harness.tool_version([tools['nginx'], '-v'])}; {harness.tool_version([tools['wrk'], '-v'])}; "
        f"Python {sys.version.split()[0]}; strangler commit {_git_commit()}.",
        "",
    ]
    return "\n".join(lines)


def render_instance_scaling(instances: InstanceScaling) -> list[str]:
    lines = ["## strangler behind HAProxy: 2 instances against 1, S1", ""]
    if instances.unmeasurable:
        return lines + [f"S1 through HAProxy to 2 instances, each on a CPU of its own, against 1: "
                        f"{instances.unmeasurable}.", ""]
    if instances.failure:
        return lines + [f"Failed: {instances.failure}", ""]
    if not (instances.one and instances.two):
        return lines + ["Not measured.", ""]
    first, second = instances.cpus
    lines += [markdown_table(
        ["instances", "their CPUs", "req/s", "p50 ms", "p99 ms", "req/s vs 1 instance"],
        [["1", first, fmt(instances.one.requests_per_s), fmt(instances.one.p50_ms, 2), fmt(instances.one.p99_ms, 2),
          "1.00x"],
         ["2", f"{first}, {second}", fmt(instances.two.requests_per_s), fmt(instances.two.p50_ms, 2),
          fmt(instances.two.p99_ms, 2), ratio(instances.ratio, 1)]]), ""]
    if first == second:
        lines += ["Both instances share one CPU here (`--instance-cpus`): this shows the cost of a second "
                  "instance and of HAProxy, not how instances scale.", ""]
    lines += ["HAProxy (one thread, round-robin, keep-alive to the instances) runs on the CPUs of the origin and "
              "wrk; 2.00x would be perfect scaling.", ""]
    return lines


NOISY_OTHER_LOAD = 0.15    # of one CPU


def _cpu_share(result: WrkResult, *, proxy: bool) -> str:
    cpu = result.cpu
    if cpu is None:
        return "-"
    if proxy:
        return f"{cpu.trees[1]:.0%}" if len(cpu.trees) > 1 else "-"
    return f"{cpu.other:.0%}" + (" (noisy)" if cpu.other > NOISY_OTHER_LOAD else "")


def _cost(contender: Contender | None, scenario: Scenario) -> float | None:
    result = contender.result(scenario) if contender else None
    return result.proxy_cpu_us_per_request if result else None


def _throughput(contender: Contender | None, scenario: Scenario) -> float | None:
    result = contender.result(scenario) if contender else None
    if result is None:
        return None
    return result.mib_per_s if scenario.per_mib else result.requests_per_s


def _p99(contender: Contender | None, scenario: Scenario) -> float | None:
    result = contender.result(scenario) if contender else None
    return result.p99_ms if result else None


def _against_baselines(strangler: Contender | None, shadow_counts: dict | None) -> list[str]:
    """S6 against S1 for strangler: what shadow traffic costs the client's requests."""
    rows = []
    for scenario in (s for s in SCENARIOS if s.baseline):
        base = next(s for s in SCENARIOS if s.key == scenario.baseline)
        mine, theirs = (strangler.result(scenario), strangler.result(base)) if strangler else (None, None)
        if mine is None or theirs is None:
            continue
        for label, result in ((base.key, theirs), (scenario.key, mine)):
            rows.append([label, fmt(result.requests_per_s), fmt(result.p99_ms, 2),
                         fmt(result.proxy_cpu_us_per_request), _cpu_share(result, proxy=False)])
        rows.append([f"{scenario.key} / {base.key}", ratio(mine.requests_per_s, theirs.requests_per_s),
                     ratio(mine.p99_ms, theirs.p99_ms),
                     ratio(mine.proxy_cpu_us_per_request, theirs.proxy_cpu_us_per_request), ""])
    if not rows:
        return []
    lines = ["## Shadow traffic: S6 against S1, strangler", "",
             "The same requests; in S6 a tenth of them are also copied to a second origin and the answers "
             "compared. `CPU µs/req` is per client request, the copies' work included.", "",
             markdown_table(["scenario", "req/s", "p99 ms", "CPU µs/req", "other load"], rows), ""]
    if shadow_counts:
        found = ", ".join(f"{result} {fmt(count)}" for (_, _, result), count in sorted(shadow_counts.items()))
        lines += [f"Copies, from strangler's `strangler_shadow_requests_total` over the run: {found}.", ""]
    return lines


def _verdicts(contenders: dict[str, Contender], scaling: WorkerScaling | None) -> list[list[str]]:
    strangler = contenders.get("strangler")
    s1, s2, s3, s4, s5, s6 = SCENARIOS

    def compare(scenario: Scenario, peer: str) -> float | None:
        mine, theirs = _throughput(strangler, scenario), _throughput(contenders.get(peer), scenario)
        return mine / theirs if mine and theirs else None

    def verdict(value: float | None, ok: bool, aim: str = "") -> str:
        if value is None:
            return "not measured"
        return ("met" if ok else "**missed**") + aim

    rows = []
    for scenario in (s1, s3):
        value = compare(scenario, "asgiproxy")
        aim = "" if value is None or value < 1.0 else (" (aim 1.5x met)" if value >= 1.5 else " (aim 1.5x not yet)")
        rows.append([f"{scenario.key} req/s >= 1.0x asgiproxy", ratio(value, 1), verdict(value, (value or 0) >= 1.0, aim)])
    mine, nginx = _p99(strangler, s2), _p99(contenders.get("nginx"), s2)
    value = mine / nginx if mine and nginx else None
    rows.append(["S2 p99 <= 2x nginx p99", ratio(value, 1), verdict(value, value is not None and value <= 2.0)])
    value = compare(s4, "nginx")
    rows.append(["S4 MiB/s >= 0.9x nginx", ratio(value, 1), verdict(value, (value or 0) >= 0.9)])
    composite, plain = _cost(strangler, s5), _cost(strangler, s1)
    parts = len(COMPOSITE_PARTS)
    rows.append([f"S5 CPU per composite answer vs {parts} x S1's per request",
                 "-" if not (composite and plain) else
                 f"{ratio(composite, parts * plain)} ({fmt(composite)} µs vs {parts} x {fmt(plain)} µs)",
                 "reported" if composite and plain else "not measured"])
    shadowed, plain = (strangler.result(s6), strangler.result(s1)) if strangler else (None, None)
    if shadowed and plain:
        value = _ratio_of(shadowed.proxy_cpu_us_per_request, plain.proxy_cpu_us_per_request)
        rows.append([f"S6 CPU per client request <= {SHADOW_CPU_LIMIT:.2f}x S1", ratio(value, 1),
                     verdict(value, value is not None and value <= SHADOW_CPU_LIMIT)])
        value = _ratio_of(shadowed.p99_ms, plain.p99_ms)
        rows.append([f"S6 p99 <= {SHADOW_P99_LIMIT:.2f}x S1", ratio(value, 1),
                     verdict(value, value is not None and value <= SHADOW_P99_LIMIT)])
    rss = strangler.peak_rss_bytes / MIB if strangler and strangler.peak_rss_bytes else None
    rows.append(["peak RSS < 80 MiB", "-" if rss is None else f"{rss:.1f} MiB", verdict(rss, (rss or 1e9) < 80)])
    if scaling is not None:
        value = scaling.per_cpu_ratio
        if scaling.proxy_cpu_count == 1 and value is not None:
            rows.append(["--workers 2 S1 per proxy CPU >= 0.8x", ratio(value, 1),
                         "not measurable here (2 CPUs): both workers share one CPU"])
        else:
            rows.append(["--workers 2 S1 per proxy CPU >= 0.8x", ratio(value, 1),
                         scaling.failure and f"failed: {scaling.failure}" or verdict(value, (value or 0) >= 0.8)])
    return rows


def _ratio_of(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine and theirs else None


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(harness.REPO_DIR), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or "?"
    except OSError:
        return "?"


# --- main -------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every scenario; the median is kept")
    parser.add_argument("--quick", action="store_true", help="a short run: 3 s measurements, 1 s warm-up")
    parser.add_argument("--proxy-cpus", default="0", help="CPUs for the proxy under test (default 0)")
    parser.add_argument("--load-cpus", default="1", help="CPUs for the origin and wrk (default 1)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each measurement, wait up to this many seconds for other work on the "
                             "machine to stop (default 20; 0: never wait)")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated subset of " + ",".join(s.key for s in SCENARIOS))
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 measurement")
    parser.add_argument("--no-instances", action="store_true",
                        help="skip S1 through HAProxy to 2 instances against 1 (measured with 3 or more CPUs)")
    parser.add_argument("--instance-cpus", metavar="A,B",
                        help="the CPUs of the two instances behind HAProxy (default: the proxy's and a spare one)")
    parser.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    unknown = set(args.scenarios.split(",")) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def _measuring_order(keys: list[str]) -> list[list[Scenario]]:
    """The chosen scenarios in order, each with the one it is judged against when that runs too."""
    chosen = [s for s in SCENARIOS if s.key in keys]
    baselines = {s.baseline for s in chosen if s.baseline in keys}
    by_key = {s.key: s for s in SCENARIOS}
    return [[by_key[s.baseline], s] if s.baseline in keys else [s] for s in chosen if s.key not in baselines]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started_at = datetime.datetime.now()
    with_instances = not args.no_instances and instance_cpus(args) is not None
    tools = harness.ensure_tools({"haproxy": "haproxy"} if with_instances else None)
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    processes = Processes(workdir)
    wanted = args.contenders.split(",")
    contenders = {name: Contender(name, description) for name, description in (
        ("direct", "wrk straight to the origin: the limit"),
        ("nginx", "nginx reverse proxy, one worker, keep-alive upstream"),
        ("asgiproxy", "asgiproxy 0.2.0 (aiohttp client) on uvicorn, httptools + uvloop"),
        ("strangler", "`strangler run --config bench/strangler.yaml`: 9 routes, 50/50 split with sticky "
                      "cohort, fallback, breaker, retry, health checks, metrics (S6: and shadow traffic)"),
    ) if name in wanted}
    scaling = None
    instances = None
    traffic = None
    shadow_counts = None
    strangler_admin = None
    shadow_origin: Started | None = None
    shadow_origin_port: int | None = None
    try:
        harness.write_origin_files(workdir / "root")
        origin_port = harness.free_port()
        conf = harness.write_nginx_conf(workdir / "origin",
                                        harness.ORIGIN_SERVER.format(port=origin_port, root=workdir / "root"))
        harness.make_world_readable(workdir)
        origin = processes.start("origin", harness.nginx_argv(tools["nginx"], conf), cpus=args.load_cpus)
        harness.wait_until_serving(origin, origin_port, "/small")
        if "S6" in args.scenarios.split(",") and "strangler" in wanted:
            # The copies' upstream: the same files, served by an origin of its own.
            shadow_origin_port = harness.free_port()
            conf = harness.write_nginx_conf(workdir / "shadow-origin", harness.ORIGIN_SERVER.format(
                port=shadow_origin_port, root=workdir / "root"))
            harness.make_world_readable(workdir)
            shadow_origin = processes.start("shadow-origin", harness.nginx_argv(tools["nginx"], conf),
                                            cpus=args.load_cpus)
            harness.wait_until_serving(shadow_origin, shadow_origin_port, "/shadowed")
        expected = {probe: answers[0] for probe, answers in harness.fetch_probes(origin_port).items()}
        small = (workdir / "root" / "small").read_bytes()
        scripts = {"GET": workdir / "get.lua", "POST": workdir / "post.lua"}
        scripts["GET"].write_text(harness.get_script())
        scripts["POST"].write_text(harness.post_script())

        for name, contender in contenders.items():
            try:
                if name == "direct":
                    contender.port = origin_port
                elif name == "nginx":
                    contender.process, contender.port = start_nginx_proxy(
                        processes, tools["nginx"], workdir, origin_port, args.proxy_cpus)
                elif name == "asgiproxy":
                    contender.process, contender.port = start_asgiproxy(
                        processes, harness.ensure_peers_venv(), origin_port, args.proxy_cpus)
                else:
                    contender.process, contender.port, strangler_admin = start_strangler(
                        processes, workdir, origin_port, args.proxy_cpus, shadow_origin_port=shadow_origin_port)
                if contender.process is not None:
                    harness.wait_until_serving(contender.process, contender.port, "/small", timeout_s=30)
                verify(contender, expected, small if name == "strangler" else None)
                log(f"{name}: answers equal the origin's")
            except Exception as exc:
                contender.failure = str(exc).splitlines()[0]
                log(f"{name}: FAILED: {exc}")
                if contender.process is not None:
                    processes.stop(contender.process)

        running = [c for c in contenders.values() if c.ok]
        # Scenario by scenario, contender after contender: drift on a noisy machine hits all alike. A
        # scenario judged against another (S6 against S1) is measured in turns with it, round by round.
        for group in _measuring_order(args.scenarios.split(",")):
            for _ in range(args.rounds):
                for scenario in group:
                    for contender in running:
                        if scenario.only is None or contender.name == scenario.only:
                            measure(contender, scenario, scripts, tools["wrk"], args, origin.pid,
                                    shadow_origin.pid if shadow_origin is not None and scenario.baseline else None)
        for contender in running:
            if contender.process is not None:
                contender.peak_rss_bytes = harness.peak_rss_bytes(contender.process.pid)
        strangler = contenders.get("strangler")
        if strangler is not None and strangler.ok and strangler_admin is not None:
            try:
                traffic = strangler_traffic(strangler_admin)
                shadow_counts = strangler_traffic(strangler_admin, "strangler_shadow_requests_total",
                                                  ("route", "shadow", "result"))
            except OSError as exc:
                log(f"strangler metrics: {exc}")
            if not args.no_workers:
                scaling = measure_worker_scaling(processes, workdir, origin, origin_port, strangler, expected, scripts,
                                                 tools["wrk"], args)
            if not args.no_instances:
                if strangler.process is not None:
                    processes.stop(strangler.process)      # its CPU goes to the first instance
                instances = measure_instance_scaling(processes, workdir, origin, origin_port, expected, scripts,
                                                     tools, args)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        processes.stop_all()
        for contender in contenders.values():
            if contender.process is not None:
                contender.log_problems = log_problems(contender.process.log_path)
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(contenders, scaling, traffic, args, tools, started_at, shadow_counts, instances)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{started_at.strftime('%Y-%m-%d-%H%M')}.md").write_text(report)
    (args.results_dir / "latest.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
