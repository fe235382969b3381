#!/usr/bin/env bash
# Every GPU check in one command, on a machine with one NVIDIA GPU, from a fresh clone:
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--smoke]
#
#   1 install   .venv with torch 2.13.0 for CUDA 12.x ($TORCH_INDEX) and kotune[dev] under constraints.txt,
#               unless $KOTUNE_PYTHON (default .venv/bin/python) already imports kotune and a CUDA torch
#               (the install needs PyPI and PyTorch's CUDA index; offline, point KOTUNE_PYTHON at a ready one)
#   2 model     polyglot-ko-1.3b's shape (GPT-NeoX, random weights from its config, a Korean BPE tokenizer)
#   3 gpu_sft   benchmarks/gpu_sft.py: kotune vs TRL SFTTrainer, trained tokens/s and MFU (+ train.compile)
#   4 sft_full  recipes/sft/polyglot-ko-1.3b_full.yaml on that model (its batch, bf16, gradient checkpointing)
#   5 lora      recipes/sft/polyglot-ko-12.8b_lora.yaml on the 1.3B shape, with a checkpoint: checkpoint vs
#               adapter size (a checkpoint holds adapter + optimizer state + RNG, not the base)
#   6 qlora     the same recipe with method=qlora (4-bit NF4 base, bitsandbytes)
#   7 serve     benchmarks/serve_throughput.py on the model step 4 trained (GPU server vs GPU `generate`)
#
# Each step runs under `timeout` (limits below, in seconds); a step that fails or runs out of time is recorded
# and the next one still runs. Everything lands in one folder (default runs/gpu_check-<UTC time>): summary.md,
# and per step its log.txt, outputs and gpu_memory.csv (nvidia-smi, every second).
# --smoke: tiny model, a few steps, on CPU: checks this script end to end (its numbers mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

SMOKE=0
OUT="runs/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/!p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY="${KOTUNE_PYTHON:-.venv/bin/python}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
DATA=data/samples/koalpaca_v1.0.sample.json
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
STEPS_MD="$OUT/steps.md"
printf '| step | result | seconds | peak GPU memory (MiB) |\n| --- | --- | ---: | ---: |\n' > "$STEPS_MD"

if [ "$SMOKE" = 1 ]; then
  LIMIT_MODEL=300 LIMIT_BENCH=900 LIMIT_SFT=600 LIMIT_SERVE=300
  TRAIN=("train.max_steps=2" "train.save_every=1" "train.global_batch_size=8" "train.micro_batch_size=4")
  BENCH=(--smoke --steps 2 --micro-batch 8)
  SERVE=(--requests 4 --concurrency 2 --max-tokens 8)
else
  LIMIT_MODEL=900 LIMIT_BENCH=3600 LIMIT_SFT=1800 LIMIT_SERVE=900
  TRAIN=("train.max_steps=20" "train.save_every=10")
  BENCH=(--compile)
  SERVE=(--threads 0 --requests 64 --concurrency 16 --max-tokens 128)
fi

sample_gpu_memory() {  # MiB in use, once a second, until killed
  command -v nvidia-smi >/dev/null || return 0
  exec nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 1 > "$1" 2>/dev/null
}

run_step() {  # NAME LIMIT_S COMMAND...: run under timeout, log into $OUT/NAME/log.txt, record the result
  local name=$1 limit=$2 rc=0 start=$SECONDS sampler result peak
  shift 2
  mkdir -p "$OUT/$name"
  echo "== $name (at most ${limit}s): $*"
  sample_gpu_memory "$OUT/$name/gpu_memory.csv" &
  sampler=$!
  timeout --kill-after=30 "$limit" "$@" > "$OUT/$name/log.txt" 2>&1 || rc=$?
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  case $rc in
    0) result=ok ;;
    124|137) result="timed out after ${limit}s" ;;
    *) result="failed (exit $rc; see $name/log.txt)" ;;
  esac
  peak=$(sort -n "$OUT/$name/gpu_memory.csv" 2>/dev/null | tail -1)
  printf '| %s | %s | %d | %s |\n' "$name" "$result" $((SECONDS - start)) "${peak:-n/a}" >> "$STEPS_MD"
  echo "   $result"
  return "$rc"
}

install() {
  if [ "$SMOKE" = 1 ]; then
    "$PY" -c "import kotune" 2>/dev/null && return 0
    bash scripts/install.sh
    return
  fi
  "$PY" -c "import torch, kotune; assert torch.cuda.is_available()" 2>/dev/null && return 0
  # --force-reinstall: a .venv holding the CPU build of torch 2.13.0 would otherwise count as satisfied.
  python3 -m venv .venv \
    && .venv/bin/python -m pip install --force-reinstall "torch==2.13.0" --index-url "$TORCH_INDEX" \
    && .venv/bin/python -m pip install -c constraints.txt -e ".[dev]" \
    && .venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'"
}

build_model() {  # polyglot-ko-1.3b's shape (smoke: kotune's tiny GPT-NeoX)
  if [ "$SMOKE" = 1 ]; then
    "$PY" -m kotune.cli model tiny --arch gpt-neox --out "$OUT/model/polyglot-shaped"
  else
    "$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_sft; from pathlib import Path; \
print(gpu_sft.build_model(Path(sys.argv[1]), gpu_sft.POLYGLOT_KO_1_3B))" "$OUT/model/polyglot-shaped"
  fi
}

sft() {  # NAME RECIPE OVERRIDES...: the recipe on the polyglot-shaped model and the shipped KoAlpaca sample
  local name=$1 recipe=$2
  shift 2
  run_step "$name" "$LIMIT_SFT" "$PY" -m kotune.cli sft "$recipe" "model=$MODEL" "output_dir=$OUT/$name/run" \
    "data.files=[$DATA]" "${TRAIN[@]}" "$@"
}

checkpoint_sizes() {  # NAME: newest checkpoint against the adapter, into NAME/sizes.json and summary
  "$PY" - "$OUT/$1/run" > "$OUT/$1/sizes.json" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
adapter = (run / "adapter_model.safetensors").stat().st_size
total = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
# fp32 adapter + AdamW's two fp32 moments: 3x the adapter file; the rest (scheduler, RNG) is small
print(json.dumps({"checkpoint": str(ckpt), "checkpoint_bytes": total, "adapter_bytes": adapter,
                  "checkpoint_over_adapter_plus_optimizer": round(total / (3 * adapter), 3)}))
EOF
}

# The steps that are shell functions run in a child bash under `timeout`: it needs them and their settings.
export SMOKE PY TORCH_INDEX OUT
export -f install build_model

run_step install 3600 bash -c install || { echo "install failed: see $OUT/install/log.txt" >&2; cat "$STEPS_MD"; exit 1; }
"$PY" -c "import kotune" 2>/dev/null || PY=.venv/bin/python  # what install made, when $KOTUNE_PYTHON was not it
[ "$SMOKE" = 1 ] || "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || PY=.venv/bin/python
export PY
MODEL="$OUT/model/polyglot-shaped"
run_step model "$LIMIT_MODEL" bash -c build_model
run_step gpu_sft "$LIMIT_BENCH" "$PY" benchmarks/gpu_sft.py --model "$MODEL" --workdir "$OUT/gpu_sft" "${BENCH[@]}"
rm -f "$OUT"/gpu_sft/*/model.safetensors  # 5 GB each at 1.3B; the numbers are in the report (the disk may be 64 GB)
sft sft_full recipes/sft/polyglot-ko-1.3b_full.yaml train.save_every=0  # a full checkpoint is ~21 GB; LoRA's is the one measured
sft lora recipes/sft/polyglot-ko-12.8b_lora.yaml && checkpoint_sizes lora
sft qlora recipes/sft/polyglot-ko-12.8b_lora.yaml method=qlora && checkpoint_sizes qlora
SERVED=()
[ -f "$OUT/sft_full/run/model.safetensors" ] && SERVED=(--model "$OUT/sft_full/run")  # else a small built model
run_step serve "$LIMIT_SERVE" "$PY" benchmarks/serve_throughput.py "${SERVED[@]}" "${SERVE[@]}"

{
  echo "# kotune GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ "$SMOKE" = 1 ] && echo ', --smoke: CPU, tiny shapes, numbers mean nothing')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, transformers; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}')"
  echo
  cat "$STEPS_MD"
  echo
  echo "## gpu_sft: kotune vs TRL"
  echo
  cat "$OUT/gpu_sft/report.md" 2>/dev/null || echo "(no report: see gpu_sft/log.txt)"
  for name in sft_full lora qlora; do
    echo
    echo "## $name: last logged step"
    echo
    tail -n 1 "$OUT/$name/run/metrics.jsonl" 2>/dev/null || echo "(no metrics: see $name/log.txt)"
    [ -f "$OUT/$name/sizes.json" ] && { echo; echo "checkpoint vs adapter: $(cat "$OUT/$name/sizes.json")"; }
  done
  echo
  echo "## serve"
  echo
  grep -E '^\||throughput ratio|^model:' "$OUT/serve/log.txt" 2>/dev/null || echo "(no result: see serve/log.txt)"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
echo
echo "results in $OUT"
