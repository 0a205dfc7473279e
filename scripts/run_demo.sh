#!/usr/bin/env bash
# Set up a virtual environment (Python 3.12 from .python-version) and run the whole analysis of
# the bundled SYNTHETIC demo dataset: harmonize, frequentist tables, Bayesian fits, report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.12 || echo python)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/python -m bayes_soil report --out report.html "$@"
