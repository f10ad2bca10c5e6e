#!/usr/bin/env bash
# Build the docs site (offline) in every language into docs/_build/html/<lang>/ (en, zh_CN;
# docs/_build/html/index.html leads to en/); with --serve, then serve it on
# http://127.0.0.1:8000 (loopback only; DOCS_PORT=NNNN picks another port).
# --lang LANG builds one language only.
#
# The chapters are the notebooks in notebooks/, executed during the build and
# cached (docs/_build/.jupyter_cache): an unchanged rebuild takes seconds, a
# notebook that raises fails the build, and so does any Sphinx warning. The
# languages share that cache (it is keyed on the code cells, which are never
# translated): the second language executes nothing. Translations: docs/locale/.
set -euo pipefail
cd "$(dirname "$0")/.."

serve=0
languages=(en zh_CN)
while [ $# -gt 0 ]; do
  case "$1" in
    --serve) serve=1 ;;
    --lang) shift; languages=("${1:?--lang needs a language: en or zh_CN}") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "usage: bash scripts/docs.sh [--lang en|zh_CN] [--serve]" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup.sh

# npm fetches the site's pinned JavaScript packages (widgets, MathJax, reveal.js) once into
# docs/_build/.vendor; later builds reuse them.
bash scripts/npm.sh

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
# Notebooks run tiny models: one thread each keeps the 2 shared cores responsive.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

for lang in "${languages[@]}"; do
  echo "==> building the docs site ($lang) into docs/_build/html/$lang"
  start=$SECONDS
  .venv/bin/python -m sphinx -b html -W --keep-going -n -q -D language="$lang" \
    -d "docs/_build/doctrees/$lang" docs "docs/_build/html/$lang"
  echo "    $lang: $((SECONDS - start)) s"
done
# the site's root: straight on to the English pages, with a link to each language
cat > docs/_build/html/index.html <<'HTML'
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mixtral-edu</title>
<meta http-equiv="refresh" content="0; url=en/index.html"></head>
<body><p><a href="en/index.html">English</a> · <a href="zh_CN/index.html" lang="zh-CN">中文</a></p></body></html>
HTML
echo "==> docs/_build/html/index.html (en/, zh_CN/)"

if [ "$serve" -eq 1 ]; then
  port="${DOCS_PORT:-8000}"
  echo "==> serving on http://127.0.0.1:${port}/ (Ctrl-C stops)"
  exec .venv/bin/python -m http.server "$port" --bind 127.0.0.1 --directory docs/_build/html
fi
