"""The commands that talk to a running daemon, through the Python client (`scheduler.client`):
submit, get, cancel, jobs, models, load, unload, status. Each returns its exit status; what goes wrong
(no daemon, a refused token, an unknown job or model, a refused request) is one line on stderr,
never a traceback.

Exit statuses: 0 done (a submitted job completed, with --wait); 1 the daemon could not be reached or
refused the request, or the job ended in error or was cancelled; 2 the command line was wrong (bad
--inputs); 124 `submit --timeout` passed before the job ended (it goes on; its view is printed);
130 interrupted (Ctrl-C) while waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

from scheduler.cli.tables import jobs_table, models_table, status_text
from scheduler.client import ApiError, Client, ClientError, DaemonUnavailable

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WAIT_TIMEOUT = 124  # as timeout(1): the wait ended first; the job goes on
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
ENDED = ("completed", "error", "cancelled")


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit 2)."""


def daemon_url(args: argparse.Namespace) -> str:
    return str(
        args.url
        or os.environ.get("MODELSCHED_URL")
        or "http://127.0.0.1:" + os.environ.get("MODELSCHED_PORT", "8000")
    )


def client_for(args: argparse.Namespace) -> Client:
    return Client(daemon_url(args), args.token or os.environ.get("MODELSCHED_TOKEN") or None)


def read_inputs(given: str, stdin: TextIO) -> Any:
    """`--inputs`: JSON on the command line, `@FILE` (JSON in a file) or `-` (JSON on stdin)."""
    where = "--inputs"
    if given == "-":
        text, where = stdin.read(), "--inputs - (stdin)"
    elif given.startswith("@"):
        path = Path(given[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"--inputs {given}: cannot read {path}: {exc.strerror or exc}") from None
        where = f"--inputs {given}"
    else:
        text = given
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    inputs = read_inputs(args.inputs, sys.stdin)
    job = client.submit(
        args.model,
        inputs,
        priority=args.priority,
        timeout_s=args.job_timeout,
        idempotency_key=args.idempotency_key,
        callback_url=args.callback_url,
    )
    if not (args.wait or args.timeout is not None):
        print_json({"job_id": job.id, "status": job.status()})
        return 0
    view = job.wait(args.timeout)
    print_json(view)
    if view["status"] not in ENDED:
        print(
            f"modelsched: job {job.id} is still {view['status']} after {args.timeout:g} s; it goes on "
            f"(`modelsched get {job.id} --wait 60` waits again)",
            file=sys.stderr,
        )
        return EXIT_WAIT_TIMEOUT
    return 0 if view["status"] == "completed" else EXIT_FAILED


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    handle = client.job(args.job_id)
    print_json(handle.wait(args.wait) if args.wait else handle.info())
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    handle = client.job(args.job_id)
    if handle.cancel():
        print(f"cancelled {args.job_id}")
        return 0
    print(f"modelsched: job {args.job_id} had already ended ({handle.status()})", file=sys.stderr)
    return EXIT_FAILED


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.list_jobs(status=args.status, model=args.model, limit=args.limit)
    if args.json:
        print_json({"jobs": jobs})
    else:
        print(jobs_table(jobs))
    return 0


def cmd_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    print(json.dumps({"models": models}, indent=2) if args.json else models_table(models))
    return 0


def model_action(action: str) -> Callable[[Client, argparse.Namespace], int]:
    """`load` (the daemon starts the load and answers; the model is ready once `models` says
    loaded) and `unload` (from every worker where it is idle)."""

    def run(client: Client, args: argparse.Namespace) -> int:
        answer: dict[str, Any] = client.request("POST", f"/models/{args.model}/{action}", hold_s=300.0)
        workers = ", ".join(answer.get("workers") or [])
        if args.json:
            print_json(answer)
        elif action == "load":
            print(
                f"{args.model}: loading on {workers or 'no worker'}"
                if workers
                else f"{args.model}: no worker"
            )
        else:
            print(
                f"{args.model}: unloaded from {workers}"
                if workers
                else f"{args.model}: loaded on no idle worker"
            )
        return 0

    return run


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status()
    print(json.dumps(status, indent=2) if args.json else status_text(status))
    return 0


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "get": cmd_get,
    "cancel": cmd_cancel,
    "jobs": cmd_jobs,
    "models": cmd_models,
    "load": model_action("load"),
    "unload": model_action("unload"),
    "status": cmd_status,
}


def refusal(exc: ApiError, url: str) -> str:
    """One line for a request the daemon refused."""
    if exc.status == 401:
        return (
            f"the daemon at {url} refused the token (401): give the right one with --token or "
            "MODELSCHED_TOKEN"
        )
    field = f" (field {exc.field})" if exc.field else ""
    return f"{exc.detail or exc.error}{field} [{exc.status} {exc.error}]"


def run_remote(args: argparse.Namespace) -> int:
    """Run a daemon command; its exit status. Every failure is one line on stderr."""
    url = daemon_url(args)
    try:
        with client_for(args) as client:
            return COMMANDS[args.command](client, args)
    except KeyboardInterrupt:  # Ctrl-C while waiting: a submitted job goes on
        print("modelsched: interrupted (a submitted job goes on)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"modelsched: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonUnavailable as exc:
        print(f"modelsched: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ApiError as exc:
        print(f"modelsched: {refusal(exc, url)}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, httpx.HTTPError, httpx.InvalidURL) as exc:  # a malformed --url, an odd answer
        print(f"modelsched: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
