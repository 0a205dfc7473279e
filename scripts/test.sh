#!/usr/bin/env bash
# Set up a virtual environment (Python 3.12 from .python-version) and run every test tier.
# Installs Debian's chromium for the browser test when it is absent and we may use apt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.12 || echo python)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser test will skip"
fi
# fast and model tiers (single-threaded work) on two workers; then the slow tier (real NUTS,
# notebooks, R, browser) in one process, since each fit already runs its chains on both cores
.venv/bin/python -m pytest -n 2 -m "not slow" "$@"
exec .venv/bin/python -m pytest -p no:xdist -m slow "$@"
