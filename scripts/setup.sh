#!/usr/bin/env bash
# Create ./.venv with the core package, the three database adapters and the test tools.
# torch is installed first and on its own: asked for through a range by another package, pip would otherwise pick
# a multi-GB CUDA build. Pin the torch build that suits your machine here (2.13.0 is the CPU build we test with).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test,onnx,demo]" \
    -e ./integrations/chroma -e ./integrations/qdrant -e ./integrations/weaviate
