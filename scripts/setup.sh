#!/usr/bin/env bash
# Set up sjc_dist in ./.venv (idempotent): the package, its dependencies and the dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
echo "[setup] installing sjc_dist[dev,postgres] (first time: a few minutes, about 6 GB with torch)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --progress-bar off -e ".[dev,postgres]"
echo "[setup] done: $(.venv/bin/python -c 'import torch, diffusers, ray, mlflow; print("torch", torch.__version__, "diffusers", diffusers.__version__, "ray", ray.__version__, "mlflow", mlflow.__version__)')"
