#!/usr/bin/env bash
# Install elmokit into ./.venv. The CPU build of torch is pinned first: a bare `torch`
# requirement would make pip fetch a multi-GB CUDA build.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh --dev    # plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${ELMOKIT_TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
.venv/bin/python -c "import torch, elmokit; print('elmokit', elmokit.__version__, 'torch', torch.__version__)"
