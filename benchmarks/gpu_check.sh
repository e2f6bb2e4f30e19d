#!/usr/bin/env bash
# One-shot GPU check: install, the kernel and functional tests on compiled Triton kernels, the
# kernel benchmark. Everything goes to "$OUT/gpu_check.txt"; each step has a timeout and a
# failing step does not stop the next (about 4-5 minutes in all).
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
set -x
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-.}"
mkdir -p "$OUT"

{
  PY="$(command -v python3 || command -v python)"
  export PYTHONUNBUFFERED=1
  # tests/conftest.py does os.environ.setdefault("TRITON_INTERPRET", "1"): an explicit 0 keeps
  # the compiled kernels on the GPU (unset, the tests would run in the interpreter)
  export TRITON_INTERPRET=0
  export TRITON_DEFAULT_FP_FUSION=1
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # in case the editable install fails
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

  # the machine may be offline: no build isolation (it would fetch setuptools), then no deps
  timeout -k 5 60 "$PY" -m pip install -q --no-build-isolation -e . \
    || timeout -k 5 60 "$PY" -m pip install -q --no-build-isolation --no-deps --no-index -e . \
    || echo "STEP FAILED: pip install -e . (continuing with PYTHONPATH)"
  if ! timeout -k 5 60 "$PY" -c "import torch, triton"; then
    timeout -k 5 120 "$PY" -m pip install -q torch triton || echo "STEP FAILED: pip install torch triton"
  fi
  timeout -k 5 60 "$PY" -c "
import torch, triton
from fewbit_design.torch import kernels
print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available(),
      'interpreted', kernels.interpreted(), 'triton_available(cuda)', kernels.triton_available('cuda'),
      'libdevice', kernels.torch_libdevice(), kernels.DEFAULT_CONFIG)
" || echo "STEP FAILED: import check"

  XDIST=""
  if "$PY" -c "import xdist" 2>/dev/null; then XDIST="-n 8"; fi
  timeout -k 5 240 "$PY" -m pytest -q -p no:cacheprovider $XDIST -rsx --tb=short \
    tests/test_torch_kernels.py tests/test_torch_functional.py \
    || echo "STEP FAILED: pytest (rc=$?)"

  timeout -k 5 170 "$PY" -m benchmarks.gpu_kernels || echo "STEP FAILED: benchmarks.gpu_kernels (rc=$?)"
  echo "gpu_check done"
} 2>&1 | tee "$OUT/gpu_check.txt"
