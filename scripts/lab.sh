#!/usr/bin/env bash
# Set up (if needed) and open the walkthrough notebooks in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
ROOT_FLAG=()
[ "$(id -u)" -ne 0 ] || ROOT_FLAG=(--allow-root)  # containers and CI machines often run as root; Jupyter refuses without this
exec .venv/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 "${ROOT_FLAG[@]}" "$@"
