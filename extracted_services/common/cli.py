"""The command line every service shares: migrate, import-from-legacy, runserver."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from domain_events.log import log_to_stderr
from domain_events.wiring import PEERS_ENV, PUBLISH_TO_ENV, Wiring, parse_pairs
from extracted_services.common import db
from extracted_services.common.app import build_app, data_dir, database_for
from extracted_services.common.legacy import LEGACY_DATABASE_NAME, ImportRefused, import_from_legacy
from extracted_services.common.service import Service


def _parser(service: Service) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m extracted_services.{service.name}")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or update this service's database")
    copy = commands.add_parser("import-from-legacy", help="copy this service's data out of the monolith's database")
    copy.add_argument("--legacy-db", type=Path, help=f"the monolith's database (default: DATA_DIR/{LEGACY_DATABASE_NAME})")
    copy.add_argument("--replace", action="store_true", help="empty this service's tables and copy again")
    serve = commands.add_parser("runserver", help="serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=service.default_port)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--publish-to", action="append", default=[], metavar="NAME=URL",
                       help=f"a subscriber for this service's events, repeatable (default: ${PUBLISH_TO_ENV})")
    serve.add_argument("--peer", action="append", default=[], metavar="NAME=URL",
                       help=f"a service this one calls, e.g. inventory=http://127.0.0.1:8102 (default: ${PEERS_ENV})")
    for command in (migrate, copy, serve):
        command.add_argument("--data-dir", help="where the databases live (default: $STRANGLER_DATA_DIR or var/)")
    return parser


def main(service: Service, argv: list[str] | None = None) -> int:
    args = _parser(service).parse_args(argv)
    directory = data_dir(args.data_dir)
    database = database_for(service, directory)
    if args.command == "migrate":
        applied = db.migrate(database, service.migrations)
        print(f"{service.name}: applied {len(applied)} migration(s) to {database.path}")
        return 0
    if args.command == "import-from-legacy":
        if db.unapplied_migrations(database, service.migrations):
            print(f"{service.name}: {database.path} is not migrated; run `migrate` first", file=sys.stderr)
            return 1
        try:
            rows = import_from_legacy(service, database, args.legacy_db or directory / LEGACY_DATABASE_NAME,
                                      replace=args.replace)
        except ImportRefused as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{service.name}: imported " + ", ".join(f"{n} {table}" for table, n in rows.items()))
        return 0
    import uvicorn  # only the serving command needs it

    try:
        wiring = Wiring.from_env()
        if args.publish_to:
            wiring = wiring.with_(publish_to=parse_pairs(args.publish_to, what="--publish-to"))
        if args.peer:
            wiring = wiring.with_(peers=parse_pairs(args.peer, what="--peer"))
    except ValueError as exc:
        print(f"{service.name}: {exc}", file=sys.stderr)
        return 2
    log_to_stderr(args.log_level)
    uvicorn.run(build_app(service, directory, wiring=wiring), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0
