"""The `modelsched` command line's grammar: every command and flag with its help and examples
(`modelsched --help`, `modelsched COMMAND --help`; the README shows them, and a test keeps the two
equal). What each command does is in `scheduler.cli.remote` (daemon commands) and
`scheduler.cli.local` (config, journal); `server.py` runs `serve`."""

from __future__ import annotations

import argparse
import os
from importlib import metadata

PROG = "modelsched"
PRESETS = ["dev", "prod"]
PRIORITIES = ["high", "normal", "low"]
STATUSES = ["queued", "processing", "completed", "error", "cancelled"]
SERVE_SETTINGS = (
    "host",
    "port",
    "log_format",
    "http_workers",
    "cluster_url",
)  # `serve` flags that override the setting of the same name
HELP_WIDTH = "100"  # help is wrapped at this width whatever the terminal, so the README's copy holds

DESCRIPTION = """\
Schedule model-inference jobs onto every GPU of a machine (CPU workers where there is none) and
serve them over REST. `serve` runs the daemon; the other commands talk to a running one (--url,
else $MODELSCHED_URL, else http://127.0.0.1:$MODELSCHED_PORT or :8000; --token, else
$MODELSCHED_TOKEN) or work on this machine's files (config, journal)."""

MAIN_EPILOG = """\
examples:
  modelsched serve --preset dev                      # the daemon on http://127.0.0.1:8000
  modelsched submit echo --inputs '{"text": "hi"}' --wait
  modelsched status                                  # workers, GPUs, queue, models, render
  modelsched config --check --config my.toml         # the effective settings, checked

exit status: 0 ok; 1 the daemon could not be reached or refused, a job failed, a bad configuration
(config); 2 a bad command line or configuration (serve); 3 the journal is damaged (serve); 124 a
wait (submit --timeout) ended before the job; 130 interrupted (Ctrl-C) while waiting."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; defaults shown; a fixed width."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=int(HELP_WIDTH), max_help_position=32)


def version() -> str:
    try:
        return metadata.version("modelsched")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def job_limit(text: str) -> int:
    """`jobs --limit`: 1 to 1000."""
    try:
        limit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= limit <= 1000:
        raise argparse.ArgumentTypeError(f"{limit} is not between 1 and 1000")
    return limit


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default=os.environ.get("MODELSCHED_PRESET", "dev"),
        choices=PRESETS,
        help="the preset read first (default: $MODELSCHED_PRESET, else dev)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("MODELSCHED_CONFIG"),
        help="a TOML file whose keys override the preset's (default: $MODELSCHED_CONFIG)",
    )


def command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    examples: str,
    daemon: bool = True,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=Formatter,
    )
    if daemon:
        parser.add_argument(
            "--url",
            help="the daemon's address (default: $MODELSCHED_URL, else http://127.0.0.1:$MODELSCHED_PORT or :8000)",
        )
        parser.add_argument("--token", help="its bearer token (default: $MODELSCHED_TOKEN)")
    return parser


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON, as the daemon sends it")


def add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = command(
        commands,
        "submit",
        "submit a job (and wait for it)",
        "Submit a job of MODEL and print {job_id, status}; with --wait, wait for its end and print the "
        "job's view\n(result or error). Exit 1 when the job ends in error or is cancelled, 124 when "
        "--timeout passes first\n(the job goes on).",
        '  modelsched submit echo --inputs \'{"text": "hi"}\' --wait\n'
        "  modelsched submit mlp --inputs @row.json --priority high --wait --timeout 30\n"
        "  echo '[\"a sentence\"]' | modelsched submit minilm --inputs - --wait\n"
        "  modelsched submit sleep --inputs 500 --idempotency-key order-17   # again: the same job",
    )
    submit.add_argument("model", metavar="MODEL", help="the model to run, as `modelsched models` lists them")
    submit.add_argument(
        "--inputs",
        required=True,
        metavar="JSON|@FILE|-",
        help="the job's inputs: JSON, @FILE to read JSON from a file, - to read it from stdin",
    )
    submit.add_argument(
        "--priority", default="normal", choices=PRIORITIES, help="its queue (default: normal)"
    )
    submit.add_argument(
        "--job-timeout",
        type=float,
        metavar="S",
        help="the job fails as `timeout` if it has not ended S seconds after submission",
    )
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a submission with a key seen before answers that first job instead of queueing another",
    )
    submit.add_argument(
        "--callback-url", metavar="URL", help="POST the job's view to URL once it has ended (a webhook)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job to end and print its view")
    submit.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="wait at most S seconds (implies --wait); then print the view as it stands and exit 124",
    )

    get = command(
        commands,
        "get",
        "a job's view",
        "Print a job's view as JSON: status, queue position, times, tries, worker, result or error.",
        "  modelsched get 0195f3c2a1b2-000001\n  modelsched get 0195f3c2a1b2-000001 --wait 30   # until it ends, 30 s at most",
    )
    get.add_argument("job_id", metavar="JOB", help="the job's id, as submit printed it")
    get.add_argument("--wait", type=float, metavar="S", help="wait up to S seconds for the job to end first")

    cancel = command(
        commands,
        "cancel",
        "cancel a queued or running job",
        "Cancel a job that is queued or running. Exit 1 when it had already ended (or does not exist).",
        "  modelsched cancel 0195f3c2a1b2-000001",
    )
    cancel.add_argument("job_id", metavar="JOB", help="the job's id")

    jobs = command(
        commands,
        "jobs",
        "recent jobs, as a table",
        "List recent jobs, newest first, as a table (--json: as the daemon sends them).",
        "  modelsched jobs\n  modelsched jobs --status error --model mlp --limit 20\n  modelsched jobs --json",
    )
    jobs.add_argument("--status", choices=STATUSES, help="only jobs in this state")
    jobs.add_argument("--model", help="only jobs of this model")
    jobs.add_argument(
        "--limit", type=job_limit, default=50, help="at most this many, 1 to 1000 (default: 50)"
    )
    add_json(jobs, "the jobs")


def add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = command(
        commands,
        "models",
        "the registered models, as a table",
        "List the models: adapter, device, batch size, declared VRAM, state, the workers holding them,\n"
        "jobs queued, and why a load failed.",
        "  modelsched models\n  modelsched models --json",
    )
    add_json(models, "the models")
    for name, summary, description in (
        (
            "load",
            "load a model onto a worker now",
            "Start loading MODEL on a worker now (not at its first job) and print where; `modelsched models`\n"
            "shows it loaded once the load is done.",
        ),
        (
            "unload",
            "unload a model from its workers",
            "Unload MODEL from every worker where it is idle, giving back its memory; its next job loads it\nagain.",
        ),
    ):
        action = command(commands, name, summary, description, f"  modelsched {name} minilm")
        action.add_argument("model", metavar="MODEL", help="the model's name")
        add_json(action, "the answer")

    status = command(
        commands,
        "status",
        "the daemon's state, as tables",
        "Print the daemon's state as tables: GPUs, workers, the queue, models, the render process and\n"
        "the journal (--json: `GET /system/status` as it is).",
        "  modelsched status\n  modelsched status --json | jq '.queue'",
    )
    add_json(status, "the status")


def add_local_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = command(
        commands,
        "serve",
        "run the daemon",
        "Run the daemon in the foreground until SIGTERM or SIGINT (which drain it). Settings: the preset,\n"
        "then --config FILE, then MODELSCHED_* variables, then the flags below. With --cluster it joins\n"
        'the cluster of the daemons on that Redis (README: "Many hosts, one queue").',
        "  modelsched serve --preset dev\n"
        "  modelsched serve --preset prod --config /etc/modelsched.toml --host 0.0.0.0 --port 8080\n"
        "  MODELSCHED_TOKEN=s3cret modelsched serve\n"
        "  modelsched serve --port 8001 --cluster unix:///run/redis/redis.sock",
        daemon=False,
    )
    add_config_flags(serve)
    serve.add_argument("--host", help="the address to bind (default: the settings' host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: the settings' port, 8000)")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or one JSON object each (default: the settings' log_format, text)",
    )
    serve.add_argument(
        "--http-workers",
        metavar="N|auto",
        help="front processes doing the HTTP work: a number (0: none, the main process serves HTTP) "
        "or auto (0 below 6 cores, else a third of them; default: the settings' http_workers, auto)",
    )
    serve.add_argument(
        "--cluster",
        dest="cluster_url",
        metavar="URL",
        help="join the cluster on this Redis (redis://… or unix://…; default: the settings' cluster_url, none)",
    )

    config = command(
        commands,
        "config",
        "the effective settings",
        "Print the settings the daemon would run with (preset, then --config, then MODELSCHED_*\n"
        "variables), as TOML with where each value came from; the token and webhook secret are hidden.\n"
        "A configuration that would not start: one line, exit 1.",
        "  modelsched config\n"
        "  modelsched config --check --preset prod --config /etc/modelsched.toml\n"
        "  MODELSCHED_PORT=9000 modelsched config --json",
        daemon=False,
    )
    add_config_flags(config)
    config.add_argument(
        "--check",
        action="store_true",
        help="also build every model's adapter and pipeline, as serve does before it starts",
    )
    add_json(config, "the settings")

    journal = command(
        commands,
        "journal",
        "check or back up the journal file",
        "Work on the SQLite journal file, with or without a running daemon.",
        "  modelsched journal check\n  modelsched journal backup /backups/modelsched-$(date +%F).db",
        daemon=False,
    )
    actions = journal.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="SQLite's quick_check of a journal, read-only",
        description="Check a journal (exit 0 with its number of jobs, 1 damaged, 2 unreadable).",
        formatter_class=Formatter,
    )
    check.add_argument("path", nargs="?", help="the journal (default: the configured one)")
    backup = actions.add_parser(
        "backup",
        help="a consistent copy of the journal, a running daemon's too",
        description="Copy the configured journal with SQLite's online backup (mode 0600, never over a file).",
        formatter_class=Formatter,
    )
    backup.add_argument("path", help="the copy to make; it must not exist")
    for sub in (check, backup):
        add_config_flags(sub)
        sub.add_argument(
            "--journal", metavar="FILE", help="the journal file (default: journal_path of the settings)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=MAIN_EPILOG, formatter_class=Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_local_commands(commands)
    add_job_commands(commands)
    add_model_commands(commands)
    return parser
