#!/usr/bin/env bash
# One GPU session in one call: build the extension against the machine's torch, run the CUDA
# tests, the step and scan rows (compiled path, early exit), and the whole pipeline on
# CIFAR-10N worse (ResNet-18, GAAVE vs CE baseline vs cleanlab drop-and-retrain), inside a
# time budget. The work is done by benchmarks/gpu_session.py (its docstring lists the stages).
#
#   bash benchmarks/prepare_gpu_data.sh          # here, once: the data into .gpu_data/ (ignored)
#   then on the device, carrying .gpu_data:      bash benchmarks/run_gpu.sh
#   BUDGET=420 bash benchmarks/run_gpu.sh --skip pipeline    # extra flags go to gpu_session.py
#
# Each stage writes $OUT/<stage>.json as it finishes and appends its output to
# $OUT/session.log; $OUT/session.json sums up. Nothing is downloaded or pip-installed from an
# index: the build uses --no-build-isolation --no-deps --no-index.
set -u
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
exec python3 "$(dirname "$0")/gpu_session.py" --out "$OUT" --budget "${BUDGET:-540}" "$@"
