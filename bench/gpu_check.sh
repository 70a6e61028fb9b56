#!/usr/bin/env bash
# The GPU checks in one go (about 6 minutes on one H200): the no-sync tests, then Lightning and HF Trainer
# speed with and without ml-dash on the GPU. Run from the repository root on a machine with a CUDA GPU and a
# python3 that has torch (CUDA build), lightning and transformers; this repo's packages are used from source.
#
#   bash bench/gpu_check.sh [RESULTS_DIR]        # default ./gpu-results
#
# Writes RESULTS_DIR/gpu_tests.txt, lightning_gpu.md and hf_gpu.md (the tables for docs/performance.md).
# Wheels of missing pure dependencies (pluggy, orjson, ...) may be put in ./.whl: they are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-gpu-results}
mkdir -p "$RESULTS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 ML_DASH_QUIET=1
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/ml-dash-site .whl/*.whl || exit 1
  extra=/tmp/ml-dash-site
fi
export PYTHONPATH=packages/core/src:packages/lightning/src:packages/hf/src:packages/keras/src${extra:+:$extra}
nvidia-smi -L | tee "$RESULTS/gpu.txt"
$PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0))" \
  | tee -a "$RESULTS/gpu.txt"
status=0
echo "== no-sync tests"
timeout 120 $PY -m pytest tests/gpu tests/core/test_device_values.py -q -rs -p no:cacheprovider 2>&1 \
  | tee "$RESULTS/gpu_tests.txt" || status=1
echo "== Lightning on the GPU"
timeout 240 $PY bench/lightning_bench.py --device cuda --rounds 5 --steps 1500 --batch 64 --hidden 256 2>&1 \
  | tee "$RESULTS/lightning_gpu.md" || status=1
echo "== HF Trainer on the GPU"
timeout 150 $PY bench/hf_bench.py --device cuda --rounds 5 --steps 300 2>&1 | tee "$RESULTS/hf_gpu.md" || status=1
exit $status
