#!/usr/bin/env bash
# The transformers engine on a CUDA GPU: the engine contract suite, then the inference benchmark of the store's
# model server (base model and a LoRA fine-tune, over HTTP) beside the in-process engine. Runs from the repo root
# on a machine with Python, torch (CUDA), transformers, peft and accelerate; whatever else it imports comes from
# bench/gpu/prepare.sh (var/gpu-deps, var/gpu-model: carry both). Writes log.txt, contract.xml and
# inference-gpu.json under $OUT; at most about 8 minutes (the suite is cut at 3, the benchmark at 5). The README's
# "On a GPU" paragraph gives the device call.
#
#   OUT=/tmp/gpu-out bash bench/gpu/run.sh                   # on the GPU machine (not run on one yet)
#   GPU_BENCH_QUICK=1 OUT=/tmp/gpu-out bash bench/gpu/run.sh # the same on a CPU, small: proves the script
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-var/gpu-out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH="var/gpu-deps:.${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The machine's own pytest plugins (pytest-cov, -timeout, -benchmark...) would load into the carried pytest.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
if [ "${GPU_BENCH_QUICK:-}" = 1 ]; then
  TOKENS=8 THREADS=1
  export TORCH_NUM_THREADS=1 OMP_NUM_THREADS=1
else
  # 135M parameters decode in a few ms a step on an H200: 256 tokens a request keeps each figure over a second.
  TOKENS=${GPU_BENCH_TOKENS:-256} THREADS=${GPU_BENCH_THREADS:-4}
fi
[ -d var/gpu-deps ] && [ -f var/gpu-model/base/config.json ] \
  || { echo "var/gpu-deps or var/gpu-model is missing: run bench/gpu/prepare.sh and carry both"; exit 2; }

echo "== machine"
date -u
nvidia-smi || echo "(no nvidia-smi: not a GPU machine)"
"$PYTHON" - <<'PY'
import platform, sys
import peft, torch, transformers
print("python", sys.version.split()[0], platform.machine(), "| torch", torch.__version__, "| transformers",
      transformers.__version__, "| peft", peft.__version__)
print("cuda available:", torch.cuda.is_available(), "| torch built for CUDA", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability "
          f"{p.major}.{p.minor}; bf16 supported: {torch.cuda.is_bf16_supported()}")
PY

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== a model of the base model's architecture, random weights (bfloat16 safetensors)"
"$PYTHON" - "$WORK/base" <<'PY' || exit 1
import shutil, sys, time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

source, out = Path("var/gpu-model/base"), Path(sys.argv[1])
started = time.perf_counter()
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.bfloat16)
model.save_pretrained(out)
for f in source.iterdir():
    if f.name != "config.json":  # the saved config is the model's own, with its dtype
        shutil.copy(f, out / f.name)
params = sum(p.numel() for p in model.parameters())
print(f"{params / 1e6:.1f}M parameters written to {out} in {time.perf_counter() - started:.1f}s")
PY

echo "== the engine contract suite, transformers engine (on $("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")'))"
# Deselected: the llama.cpp engine's half (no llama-cpp-python there) and the store-through-/v1 test, which needs
# the real base model and a database. The transformers half runs on tests/tiny_model.py's model, written from the
# stand-in distribution's GGUF (prepare.sh), held to the same recorded answers as on the CPU.
STORE_DATA_DIR="$WORK/data" PYTHONPATH="var/gpu-model/standin:$PYTHONPATH" timeout 180 \
  "$PYTHON" -m pytest -p pytest_django.plugin --ds bench.gpu.settings tests/inference/test_engine_contract.py \
  -p no:cacheprovider -q -rA -k "not llamacpp" --junitxml="$OUT/contract.xml"
contract=$?

echo "== the benchmark: model server (transformers engine) on the base and a LoRA, and the in-process engine"
timeout 300 "$PYTHON" bench/inference.py --served transformers --variants bfloat16 --model-dir "$WORK/base" \
  --lora-registry "$WORK/registry" --tokens "$TOKENS" --threads "$THREADS" --out "$OUT/inference-gpu.json"
bench=$?

echo "== contract suite exit $contract, benchmark exit $bench"
[ "$contract" = 0 ] && [ "$bench" = 0 ]
