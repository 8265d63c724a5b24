#!/usr/bin/env bash
# Create ./.venv with the core package, the database adapters, the tools (demo, bench) and the test tools.
# torch is installed first and on its own, so the package's torch range is already satisfied by the build chosen
# here: TORCH_VERSION (default 2.13.0, what CI tests), from whatever index pip is configured with (PIP_INDEX_URL /
# PIP_EXTRA_INDEX_URL pointing at PyTorch's CPU wheels gives the small CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
# One pip call: the adapters and tools require the core (and tools the adapters and the page), which are not on
# PyPI; pip resolves them from these paths. Each path comes before the ones that depend on it: pip 23's resolver
# (what a new venv gets) looks a dependency up on the index, and fails, when it meets it before its own path.
.venv/bin/python -m pip install --quiet -e ".[test,onnx]" \
    -e ./integrations/chroma -e "./integrations/qdrant[test]" -e "./integrations/weaviate[test]" \
    -e "./integrations/milvus[lite]" -e ./integrations/lancedb -e "./integrations/ray[test]" \
    -e "./ui[test]" -e ./tools
