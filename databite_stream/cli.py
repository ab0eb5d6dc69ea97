"""The ``databite-stream`` command line.

Owns argument parsing and exit codes only: every command delegates to a module that does the
work. Exit codes: 0 ok, 1 the command ran and found a problem, 2 a usage or environment error
(with a one-line message saying what to do).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from databite_stream import __version__, devkafka

__all__ = ("build_parser", "main")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="databite-stream",
        description=(
            "Keep third-party data in sync: scheduled syncs and on-demand actions for many "
            "connections, run by faust workers on Apache Kafka."
        ),
    )
    parser.add_argument("--version", action="version", version=f"databite-stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kafka = sub.add_parser(
        "kafka",
        help="run a local Apache Kafka for development (start|stop|status|fetch)",
        description="Run a local Apache Kafka (KRaft) from Maven Central jars, on 127.0.0.1.",
    )
    devkafka.build_parser(kafka)
    kafka.set_defaults(runner=devkafka.run_cli)

    worker = sub.add_parser(
        "worker",
        help="run a worker (settings from DATABITE_* environment variables)",
        description=(
            "Run one databite-stream worker: creates/checks the topics, then consumes "
            "connections, commands and action requests, schedules and runs syncs. Settings "
            "come from DATABITE_* environment variables (DATABITE_BROKER, DATABITE_APP_ID, "
            "DATABITE_PARTITIONS, DATABITE_STORE, DATABITE_WEB_PORT, ...)."
        ),
    )
    worker.set_defaults(runner=_run_worker)

    from databite_stream import demo, tools

    tools.add_parsers(sub)
    tools.add_client_parsers(sub)

    demo_parser = sub.add_parser(
        "demo", help="run the whole engine locally with live results (Ctrl-C to stop)"
    )
    demo.build_parser(demo_parser)
    demo_parser.set_defaults(runner=demo.run)
    return parser


def _run_worker(_: argparse.Namespace) -> int:
    from databite_stream.settings import Settings, SettingsError
    from databite_stream.stream.worker import WorkerStartError, make_worker

    try:
        settings = Settings.from_env()
        _app, worker = make_worker(settings)
    except (SettingsError, WorkerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worker.execute_from_commandline()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.runner(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
