"""The ``oee`` command: one entry point to run, inspect and test the whole system.

Each subcommand is a thin adapter: it reads ``Settings`` from the environment and
hands over to the module that does the work, imported lazily so that, say,
``oee broker`` does not load the web stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from services.common.settings import Settings, get_settings

# Start order of `oee up`; it stops them in reverse, so the gateway stops taking orders first.
SERVICES = ("venues", "engine", "projector", "gateway")


def _run_service(name: str, settings: Settings) -> int:
    if name == "venues":
        from services.venues.main import run as run_venues

        run_venues(settings)
    elif name == "engine":
        from services.engine.main import run as run_engine

        run_engine(settings)
    elif name == "projector":
        from services.projector.main import run as run_projector

        run_projector(settings)
    elif name == "gateway":
        from services.gateway.main import run as run_gateway

        run_gateway(settings)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown service {name!r}")
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.supervisor import up

    return up(settings)


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.foreground import run_broker

    return run_broker(settings)


def _database(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.foreground import run_database

    return run_database(settings)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from services.common.topics import TopicMismatchError, ensure_topics, topic_names

    try:
        asyncio.run(ensure_topics(settings))
    except TopicMismatchError as exc:
        print(f"oee topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics ready on {settings.bootstrap}: {', '.join(topic_names(settings))}")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from projections.replay import main as replay_main

    return replay_main(settings, args.projection, check_only=args.check)


def _analytics(args: argparse.Namespace, settings: Settings) -> int:
    from projections.analytics.report import main as analytics_main

    return analytics_main(settings)


def _test(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.checks import run_checks

    return run_checks(args.pytest_args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oee",
        description="Event-sourced order execution engine. Configure with OEE_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace, Settings], int]]] = {
        "up": ("run everything: broker, database, topics and all services", _up),
        "broker": ("run the embedded Kafka broker in the foreground", _broker),
        "database": ("run the embedded PostgreSQL in the foreground", _database),
        "topics": ("create the topics (idempotent) and exit", _topics),
        "analytics": ("print execution figures per venue and per pair", _analytics),
    }
    for name, (help_text, handler) in commands.items():
        sub.add_parser(name, help=help_text).set_defaults(handler=handler)
    replay = sub.add_parser(
        "replay",
        help="rebuild a read model from the event log and swap it in (or --check it)",
        description="Rebuild a read model from offset zero into fresh tables while the "
        "system runs, then swap it in; with --check, compare it with the live one instead "
        "(exit code 1 when they differ).",
    )
    replay.add_argument(
        "projection", nargs="?", default="orders", help="orders (default) or analytics"
    )
    replay.add_argument(
        "--check", action="store_true", help="compare with the live read model; change nothing"
    )
    replay.set_defaults(handler=_replay)
    for name in SERVICES:
        sub.add_parser(name, help=f"run the {name} service in the foreground").set_defaults(
            handler=lambda _args, settings, name=name: _run_service(name, settings)
        )
    test = sub.add_parser(
        "test",
        help="run ruff format --check, ruff check, mypy and pytest (what CI runs)",
        description="Extra arguments are passed to pytest, e.g. `oee test -k topics -x`.",
    )
    test.set_defaults(handler=_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the chosen subcommand and return its exit code."""
    parser = _parser()
    # pytest's own options (-k, -x...) are not ours to parse: `oee test` passes them on.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args, get_settings())
    except KeyboardInterrupt:
        return 130
    return code
