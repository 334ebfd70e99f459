#!/usr/bin/env bash
# Sets modelsched up on a fresh machine: Debian's Chromium (for the render process), a virtualenv in
# .venv with torch==2.13.0 first (the CPU build; an unpinned torch would pull gigabytes of CUDA wheels),
# then the package itself with the extras named in $1 (default: text).  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-text}

browser=${MODELSCHED_RENDER_BROWSER_PATH:-/usr/bin/chromium}
if [ ! -x "$browser" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's chromium for the render process" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's redis-server for the cluster tests" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
fi

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[$extras]"
