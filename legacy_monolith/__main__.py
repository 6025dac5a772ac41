"""manage.py for the legacy shop: `python -m legacy_monolith migrate|seed|runserver --port P`."""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m legacy_monolith", description="The legacy shop monolith.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [("migrate", "create or update the database schema"),
                       ("seed", "replace all data with the demo data set"),
                       ("runserver", "serve the shop with uvicorn")]:
        command = commands.add_parser(name, help=text)
        command.add_argument("--data-dir", help="where legacy.sqlite3 lives (default: $STRANGLER_DATA_DIR or var/)")
        if name == "runserver":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=8001)
            command.add_argument("--log-level", default="info")
            command.add_argument("--publish-to", action="append", default=[], metavar="NAME=URL",
                                 help="a service that gets the shop's events, repeatable "
                                      "(default: $STRANGLER_PUBLISH_TO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.data_dir:
        # Before importing settings users, so every module sees the same data dir.
        os.environ["STRANGLER_DATA_DIR"] = os.path.abspath(args.data_dir)
    from legacy_monolith import db

    database = db.default_database()
    if args.command == "migrate":
        applied = db.migrate(database)
        print(f"Applied {len(applied)} migration(s) to {database.path}" + "".join(f"\n  {m}" for m in applied))
    elif args.command == "seed":
        from legacy_monolith.seed import seed

        if db.unapplied_migrations(database):
            print(f"{database.path}: unapplied migrations; run `python -m legacy_monolith migrate` first",
                  file=sys.stderr)
            return 1
        counts = seed(database)
        print(f"Seeded {database.path}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    elif args.command == "runserver":
        import uvicorn

        from domain_events.log import log_to_stderr
        from domain_events.wiring import Wiring, parse_pairs
        from legacy_monolith.asgi import build_app

        try:
            wiring = Wiring.from_env()
            if args.publish_to:
                wiring = wiring.with_(publish_to=parse_pairs(args.publish_to, what="--publish-to"))
        except ValueError as exc:
            print(f"legacy_monolith: {exc}", file=sys.stderr)
            return 2
        log_to_stderr(args.log_level)
        uvicorn.run(build_app(wiring=wiring), host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
