"""Instructions per client request, counted by valgrind (callgrind): a cost figure that other work on
a shared machine does not disturb, where CPU time and latency do.

    .venv/bin/python bench/instructions.py [--requests N] [--paths /small,/shadowed]

Starts the benchmark's two nginx origins and `strangler run --config bench/strangler.yaml` under
callgrind with counting off; per path, counts only while N GET requests are answered (8 keep-alive
connections, returning visitors' cohort cookies) and the copies they caused are done, and prints
instructions per request. /small is S1's route; /shadowed is the same route with
`shadow: {percent: 10}` (S6). Standard library only; needs valgrind.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import run  # noqa: E402

CONNECTIONS = 8


def send(port: int, path: str, count: int) -> None:
    """`count` GETs over CONNECTIONS keep-alive connections; every answer must be a 200."""
    def one(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in range(count // CONNECTIONS):
            connection.request("GET", path, headers={"Cookie": f"strangler_cohort={number * 1000 + i % 10:032x}"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
        connection.close()
    threads = [threading.Thread(target=one, args=(number,)) for number in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def counted(pid: int, workdir: Path, port: int, path: str, count: int) -> int:
    """Instructions the proxy ran while it answered `count` requests of `path`."""
    before = set(glob.glob(f"{workdir}/callgrind.*"))
    subprocess.run(["callgrind_control", "--zero", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "--instr=on", str(pid)], capture_output=True, check=True)
    send(port, path, count)
    time.sleep(2)                  # copies still in flight finish
    subprocess.run(["callgrind_control", "--instr=off", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        dumps = set(glob.glob(f"{workdir}/callgrind.*")) - before
        for dump in dumps:
            for line in Path(dump).read_text(errors="replace").splitlines():
                if line.startswith("totals:"):       # (its summary: line says 0 after --zero)
                    return int(line.split()[1])
        time.sleep(0.5)
    raise RuntimeError("callgrind wrote no dump")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--paths", default="/small,/shadowed")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("bench/instructions.py needs valgrind", file=sys.stderr)
        return 1
    tools = harness.ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="strangler-instructions-"))
    processes = harness.Processes(workdir)
    try:
        harness.write_origin_files(workdir / "root")
        ports = {name: harness.free_port() for name in ("origin", "shadow-origin", "proxy", "admin")}
        for name in ("origin", "shadow-origin"):
            conf = harness.write_nginx_conf(workdir / name, harness.ORIGIN_SERVER.format(port=ports[name],
                                                                                          root=workdir / "root"))
            harness.make_world_readable(workdir)
            harness.wait_until_serving(processes.start(name, harness.nginx_argv(tools["nginx"], conf), cpus="1"),
                                       ports[name], "/small")
        config = workdir / "strangler.yaml"
        config.write_text(run.config_for_origin(run.CONFIG.read_text(), ports["origin"], ports["shadow-origin"]))
        proxy = processes.start("strangler", [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={workdir}/callgrind.%p",
            sys.executable, "-m", "strangler", "run", "--config", str(config), "--port", str(ports["proxy"]),
            "--admin-port", str(ports["admin"]), "--log-level", "warning"], cpus="0")
        harness.wait_until_serving(proxy, ports["proxy"], "/small", timeout_s=300)
        paths = args.paths.split(",")
        for path in paths:
            send(ports["proxy"], path, 400)      # warm up every path first
        for path in paths:
            total = counted(proxy.process.pid, workdir, ports["proxy"], path, args.requests)
            print(f"{path}: {total // args.requests:,} instructions per request ({args.requests} requests)")
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
