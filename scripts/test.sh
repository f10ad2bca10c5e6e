#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: model equality against
# transformers 4.41.2, trace, views, notebooks, and the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
fi
bash scripts/npm.sh   # the docs site, the slide decks and the accessibility check vendor pinned npm packages
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
