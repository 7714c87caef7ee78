#!/usr/bin/env bash
# The GPU acceptance checks, in one pass, on a machine with a CUDA PyTorch (run from the repo root after
# scripts/gpu_bundle.sh built .gpu/ elsewhere, or with GPU_BIN pointing at a build's bin/):
#   kernels vs CPU twins, compute-sanitizer memcheck, the kernel lab, the Qwen3-1.7B-shaped training step and
#   decode, and the NCCL engine at world size 1 with its all-reduce bandwidth.
# Logs go to ${OUT:-gpu_out}/.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="${GPU_BIN:-$root/.gpu/bin}"
out="${OUT:-$root/gpu_out}"
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
nvidia_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "**", "lib"), recursive=True))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$root/.gpu/lib:$torch_lib:$nvidia_libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="$PATH:/usr/local/cuda/bin:/usr/local/nvidia/bin"
status=0
for b in "$bin"/*; do ldd "$b" | grep "not found" | sed "s|^|$(basename "$b") is missing |"; done
step() {  # step NAME TIMEOUT_S COMMAND...: runs it, logs to $out/NAME.log, never stops the rest
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
  tail -n 25 "$out/$name.log"
  [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step kernels 120 "$bin/test_gpu_kernels"
# Without the caching allocator every tensor is its own allocation, so memcheck sees out-of-bounds accesses
# that would otherwise land inside a pooled block. CUDA-graph capture needs the caching allocator (a plain
# cudaMalloc is not allowed while capturing), so the graphed decoder is checked with it on.
step memcheck 240 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 3 \
  "$bin/test_gpu_kernels" --gtest_filter='GpuKernels.*:-GpuKernels.GraphedDecoder*'
step memcheck_graph 120 compute-sanitizer --tool memcheck --error-exitcode 3 \
  "$bin/test_gpu_kernels" --gtest_filter='GpuKernels.GraphedDecoder*'
step kernel_lab 180 "$bin/bench_kernel_lab" --tokens 16384
step gpu_step 300 "$bin/bench_gpu_step" --batch 4,8,12 --seq 2048 --steps 5 --decode-batch 1,64 --decode-steps 128
step nccl_test 60 "$bin/test_dist_nccl"
step nccl_bandwidth 60 "$bin/bench_allreduce" --nccl --max-mb 1024 --iters 20
exit $status
