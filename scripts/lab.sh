#!/usr/bin/env bash
# Set up (if needed) and open the walkthrough notebooks in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 "$@"
