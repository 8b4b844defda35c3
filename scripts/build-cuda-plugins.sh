#!/usr/bin/env bash
# Builds pgmld's CUDA plugins against the CUDA build of torch installed on this machine, with
# no cargo and no CUDA toolkit (the torch wheel and its nvidia-* wheels hold every header; a
# CUDA_HOME's headers are used when the wheels lack one):
#   libpgmld_cuda_graph.so  CUDA graphs for the training step (crates/pgmld-kernels/src/
#                           cuda_graph.cpp); needs only the CUDA runtime headers
#   libpgmld_nccl.so        c10d's NCCL process group for data-parallel jobs on CUDA devices
#                           (crates/pgmld-kernels/src/nccl.cpp); needs nccl.h and the cuBLAS,
#                           cuSPARSE, cuSOLVER and CCCL headers, so it is skipped, with a line
#                           saying so, where nccl.h is missing (the lean CPU install)
# About half a minute each.
#
#   bash scripts/build-cuda-plugins.sh [DIR]     # writes DIR/libpgmld_*.so (default: .)
#
# pgmld looks for a plugin beside its binary, then on the library search path; the settings
# cuda_graph_plugin (PGMLD_CUDA_GRAPH_PLUGIN) and nccl_plugin (PGMLD_NCCL_PLUGIN) name others.
# Exits non-zero when a plugin it tried to build failed.
#   PYTHON     the Python whose torch to build against (python3)
#   TORCH_DIR  that torch's package directory instead of asking Python (with include/, lib/)
#   CXX        the compiler (c++)
#   CUDA_INCLUDE  more include directories, colon-separated (e.g. the crt/ headers of the
#              nvidia-cuda-crt wheel, which torch's CUDA 13 wheels do not pull in)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-.}"
py="${PYTHON:-python3}"
cxx="${CXX:-c++}"
die() { echo "build-cuda-plugins: $*" >&2; exit 1; }

torch="${TORCH_DIR:-$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)}" \
    || die "no torch for $py (set PYTHON or TORCH_DIR)"
[ -f "$torch/include/ATen/cuda/CUDAGraph.h" ] || die "$torch has no ATen CUDA headers"
[ -f "$torch/lib/libtorch_cuda.so" ] || die "$torch is not a CUDA build of torch (no lib/libtorch_cuda.so)"
site="$(dirname "$torch")"
includes=(-I"$torch/include" -I"$torch/include/torch/csrc/api/include")
found_nccl=0 found_cudart=0
IFS=: read -r -a extra <<<"${CUDA_INCLUDE:-}"
for d in "$site"/nvidia/*/include "$site"/nvidia/*/*/include "${extra[@]}" "${CUDA_HOME:-/usr/local/cuda}/include"; do
    [ -d "$d" ] || continue
    includes+=(-I"$d")
    [ -f "$d/nccl.h" ] && found_nccl=1
    [ -f "$d/cuda_runtime_api.h" ] && found_cudart=1
done
[ "$found_cudart" = 1 ] || die "no cuda_runtime_api.h under $site/nvidia (pip install the nvidia-cuda-runtime wheel torch names)"
found_crt=0
for d in "${includes[@]}"; do [ -f "${d#-I}/crt/host_config.h" ] && found_crt=1; done
[ "$found_crt" = 1 ] || die "no crt/host_config.h (cuda_runtime.h includes it): pip install nvidia-cuda-crt of torch's CUDA version and name its include directory in CUDA_INCLUDE"
# The ABI torch was built with (the pip wheels: the C++11 ABI).
abi="$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo 1)"
mkdir -p "$out_dir"

# build NAME SOURCE ENTRY [DEFINES...]: compiles one plugin; checks it exports ENTRY.
build() {
    local name=$1 src=$2 entry=$3
    shift 3
    local out="$out_dir/$name"
    "$cxx" -std=c++17 -O2 -fPIC -shared -w \
        -DUSE_CUDA -D_GLIBCXX_USE_CXX11_ABI="$abi" -DGLOG_USE_GLOG_EXPORT "$@" \
        "${includes[@]}" "$here/crates/pgmld-kernels/src/$src" \
        -L"$torch/lib" -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 -Wl,-rpath,"$torch/lib" \
        -o "$out" || { echo "build-cuda-plugins: $name failed to build" >&2; return 1; }
    nm -D --defined-only "$out" | grep -q " $entry\$" || { echo "build-cuda-plugins: $out lacks $entry" >&2; return 1; }
    echo "$out"
}

# Both at once: each compile is a single-threaded half minute.
build libpgmld_cuda_graph.so cuda_graph.cpp pgmld_cuda_graph_begin &
graph=$!
nccl=""
if [ "$found_nccl" = 1 ]; then
    build libpgmld_nccl.so nccl.cpp pgmld_nccl_new -DUSE_C10D_NCCL &
    nccl=$!
else
    echo "build-cuda-plugins: libpgmld_nccl.so skipped: no nccl.h under $site/nvidia (pip install the nvidia-nccl wheel torch names)" >&2
fi
status=0
wait "$graph" || status=1
if [ -n "$nccl" ]; then wait "$nccl" || status=1; fi
exit $status
