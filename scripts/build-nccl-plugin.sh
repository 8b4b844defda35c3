#!/usr/bin/env bash
# Builds libpgmld_nccl.so, the plugin holding c10d's NCCL process group that data-parallel
# jobs on CUDA devices use (crates/pgmld-kernels/src/nccl.cpp), on the machine that has the
# GPUs, against the CUDA build of torch installed there. It needs a C++ compiler and that
# torch's Python package with its nvidia-* wheels (they hold the CUDA, cuBLAS, cuSPARSE,
# cuSOLVER, CCCL and NCCL headers); no cargo, no CUDA toolkit (a CUDA_HOME's headers are
# used when the wheels lack one). Takes about half a minute.
#
#   bash scripts/build-nccl-plugin.sh [DIR]     # writes DIR/libpgmld_nccl.so (default: .)
#
# pgmld looks for the plugin beside its binary, then on the library search path; the
# setting nccl_plugin (PGMLD_NCCL_PLUGIN) names another path.
#   PYTHON   the Python whose torch to build against (python3)
#   TORCH_DIR  that torch's package directory instead of asking Python (with include/, lib/)
#   CXX      the compiler (c++)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-.}"
py="${PYTHON:-python3}"
cxx="${CXX:-c++}"
die() { echo "build-nccl-plugin: $*" >&2; exit 1; }

torch="${TORCH_DIR:-$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)}" \
    || die "no torch for $py (set PYTHON or TORCH_DIR)"
[ -f "$torch/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp" ] \
    || die "$torch has no c10d headers"
[ -f "$torch/lib/libtorch_cuda.so" ] || die "$torch is not a CUDA build of torch (no lib/libtorch_cuda.so)"
site="$(dirname "$torch")"
includes=(-I"$torch/include" -I"$torch/include/torch/csrc/api/include")
found_nccl=0
for d in "$site"/nvidia/*/include "$site"/nvidia/*/*/include "${CUDA_HOME:-/usr/local/cuda}/include"; do
    [ -d "$d" ] || continue
    includes+=(-I"$d")
    [ -f "$d/nccl.h" ] && found_nccl=1
done
[ "$found_nccl" = 1 ] || die "no nccl.h under $site/nvidia (pip install the nvidia-nccl wheel torch names)"
# The ABI torch was built with (the pip wheels: the C++11 ABI).
abi="$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo 1)"
mkdir -p "$out_dir"
out="$out_dir/libpgmld_nccl.so"
"$cxx" -std=c++17 -O2 -fPIC -shared -w \
    -DUSE_C10D_NCCL -DUSE_CUDA -D_GLIBCXX_USE_CXX11_ABI="$abi" -DGLOG_USE_GLOG_EXPORT \
    "${includes[@]}" "$here/crates/pgmld-kernels/src/nccl.cpp" \
    -L"$torch/lib" -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 -Wl,-rpath,"$torch/lib" \
    -o "$out"
nm -D --defined-only "$out" | grep -q ' pgmld_nccl_new$' || die "$out lacks pgmld_nccl_new"
echo "$out"
