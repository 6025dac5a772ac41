"""The benchmark's machinery: tools, the nginx origin, pinned processes, wrk, answers, peak RSS.

Standard library only, so that `bench/run.py` runs with any Python 3.11.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PEERS_DIR = BENCH_DIR / "peers"
PEERS_VENV = BENCH_DIR / ".venv-peers"
PEERS_REQUIREMENTS = PEERS_DIR / "requirements.txt"

SMALL_BYTES = 1024
LARGE_BYTES = 10 * 1024 * 1024
UPLOAD_BYTES = 64 * 1024
# A body any proxy can recognise as unchanged: bytes 0..255 repeated.
UPLOAD_BODY = bytes(range(256)) * (UPLOAD_BYTES // 256)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- tools -------------------------------------------------------------------------------------

def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None)


def ensure_tools(extra: dict[str, str] | None = None) -> dict[str, str]:
    """nginx, wrk, taskset and the `extra` tools (name -> Debian package), installed with apt-get when missing."""
    wanted = {"nginx": "nginx", "wrk": "wrk", "taskset": "util-linux", **(extra or {})}
    missing = [package for tool, package in wanted.items() if find_tool(tool) is None]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    tools = {tool: find_tool(tool) for tool in wanted}
    absent = [tool for tool, path in tools.items() if path is None]
    if absent:
        raise SystemExit(f"bench: cannot find {', '.join(absent)} even after apt-get install")
    return tools  # type: ignore[return-value]


def ensure_peers_venv() -> Path:
    """bench/.venv-peers with the pinned peers (asgiproxy, httpx-aiohttp, uvicorn); its python."""
    python = PEERS_VENV / "bin" / "python"
    wanted = PEERS_REQUIREMENTS.read_bytes()
    stamp = PEERS_VENV / ".requirements"
    if python.exists() and stamp.exists() and stamp.read_bytes() == wanted:
        return python
    log(f"installing the peers into {PEERS_VENV.relative_to(REPO_DIR)}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(PEERS_REQUIREMENTS)], check=True)
    stamp.write_bytes(wanted)
    return python


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def machine_summary() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu_count()} CPUs ({model}), Linux {os.uname().release}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes ---------------------------------------------------------------------------------

@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """Everything the benchmark starts, each in its own session, stopped together at the end."""

    workdir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cpus: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                ["taskset", "-c", cpus, *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=str(cwd or REPO_DIR),
                start_new_session=True,   # Ctrl-C reaches us only; we stop the children in order
            )
        entry = Started(name, process, log_path)
        self.started.append(entry)
        return entry

    def stop(self, entry: Started, timeout_s: float = 10.0) -> None:
        process = entry.process
        if process.poll() is None:
            # Its own session: the group id is its pid, and the group holds only what it started.
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(5)
        else:
            _signal_group(process.pid, signal.SIGKILL)   # leftovers such as nginx workers
        if entry in self.started:
            self.started.remove(entry)

    def stop_all(self) -> None:
        for entry in reversed(list(self.started)):
            try:
                self.stop(entry)
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {entry.name} (pid {entry.pid}): {exc}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until_serving(entry: Started, port: int, path: str = "/", timeout_s: float = 20.0) -> None:
    """Poll until the port answers HTTP; raise with the log's tail when the process dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if entry.process.poll() is not None:
            raise RuntimeError(f"{entry.name} exited with {entry.process.returncode}:\n{entry.log_tail()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{entry.name} did not answer on port {port} within {timeout_s:g}s:\n{entry.log_tail()}")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of a process and its descendants, added up."""
    total = 0
    for each in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return total


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# --- CPU accounting --------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far: the machine's busy and stolen time, and each watched process tree's."""

    busy_s: float
    steal_s: float
    trees_s: tuple[float, ...]
    children_s: float          # this process's waited-for children (wrk)

    @classmethod
    def take(cls, pids: tuple[int, ...]) -> "CpuSnapshot":
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls((user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS,
                   tuple(tree_cpu_s(pid) for pid in pids), usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPUs' worth of work during a measurement (1.0 = one CPU busy the whole time)."""

    trees: tuple[float, ...]    # per watched process tree, in the order given
    load: float                 # wrk
    other: float                # everything else on the machine: other people's work skews the figures
    steal: float                # taken by the hypervisor
    wall_s: float

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot, wall_s: float) -> "CpuUse":
        trees = tuple(max(0.0, b - a) / wall_s for a, b in zip(before.trees_s, after.trees_s))
        load = max(0.0, after.children_s - before.children_s) / wall_s
        busy = (after.busy_s - before.busy_s) / wall_s
        return cls(trees, load, max(0.0, busy - sum(trees) - load), (after.steal_s - before.steal_s) / wall_s,
                   wall_s)


def machine_load(sample_s: float = 1.0) -> float:
    """CPUs' worth of work on the whole machine over `sample_s` (the benchmark's own processes idle)."""
    before = CpuSnapshot.take(())
    time.sleep(sample_s)
    after = CpuSnapshot.take(())
    return (after.busy_s - before.busy_s) / sample_s


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Wait, up to `max_wait_s`, until the rest of the machine uses less than `threshold` of a CPU."""
    deadline = time.monotonic() + max_wait_s
    load = machine_load()
    announced = False
    while load >= threshold and time.monotonic() < deadline:
        if not announced:
            log(f"the machine is busy with other work ({load:.0%} of a CPU); waiting up to {max_wait_s:g}s")
            announced = True
        load = machine_load()
    return load


def tree_cpu_s(pid: int) -> float:
    total = 0
    for each in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])     # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / CLOCK_TICKS


# --- nginx ---------------------------------------------------------------------------------------

_NGINX_COMMON = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
{body}
}}
"""

ORIGIN_SERVER = """\
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location = /small {{ default_type application/json; }}
        location = /shadowed {{ default_type application/json; alias {root}/small; }}   # S5: /small by another name
        location = /large {{ default_type application/octet-stream; }}
        # POST /upload: the mirror module reads the whole body before the content phase, then the
        # static handler's 405 for POST becomes a 200 with the file. So the answer comes only after
        # the body was read (a plain `return 200` answers before reading and discards the body).
        location = /upload {{
            default_type application/json;
            client_max_body_size 1m;
            client_body_buffer_size 128k;
            mirror /_sink;
            mirror_request_body on;
            error_page 405 =200 $uri;
        }}
        location = /_sink {{ internal; return 204; }}
        location / {{ return 404; }}
    }}"""

PROXY_SERVER = """\
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 1m;
        client_body_buffer_size 128k;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # Stream large answers instead of spooling them to temporary files on disk.
            proxy_max_temp_file_size 0;
        }}
    }}"""


def write_origin_files(root: Path) -> None:
    """/small: 1 KiB of JSON; /large: 10 MiB of seeded pseudo-random bytes; /upload: a small JSON answer."""
    root.mkdir(parents=True, exist_ok=True)
    items = []
    n = 0
    while True:
        candidate = '{"items":[' + ",".join(items + [f'{{"id":{n},"sku":"SKU-{n:05d}"}}']) + '],"pad":"'
        if len(candidate) + 2 > SMALL_BYTES:
            break
        items.append(f'{{"id":{n},"sku":"SKU-{n:05d}"}}')
        n += 1
    head = '{"items":[' + ",".join(items) + '],"pad":"'
    small = head + "x" * (SMALL_BYTES - len(head) - 2) + '"}'
    assert len(small) == SMALL_BYTES
    (root / "small").write_text(small)
    large = root / "large"
    if not large.exists() or large.stat().st_size != LARGE_BYTES:
        with large.open("wb") as out:
            block = hashlib.sha256(b"strangler bench").digest()
            written = 0
            while written < LARGE_BYTES:
                chunk = hashlib.shake_256(block + written.to_bytes(8, "big")).digest(1 << 16)
                out.write(chunk)
                written += len(chunk)
    (root / "upload").write_text('{"received":true}\n')


def write_nginx_conf(directory: Path, server_block: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(dir=directory, body=server_block))
    return conf


def nginx_argv(nginx: str, conf: Path) -> list[str]:
    return [nginx, "-c", str(conf), "-p", str(conf.parent), "-e", str(conf.parent / "error.log")]


def make_world_readable(path: Path) -> None:
    # nginx workers run as an unprivileged user when the benchmark runs as root.
    for directory, dirs, files in os.walk(path):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


# --- answers -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Answer:
    """What a contender answered, reduced to what must equal the origin's."""

    status: int
    length: int
    sha256: str

    @classmethod
    def of(cls, status: int, body: bytes) -> "Answer":
        return cls(status, len(body), hashlib.sha256(body).hexdigest())

    def describe(self) -> str:
        return f"{self.status}, {self.length} bytes, sha256 {self.sha256[:12]}"


# The requests every contender must answer exactly as the origin does.
PROBES: tuple[tuple[str, str, bytes | None], ...] = (
    ("GET", "/small", None),
    ("GET", "/large", None),
    ("POST", "/upload", UPLOAD_BODY),
)


def fetch(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout_s: float = 30.0) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer.of(response.status, response.read())
    finally:
        connection.close()


def fetch_probes(port: int, repeat: int = 1) -> dict[str, list[Answer]]:
    """Each probe `repeat` times (a split sends repeats to either side), keyed 'METHOD PATH'."""
    return {f"{method} {path}": [fetch(port, method, path, body) for _ in range(repeat)]
            for method, path, body in PROBES}


def answer_problems(expected: dict[str, Answer], got: dict[str, list[Answer]]) -> list[str]:
    """Every way the contender's answers differ from the origin's; empty when they all match."""
    problems = []
    for probe, want in expected.items():
        answers = got.get(probe)
        if not answers:
            problems.append(f"{probe}: no answer")
            continue
        for answer in answers:
            if answer != want:
                problems.append(f"{probe}: got {answer.describe()}, origin sent {want.describe()}")
                break
    return problems


# --- wrk -----------------------------------------------------------------------------------------

REPORT_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d connect_errors=%d read_errors=%d write_errors=%d " ..
    "status_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def get_script(cohort_ids: int = 100) -> str:
    """GET with returning visitors: most requests carry one of a fixed set of cohort cookies.

    Every tenth request carries none, as a first visit would. The requests are formatted once, in
    init(), so wrk spends no more per request than with a static one.
    """
    ids = [hashlib.sha256(f"cohort-{n}".encode()).hexdigest()[:32] for n in range(cohort_ids)]
    lines = ["local requests = {}", "local n = 0", "local ids = {" + ",".join(f'"{i}"' for i in ids) + "}",
             "function init(args)",
             "  for k, id in ipairs(ids) do",
             "    local headers = {}",
             "    if k % 10 ~= 0 then headers[\"Cookie\"] = \"strangler_cohort=\" .. id end",
             "    requests[k] = wrk.format(\"GET\", wrk.path, headers)",
             "  end",
             "end",
             "function request()",
             "  n = n % #requests + 1",
             "  return requests[n]",
             "end"]
    return "\n".join(lines) + REPORT_LUA


def post_script() -> str:
    """POST a 64 KiB body (bytes 0..255 repeated, as in the correctness probe)."""
    return ('wrk.method = "POST"\n'
            'local parts = {}\n'
            'for i = 0, 255 do parts[#parts + 1] = string.char(i) end\n'
            f'wrk.body = string.rep(table.concat(parts), {UPLOAD_BYTES // 256})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n') + REPORT_LUA


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu: CpuUse | None = None

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def proxy_cpu_us_per_request(self) -> float | None:
        """The proxy's CPU time per answered request: robust to other work on the machine."""
        if self.cpu is None or len(self.cpu.trees) < 2 or not self.requests:
            return None
        return self.cpu.trees[1] * self.cpu.wall_s / self.requests * 1e6

    @property
    def mib_per_s(self) -> float:
        return self.bytes / self.duration_s / (1024 * 1024) if self.duration_s else 0.0


def parse_wrk(output: str) -> WrkResult:
    """The BENCH line that the Lua done() prints."""
    for line in output.splitlines():
        if line.startswith("BENCH "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            numbers = {key: int(value) for key, value in fields.items()}
            errors = sum(numbers[key] for key in ("connect_errors", "read_errors", "write_errors",
                                                  "status_errors", "timeouts"))
            return WrkResult(
                requests=numbers["requests"], duration_s=numbers["duration_us"] / 1e6, bytes=numbers["bytes"],
                errors=errors, p50_ms=numbers["p50_us"] / 1000, p90_ms=numbers["p90_us"] / 1000,
                p99_ms=numbers["p99_us"] / 1000, max_ms=numbers["max_us"] / 1000,
            )
    raise ValueError(f"no BENCH line in wrk's output:\n{output[-2000:]}")


def run_wrk(wrk: str, script: Path, url: str, *, connections: int, duration_s: float, cpus: str,
            watch: tuple[int, ...] = ()) -> WrkResult:
    """One wrk run; with `watch`, the result also says how busy those process trees and the machine were."""
    argv = ["taskset", "-c", cpus, wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
            "--timeout", "10s", "-s", str(script), url]
    before, started = CpuSnapshot.take(watch), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60,
                          start_new_session=True)
    after, wall_s = CpuSnapshot.take(watch), time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return dataclasses.replace(parse_wrk(done.stdout), cpu=CpuUse.between(before, after, wall_s))


# --- tables ---------------------------------------------------------------------------------------

def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"
