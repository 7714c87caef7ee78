#!/usr/bin/env bash
# Packs the GPU binaries built here into .gpu/ (bin/ and the Debian shared libraries they need, lib/) so they
# run on a GPU machine that has a CUDA PyTorch 2.11 but none of our Debian dependencies. LibTorch, cudart,
# cuBLAS and NCCL are taken from that machine's torch wheel at run time (scripts/gpu_checks.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="${BUILD_DIR:-$root/build}"
out="$root/.gpu"
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib"
bins=(test_gpu_kernels bench_kernel_lab bench_gpu_step test_dist_nccl bench_allreduce)
for b in "${bins[@]}"; do
  strip --strip-unneeded -o "$out/bin/$b" "$build/bin/$b"
done
# Everything ldd resolves from the system, except the C runtime the target machine has (glibc, libstdc++) and
# what the torch wheel brings there (torch, c10, CUDA libraries, NCCL).
for b in "${bins[@]}"; do ldd "$build/bin/$b"; done | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  name=$(basename "$lib")
  case "$name" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libutil.so*|ld-linux*|libstdc++*|libgcc_s*) continue ;;
    libtorch*|libc10*|libcudart*|libcublas*|libnccl*|libgomp*|libcupti*|libnv*|libcuda.so*) continue ;;
  esac
  case "$lib" in */site-packages/*|/usr/local/cuda*) continue ;; esac
  cp -L "$lib" "$out/lib/$name"
done
du -sh "$out/bin" "$out/lib"
