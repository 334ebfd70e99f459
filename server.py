"""The `modelsched` command line: run the daemon, or talk to a running one.

    modelsched serve [--preset dev|prod] [--config FILE] [--host H] [--port P]
    modelsched submit MODEL --inputs JSON [--wait] [--url URL]
    modelsched status | jobs
    modelsched journal check [PATH] | journal backup PATH [--journal FILE]

The daemon itself is `scheduler.http` (the app, and the server that drains on SIGTERM). `submit`,
`status` and `jobs` talk to it with the Python client (`scheduler.client`): a daemon that cannot be
reached gives one line on stderr and exit code 1. The journal commands work on the file itself
(`scheduler.journal.files`): a backup of a running daemon's journal is consistent, and the daemon goes
on meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from scheduler import errors
from scheduler.client import ApiError, Client, DaemonUnavailable
from scheduler.settings import load_settings

EXIT_DAMAGED = 1  # `journal check` and `journal backup`: the journal is damaged
EXIT_JOURNAL = 3  # `serve`: the journal is damaged or cannot be read; the daemon did not start


def _client_url(args: argparse.Namespace) -> str:
    return (
        args.url
        or os.environ.get("MODELSCHED_URL")
        or "http://127.0.0.1:" + os.environ.get("MODELSCHED_PORT", "8000")
    )


def _client(args: argparse.Namespace) -> Client:
    return Client(_client_url(args), args.token or os.environ.get("MODELSCHED_TOKEN"))


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cli_submit(args: argparse.Namespace) -> int:
    try:
        inputs = json.loads(args.inputs)
    except json.JSONDecodeError as exc:
        print(f"modelsched: --inputs is not valid JSON: {exc}", file=sys.stderr)
        return 2
    with _client(args) as client:
        job = client.submit(args.model, inputs, priority=args.priority)
        if not args.wait:
            _print({"job_id": job.id, "status": job.status()})
            return 0
        view = job.wait()
        while view["status"] not in {"completed", "error", "cancelled"}:
            view = job.wait()
        _print(view)
        return 0 if view["status"] == "completed" else 1


def cli_get(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            _print(client.status() if command == "status" else {"jobs": client.list_jobs()})
        return 0

    return run


def cli_journal(args: argparse.Namespace) -> int:
    from scheduler.journal import files

    try:
        configured = args.journal or load_settings(args.preset, config_file=args.config).journal_path
    except errors.ConfigError as exc:
        print(f"modelsched: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "check":
            path = args.path or configured
            if not os.path.exists(path):
                print(f"modelsched: no journal at {path}", file=sys.stderr)
                return 2
            problem = files.check(path)
            if problem is not None:
                print(f"modelsched: {files.damaged_error(path, problem)}", file=sys.stderr)
                return EXIT_DAMAGED
            summary = files.summary_of(path)
            print(
                f"{path}: ok ({summary.jobs} jobs, {summary.unfinished} unfinished, "
                f"{summary.size_bytes / 2**20:.1f} MiB)"
            )
            return 0
        began = time.monotonic()
        summary = files.backup(configured, args.path)
        print(
            f"{configured} backed up to {args.path}: {summary.jobs} jobs ({summary.unfinished} unfinished), "
            f"{summary.size_bytes / 2**20:.1f} MiB in {time.monotonic() - began:.2f} s"
        )
        return 0
    except errors.JournalDamagedError as exc:
        print(f"modelsched: {exc}", file=sys.stderr)
        return EXIT_DAMAGED
    except (errors.JournalError, OSError) as exc:  # missing, no access, no room: one line
        print(f"modelsched: {exc}", file=sys.stderr)
        return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modelsched", description="Schedule model-inference jobs onto GPUs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the daemon")
    serve_parser.add_argument(
        "--preset", default=os.environ.get("MODELSCHED_PRESET", "dev"), choices=["dev", "prod"]
    )
    serve_parser.add_argument(
        "--config",
        default=os.environ.get("MODELSCHED_CONFIG"),
        help="a TOML file whose keys override the preset's (default $MODELSCHED_CONFIG)",
    )
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument(
        "--cluster",
        help="join the cluster on this Redis (redis://… or unix://…; default $MODELSCHED_CLUSTER_URL)",
    )
    journal_parser = commands.add_parser("journal", help="check or back up the journal file")
    journal_actions = journal_parser.add_subparsers(dest="action", required=True)
    check_parser = journal_actions.add_parser("check", help="SQLite's quick_check of a journal, read-only")
    check_parser.add_argument("path", nargs="?", help="the journal (default: the configured one)")
    backup_parser = journal_actions.add_parser(
        "backup", help="a consistent copy of the journal, a running daemon's too (SQLite online backup)"
    )
    backup_parser.add_argument("path", help="the copy to make; it must not exist")
    for sub in (check_parser, backup_parser):
        sub.add_argument(
            "--preset", default=os.environ.get("MODELSCHED_PRESET", "dev"), choices=["dev", "prod"]
        )
        sub.add_argument("--config", default=os.environ.get("MODELSCHED_CONFIG"))
        sub.add_argument("--journal", help="the journal file (default: journal_path of the settings)")
    for name, help_text in (
        ("submit", "submit a job"),
        ("status", "the system status"),
        ("jobs", "recent jobs"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--url", help="the daemon's address (default $MODELSCHED_URL or http://127.0.0.1:8000)"
        )
        sub.add_argument("--token", help="bearer token (default $MODELSCHED_TOKEN)")
        if name == "submit":
            sub.add_argument("model")
            sub.add_argument("--inputs", required=True, help="the job's inputs as JSON")
            sub.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
            sub.add_argument("--wait", action="store_true", help="wait for the job to end and print it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        overrides = {
            key: value
            for key, value in (("host", args.host), ("port", args.port), ("cluster_url", args.cluster))
            if value is not None
        }
        try:
            settings = load_settings(args.preset, config_file=args.config, overrides=overrides)
        except errors.ConfigError as exc:
            print(f"modelsched: configuration error: {exc}", file=sys.stderr)
            return 2
        from scheduler.http.server import serve  # the web stack, only for the daemon

        try:
            return serve(settings)
        except errors.ConfigError as exc:  # a model's adapter cannot be built, a bad device setting
            print(f"modelsched: configuration error: {exc}", file=sys.stderr)
            return 2
        except errors.JournalError as exc:  # damaged, or unreadable: one line, and the file as it was
            print(f"modelsched: {exc}", file=sys.stderr)
            return EXIT_JOURNAL
    if args.command == "journal":
        return cli_journal(args)
    try:
        return cli_submit(args) if args.command == "submit" else cli_get(args.command)(args)
    except DaemonUnavailable as exc:  # one line, not a traceback
        print(f"modelsched: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        _print({"error": exc.error, "detail": exc.detail, "field": exc.field})
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
