#!/usr/bin/env bash
# Build the slide decks of the lecture route (docs/teaching/route.yaml) into
# docs/_build/html/slides/: one reveal.js deck per chapter, executed, with speaker notes,
# every script served from slides/vendor/ (reveal.js, plotly.js and MathJax from pinned
# packages, checked): they open offline from the disk. Extra arguments pick chapters,
# e.g. `bash scripts/slides.sh 07_moe`.
#
# The decks reuse the docs build's executed notebooks when they are current (bash
# scripts/docs.sh builds the site and the decks together); otherwise each chapter runs here
# (under 30 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,10p' "$0"; exit 0 ;; esac

bash scripts/setup.sh
bash scripts/npm.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python docs/_ext/decks.py "$@"
echo "==> open docs/_build/html/slides/index.html"
