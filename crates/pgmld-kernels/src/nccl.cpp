// c10d's NCCL process group (torch.distributed backend "nccl") for data-parallel jobs on
// CUDA devices, as a plugin: libpgmld_nccl.so, which pgmld loads only when a CUDA job
// forms a group (pgmld_kernels::dist::ProcessGroup::nccl).
//
// Why a plugin and not part of the shim build.rs compiles: ProcessGroupNCCL.hpp pulls in
// the CUDA toolkit's headers (cuda_runtime, cuBLAS, cuSPARSE, cuSOLVER, CCCL) and nccl.h,
// which the lean torch install that CPU builds and CI use does not have, and the object
// needs libtorch_cuda.so, which must not become a load-time dependency of a binary that
// runs on machines without CUDA. A machine that trains on GPUs has the full CUDA torch
// (its nvidia-* wheels hold every header): scripts/build-cuda-plugins.sh compiles this file
// there against that torch, in a minute, with no cargo.
//
// The group is handed back as a released c10d::Backend, which the shim's
// pgmld_group_adopt wraps like its Gloo groups, so all-reduce, broadcast and barrier are
// the same calls for both backends.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "ffi.h"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

using pgmld::report;

extern "C" {

// The plugin's interface version; pgmld refuses a plugin of another.
int pgmld_nccl_abi_version() { return 1; }

// The NCCL version libtorch_cuda was built with, as NCCL encodes it (e.g. 22809).
int pgmld_nccl_version() { return NCCL_VERSION_CODE; }

// An NCCL process group of `world` ranks meeting through `store` (a c10d::Store* the shim
// owns; borrowed), this process being `rank` on CUDA device `device`. Collectives block in
// wait() and fail after timeout_ms (pgmld sets TORCH_NCCL_BLOCKING_WAIT=1 and
// TORCH_NCCL_ASYNC_ERROR_HANDLING=2 unless the environment says otherwise, so a dead peer
// fails the step instead of ending the daemon). On success *out is a c10d::Backend* whose
// reference the caller owns (pgmld_group_adopt).
int pgmld_nccl_new(const void *store, int rank, int world, int device, int64_t timeout_ms,
                   void **out, char *err, size_t err_len) {
  try {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto borrowed = c10::intrusive_ptr<c10d::Store>::unsafe_reclaim_from_nonowning(
        static_cast<c10d::Store *>(const_cast<void *>(store)));
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(borrowed, rank, world, opts);
    // Binds the communicator to this rank's device (barrier and eager init use it).
    pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
    c10::intrusive_ptr<c10d::Backend> backend = pg;
    *out = backend.release();
    return 0;
  } catch (const std::exception &e) {
    return report(e.what(), err, err_len);
  } catch (...) {
    return report("unknown C++ exception", err, err_len);
  }
}

}  // extern "C"
