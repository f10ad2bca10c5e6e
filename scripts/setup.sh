#!/usr/bin/env bash
# Create .venv and install the pinned requirements plus this package (editable);
# then .venv-tf5 with transformers 5.23.0 for chapter 11 (requirements-tf5.txt).
# Idempotent: a second run only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mixtral-edu-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing requirements into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

# transformers 5.23.0 lives in its own environment: chapter 11 and tests/then_and_now
# run it as a worker process beside 4.41.2. Our package is not installed there.
if [ ! -x .venv-tf5/bin/python ]; then
  echo "==> creating .venv-tf5 (transformers 5.23.0) with $($PY --version)"
  "$PY" -m venv .venv-tf5
fi
stamp_tf5=.venv-tf5/.mixtral-edu-installed
want_tf5=$(sha256sum < requirements-tf5.txt | cut -c1-16)
if [ "$(cat "$stamp_tf5" 2>/dev/null)" != "$want_tf5" ]; then
  echo "==> installing requirements-tf5.txt into .venv-tf5 (about a minute)"
  .venv-tf5/bin/python -m pip install -q --disable-pip-version-check -r requirements-tf5.txt
  echo "$want_tf5" > "$stamp_tf5"
fi
