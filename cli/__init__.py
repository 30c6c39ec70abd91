"""The ``oee`` command: one entry point to run, inspect and test the whole system.

Each subcommand is a thin adapter: it reads ``Settings`` from the environment and
hands over to the module that does the work, imported lazily so that, say,
``oee broker`` does not load the web stack.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal

from adapters.credentials import ADMIN, SERVICE_PRINCIPALS
from adapters.logs import configure_logging
from adapters.settings import Settings, get_settings
from cli.client import add_commands as add_client_commands

# Start order of `oee up`; it stops them in reverse, so the gateway stops taking orders first.
# The market service reads the venues; the triggers read the market.
# The sweeper drives on what the engine left behind.
SERVICES = ("venues", "market", "triggers", "engine", "sweeper", "projector", "gateway")
# Who each command is to the broker and the database: a service its own principal, a
# replay the projector (it rebuilds the projector's tables), any other tool the admin.
_PRINCIPALS = SERVICE_PRINCIPALS | {"replay": "projector"}
# Commands that start servers (or tests that do) log into none.
_STARTS_SERVERS = frozenset({"up", "broker", "database", "test"})
# Commands that speak only HTTP to the gateway and the services' operations ports.
_API_ONLY = frozenset({"submit", "cancel", "follow", "watch", "status"})


def _run_service(name: str, settings: Settings) -> int:
    # Each process is a package with a ``main.run(settings)``; imported only when run.
    main = importlib.import_module(f"services.{name}.main")
    main.run(settings)
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from cli.scale import ScaleError, parse_scale
    from cli.supervisor import up

    try:
        scale = parse_scale(args.scale, SERVICES)
    except ScaleError as exc:
        print(f"oee up: {exc}", file=sys.stderr)
        return 2
    return up(settings, scale)


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from cli.foreground import run_broker

    return run_broker(settings)


def _database(args: argparse.Namespace, settings: Settings) -> int:
    from cli.foreground import run_database

    return run_database(settings)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from adapters.kafka import TopicMismatchError, ensure_topics, topic_names

    try:
        asyncio.run(ensure_topics(settings))
    except TopicMismatchError as exc:
        print(f"oee topics: {exc}", file=sys.stderr)
        return 1
    print(f"topics ready on {settings.bootstrap}: {', '.join(topic_names(settings))}")
    if settings.kafka_bootstrap is None:
        # The embedded broker (`oee broker`): its ACLs too. On an external one they are
        # the operator's (README, "Least privilege").
        from adapters.kafka_acls import ensure_acls

        asyncio.run(ensure_acls(settings))
        print("ACLs ready: each service may do its own work alone")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from cli.replay import main as replay_main

    return replay_main(settings, args.projection, check_only=args.check)


def _analytics(args: argparse.Namespace, settings: Settings) -> int:
    from cli.analytics import main as analytics_main

    return analytics_main(settings)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from cli.status import main as status_main

    return status_main(settings, as_json=args.json)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from cli.audit import main as audit_main

    return audit_main(settings, grace_s=args.grace_s, stall_s=args.stall_s, as_json=args.json)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _launch(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from adapters.venues.client import HttpVenue
    from adapters.venues.interface import VenueError

    async def launch() -> int:
        venue = HttpVenue(
            args.venue,
            settings.venues_url,
            settings.venue_timeout_s,
            admin_token=settings.admin_token(),
        )
        try:
            pool = await venue.launch(
                args.symbol, quote=args.quote, price=args.price, liquidity_usd=args.liquidity_usd
            )
        except VenueError as exc:
            print(f"oee launch: {exc.code}: {exc}", file=sys.stderr)
            return 1
        finally:
            await venue.aclose()
        print(pool.model_dump_json(indent=2))
        return 0

    return asyncio.run(launch())


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from cli.keys import run

    return run(settings, args.name, args.account, args.role)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from cli.bench import main as bench_main

    return bench_main(args.scenario, args.bench_args, settings)


def _test(args: argparse.Namespace, settings: Settings) -> int:
    from cli.checks import run_checks

    return run_checks(args.pytest_args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oee",
        description="Event-sourced order execution engine. Configure with OEE_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up",
        help="run everything: broker, database, topics and all services",
        description="Run the embedded broker and database (unless OEE_KAFKA_BOOTSTRAP and "
        "OEE_DATABASE_URL point elsewhere), create the topics, and run and supervise every "
        "service until Ctrl-C.",
    )
    up.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N replicas of SERVICE (repeatable): engine, projector, gateway, "
        "triggers or market; the others run once",
    )
    up.set_defaults(handler=_up)
    commands: dict[str, tuple[str, Callable[[argparse.Namespace, Settings], int]]] = {
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
    add_client_commands(sub)
    status = sub.add_parser(
        "status",
        help="the health of every process of a running system, with consumer lag",
        description="Ask each process for its readiness (broker, database, group joined, "
        "caught up) and print a table; exit 1 unless every one is ready.",
    )
    status.add_argument("--json", action="store_true", help="print every report as JSON")
    status.set_defaults(handler=_status)
    audit = sub.add_parser(
        "audit",
        help="reconcile the log, the read models and the venues' ledger (exit 1 on a problem)",
        description="Read the commands, events and dead-letter topics from their start, the "
        "read models and the venues' ledger, and report every problem: a submission never "
        "accepted, a stalled order, a sequence gap, a read model behind the log, a dead "
        "letter, a swap without a confirmed order. Exit code 0 when there is none, 1 when "
        "there are, 2 when the log or PostgreSQL cannot be read.",
    )
    audit.add_argument("--json", action="store_true", help="print the whole report as JSON")
    audit.add_argument(
        "--grace-s",
        type=_seconds,
        default=30.0,
        help="records younger than this are in flight: nothing is expected of them yet (30)",
    )
    audit.add_argument(
        "--stall-s",
        type=_seconds,
        default=120.0,
        help="a live order whose last event is older than this is stalled (120)",
    )
    audit.set_defaults(handler=_audit)
    launch = sub.add_parser(
        "launch",
        help="list a new token on a venue and open its pool (simulation)",
        description="Ask the running venue service to list SYMBOL and open a pool for it, "
        "then print the pool. Without --price the token is worth a small fraction of a SOL; "
        "without --liquidity-usd the pool holds OEE_LAUNCH_LIQUIDITY_USD.",
    )
    launch.add_argument("symbol", metavar="SYMBOL", help="the new token's symbol, e.g. PEPE")
    launch.add_argument("--venue", default="raydium", help="raydium (default) or meteora")
    launch.add_argument("--quote", default="SOL", help="the token it trades against (SOL)")
    launch.add_argument(
        "--price", type=_decimal, default=None, help="in quote tokens per new token"
    )
    launch.add_argument(
        "--liquidity-usd", type=_decimal, default=None, help="USD value the pool holds"
    )
    launch.set_defaults(handler=_launch)
    keys = sub.add_parser(
        "keys",
        help="make an API key (`oee keys create NAME [--account A] [--role admin]`)",
        description="Make an API key, print it once, and put its record (its sha256, never "
        "the key) on the accounts topic, where every gateway reads it.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="make a key and print it once")
    create.add_argument("name", metavar="NAME", help="what the key is for, e.g. alice-laptop")
    create.add_argument("--account", default=None, help="the account it acts for (default: NAME)")
    create.add_argument("--role", choices=["client", "admin"], default="client")
    create.set_defaults(handler=_keys)
    for name in SERVICES:
        sub.add_parser(name, help=f"run the {name} service in the foreground").set_defaults(
            handler=lambda _args, settings, name=name: _run_service(name, settings)
        )
    bench = sub.add_parser(
        "bench",
        help="run a benchmark: `oee bench orders` (market orders end to end, CPU per "
        "process) or `oee bench triggers` (10,000 armed limit orders, half fired)",
        description="`oee bench orders|triggers [--orders N] [--url GATEWAY]` "
        "(`oee bench orders --help` lists its options): without --url it "
        "starts a private system on free ports and stops it afterwards.",
    )
    bench.add_argument("scenario", choices=["orders", "triggers"])
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)
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
    # A service logs JSON lines (`oee up` shows them readably), a command run by hand
    # text, unless OEE_LOG_FORMAT says otherwise.
    service = args.command in SERVICES
    fmt = os.environ.get("OEE_LOG_FORMAT") or ("json" if service else "text")
    configure_logging(args.command if service else "oee", fmt)
    settings = get_settings()
    if args.command not in _STARTS_SERVERS | _API_ONLY:
        from cli.logins import log_in

        settings = log_in(settings, _PRINCIPALS.get(args.command, ADMIN))
    try:
        code: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 130
    return code
