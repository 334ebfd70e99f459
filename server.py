"""The `modelsched` command: run the daemon, or talk to a running one.

    modelsched serve [--preset dev|prod] [--config FILE] [--host H] [--port P]
    modelsched submit MODEL --inputs JSON|@FILE|- [--wait] [--timeout S] [--idempotency-key K]
    modelsched get JOB | cancel JOB | jobs | models | load MODEL | unload MODEL | status [--json]
    modelsched config [--check] | journal check [PATH] | journal backup PATH

The grammar and the commands are `scheduler.cli`; this module parses, runs `serve` (the only
command that imports the web stack: `scheduler.http.server`) and hands the rest over.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from scheduler import errors
from scheduler.cli.local import cli_config, cli_journal
from scheduler.cli.parser import SERVE_SETTINGS, build_parser
from scheduler.cli.remote import run_remote
from scheduler.settings import load_settings

EXIT_BAD_CONFIG = 2  # `serve`: the configuration is wrong; the daemon did not start
EXIT_JOURNAL = 3  # `serve`: the journal is damaged or cannot be read; the daemon did not start


def serve(args: argparse.Namespace) -> int:
    overrides = {key: getattr(args, key) for key in SERVE_SETTINGS if getattr(args, key) is not None}
    try:
        settings = load_settings(args.preset, config_file=args.config, overrides=overrides)
    except errors.ConfigError as exc:
        print(f"modelsched: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    from scheduler.http.server import serve as serve_http  # the web stack, only for the daemon

    try:
        return serve_http(settings)
    except errors.ConfigError as exc:  # a model's adapter cannot be built, a bad device setting
        print(f"modelsched: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except errors.JournalError as exc:  # damaged, or unreadable: one line, and the file as it was
        print(f"modelsched: {exc}", file=sys.stderr)
        return EXIT_JOURNAL


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "config":
        return cli_config(args)
    if args.command == "journal":
        return cli_journal(args)
    return run_remote(args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
