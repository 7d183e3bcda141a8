#!/usr/bin/env bash
# Compile csrc/ against the CUDA build of torch on a machine without a GPU, and load the result.
# CI runs this so that CUDA code never lands broken; running the kernels needs tools/gpu_check.sh.
#   bash tools/check_cuda_build.sh [WORKDIR]      (default /tmp/megatron_redi_cuda_check)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/megatron_redi_cuda_check}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "check_cuda_build: no nvcc under CUDA_HOME=$CUDA_HOME" >&2
    exit 1
fi
if [ ! -x "$work/venv/bin/python" ]; then
    python -m venv "$work/venv"
fi
# torch 2.14.1 on this machine is the CUDA 13.0 build lying on disk (no GPU needed to compile)
"$work/venv/bin/python" -m pip install -q torch==2.14.1
start=$(date +%s)
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a} MEGATRON_REDI_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} \
    "$work/venv/bin/python" setup.py -q build_ext --build-lib "$work/lib" --build-temp "$work/tmp" \
    > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; echo "check_cuda_build: compile FAILED" >&2; exit 1; }
so=$(ls "$work"/lib/megatron_redi/_logprob_cuda*.so)
"$work/venv/bin/python" - "$so" <<'PY' 2>&1 | grep -v -i numpy
import importlib.util, sys
import torch  # the extension's symbols resolve against torch's CUDA libraries
spec = importlib.util.spec_from_file_location("_logprob_cuda", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
missing = {"row_stats", "dlogits", "segment_sum", "wgrad_accumulate"} - set(dir(module))
assert not missing, f"missing functions: {missing}"
print(f"check_cuda_build: csrc/ compiled for sm_90a with torch {torch.__version__} and loads")
PY
echo "check_cuda_build: $(( $(date +%s) - start )) s to compile"
