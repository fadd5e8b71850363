#!/usr/bin/env bash
# GPU check in one command, from a plain checkout (no install): the CUDA correctness tests of
# the Triton kernel, then the kernel benchmark on the device. Under 5 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh            # results in $OUT when set, else bench-results/
#
# Needs python3 with torch (CUDA), triton >= 3.0, numpy, pytest, hypothesis and mpmath (the
# device image has them). verl peers are skipped when verl is absent.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
PY=${PYTHON:-python3}
DEST=${OUT:-bench-results}
mkdir -p "$DEST"
status=0

"$PY" - <<'PYEOF' 2>&1 | tee "$DEST/gpu_env.txt"
import torch, triton
print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
PYEOF

echo "== CUDA correctness tests =="
timeout 90 "$PY" -m pytest tests/test_kernels_cuda.py -q -p no:cacheprovider -rs 2>&1 \
    | tee "$DEST/gpu_tests.txt" || status=1

echo "== benchmark =="
timeout 190 "$PY" benchmarks/bench_kernels.py --device cuda --log2n 12 14 16 18 20 22 \
    --ks 2 4 8 17 --budget 0.2 --memory --out "$DEST" 2>&1 | tee "$DEST/gpu_bench_log.txt" \
    || status=1

echo "results in $DEST (gpu_tests.txt, bench_kernels_cuda.md/.json); exit $status"
exit $status
