#!/usr/bin/env bash
# Set up (if needed) and open the walkthrough notebooks in JupyterLab, quiet: nothing reaches for the
# network or pops up during a talk (scripts/jupyter/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
# A quiet lab for a talk: no news prompt, no update check, no extension index (scripts/jupyter/README.md)
export JUPYTER_CONFIG_PATH="$PWD/scripts/jupyter${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
ROOT_FLAG=()
[ "$(id -u)" -ne 0 ] || ROOT_FLAG=(--allow-root)  # containers and CI machines often run as root; Jupyter refuses without this
exec .venv/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 "${ROOT_FLAG[@]}" "$@"
