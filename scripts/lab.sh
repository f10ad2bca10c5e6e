#!/usr/bin/env bash
# Set up (if needed) and open the walkthrough notebooks in JupyterLab, quiet: nothing reaches for the
# network or pops up during a talk (scripts/jupyter/README.md).
#   bash scripts/lab.sh                # the English notebooks
#   bash scripts/lab.sh --lang zh_CN   # the Chinese notebooks (generated from the English ones and the
#                                      # catalogs), with JupyterLab's own interface in Chinese
# Other arguments go to jupyter lab.
set -euo pipefail
cd "$(dirname "$0")/.."
lang=en
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --lang) shift; lang="${1:?--lang needs a language, e.g. zh_CN}" ;;
    --lang=*) lang="${1#--lang=}" ;;
    *) args+=("$1") ;;
  esac
  shift
done
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
# A quiet lab for a talk: no news prompt, no update check, no extension index (scripts/jupyter/README.md)
export JUPYTER_CONFIG_PATH="$PWD/scripts/jupyter${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
ROOT_FLAG=()
[ "$(id -u)" -ne 0 ] || ROOT_FLAG=(--allow-root)  # containers and CI machines often run as root; Jupyter refuses without this
folder=notebooks
LANG_FLAGS=()
if [ "$lang" != en ]; then
  [ -f "scripts/lab-settings/$lang/overrides.json" ] || { echo "no language '$lang' (try zh_CN)" >&2; exit 2; }
  # notebooks/<lang>/: made from the English notebooks and docs/locale/<lang>/ (only changed files are rewritten)
  .venv/bin/python scripts/i18n.py notebooks --lang "$lang"
  folder="notebooks/$lang"
  # JupyterLab's interface language, as a settings override (the language pack is in requirements.txt);
  # the user's own settings are left alone
  LANG_FLAGS=(--LabApp.app_settings_dir="$PWD/scripts/lab-settings/$lang")
fi
exec .venv/bin/jupyter lab --notebook-dir="$folder" --ServerApp.ip=127.0.0.1 "${ROOT_FLAG[@]}" "${LANG_FLAGS[@]}" "${args[@]}"
