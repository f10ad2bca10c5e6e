#!/usr/bin/env bash
# Build the docs site (offline) into docs/_build/html; with --serve, then serve it
# on http://127.0.0.1:8000 (loopback only; DOCS_PORT=NNNN picks another port).
#
# The chapters are the notebooks in notebooks/, executed during the build and
# cached (docs/_build/.jupyter_cache): an unchanged rebuild takes seconds, a
# notebook that raises fails the build, and so does any Sphinx warning.
set -euo pipefail
cd "$(dirname "$0")/.."

serve=0
for arg in "$@"; do
  case "$arg" in
    --serve) serve=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "usage: bash scripts/docs.sh [--serve]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh

# npm fetches the site's pinned JavaScript packages (widgets, MathJax, reveal.js) once into
# docs/_build/.vendor; later builds reuse them.
bash scripts/npm.sh

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
# Notebooks run tiny models: one thread each keeps the 2 shared cores responsive.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

echo "==> building the docs site into docs/_build/html"
.venv/bin/python -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
echo "==> docs/_build/html/index.html"

if [ "$serve" -eq 1 ]; then
  port="${DOCS_PORT:-8000}"
  echo "==> serving on http://127.0.0.1:${port}/ (Ctrl-C stops)"
  exec .venv/bin/python -m http.server "$port" --bind 127.0.0.1 --directory docs/_build/html
fi
