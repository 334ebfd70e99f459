#!/usr/bin/env python
"""The pipeline benchmark: `POST /classify` (the `classify` pipeline: prep on a CPU worker, encode on a
GPU worker, format on a CPU worker) against its encoder alone, and what 1,000 requests cost with the
stages so placed against every stage on the GPU worker.

    .venv/bin/python scripts/bench_pipeline.py                   # 64 clients, 10 s per measured run
    .venv/bin/python scripts/bench_pipeline.py --quick           # short runs: a smoke check
    .venv/bin/python scripts/bench_pipeline.py --duration 30 --json var/bench-pipeline.json

Two daemons run one after the other, each `modelsched serve --preset dev` with a config file (written
to a temp dir) that keeps only the three classify models, the `classify` pipeline and `[costs]` of
configs/dev.toml, with `MODELSCHED_SIMULATED_GPUS=1x16GiB` (one simulated card: its worker runs on
the CPU, but placement, the VRAM ledger and the cost class act as on a GPU), the journal on (a fresh
SQLite file, as `scripts/bench_rest.py` starts it) and `MODELSCHED_TORCH_THREADS=1` (`--torch-threads`):

1. mixed: the models as configs/dev.toml declares them (prep and format on the CPU worker, encode
   `auto`, so on the GPU worker). After a warm-up, 64 fixed sentences are tokenised once through
   `POST /models/classify-prep/infer`; then `wrk` drives, at `--clients` connections for `--duration`
   seconds each, (a) `POST /classify {"text": s}` and (b) `POST /models/classify-encode/infer
   {"inputs": {"input_ids": ids}}`, both rotating over the 64 sentences. The ratio (a)/(b) is the
   pipeline's overhead (goal: >= 70%).
2. all-GPU: the same models with `device = "gpu"` on every stage; (a) again.

Around every measured run the script reads `GET /system/status` and waits for the queue to drain; the
deltas of `costs` give the cost per 1,000 requests (`jobs_cost_usd` / `jobs_ended`; for classify also
`by_pipeline["classify"]`) and the worker-seconds per 1,000 per device class (`seconds_by_device`).
Costs count the batch compute time the workers measure, not idle workers. Every answer that is not
200 is counted per status code and a few are printed (wrk's Lua `response` hook). `jobs ended` is
larger than wrk's request count by the requests still in flight when wrk stopped: they end (and are
paid for) after it, and count in both the dollars and the number they are divided by.

The processes it ends are only the daemons it started (`scripts.bench_rest.running_daemon`: SIGTERM,
then SIGKILL to that process group) and its own `wrk` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_rest import (  # noqa: E402 - after the path is set
    WRK,
    parse_wrk,
    post_once,
    run_httpx,
    running_daemon,
    wrk_report,
)

PIPELINE = "classify"
ENCODER = "classify-encode"
PREP = "classify-prep"
SIMULATED_GPUS = "1x16GiB"
RATIO_GOAL = 0.70
ISSUE_RATES = {"cpu": 0.0002, "gpu": 0.0015}  # the figures the issue quotes, dollars per worker-second
SAMPLES_PER_THREAD = 5

# 64 sentences, 5 to 25 words, positive, negative and neutral mixed.
SENTENCES: tuple[str, ...] = (
    "I absolutely loved this movie, the acting was superb.",
    "The food was cold and the waiter was rude to us.",
    "The meeting is scheduled for three o'clock on Tuesday afternoon.",
    "What a wonderful surprise, thank you so much for the flowers!",
    "This phone stopped working after two days and support never answered my emails.",
    "The train leaves from platform four every twenty minutes.",
    "Best customer service I have ever experienced, they solved everything in minutes.",
    "I am deeply disappointed with the quality of this jacket.",
    "The report contains figures for the first and second quarters.",
    "Our hotel room was spotless and quiet, the breakfast was generous, and the balcony had a beautiful view of the sea at sunset.",
    "The delivery was late again and the box arrived crushed.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I love this little cafe.",
    "This is the worst update they have ever shipped, everything is slower now.",
    "Please send the signed contract to the legal department by Friday.",
    "The concert last night was pure magic from start to finish.",
    "I regret buying this laptop, the battery barely lasts an hour.",
    "The library opens at nine and closes at six on weekdays.",
    "Fantastic book, I could not put it down until the last page.",
    "The staff ignored us for twenty minutes, then brought the wrong order, argued with us about it and still charged the full price for everything.",
    "How many people will attend the workshop next week?",
    "My new running shoes are comfortable, light and look great.",
    "The app keeps crashing whenever I try to upload a photo.",
    "The museum has three floors and a small cafe near the entrance.",
    "Thank you for the quick reply, that was exactly what I needed.",
    "Terrible experience, the car rental company charged me twice for the same day.",
    "The package weighs about two kilograms and measures forty centimetres.",
    "Our team won the championship after an amazing season of hard work.",
    "The instructions were confusing and half of the screws were missing.",
    "Rain is expected in the northern regions over the weekend.",
    "I am so happy with how the garden turned out this spring.",
    "The noise from the construction site kept me awake all night.",
    "The software release notes list twelve fixes and two new features.",
    "Everyone at the party praised the delicious homemade cake.",
    "The seats were uncomfortable and the film was boring and far too long.",
    "The bus route was changed to avoid the closed bridge.",
    "What a brilliant idea, this will save us hours every week.",
    "I waited on hold for an hour only to be disconnected.",
    "The committee will publish its findings at the end of the month.",
    "The kids had a great time at the zoo and want to go back soon.",
    "This coffee tastes burnt and bitter, I poured it away.",
    "Is the store open on public holidays?",
    "The new manager is kind, fair and always willing to help.",
    "The hotel lied about the pool, it was closed the whole week.",
    "The population of the town is about forty thousand people.",
    "Absolutely delighted with the repair, the bike rides like new.",
    "My order was cancelled without any explanation or refund.",
    "The conference room on the second floor has a projector.",
    "Wonderful hosts, cosy apartment and a perfect location near the old town.",
    "The headphones broke within a week and the sound was awful anyway.",
    "The form asks for your name, address and date of birth.",
    "I really appreciate your patience and all the help you gave me.",
    "The flight was delayed six hours and nobody told us why.",
    "The river flows south through three countries and several large cities before it finally reaches the sea about two thousand kilometres from its source.",
    "This is easily the most beautiful place I have ever visited.",
    "The printer jams on every second page, it is driving me mad.",
    "Tickets are sold online only.",
    "Great value for money, I would happily order from them again.",
    "The soup was salty, the bread was stale and the bill was huge.",
    "The office will move to the new building in March.",
    "Our guide was funny, knowledgeable and made the tour unforgettable.",
    "This was a total waste.",
    "The dataset has ten columns and about five thousand rows.",
    "The nurses were caring and patient, the doctors explained everything clearly, and the food was good, so my stay was much easier than I feared.",
)


# ---------------------------------------------------------------------------- config and daemons


def _toml_value(value: Any) -> str:
    """A TOML value for the plain data a model or pipeline table holds (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(header: str, table: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items())]) + "\n"


def classify_config(all_gpu: bool) -> tuple[str, dict[str, Any]]:
    """A config file's text with the `classify` pipeline, its models and `[costs]` as the dev preset
    has them (with `all_gpu`: `device = "gpu"` on every stage's model), and the models as written."""
    from scheduler.settings import preset_path

    preset = tomllib.loads(preset_path("dev").read_text())
    pipeline = next(p for p in preset.get("pipelines", []) if p["name"] == PIPELINE)
    stage_models = [stage if isinstance(stage, str) else stage["model"] for stage in pipeline["stages"]]
    models = [dict(m) for m in preset["models"] if m["name"] in stage_models]
    if all_gpu:
        for model in models:
            model["device"] = "gpu"
    costs = preset.get("costs", {})
    text = "# written by scripts/bench_pipeline.py\n"
    text += "\n".join(_toml_table("[[models]]", model) for model in models)
    text += "\n" + _toml_table("[[pipelines]]", pipeline)
    if costs:
        text += "\n" + _toml_table("[costs]", costs)
    tomllib.loads(text)  # it must read back
    return text, {
        "models": {m["name"]: m.get("device", "(adapter default)") for m in models},
        "costs": costs,
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set (the daemon `running_daemon` starts inherits it), then restored."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextlib.contextmanager
def classify_daemon(all_gpu: bool, torch_threads: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """A daemon (the dev preset, this config file over it) on a free loopback port: (url, config)."""
    text, described = classify_config(all_gpu)
    with tempfile.TemporaryDirectory(prefix="modelsched-bench-pipeline-") as folder:
        config_path = Path(folder) / ("classify-all-gpu.toml" if all_gpu else "classify-mixed.toml")
        config_path.write_text(text)
        values = {
            "MODELSCHED_CONFIG": str(config_path),
            "MODELSCHED_SIMULATED_GPUS": SIMULATED_GPUS,
            "MODELSCHED_TORCH_THREADS": str(torch_threads),
        }
        with environment(values), running_daemon("dev") as url:
            yield url, {**described, "env": values}


# ---------------------------------------------------------------------------- HTTP helpers


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - loopback only
        return json.loads(answer.read())


def settled_status(base_url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """`/system/status` once nothing is queued or processing (the jobs wrk left in flight ended) and
    `jobs_ended` stopped moving; after `timeout_s` as it is."""
    deadline = time.monotonic() + timeout_s
    last_ended = -1
    while True:
        status: dict[str, Any] = get_json(f"{base_url}/system/status")
        queue = status["queue"]
        ended = status["costs"]["jobs_ended"]
        if (queue["queued"] == 0 and queue["processing"] == 0 and ended == last_ended) or (
            time.monotonic() > deadline
        ):
            return status
        last_ended = ended
        time.sleep(0.25)


def placement(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Which worker holds which model, how many jobs each ran, how often it was respawned."""
    return [
        {
            "worker": worker["worker_id"],
            "device": worker["device"],
            "models": sorted(m["model"] for m in worker["loaded_models"]),
            "jobs_done": worker["jobs_done"],
            "restarts": worker["restarts"],
        }
        for worker in status["workers"]
    ]


# ---------------------------------------------------------------------------- wrk with rotating bodies


def rotating_lua(bodies: list[Any]) -> str:
    """A wrk script POSTing the JSON bodies in turn, counting answers per status code and keeping
    the first few non-200 answers per thread; `done` prints `STATUS code count` and `SAMPLE ...`."""
    texts = [json.dumps(body, separators=(",", ":")) for body in bodies]
    for text in texts:
        if "]==]" in text:
            raise ValueError("a body holds the Lua long-string terminator ]==]")
    table = ",\n".join(f"  [==[{text}]==]" for text in texts)
    return f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{table}
}}
local count = #bodies
local next_body = 0
local threads = {{}}
codes = {{}}
samples = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  next_body = next_body % count + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status ~= 200 and #samples < {SAMPLES_PER_THREAD} then
    samples[#samples + 1] = status .. " " .. string.sub(body or "", 1, 300)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("codes")) do
      io.write(string.format("STATUS %d %d\\n", code, n))
    end
    for _, line in ipairs(thread:get("samples")) do
      io.write("SAMPLE " .. (string.gsub(line, "%s+", " ")) .. "\\n")
    end
  end
end
"""


def run_rotating(
    url: str, bodies: list[Any], clients: int, duration_s: float, threads: int
) -> dict[str, Any]:
    """wrk's figures (`parse_wrk`) plus `status_codes` and `error_samples`; without wrk,
    `run_httpx` on the first body only (it cannot rotate)."""
    if WRK is None:
        figures: dict[str, Any] = dict(run_httpx(url, bodies[0], clients, duration_s))
        figures.update(driver="httpx (first body only)", status_codes={}, error_samples=[])
        return figures
    report = wrk_report(url, rotating_lua(bodies), clients, duration_s, threads)
    figures = dict(parse_wrk(report))
    codes: dict[str, int] = {}
    samples: list[str] = []
    for line in report.splitlines():
        if line.startswith("STATUS "):
            _, code, count = line.split()
            codes[code] = codes.get(code, 0) + int(count)
        elif line.startswith("SAMPLE "):
            samples.append(line[len("SAMPLE ") :])
    figures.update(driver="wrk", status_codes=codes, error_samples=samples)
    return figures


# ---------------------------------------------------------------------------- measured runs


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in sorted({*after, *before})}


def measured_run(
    base_url: str,
    name: str,
    path: str,
    bodies: list[Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One wrk run on `path` with the cost and job deltas around it."""
    before = settled_status(base_url)
    figures = run_rotating(f"{base_url}{path}", bodies, args.clients, args.duration, args.wrk_threads)
    after = settled_status(base_url)
    cost_b, cost_a = before["costs"], after["costs"]
    jobs = cost_a["jobs_ended"] - cost_b["jobs_ended"]
    jobs_cost = cost_a["jobs_cost_usd"] - cost_b["jobs_cost_usd"]
    pipeline_cost = cost_a["by_pipeline"].get(PIPELINE, 0.0) - cost_b["by_pipeline"].get(PIPELINE, 0.0)
    seconds = _delta(cost_a["seconds_by_device"], cost_b["seconds_by_device"])
    per_1000 = 1000 / jobs if jobs else math.nan
    run: dict[str, Any] = {
        "name": name,
        "path": path,
        "clients": args.clients,
        "duration_s": args.duration,
        **figures,
        "jobs_ended": jobs,
        "jobs_failed": (after["queue"]["error"] - before["queue"]["error"])
        + (after["queue"]["cancelled"] - before["queue"]["cancelled"]),
        "cost_usd": jobs_cost,
        "cost_per_1000_usd": jobs_cost * per_1000,
        "seconds_by_device": seconds,
        "seconds_per_1000_by_device": {device: s * per_1000 for device, s in seconds.items()},
        "cost_by_device_usd": _delta(cost_a["by_device"], cost_b["by_device"]),
    }
    if path == f"/{PIPELINE}":
        run["pipeline_cost_per_1000_usd"] = pipeline_cost * per_1000
    return run


def check_answer(what: str, status: int, answer: Any, problems: list[str]) -> bool:
    if status == 200:
        return True
    problems.append(f"{what}: {status} {str(answer)[:300]}")
    return False


def warm_up(
    base_url: str, paths: list[tuple[str, list[Any]]], args: argparse.Namespace, problems: list[str]
) -> None:
    """One request to each path (loads the models), then a short wrk run each at `--clients`."""
    for path, bodies in paths:
        status, answer = post_once(f"{base_url}{path}", bodies[0])
        if not check_answer(f"warm-up {path}", status, answer, problems):
            raise RuntimeError(f"the warm-up request to {path} answered {status}: {answer}")
    if args.warmup > 0:
        for path, bodies in paths:
            figures = run_rotating(f"{base_url}{path}", bodies, args.clients, args.warmup, args.wrk_threads)
            bad = {code: n for code, n in figures["status_codes"].items() if code != "200"}
            if bad or figures["socket_errors"]:
                problems.append(
                    f"warm-up wrk {path}: non-200 {bad}, socket errors {figures['socket_errors']:.0f}, "
                    f"samples {figures['error_samples']}"
                )


def note_restarts(name: str, workers: list[dict[str, Any]], problems: list[str]) -> None:
    for worker in workers:
        if worker["restarts"]:
            problems.append(
                f"{name} daemon: worker {worker['worker']} was respawned {worker['restarts']} time(s)"
            )


def bench_mixed(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    with classify_daemon(all_gpu=False, torch_threads=args.torch_threads) as (base_url, config):
        classify_bodies: list[Any] = [{"text": s} for s in SENTENCES]
        # The token ids of every sentence, once, from the pipeline's own first stage.
        encode_bodies: list[Any] = []
        for sentence in SENTENCES:
            status, answer = post_once(f"{base_url}/models/{PREP}/infer", {"inputs": sentence})
            if not check_answer(f"{PREP} on {sentence!r}", status, answer, problems):
                raise RuntimeError(f"{PREP} answered {status}: {answer}")
            encode_bodies.append({"inputs": {"input_ids": answer["result"]["input_ids"]}})
        # One classification per sentence: the pipeline answers, and what it says.
        labels: dict[str, int] = {}
        for body in classify_bodies:
            status, answer = post_once(f"{base_url}/{PIPELINE}", body)
            if check_answer(f"/{PIPELINE} on {body['text']!r}", status, answer, problems):
                labels[answer["label"]] = labels.get(answer["label"], 0) + 1
        paths = [(f"/{PIPELINE}", classify_bodies), (f"/models/{ENCODER}/infer", encode_bodies)]
        warm_up(base_url, paths, args, problems)
        runs = [
            measured_run(base_url, "classify (mixed)", paths[0][0], classify_bodies, args),
            measured_run(base_url, "encode alone", paths[1][0], encode_bodies, args),
        ]
        final = settled_status(base_url)
        note_restarts("mixed", placement(final), problems)
        return {
            "config": config,
            "labels": labels,
            "token_counts": [len(b["inputs"]["input_ids"]) for b in encode_bodies],
            "runs": runs,
            "placement": placement(final),
            "rates": final["costs"]["rates"],
        }


def bench_all_gpu(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    with classify_daemon(all_gpu=True, torch_threads=args.torch_threads) as (base_url, config):
        classify_bodies: list[Any] = [{"text": s} for s in SENTENCES]
        warm_up(base_url, [(f"/{PIPELINE}", classify_bodies)], args, problems)
        run = measured_run(base_url, "classify (all-GPU)", f"/{PIPELINE}", classify_bodies, args)
        final = settled_status(base_url)
        note_restarts("all-GPU", placement(final), problems)
        return {"config": config, "runs": [run], "placement": placement(final)}


# ---------------------------------------------------------------------------- report


def _ms(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def format_run(run: dict[str, Any]) -> str:
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(run["status_codes"].items())) or "-"
    return (
        f"  {run['name']:<20} {run['requests_per_s']:>8,.1f} req/s  p50 {_ms(run.get('p50_ms'))} ms  "
        f"p99 {_ms(run.get('p99_ms'))} ms  ({run['requests']:.0f} requests; status {codes}; "
        f"non-2xx {run['non_2xx']:.0f}; socket errors {run['socket_errors']:.0f}; "
        f"jobs ended {run['jobs_ended']}, failed {run['jobs_failed']})"
    )


def report(results: dict[str, Any]) -> str:
    mixed, all_gpu = results["mixed"], results["all_gpu"]
    classify, encode = mixed["runs"]
    gpu_run = all_gpu["runs"][0]
    lines = [
        f"driver: {classify['driver']}, {results['clients']} clients, {results['duration_s']:g} s per "
        f"measured run (warm-up {results['warmup_s']:g} s), wrk threads {results['wrk_threads']}",
        f"daemons: --preset dev + a config with the classify models, pipeline and [costs] of "
        f"configs/dev.toml; MODELSCHED_SIMULATED_GPUS={SIMULATED_GPUS} (the GPU worker runs on the "
        f"CPU); MODELSCHED_TORCH_THREADS={results['torch_threads']}; journal on (fresh SQLite file)",
        f"sentences: {len(SENTENCES)}, {min(mixed['token_counts'])}-{max(mixed['token_counts'])} "
        f"tokens; labels from one pass: {mixed['labels']}",
        "",
        "Throughput (mixed placement):",
        format_run(classify),
        format_run(encode),
        f"  classify / encode alone: {results['ratio']:.1%} (goal >= {RATIO_GOAL:.0%}: "
        f"{'met' if results['ratio'] >= RATIO_GOAL else 'NOT met'})",
        "",
        "Cost per 1,000 classify requests (ledger deltas over the measured run):",
        f"  {'':<24}{'mixed':>14}{'all-GPU':>14}",
    ]

    def row(label: str, pick: Any, fmt: str) -> str:
        return f"  {label:<24}" + "".join(format(pick(r), fmt).rjust(14) for r in (classify, gpu_run))

    lines += [
        row("$ per 1,000", lambda r: r["cost_per_1000_usd"], ".6f"),
        row("  (by_pipeline)", lambda r: r.get("pipeline_cost_per_1000_usd", math.nan), ".6f"),
        row("CPU worker-s per 1,000", lambda r: r["seconds_per_1000_by_device"].get("cpu", 0.0), ".3f"),
        row("GPU worker-s per 1,000", lambda r: r["seconds_per_1000_by_device"].get("gpu", 0.0), ".3f"),
        row("req/s", lambda r: r["requests_per_s"], ",.1f"),
        f"  all-GPU / mixed cost: {results['all_gpu_over_mixed_cost']:.2f}x; the CPU stages' share of "
        f"the mixed run's worker-seconds: {results['cpu_share_mixed']:.1%}",
        f"  encode alone: ${encode['cost_per_1000_usd']:.6f} per 1,000 "
        f"(GPU worker-s {encode['seconds_per_1000_by_device'].get('gpu', 0.0):.3f})",
        "",
        f"Idealised (the issue's figure; one second per stage at ${ISSUE_RATES['cpu']}/s CPU, "
        f"${ISSUE_RATES['gpu']}/s GPU): mixed ${results['idealised']['mixed_usd']:.4f} "
        f"vs all-GPU ${results['idealised']['all_gpu_usd']:.4f} per stage-second "
        f"(ledger rates this run: {mixed['rates']})",
        "",
        "Placement after the runs:",
    ]
    for name, part in (("mixed", mixed), ("all-GPU", all_gpu)):
        for worker in part["placement"]:
            lines.append(
                f"  {name:<8} {worker['worker']:<10} {worker['device']:<10} "
                f"{', '.join(worker['models']) or '-':<48} jobs done {worker['jobs_done']}, "
                f"restarts {worker['restarts']}"
            )
    problems = results["problems"]
    samples = [s for r in (classify, encode, gpu_run) for s in r["error_samples"]]
    lines += [
        "",
        f"Problems: {len(problems)} outside the measured runs; {len(samples)} non-200 sample(s) in them",
    ]
    lines += [f"  {p}" for p in problems] + [f"  sample: {s}" for s in samples]
    return "\n".join(lines)


def _cpu_share(seconds: dict[str, float]) -> float:
    total = sum(seconds.values())
    return seconds.get("cpu", 0.0) / total if total else math.nan


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a run with no ended jobs) become null: the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of wrk warm-up per endpoint (default 3)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="MODELSCHED_TORCH_THREADS of the daemons (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help="short runs (3 s, 1 s warm-up): a smoke check")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3.0), min(args.warmup, 1.0)
    words = [len(s.split()) for s in SENTENCES]
    if len(set(SENTENCES)) != len(SENTENCES) or not 5 <= min(words) <= max(words) <= 25:
        raise SystemExit("the fixed sentences must be distinct and 5 to 25 words long")

    problems: list[str] = []
    started = time.monotonic()
    mixed = bench_mixed(args, problems)
    all_gpu = bench_all_gpu(args, problems)
    classify, encode = mixed["runs"]
    gpu_run = all_gpu["runs"][0]
    results: dict[str, Any] = {
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "wrk_threads": args.wrk_threads,
        "torch_threads": args.torch_threads,
        "quick": args.quick,
        "simulated_gpus": SIMULATED_GPUS,
        "mixed": mixed,
        "all_gpu": all_gpu,
        "ratio": classify["requests_per_s"] / encode["requests_per_s"] if encode["requests_per_s"] else 0.0,
        "all_gpu_over_mixed_cost": gpu_run["cost_per_1000_usd"] / classify["cost_per_1000_usd"]
        if classify["cost_per_1000_usd"]
        else math.nan,
        "cpu_share_mixed": _cpu_share(classify["seconds_by_device"]),
        "idealised": {
            "mixed_usd": ISSUE_RATES["cpu"] + ISSUE_RATES["gpu"] + ISSUE_RATES["cpu"],
            "all_gpu_usd": 3 * ISSUE_RATES["gpu"],
        },
        "problems": problems,
        "wall_s": time.monotonic() - started,
    }
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
