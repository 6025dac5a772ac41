"""The command line: run, control, check, explain, rollback-all, demo."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config.loader import ConfigError, load_config
from .config.model import Config
from .logs import configure_logging

DEFAULT_CONFIG = "config/routes.yaml"
LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def _duration(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        from .config.values import seconds_in
        seconds = seconds_in(text)
    if seconds is None or not 0 <= seconds < 86400:
        raise argparse.ArgumentTypeError(f"expected a duration such as 5s, 500ms or 1m, found {text!r}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "control":
        return _control(args)
    if args.command == "check":
        return _check(args.path)
    if args.command == "explain":
        from .explain import explain_request
        return explain_request(args.path, args.method, args.url, args.header, client_ip=args.client_ip)
    if args.command == "rollback-all":
        if not args.reason.strip() and not args.lift:
            parser.error("rollback-all needs --reason TEXT: say why, for the log and whoever lifts it")
        from .operate import rollback_all
        return rollback_all(args.admin, args.config, args.reason, lift=args.lift)
    # The one edge from the proxy up to the playground: `strangler demo` is the command users
    # know, and only this command loads the playground, which knows the bundled shop.
    from playground.demo import run_demo
    return run_demo(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strangler", description="A strangler-fig migration proxy.")
    parser.add_argument("--version", action="version", version=f"strangler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the proxy")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--admin-host")
    run.add_argument("--admin-port", type=int)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    run.add_argument("--control", metavar="URL",
                     help="take the ramps' shares and roll back all from this controller (`strangler control`) "
                          "instead of running the ramps here")
    run.add_argument("--state-dir", metavar="DIR", help="where state is kept, in place of the config's state_dir")
    run.add_argument("--shutdown-delay", type=_duration, default=0.0, metavar="DURATION",
                     help="on SIGTERM, answer 503 on /health/ready this long while still serving, so that a "
                          "balancer stops sending first; then stop accepting and drain (default 0s)")
    run.add_argument("--drain-timeout", type=_duration, default=30.0, metavar="DURATION",
                     help="the longest wait for requests in flight once accepting stopped (default 30s)")

    control = commands.add_parser("control", help="run the control plane alone, for many proxy instances")
    control.add_argument("--config", default=DEFAULT_CONFIG)
    control.add_argument("--prometheus", metavar="URL",
                         help="read the ramps' gates from this Prometheus, which scrapes every instance")
    control.add_argument("--scrape-interval", type=_duration, default=15.0, metavar="DURATION",
                         help="Prometheus's scrape interval: a gate's range is at least 4 of them (default 15s)")
    control.add_argument("--admin-host")
    control.add_argument("--admin-port", type=int)
    control.add_argument("--state-dir", metavar="DIR", help="where state is kept, in place of the config's state_dir")
    control.add_argument("--log-level", default="info", choices=LOG_LEVELS)

    check = commands.add_parser("check", help="validate a config and print the routing table")
    check.add_argument("path")

    explain = commands.add_parser("explain", help="say which route and upstream would take a request, and why")
    explain.add_argument("path")
    explain.add_argument("method")
    explain.add_argument("url")
    explain.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    explain.add_argument("--client-ip", metavar="IP", help="the address the request comes from (for sticky: client-ip)")

    rollback = commands.add_parser("rollback-all", help="send every route back to legacy now, and freeze every ramp")
    rollback.add_argument("--admin", metavar="URL", help="the proxy's admin listener (default: as the config says)")
    rollback.add_argument("--config", default=DEFAULT_CONFIG, help="where to read the admin address and token")
    rollback.add_argument("--reason", default="", help="why, for the log and the state (required unless --lift)")
    rollback.add_argument("--lift", action="store_true", help="lift roll back all instead")

    demo = commands.add_parser("demo", help="run the bundled monolith, services and proxy together")
    demo.add_argument("--config", default=DEFAULT_CONFIG)
    return parser


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: invalid, {len(error.problems)} problem(s)", file=sys.stderr)
        return None


def _check(path: str) -> int:
    config = _load_or_report(path)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: valid, version {config.sha256}")
    print(routing_table(config))
    for route in config.routes:
        if route.ramp is not None:
            ramp = route.ramp
            steps = " -> ".join(f"{step:g}%" for step in ramp.steps)
            print(f"ramp {route.name}: {ramp.to} {steps}, every {ramp.every_s:g}s, on breach {ramp.on_breach}")
    return 0


def routing_table(config: Config) -> str:
    shadows = any(route.shadow is not None for route in config.routes)
    rows = [("ROUTE", "MATCH", "SPLIT", "FALLBACK", "STICKY") + (("SHADOW",) if shadows else ())]
    for route in config.routes:
        match = route.match
        parts = [",".join(sorted(match.methods)) if match.methods else "*", match.path]
        if match.host:
            parts.append(f"host={match.host}")
        parts.extend(f"{name}={value}" for name, value in match.headers)
        split = ", ".join(f"{name} {percent:g}%" for name, percent in route.split) or "compose: " + ", ".join(
            f"{part.name}={part.upstream}" + (" (required)" if part.required else "") for part in route.compose)
        row = (route.name, " ".join(parts), split, route.fallback or "-",
               "-" if route.compose else route.sticky.describe())
        if shadows:
            copy = route.shadow
            row += (f"{copy.upstream} {copy.percent:g}% of {','.join(sorted(copy.methods))}" if copy else "-",)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = _load_or_report(args.config)
    if config is None:
        return 1
    if args.workers > 1:
        _prepare_multiprocess_metrics()
    from .server import ServeOptions, run_forever

    options = ServeOptions(
        config_path=args.config,
        host=args.host or config.listen.host,
        port=args.port if args.port is not None else config.listen.port,
        admin_host=args.admin_host or config.admin.host,
        admin_port=args.admin_port if args.admin_port is not None else config.admin.port,
        log_level=args.log_level,
        tls=config.listen.tls,
        admin_tls=config.admin.tls,
        graceful_timeout_s=args.drain_timeout,
        control_url=args.control,
        shutdown_delay_s=args.shutdown_delay,
        state_dir=args.state_dir,
    )
    if (options.host, options.port) == (options.admin_host, options.admin_port):
        print("strangler: the admin listener must not share the public one", file=sys.stderr)
        return 1
    if not _admin_bind_allowed(options.admin_host, args.admin_host is not None, config):
        return 1
    if args.control and not args.control.startswith(("http://", "https://")):
        print(f"strangler: --control expects the controller's admin URL, such as http://10.0.0.5:9000, "
              f"found {args.control!r}", file=sys.stderr)
        return 1
    if args.workers > 1:
        from .workers import run_workers
        return run_workers(options, args.workers)
    from .metrics import Metrics
    from .reload import ConfigHolder

    holder = ConfigHolder(args.config, Metrics(), state_dir=args.state_dir)
    holder.reload()
    run_forever(options, holder)
    return 0


def _admin_bind_allowed(host: str, explicit: bool, config: Config) -> bool:
    from .admin_guard import admin_token, bind_refusal

    refusal = bind_refusal(host, explicit=explicit, token=admin_token(config))
    if refusal is not None:
        print(f"strangler: {refusal}", file=sys.stderr)
    return refusal is None


def _control(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = _load_or_report(args.config)
    if config is None:
        return 1
    admin_host = args.admin_host or config.admin.host
    if not _admin_bind_allowed(admin_host, args.admin_host is not None, config):
        return 1
    if args.prometheus and not args.prometheus.startswith(("http://", "https://")):
        print(f"strangler: --prometheus expects a URL such as http://127.0.0.1:9090, found {args.prometheus!r}",
              file=sys.stderr)
        return 1
    if args.scrape_interval <= 0:
        print("strangler: --scrape-interval must be more than 0", file=sys.stderr)
        return 1
    from .control_server import ControlOptions, run_control
    from .metrics import Metrics
    from .reload import ConfigHolder

    options = ControlOptions(config_path=args.config, admin_host=admin_host,
                             admin_port=args.admin_port if args.admin_port is not None else config.admin.port,
                             prometheus_url=args.prometheus, scrape_interval_s=args.scrape_interval,
                             log_level=args.log_level)
    holder = ConfigHolder(args.config, Metrics(), state_dir=args.state_dir)
    holder.reload()
    run_control(options, holder)
    return 0


def _prepare_multiprocess_metrics() -> None:
    # Must happen before prometheus_client is imported, so that parent and workers share the directory.
    import os
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="strangler-metrics-")
