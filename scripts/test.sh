#!/usr/bin/env bash
# Set up, then run the default test suite (CPU; slow tests excluded: add `-m slow` to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Browser tests (MLflow UI, benchmark report) need Debian's chromium; install it when we may, else they skip.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] chromium could not be installed: browser tests will skip"
fi
exec .venv/bin/python -m pytest -q "$@"
