"""Which HTTP client should forward? The same minimal raw-ASGI proxy with each candidate client.

    .venv/bin/python bench/client_choice.py [--duration 10] [--warmup 2] [--rounds 1] [--quick]

Each variant runs under uvicorn (httptools, uvloop, one worker) pinned to CPU 0 and forwards
GET /small to the nginx origin; the origin and wrk share CPU 1. Writes
bench/results/client-choice.md and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Processes, fmt, log, markdown_table, ratio  # noqa: E402

CLIENTS = (
    ("httpx-defaults", "httpx.AsyncClient, default transport, default pool (100 connections, 20 kept alive)"),
    ("httpx", "httpx.AsyncClient, default transport, pool without limits"),
    ("httpx-aiohttp", "httpx.AsyncClient with httpx-aiohttp's AiohttpTransport"),
    ("aiohttp", "aiohttp.ClientSession directly"),
)
SCENARIOS = (("S1", 64), ("S2", 8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each measurement; the median is kept")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each measurement, wait up to this many seconds for other work to stop")
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 1 s warm-up")
    parser.add_argument("--proxy-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR / "client-choice.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0

    tools = harness.ensure_tools()
    peers_python = harness.ensure_peers_venv()
    uvicorn = str(peers_python.parent / "uvicorn")
    workdir = Path(tempfile.mkdtemp(prefix="strangler-client-choice-"))
    processes = Processes(workdir)
    results: dict[tuple[str, str], harness.WrkResult | str] = {}
    try:
        harness.write_origin_files(workdir / "root")
        origin_port = harness.free_port()
        conf = harness.write_nginx_conf(workdir / "origin",
                                        harness.ORIGIN_SERVER.format(port=origin_port, root=workdir / "root"))
        harness.make_world_readable(workdir)
        origin = processes.start("origin", harness.nginx_argv(tools["nginx"], conf), cpus=args.load_cpus)
        harness.wait_until_serving(origin, origin_port, "/small")
        expected = harness.fetch(origin_port, "GET", "/small")
        script = workdir / "get.lua"
        script.write_text(harness.get_script())

        ports: dict[str, tuple[int, harness.Started]] = {}
        for client, _ in CLIENTS:
            port = harness.free_port()
            proxy = processes.start(
                f"proxy-{client}",
                [uvicorn, "client_choice_app:app", "--app-dir", str(harness.PEERS_DIR), "--host", "127.0.0.1",
                 "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1",
                 "--no-access-log", "--log-level", "warning", "--lifespan", "on"],
                cpus=args.proxy_cpus,
                env={"BENCH_ORIGIN": f"http://127.0.0.1:{origin_port}", "BENCH_CLIENT": client},
            )
            try:
                harness.wait_until_serving(proxy, port, "/small")
                answers = [harness.fetch(port, "GET", "/small") for _ in range(3)]
                wrong = [a for a in answers if a != expected]
                if wrong:
                    raise RuntimeError(f"answered {wrong[0].describe()}, origin sent {expected.describe()}")
                ports[client] = (port, proxy)
            except Exception as exc:
                log(f"{client}: failed: {exc}")
                processes.stop(proxy)
                for scenario, _ in SCENARIOS:
                    results[(client, scenario)] = f"failed: {str(exc).splitlines()[0]}"

        # Scenario by scenario, client after client, round after round: drift hits all alike.
        rounds: dict[tuple[str, str], list[harness.WrkResult]] = {}
        for scenario, connections in SCENARIOS:
            for _ in range(args.rounds):
                for client, (port, proxy) in ports.items():
                    url = f"http://127.0.0.1:{port}/small"
                    log(f"{client}: {scenario} GET /small at {connections} connections")
                    try:
                        if args.quiet_wait > 0:
                            harness.wait_for_quiet(args.quiet_wait)
                        harness.run_wrk(tools["wrk"], script, url, connections=connections,
                                        duration_s=args.warmup, cpus=args.load_cpus)
                        rounds.setdefault((client, scenario), []).append(harness.run_wrk(
                            tools["wrk"], script, url, connections=connections, duration_s=args.duration,
                            cpus=args.load_cpus, watch=(origin.pid, proxy.pid)))
                    except Exception as exc:
                        log(f"{client}: {scenario} failed: {exc}")
                        results[(client, scenario)] = f"failed: {str(exc).splitlines()[0]}"
        for key, measured in rounds.items():
            if key not in results:
                ordered = sorted(measured, key=lambda r: r.requests_per_s)
                results[key] = ordered[(len(ordered) - 1) // 2]
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(results, args, tools)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    return 0


def render(results: dict, args: argparse.Namespace, tools: dict[str, str]) -> str:
    def rps(client: str, scenario: str) -> float | None:
        result = results.get((client, scenario))
        return result.requests_per_s if isinstance(result, harness.WrkResult) else None

    def cost(client: str, scenario: str) -> float | None:
        result = results.get((client, scenario))
        return result.proxy_cpu_us_per_request if isinstance(result, harness.WrkResult) else None

    lines = [
        "# Forwarding client choice",
        "",
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {harness.machine_summary()}.",
        f"Reproduce: `.venv/bin/python bench/client_choice.py{f' --rounds {args.rounds}' if args.rounds > 1 else ''}` ({args.duration:g} s per measurement after "
        f"{args.warmup:g} s of warm-up, {args.rounds} round(s) interleaved, the median kept).",
        "",
        "The same minimal raw-ASGI proxy (uvicorn, httptools, uvloop, one worker, pinned to CPU "
        f"{args.proxy_cpus}) forwards GET /small (1 KiB JSON) to an nginx origin and streams the body back; "
        f"origin and wrk share CPU {args.load_cpus}. Only the forwarding client changes. This machine is noisy: "
        "read the ratios, not the absolute figures.",
        "",
    ]
    for scenario, connections in SCENARIOS:
        lines += [f"## {scenario}: GET /small, {connections} connections", ""]
        rows = []
        for client, description in CLIENTS:
            result = results.get((client, scenario))
            if isinstance(result, harness.WrkResult):
                rows.append([client, fmt(result.requests_per_s), fmt(result.p50_ms, 2), fmt(result.p99_ms, 2),
                             str(result.errors), ratio(result.requests_per_s, rps("aiohttp", scenario)),
                             f"{result.cpu.trees[1]:.0%}", fmt(result.proxy_cpu_us_per_request),
                             ratio(result.proxy_cpu_us_per_request, cost("aiohttp", scenario)),
                             f"{result.cpu.other:.0%}"])
            else:
                rows.append([client, str(result or "not run")] + ["-"] * 8)
        lines += [markdown_table(["client", "req/s", "p50 ms", "p99 ms", "errors", "req/s vs aiohttp", "proxy CPU",
                                  "CPU µs/req", "CPU/req vs aiohttp", "other load"], rows), ""]
    lines += ["`proxy CPU`: the proxy's CPU time over the measurement (100% = one CPU). `other load`: CPU used "
              "meanwhile by everything else on the machine (not the origin, the proxy or wrk). `CPU µs/req`: the "
              "proxy's CPU time per answered request, which other work disturbs far less than req/s.", "", "Clients:", ""]
    lines += [f"- `{client}`: {description}" for client, description in CLIENTS]
    lines += ["", f"Tools: {harness.tool_version([tools['nginx'], '-v'])}; "
              f"{harness.tool_version([tools['wrk'], '-v'])}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
