#!/usr/bin/env bash
# One GPU session in one command: build against the machine's torch, run the CUDA
# tests, the step and scan benchmarks, then the whole suite, inside a time budget.
#
#   OUT=gpu_out BUDGET=420 bash benchmarks/run_gpu.sh
#
# One log per stage lands in $OUT (default ./gpu_out); the benchmarks print their JSON
# into it. Each stage gets what is left of BUDGET seconds (capped per stage) so that a
# slow build cannot cost the benchmarks their results; a stage with too little time
# left is skipped and says so. CUDA_HOME is found by setup.py (default /usr/local/cuda).
# Wheels of missing pure-Python packages (torchattacks) may sit in .whl/.
set -u
OUT="${OUT:-$PWD/gpu_out}"
BUDGET="${BUDGET:-420}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
START=$SECONDS

stage() {  # stage NAME CAP command...: run with min(CAP, time left) seconds, log to $OUT/NAME.log
  local name=$1 cap=$2 left t
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  t=$((left < cap ? left : cap))
  if ((t < 20)); then
    echo "== $name: skipped, ${left}s of the budget left"
    return 0
  fi
  echo "== $(date +%T) $name (limit ${t}s)"
  local t0=$SECONDS
  timeout "$t" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "== $name: rc=$rc in $((SECONDS - t0))s"
  return $rc
}

nvidia-smi -L
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

# The documented install for an existing (custom) torch: no build isolation.
stage build 240 env FORCE_CUDA=1 python3 -m pip install -v --no-build-isolation --no-index --no-deps . || exit 1
# -P: import the installed package, not the source tree in the working directory.
python3 -P -c "import gaave_fast; print('built:', gaave_fast.build_info())"

stage cuda_tests 120 python3 -P -m pytest -q -rs -p no:cacheprovider tests/test_ops.py tests/test_scan_cuda.py
cd benchmarks  # the script folder goes first on sys.path (common.py), not the source tree
stage step 60 python3 bench_step.py --device cuda
stage scan_fp32 120 python3 bench_scan.py --device cuda --model resnet18 --size 224 --n 2048 --batch 256 \
  --rounds 2
stage scan_bf16 100 python3 bench_scan.py --device cuda --model resnet18 --size 224 --n 2048 --batch 256 \
  --amp bf16 --cuda-graph --rounds 2
stage scan_cnn48 45 python3 bench_scan.py --device cuda --model cnn48 --n 16384 --batch 1024 \
  --amp bf16 --cuda-graph --rounds 2
cd ..
stage all_tests 240 python3 -P -m pytest -q -rs -p no:cacheprovider tests
echo "== done in $((SECONDS - START))s"
