#!/usr/bin/env bash
# Translation catalogs and the Chinese notebooks (details: .venv/bin/python scripts/i18n.py --help).
#   bash scripts/i18n.sh update      # after the English changed: re-extract and merge into every .po
#   bash scripts/i18n.sh check       # translated / fuzzy / untranslated counts; exit 1 while any remain
#   bash scripts/i18n.sh notebooks   # notebooks/zh_CN/*.ipynb from the English notebooks + catalogs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python scripts/i18n.py "$@"
