#!/usr/bin/env bash
# Make sure npm is there: the docs site and the slide decks fetch their pinned JavaScript packages
# with it once (into docs/_build/.vendor, checked against their sha512); later builds reuse them.
set -euo pipefail
if ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Debian's npm (used once to fetch the pinned JavaScript packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi
