#!/usr/bin/env bash
# Creates .venv and installs kotune with the CPU build of torch pinned first, so that no resolver step can
# replace it with a multi-GB CUDA wheel. On a GPU machine, see README "GPU install" instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
echo "kotune installed in .venv ($(.venv/bin/kotune --version))"
