#!/usr/bin/env bash
# Compile-check the CUDA side of vlbert_fast._C where nvcc exists but no GPU (CI): the .cu files to object files
# for one architecture (sm_90, to keep CI fast), and the pybind surface with WITH_CUDA defined (syntax only).
# Nothing is linked: a CPU build of torch has no CUDA libraries. This works because the .cu includes only
# <torch/extension.h> and <cuda_runtime.h> (TOOLCHAIN.md).
#
# Usage: csrc/check_cuda_compile.sh [PYTHON]   (PYTHON: the interpreter whose torch to compile against;
#        default .venv/bin/python, else python3). NVCC, CXX and CUDA_CHECK_ARCH override the defaults;
#        CUDA_CHECK_FLAGS adds nvcc flags (the sm_90 scorecard passes "-Xptxas -v" for registers and spills).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
NVCC=${NVCC:-nvcc}
CXX=${CXX:-c++}
ARCH=${CUDA_CHECK_ARCH:-90}
OUT=build/cuda_check
command -v "$NVCC" >/dev/null || { echo "check_cuda_compile: $NVCC not found" >&2; exit 2; }
mkdir -p "$OUT"

# The C++ standard, ABI, include paths and nvcc flags exactly as torch's extension builder would use them.
{ read -r STD; read -r ABI; read -r INCLUDES; read -r TORCH_NVCC_FLAGS; } < <("$PYTHON" -c '
import inspect, sysconfig
import torch
from torch.utils import cpp_extension as ce
print("c++20" if "-std=c++20" in inspect.getsource(ce) else "c++17")
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(" ".join("-I" + p for p in ce.include_paths() + [sysconfig.get_paths()["include"]]))
print(" ".join(ce.COMMON_NVCC_FLAGS))
')
DEFINES=(-DWITH_CUDA -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C "-D_GLIBCXX_USE_CXX11_ABI=$ABI")
# shellcheck disable=SC2206  # word splitting of the lists is intended
INC=($INCLUDES)
# shellcheck disable=SC2206
NVCC_FLAGS=($TORCH_NVCC_FLAGS)
# 3189: torch's own headers (torch/python.h) use `module` as an identifier, which nvcc flags in C++20 mode
NVCC_FLAGS+=(-Xcudafe --diag_suppress=3189)
# shellcheck disable=SC2206
NVCC_FLAGS+=(${CUDA_CHECK_FLAGS:-})

start=$(date +%s)
for cu in csrc/*.cu; do
  obj="$OUT/$(basename "${cu%.cu}").o"
  echo "nvcc sm_$ARCH: $cu -> $obj"
  "$NVCC" -c "$cu" -o "$obj" -std="$STD" -O3 -Xcompiler -fPIC \
    -gencode "arch=compute_$ARCH,code=sm_$ARCH" "${NVCC_FLAGS[@]}" "${DEFINES[@]}" "${INC[@]}"
done
echo "$CXX -fsyntax-only: csrc/vlbert_fast_api.cpp with WITH_CUDA"
"$CXX" -fsyntax-only -std="$STD" "${DEFINES[@]}" "${INC[@]}" csrc/vlbert_fast_api.cpp
echo "check_cuda_compile: ok in $(($(date +%s) - start)) s"
