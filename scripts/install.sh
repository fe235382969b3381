#!/usr/bin/env bash
# Creates .venv and installs kotune with torch 2.13.0 installed first, then held by constraints.txt, so that no
# resolver step can replace it. torch comes from PyTorch's CPU index when that index answers (a plain index gives a
# multi-GB CUDA build on Linux); otherwise from the configured index (a local CPU wheel, or PyPI's build).
# On a GPU machine, see README "GPU install" instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
python3 -m venv .venv
pip_install() { .venv/bin/python -m pip install -q "$@"; }
pip_install --upgrade pip
# One quick try (10 s timeout, no retries): where the CPU index cannot be reached, fall back at once.
if ! pip_install --timeout 10 --retries 0 --index-url "$CPU_INDEX" "$TORCH" 2>/dev/null; then
  echo "PyTorch's CPU index unreachable or without $TORCH; installing $TORCH from the configured index" >&2
  pip_install "$TORCH"
fi
pip_install -c constraints.txt -e ".[dev]"
echo "kotune installed in .venv with torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') ($(.venv/bin/kotune --version))"
